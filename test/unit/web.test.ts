/**
 * The web and certbot steps as rendered data: which names Apache serves and how, the TLS policy,
 * the MTA-STS and autoconfig documents, and the certbot parameters. Pure (no server); the lab
 * e2e tests (test/e2e/web.test.ts) check the same things against the running Apache.
 */
import assert from "node:assert/strict";
import { execFile, execFileSync, spawn } from "node:child_process";
import { createPublicKey, X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { DB_ADMINS, parseConfig, type Model } from "../../components/config";
import { CERTIFICATE_CONF, CERTIFICATE_SCRIPT, certificateDomains } from "../../components/services/certbot";
import { CERTIFICATE_KEY } from "../../components/services/tls";
import { tlsKeySecret } from "../../components/secrets";
import { DB_ADMIN_APPS, DB_ADMIN_SITE, PHPPGADMIN_CONFIG } from "../../components/services/dbadmin";
import { ACME_WEBROOT, AUTOCONFIG_XML_PATH, DB_ADMIN_PORT, DB_ADMIN_ROOT, MTA_STS_POLICY_PATH, PLACEHOLDER_ROOT, renderApacheSites, renderAutoconfigXml, renderAutodiscoverPhp } from "../../components/services/web";
import { mtaStsPolicy } from "../../components/dns/records";
import { renderApplyScript, secretRef, stepLockPath, type Step } from "../../components/steps";
import { readStatic } from "../../components/templates";
import { validRawConfig } from "../fixtures/config";
import { SERVICE, stepsOf, webHosts } from "../../components/services";
import { NEXTCLOUD_ROOT } from "../../components/paths";
import { clientSettings } from "../../components/mail-server";
import { shellAssignments } from "../../components/shell";
import { needsRoot } from "../harness/needs";

function model(change: (raw: Record<string, any>) => void = () => {}): Model {
    const raw = validRawConfig();
    change(raw);
    return parseConfig(raw, { stack: "test" }).model;
}

const withNextcloud = (host?: string) =>
    model((raw) => {
        raw.nextcloud = { enabled: true, version: "31.0.9", sha256: "ab".repeat(32), ...(host ? { host } : {}) };
    });

function webStep(m: Model): Step {
    const steps = stepsOf(SERVICE.web, m);
    assert.equal(steps.length, 1);
    return steps[0];
}

function fileOf(step: Step, path: string): string {
    const f = step.files.find((x) => x.path === path);
    assert.ok(f, `${step.name} has no file ${path}`);
    return f.content;
}

interface VirtualHost {
    readonly site: string;
    readonly addresses: string[];
    readonly names: string[];
    readonly body: string;
}

/** The <VirtualHost> blocks of the rendered sites, with their addresses and names. */
function virtualHosts(m: Model): VirtualHost[] {
    const out: VirtualHost[] = [];
    for (const site of renderApacheSites(m, webHosts(m))) {
        for (const match of site.content.matchAll(/^<VirtualHost ([^>]+)>\n([\s\S]*?)^<\/VirtualHost>/gm)) {
            const body = match[2];
            const names = [...body.matchAll(/^\s*Server(?:Name|Alias)\s+(\S+)/gm)].map((n) => n[1]);
            out.push({ site: site.name, addresses: match[1].trim().split(/\s+/), names, body });
        }
    }
    return out;
}

describe("web: step shape", () => {
    it("web runs after base and tls; certbot after web", () => {
        assert.deepEqual(webStep(model()).after, ["base", "tls"]);
        assert.deepEqual(stepsOf(SERVICE.certbot, model()).map((s) => [s.name, s.after]), [["certbot", ["web"]]]);
    });

    it("apply scripts are valid bash (bash -n)", () => {
        for (const step of [webStep(withNextcloud("cloud.example.org")), ...stepsOf(SERVICE.certbot, model())]) {
            execFileSync("bash", ["-n"], { input: renderApplyScript(step) });
        }
    });

    it("installs Apache with PHP-FPM, never mod_php", () => {
        for (const choice of DB_ADMINS) {
            const pkgs = webStep(model((raw) => (raw.dbAdmin = choice))).packages ?? [];
            assert.ok(pkgs.includes("apache2") && pkgs.includes("php8.4-fpm"), choice);
            assert.ok(!pkgs.some((p) => p.startsWith("libapache2-mod-php") || p === "php-cgi"), choice);
        }
    });
});

describe("apache: names and vhosts", () => {
    // The web hosts of the fixture, written out: mailHost (always one), MTA-STS and autoconfig of
    // both domains, the webmail, and the groupware's host when it has a name of its own.
    const FIXTURE_WEB_HOSTS = ["autoconfig.example.com", "autoconfig.example.org", "mta-sts.example.com", "mta-sts.example.org", "mx1.example.org", "webmail.example.org"];
    for (const [label, m, webNames] of [
        ["groupware on mailHost, nextcloud off", model(), FIXTURE_WEB_HOSTS],
        ["groupware on its own name, nextcloud on", withNextcloud("cloud.example.org"), [...FIXTURE_WEB_HOSTS, "cloud.example.org"].sort()],
    ] as const) {
        it(`every web host has exactly one HTTPS vhost (${label})`, () => {
            const https = virtualHosts(m).filter((v) => v.addresses.includes("*:443"));
            const names = https.flatMap((v) => v.names);
            assert.deepEqual([...names].sort(), webNames);
            assert.equal(new Set(names).size, names.length, "a name is served by two vhosts");
        });

        it(`port 80 answers every web host and redirects all but ACME challenges (${label})`, () => {
            const http = virtualHosts(m).filter((v) => v.addresses.includes("*:80"));
            assert.equal(http.length, 1);
            assert.deepEqual([...http[0].names].sort(), webNames);
            assert.match(http[0].body, new RegExp(`Alias /\\.well-known/acme-challenge/ ${ACME_WEBROOT}/\\.well-known/acme-challenge/`));
            assert.match(http[0].body, /RewriteCond %\{REQUEST_URI\} !\^\/\\\.well-known\/acme-challenge\//);
            assert.match(http[0].body, /RewriteRule \^ https:\/\/%\{SERVER_NAME\}%\{REQUEST_URI\} \[R=301,L\]/);
        });

        it(`every HTTPS vhost takes the shared TLS and header settings (${label})`, () => {
            for (const v of virtualHosts(m).filter((x) => x.addresses.includes("*:443"))) {
                assert.match(v.body, /Include \/etc\/apache2\/ispmail\/https-vhost\.conf/, v.site);
            }
        });
    }

    it("the groupware vhost is loaded first among *:443, so it is the default for unknown names", () => {
        const m = withNextcloud("cloud.example.org");
        const https = virtualHosts(m).filter((v) => v.addresses.includes("*:443"));
        assert.equal(https[0].names[0], "cloud.example.org");
        const order = renderApacheSites(m, webHosts(m)).map((s) => s.name);
        assert.deepEqual(order, [...order].sort(), "site names sort in load order (sites-enabled/ is read alphabetically)");
    });

    it("with Nextcloud: its docroot, .htaccess honoured, config/ and data/ denied, DAV discovery redirects", () => {
        const cloud = virtualHosts(withNextcloud()).find((v) => v.site === "ispmail-10-groupware")!;
        assert.match(cloud.body, new RegExp(`DocumentRoot ${NEXTCLOUD_ROOT}\\n`));
        assert.match(cloud.body, /AllowOverride All/);
        assert.match(cloud.body, new RegExp(`<Directory ${NEXTCLOUD_ROOT}/config>\\s+Require all denied`));
        assert.match(cloud.body, new RegExp(`<Directory ${NEXTCLOUD_ROOT}/data>\\s+Require all denied`));
        assert.match(cloud.body, /Redirect 301 \/\.well-known\/caldav \/remote\.php\/dav\//);
        assert.match(cloud.body, /Redirect 301 \/\.well-known\/carddav \/remote\.php\/dav\//);
    });

    it("without Nextcloud: a static placeholder page, no PHP app, no .htaccess", () => {
        const m = model();
        const groupware = virtualHosts(m).find((v) => v.site === "ispmail-10-groupware")!;
        assert.match(groupware.body, new RegExp(`DocumentRoot ${PLACEHOLDER_ROOT}\\n`));
        assert.doesNotMatch(groupware.body, /nextcloud/i);
        assert.doesNotMatch(groupware.body, /AllowOverride All/);
        assert.match(fileOf(webStep(m), `${PLACEHOLDER_ROOT}/index.html`), /<h1>mx1\.example\.org<\/h1>/);
    });

});

describe("database admin (ispmail:dbAdmin): on the loopback vhost only", () => {
    const LOOPBACK = [`127.0.0.1:${DB_ADMIN_PORT}`, `[::1]:${DB_ADMIN_PORT}`].sort();
    const withAdmin = (choice: string) => model((raw) => (raw.dbAdmin = choice));
    const listens = (m: Model) => renderApacheSites(m, webHosts(m)).flatMap((s) => [...s.content.matchAll(/^Listen (\S+)/gm)].map((l) => l[1]));
    /** The Apache confs the rendered vhosts include. */
    const includes = (v: VirtualHost) => [...v.body.matchAll(/^\s*Include (\S+)/gm)].map((i) => i[1]);
    const ADMIN_CONF = (name: string) => `/etc/apache2/conf-available/${name}.conf`;

    it("phpPgAdmin is the default, as in the tutorial", () => {
        assert.equal(model().dbAdmin, "phppgadmin");
        assert.deepEqual(webStep(model()), webStep(withAdmin("phppgadmin")));
    });

    for (const [choice, app, other] of [
        ["phppgadmin", "phppgadmin", "adminer"],
        ["adminer", "adminer", "phppgadmin"],
    ] as const) {
        it(`${choice}: its Debian package is installed after php8.4-fpm (apt then takes FPM for "libapache2-mod-php | php-cgi | php-fpm"), the other admin's is not`, () => {
            const pkgs = webStep(withAdmin(choice)).packages ?? [];
            assert.ok(pkgs.includes(app));
            assert.ok(!pkgs.includes(other), `${other} is not installed for ${choice}`);
            assert.ok(pkgs.indexOf("php8.4-fpm") < pkgs.indexOf(app));
            assert.ok(pkgs.includes("php8.4-pgsql"), "PostgreSQL for PHP");
        });

        it(`${choice}: served at ${DB_ADMIN_APPS[choice].path} only on 127.0.0.1 and [::1] port ${DB_ADMIN_PORT}, in no public vhost`, () => {
            const m = withAdmin(choice);
            assert.deepEqual(listens(m).sort(), LOOPBACK, "Apache listens on the port only on the loopback addresses");
            const vhosts = virtualHosts(m);
            const loopback = vhosts.filter((v) => v.site === DB_ADMIN_SITE);
            assert.equal(loopback.length, 1);
            assert.deepEqual(loopback[0].addresses.sort(), LOOPBACK);
            assert.deepEqual(includes(loopback[0]), [ADMIN_CONF(app)], `the loopback vhost includes ${app}.conf and nothing else`);
            assert.match(loopback[0].body, /<Directory \/var\/www\/localhost>[\s\S]*?Require local/);
            for (const v of vhosts.filter((x) => x.site !== DB_ADMIN_SITE)) {
                assert.doesNotMatch(v.body, /phppgadmin|adminer/i, `${v.site} mentions a database admin`);
                assert.ok(v.addresses.every((a) => a === "*:80" || a === "*:443"), `${v.site}: ${v.addresses.join(" ")}`);
            }
            const index = fileOf(webStep(m), `${DB_ADMIN_ROOT}/index.html`);
            assert.match(index, new RegExp(`<a href="${DB_ADMIN_APPS[choice].path}">${DB_ADMIN_APPS[choice].title}</a>`));
        });
    }

    it("none: no admin package, no loopback vhost, nothing listens on the port, no admin files", () => {
        const m = withAdmin("none");
        const step = webStep(m);
        assert.ok(!(step.packages ?? []).some((p) => p === "phppgadmin" || p === "adminer"));
        assert.deepEqual(listens(m), []);
        assert.ok(!renderApacheSites(m, webHosts(m)).some((s) => s.name === DB_ADMIN_SITE));
        assert.ok(!virtualHosts(m).some((v) => /phppgadmin|adminer/i.test(v.body)));
        assert.deepEqual(step.files.filter((f) => f.path.startsWith(`${DB_ADMIN_ROOT}/`) || f.path.startsWith("/etc/phppgadmin/")), []);
        assert.match(step.description, /no database admin/);
    });

    it("a switch leaves nothing of the previous admin reachable: both packages' global confs are disabled whatever the choice, an unrendered site is removed", () => {
        const script = readStatic("apache/apply.sh");
        // Debian's phppgadmin and adminer enable conf-enabled/<name>.conf, which serves them on every vhost.
        assert.match(script, /^apache_toggle "a2disconf -q" "disabled apache conf" \/etc\/apache2\/conf-enabled conf absent [^\n]*\$DB_ADMIN_CONFS$/m);
        // apache_toggle itself: one a2disconf call for exactly the enabled ones, an action for each.
        const dir = mkdtempSync(join(tmpdir(), "ispmail-apache-toggle-"));
        try {
            for (const name of ["phppgadmin", "security"]) writeFileSync(join(dir, `${name}.conf`), "");
            const fn = /^apache_toggle\(\) \{\n[\s\S]*?^\}$/m.exec(script)![0];
            const out = execFileSync("bash", ["-c", `exec 2>&1\n${fn}\napache_action() { echo "action: $1"; }\nfake() { echo "call: $*" >&2; }\napache_toggle fake "disabled apache conf" ${dir} conf absent security serve-cgi-bin adminer phppgadmin\napache_toggle fake "enabled apache conf" ${dir} conf present security ispmail`], { encoding: "utf8" });
            assert.deepEqual(out.trim().split("\n"), ["call: security phppgadmin", "action: disabled apache conf security", "action: disabled apache conf phppgadmin", "call: ispmail", "action: enabled apache conf ispmail"]);
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
        assert.match(script, /^for path in \/etc\/apache2\/sites-available\/ispmail-\*\.conf; do$/m, "sites no longer rendered (the loopback vhost for none) are removed");
        for (const choice of DB_ADMINS) {
            const vars = execFileSync("bash", ["-c", `${webStep(withAdmin(choice)).script.split("\n").filter((l) => /^[A-Z_]+=/.test(l)).join("\n")}\nprintf '%s' "$DB_ADMIN_CONFS"`], { encoding: "utf8" });
            assert.deepEqual(vars.split(" ").sort(), ["adminer", "phppgadmin"], choice);
        }
    });

    describe("phpPgAdmin's config.inc.php", () => {
        const conf = fileOf(webStep(model()), PHPPGADMIN_CONFIG);
        /** The PHP literal assigned to $conf[...] (keys as in the file, e.g. "['servers'][0]['host']"). */
        const setting = (key: string) => {
            const all = [...conf.matchAll(new RegExp(`^\\$conf${key.replace(/[[\]]/g, "\\$&")} = (.+);$`, "gm"))];
            assert.equal(all.length, 1, `${key} is set once`);
            return all[0][1];
        };

        it("is the real file from files/dbadmin, world-readable and holding no secret", () => {
            const f = webStep(model()).files.find((x) => x.path === PHPPGADMIN_CONFIG)!;
            assert.equal(f.content, readStatic("dbadmin/phppgadmin.config.inc.php"));
            assert.deepEqual([f.owner, f.group, f.mode, f.secret], ["root", "root", "0644", undefined]);
            assert.doesNotMatch(conf, /@@secret/);
            assert.ok(!webStep(withAdmin("adminer")).files.some((x) => x.path === PHPPGADMIN_CONFIG));
        });

        it("connects to 127.0.0.1:5432 over TCP, where pg_hba.conf asks every role but postgres for its password (SCRAM)", () => {
            assert.equal(setting("['servers'][0]['host']"), "'127.0.0.1'");
            assert.equal(setting("['servers'][0]['port']"), "5432");
            assert.equal(setting("['servers'][0]['defaultdb']"), "'postgres'");
            const hba = readStatic("postgresql/pg_hba.conf")
                .split("\n")
                .filter((l) => l.trim() && !l.startsWith("#"))
                .map((l) => l.trim().split(/\s+/));
            // First match wins: postgres is rejected on loopback, every other role needs its password.
            const loopback = hba.filter((f) => f[0] === "host" && f[3] === "127.0.0.1/32");
            assert.deepEqual(loopback.map((f) => [f[2], f[4]]), [["postgres", "reject"], ["all", "scram-sha-256"]]);
        });

        it("refuses passwordless and superuser logins (extra_login_security on, unlike the tutorial), shows every database (mailserver belongs to postgres)", () => {
            assert.equal(setting("['extra_login_security']"), "true");
            assert.equal(setting("['extra_session_security']"), "true");
            assert.equal(setting("['owned_only']"), "false");
            assert.equal(setting("['max_chars']"), "120", "the tutorial's");
        });

        it("has the format version phpPgAdmin 7.14 expects (19; it refuses below 16)", () => {
            assert.equal(setting("['version']"), "19");
            assert.match(conf, /^<\?php\n/);
            assert.doesNotMatch(conf, /\?>\s*$/, "no closing tag: nothing can follow it into the output");
        });
    });
});

describe("apache: TLS and headers", () => {
    const conf = readStatic("apache/ispmail.conf");
    const directive = (name: string) => conf.match(new RegExp(`^${name}\\s+(.+)$`, "m"))?.[1].trim();

    it("offers TLS 1.2 and 1.3 only", () => {
        assert.equal(directive("SSLProtocol"), "-all +TLSv1.2 +TLSv1.3");
    });

    it("offers only forward-secret AEAD ciphers (Mozilla intermediate)", () => {
        const ciphers = directive("SSLCipherSuite")!.split(":");
        assert.ok(ciphers.length >= 6);
        for (const c of ciphers) {
            assert.match(c, /^(ECDHE|DHE)-/, `${c}: no forward secrecy`);
            assert.match(c, /(GCM|CHACHA20-POLY1305)/, `${c}: not AEAD`);
            assert.doesNotMatch(c, /(CBC|RC4|3DES|DES-|NULL|EXPORT|MD5|anon)/, c);
        }
        assert.equal(directive("SSLHonorCipherOrder"), "off");
        assert.equal(directive("SSLSessionTickets"), "off");
    });

    it("HTTPS answers carry HSTS and the security headers", () => {
        const https = readStatic("apache/https-vhost.conf");
        const header = (name: string) => https.match(new RegExp(`^Header always set ${name} "([^"]+)"`, "m"))?.[1];
        const hsts = header("Strict-Transport-Security");
        assert.ok(hsts && Number(/max-age=(\d+)/.exec(hsts)?.[1]) >= 31536000, `HSTS max-age of at least a year, got ${hsts}`);
        assert.equal(header("X-Content-Type-Options"), "nosniff");
        assert.equal(header("Referrer-Policy"), "no-referrer");
        assert.equal(header("X-Frame-Options"), "SAMEORIGIN");
        assert.match(https, /^SSLCertificateFile\s+\/etc\/ispmail\/tls\/fullchain\.pem$/m);
        assert.match(https, /^SSLCertificateKeyFile\s+\/etc\/ispmail\/tls\/privkey\.pem$/m);
    });
});

describe("mta-sts", () => {
    it("serves exactly the policy whose id is in DNS", () => {
        const m = model();
        assert.equal(fileOf(webStep(m), MTA_STS_POLICY_PATH), mtaStsPolicy(m).text);
        assert.match(mtaStsPolicy(m).text, /^version: STSv1\r\nmode: enforce\r\nmx: mx1\.example\.org\r\nmax_age: 604800\r\n$/);
    });

    it("a changed mode changes the served text (and with it the DNS id)", () => {
        const enforce = model();
        const testing = model((raw) => (raw.mtaSts = { mode: "testing" }));
        assert.notEqual(fileOf(webStep(testing), MTA_STS_POLICY_PATH), fileOf(webStep(enforce), MTA_STS_POLICY_PATH));
        assert.match(fileOf(webStep(testing), MTA_STS_POLICY_PATH), /^mode: testing\r$/m);
        assert.notEqual(mtaStsPolicy(testing).id, mtaStsPolicy(enforce).id);
    });

    it("is served as text/plain on mta-sts.<domain> of every domain, nothing else there", () => {
        const v = virtualHosts(model()).find((x) => x.site === "ispmail-30-mta-sts")!;
        assert.deepEqual(v.names.sort(), ["mta-sts.example.com", "mta-sts.example.org"]);
        assert.match(v.body, /<Files "mta-sts\.txt">\s+ForceType text\/plain/);
        assert.match(v.body, /RewriteRule !\^\/\\\.well-known\/mta-sts\\\.txt\$ - \[R=404,L\]/);
    });
});

describe("autoconfig and autodiscover", () => {
    const parser = new XMLParser({ ignoreAttributes: false, isArray: (name) => ["domain", "outgoingServer"].includes(name) });

    it("Thunderbird's config-v1.1.xml parses and names IMAP 993/SSL, SMTP 465/SSL and 587/STARTTLS", () => {
        const xml = renderAutoconfigXml(model());
        assert.equal(XMLValidator.validate(xml), true);
        const provider = parser.parse(xml).clientConfig.emailProvider;
        assert.deepEqual(provider.domain, ["example.org", "example.com"]);
        const imap = provider.incomingServer;
        assert.deepEqual([imap["@_type"], imap.hostname, imap.port, imap.socketType, imap.username], ["imap", "mx1.example.org", 993, "SSL", "%EMAILADDRESS%"]);
        const smtp = provider.outgoingServer.map((s: any) => [s["@_type"], s.hostname, s.port, s.socketType, s.username]);
        assert.deepEqual(smtp, [
            ["smtp", "mx1.example.org", 465, "SSL", "%EMAILADDRESS%"],
            ["smtp", "mx1.example.org", 587, "STARTTLS", "%EMAILADDRESS%"],
        ]);
    });

    it("the stack output clientSettings says what autoconfig and autodiscover tell mail clients (host, ports, TLS)", () => {
        const m = model();
        const settings = clientSettings(m);
        const provider = parser.parse(renderAutoconfigXml(m)).clientConfig.emailProvider;
        const socket = (t: string) => (t === "SSL" ? "TLS" : t);
        const imap = provider.incomingServer;
        assert.deepEqual({ host: imap.hostname, port: imap.port, security: socket(imap.socketType) }, settings.imap);
        const [implicit, starttls] = provider.outgoingServer.map((o: any) => ({ host: o.hostname, port: o.port, security: socket(o.socketType) }));
        assert.deepEqual(implicit, settings.smtp);
        assert.deepEqual(starttls, settings.smtpStartTls);
        const php = renderAutodiscoverPhp(m);
        assert.match(php, new RegExp(`^const MAIL_HOST = '${settings.imap.host.replace(/\./g, "\\.")}';$`, "m"));
        assert.match(php, new RegExp(`protocol\\('IMAP', ${settings.imap.port}, 'SSL'`));
        assert.match(php, new RegExp(`protocol\\('SMTP', ${settings.smtp.port}, 'SSL'`));
    });

    it("is the file the step installs, reachable under /mail and /.well-known/autoconfig/mail", () => {
        const m = model();
        assert.equal(fileOf(webStep(m), AUTOCONFIG_XML_PATH), renderAutoconfigXml(m));
        const v = virtualHosts(m).find((x) => x.site === "ispmail-40-autoconfig")!;
        assert.deepEqual(v.names.sort(), ["autoconfig.example.com", "autoconfig.example.org"]);
        assert.match(v.body, new RegExp(`Alias /\\.well-known/autoconfig/mail/config-v1\\.1\\.xml ${AUTOCONFIG_XML_PATH.replace(/\./g, "\\.")}`));
        assert.match(v.body, /RewriteRule \^\/autodiscover\/autodiscover\\\.xml\$ \S+autodiscover\.php \[NC,L\]/);
    });

    it("Outlook's autodiscover responder names the same host and only our domains", () => {
        const php = renderAutodiscoverPhp(model());
        assert.match(php, /^const MAIL_HOST = 'mx1\.example\.org';$/m);
        assert.match(php, /^const MAIL_DOMAINS = \['example\.org', 'example\.com'\];$/m);
        assert.match(php, /protocol\('IMAP', 993, 'SSL', \$login\)/);
        assert.match(php, /protocol\('SMTP', 465, 'SSL', \$login\)/);
        assert.match(php, /protocol\('SMTP', 587, 'TLS', \$login\)/);
    });
});

describe("certbot", () => {
    it("asks for one certificate naming mailHost and every web host, each once", () => {
        const m = withNextcloud("cloud.example.org");
        // mailHost, Nextcloud's host, MTA-STS and autoconfig of both domains: sorted, each once.
        assert.deepEqual(certificateDomains(m, webHosts(m)), ["autoconfig.example.com", "autoconfig.example.org", "cloud.example.org", "mta-sts.example.com", "mta-sts.example.org", "mx1.example.org", "webmail.example.org"]);
        assert.deepEqual(certificateDomains(m, ["mx1.example.org", "b.example.org", "a.example.org", "b.example.org"]), ["a.example.org", "b.example.org", "mx1.example.org"]);
    });

    it("passes the stack's ACME directory, contact address, webroot and the first TLS key to the script", () => {
        const m = model((raw) => {
            raw.acme = { directoryUrl: "https://198.51.100.1:14000/dir" };
            raw.tlsKeys = ["tls2", "tls1"];
        });
        const [step] = stepsOf(SERVICE.certbot, m);
        const conf = step.files.find((f) => f.path === CERTIFICATE_CONF)!;
        const vars = execFileSync("bash", ["-c", `${conf.content}\nprintf '%s\\n' "$CERT_CN" "$ACME_SERVER" "$ACME_EMAIL" "$ACME_WEBROOT" "$CERT_DOMAINS" "$KEY"`], { encoding: "utf8" });
        assert.deepEqual(vars.trim().split("\n"), ["mx1.example.org", "https://198.51.100.1:14000/dir", "postmaster@example.org", ACME_WEBROOT, "autoconfig.example.com autoconfig.example.org mta-sts.example.com mta-sts.example.org mx1.example.org webmail.example.org", CERTIFICATE_KEY]);
        // Each daemon reading the certificate is reloaded under the lock of the step that configures it.
        const reloads = execFileSync("bash", ["-c", `${conf.content}\nprintf '%s' "$RELOADS"`], { encoding: "utf8" });
        assert.equal(reloads, `postfix=${stepLockPath(SERVICE.postfix.name)} dovecot=${stepLockPath(SERVICE.dovecot.name)} apache2=${stepLockPath(SERVICE.web.name)}`);
        // The key in use is the first listed, delivered by the tls step as a secret (root only);
        // both are kept by the stack.
        const [tlsStep] = stepsOf(SERVICE.tls, m);
        const key = tlsStep.files.find((f) => f.path === CERTIFICATE_KEY)!;
        assert.deepEqual([key.content, key.mode, key.secret], [secretRef(tlsKeySecret("tls2")), "0600", true]);
        assert.deepEqual(
            SERVICE.tls.secrets!(m).map((x) => [x.name, x.kind, x.stateful]),
            [
                ["tls:tls2", "tls-rsa2048", true],
                ["tls:tls1", "tls-rsa2048", true],
            ],
        );
        assert.equal(step.files.find((f) => f.path === CERTIFICATE_SCRIPT)?.mode, "0755");
    });

    it("renews from its own timer, and a failed renewal mails the administrator", () => {
        const [step] = stepsOf(SERVICE.certbot, model());
        const unit = step.files.find((f) => f.path === "/etc/systemd/system/ispmail-certificate.service")!;
        assert.match(unit.content, /^OnFailure=ispmail-alert@%n\.service$/m);
        assert.match(unit.content, /^ExecStart=\/usr\/local\/sbin\/ispmail-certificate$/m);
        const timer = step.files.find((f) => f.path === "/etc/systemd/system/ispmail-certificate.timer")!;
        assert.match(timer.content, /^OnCalendar=\*-\*-\* 00,12:00:00$/m);
        assert.match(timer.content, /^Persistent=true$/m);
        // systemd reads changed units only after daemon-reload, which the script runs when they changed.
        assert.match(step.script, /^daemon_reload_when_changed \/etc\/systemd\/system\/ispmail-certificate\.service \/etc\/systemd\/system\/ispmail-certificate\.timer$/m);
    });

    it("shell variables keep any address as it is (quotes, $, backticks)", () => {
        const nasty = "o'brien$(touch /tmp/x)`id`@example.org";
        const out = execFileSync("bash", ["-c", `${shellAssignments({ ACME_EMAIL: nasty })}\nprintf '%s' "$ACME_EMAIL"`], { encoding: "utf8" });
        assert.equal(out, nasty);
    });

    /**
     * ispmail-certificate against a stand-in CA: a fake `certbot` that signs the CSR it is given with
     * a throwaway CA (as the ACME server would, names and key from the CSR) and logs its calls, and a
     * fake `systemctl` for which apache2 and dovecot run.
     */
    function certificateRig() {
        const dir = mkdtempSync(join(tmpdir(), "ispmail-cert-"));
        const bin = join(dir, "bin");
        mkdirSync(bin);
        const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "ignore"] });
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=stand-in CA", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2");
        const newKey = (name: string) => (openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", name), join(dir, name));
        const key = newKey("key.pem");
        writeFileSync(
            join(bin, "certbot"),
            `#!/bin/bash
echo "$*" >> ${dir}/certbot.calls
while [ $# -gt 0 ]; do case "$1" in --csr) csr=$2;; --cert-path) cert=$2;; --chain-path) chain=$2;; --fullchain-path) full=$2;; esac; shift; done
csr_key=\${FAKE_CA_SIGNS_KEY:-}
if [ -n "$csr_key" ]; then openssl req -new -key "$csr_key" -subj /CN=other -out ${dir}/other.csr 2>/dev/null; csr=${dir}/other.csr; fi
openssl x509 -req -in "$csr" -CA ${dir}/ca.pem -CAkey ${dir}/ca.key -days \${FAKE_CA_DAYS:-90} -copy_extensions copy -out "$cert" 2>/dev/null
cp ${dir}/ca.pem "$chain"; cat "$cert" ${dir}/ca.pem > "$full"
`,
            { mode: 0o755 },
        );
        // Counts the script's own openssl runs (the rig's CA is made above, before this exists).
        writeFileSync(join(bin, "openssl"), `#!/bin/sh\necho "$1" >> ${dir}/openssl.calls\nexec /usr/bin/openssl "$@"\n`, { mode: 0o755 });
        writeFileSync(join(bin, "systemctl"), `#!/bin/sh\necho "$*" >> ${dir}/systemctl.calls\ncase "$*" in "is-active --quiet apache2"|"is-active --quiet dovecot"|reload*) exit 0;; *) exit 3;; esac\n`, { mode: 0o755 });
        const conf = join(dir, "certificate.conf");
        const lock = (stepName: string) => stepLockPath(stepName, join(dir, "run"));
        const configure = (domains: string) =>
            writeFileSync(
                conf,
                shellAssignments({ CERT_CN: "mx1.example.org", CERT_DOMAINS: domains, ACME_SERVER: "https://acme.invalid/dir", ACME_EMAIL: "postmaster@example.org", ACME_WEBROOT: dir, KEY: key, RELOADS: `postfix=${lock("postfix")} dovecot=${lock("dovecot")} apache2=${lock("web")}` }),
            );
        configure("mta-sts.example.org mx1.example.org");
        const tls = join(dir, "tls");
        const run = (args: string[] = [], env: Record<string, string> = {}) => {
            for (const f of ["certbot.calls", "systemctl.calls", "openssl.calls"]) writeFileSync(join(dir, f), "");
            const out = execFileSync("bash", [join(__dirname, "../../files/certbot/ispmail-certificate.sh"), ...args], {
                env: { ...process.env, ...env, PATH: `${bin}:${process.env.PATH}`, ISPMAIL_CERTIFICATE_CONF: conf, ISPMAIL_TLS_DIR: tls, ISPMAIL_CERTIFICATE_STATE: join(dir, "state") },
                encoding: "utf8",
                stdio: ["ignore", "pipe", "pipe"],
            });
            const lines = (f: string) => readFileSync(join(dir, f), "utf8").trim().split("\n").filter(Boolean);
            return { out: out.trim(), certbot: lines("certbot.calls"), systemctl: lines("systemctl.calls"), openssl: lines("openssl.calls").length };
        };
        const installed = () => new X509Certificate(readFileSync(join(tls, "fullchain.pem")));
        const keyId = (pem: string | Buffer) => createPublicKey(pem).export({ type: "spki", format: "der" }).toString("base64");
        return { dir, key, newKey, configure, run, tls, installed, keyId, lock, conf, bin };
    }

    it("ispmail-certificate: the certificate carries the configured key, through issuance, renewal and a key change", { skip: needsRoot("the script installs the certificate as root:ssl-cert") }, () => {
        const rig = certificateRig();
        const first = rig.run();
        assert.match(first.out, /^installed a certificate for mta-sts\.example\.org mx1\.example\.org \(no ACME certificate yet\); reloaded: dovecot apache2$/);
        assert.equal(first.certbot.length, 1);
        assert.match(first.certbot[0], /^certonly --non-interactive --agree-tos --no-eff-email --email postmaster@example\.org --server https:\/\/acme\.invalid\/dir --webroot --webroot-path \S+ --csr /);
        const cert = rig.installed();
        assert.equal(rig.keyId(cert.publicKey.export({ type: "spki", format: "pem" })), rig.keyId(readFileSync(rig.key)), "the certificate is for the configured key");
        assert.deepEqual((cert.subjectAltName ?? "").split(", ").sort(), ["DNS:mta-sts.example.org", "DNS:mx1.example.org"]);
        assert.equal(readFileSync(join(rig.tls, "privkey.pem"), "utf8"), readFileSync(rig.key, "utf8"));
        assert.equal(statSync(join(rig.tls, "fullchain.pem")).mode & 0o777, 0o644);
        assert.equal(statSync(join(rig.tls, "privkey.pem")).mode & 0o777, 0o640);
        assert.deepEqual(readdirSync(rig.tls).sort(), ["fullchain.pem", "privkey.pem"], "no temporary files left");

        // Nothing due: no CA request, no reload, no output, and not even openssl (what the last
        // check found is unchanged: the same files, names, server, and the renewal not yet due).
        assert.deepEqual(rig.run(), { out: "", certbot: [], systemctl: [], openssl: 0 });
        // A certificate file that changed under it is checked again in full (and found right).
        writeFileSync(join(rig.tls, "fullchain.pem"), readFileSync(join(rig.tls, "fullchain.pem"), "utf8") + "\n");
        const rechecked = rig.run();
        assert.deepEqual({ ...rechecked, openssl: rechecked.openssl > 0 }, { out: "", certbot: [], systemctl: [], openssl: true });
        assert.equal(rig.run().openssl, 0);

        // A forced renewal: a new certificate, the same key (its TLSA stays valid).
        const forced = rig.run(["--force"]);
        assert.match(forced.out, /\(renewal forced\)/);
        assert.notEqual(rig.installed().serialNumber, cert.serialNumber);
        assert.equal(rig.keyId(rig.installed().publicKey.export({ type: "spki", format: "pem" })), rig.keyId(readFileSync(rig.key)));

        // Due for renewal: a certificate that expires within 30 days is renewed.
        rig.run(["--force"], { FAKE_CA_DAYS: "20" });
        assert.match(rig.run().out, /\(expires within 30 days\)/);

        // A name more, then a new key (the rollover's switch): each asks for a new certificate.
        rig.configure("autoconfig.example.org mta-sts.example.org mx1.example.org");
        assert.match(rig.run().out, /\(names changed \(have: mta-sts\.example\.org mx1\.example\.org\)\)/);
        writeFileSync(rig.key, readFileSync(rig.newKey("next.pem")));
        assert.match(rig.run().out, /\(the configured key changed\)/);
        assert.equal(rig.keyId(rig.installed().publicKey.export({ type: "spki", format: "pem" })), rig.keyId(readFileSync(rig.key)));
    });

    it("ispmail-certificate: Dovecot is reloaded only when the dovecot step's run (its lock) is over", { skip: needsRoot("the script installs the certificate as root:ssl-cert") }, async () => {
        const rig = certificateRig();
        mkdirSync(join(rig.dir, "run"));
        // The dovecot step's run, as remoteApplyCommand holds it: flock on the step's lock file.
        const step = spawn("flock", [rig.lock("dovecot"), "sh", "-c", `sleep 0.8; echo "dovecot step done" >> ${rig.dir}/systemctl.calls`]);
        const stepDone = new Promise((resolve) => step.once("close", resolve));
        await new Promise((resolve) => setTimeout(resolve, 200));
        const out = await new Promise<string>((resolve, reject) =>
            execFile(
                "bash",
                [join(__dirname, "../../files/certbot/ispmail-certificate.sh")],
                { env: { ...process.env, PATH: `${rig.bin}:${process.env.PATH}`, ISPMAIL_CERTIFICATE_CONF: rig.conf, ISPMAIL_TLS_DIR: rig.tls, ISPMAIL_CERTIFICATE_STATE: join(rig.dir, "state") } },
                (e, stdout, stderr) => (e ? reject(new Error(stderr)) : resolve(stdout)),
            ),
        );
        await stepDone;
        assert.match(out, /reloaded: dovecot apache2$/m);
        const calls = readFileSync(join(rig.dir, "systemctl.calls"), "utf8").trim().split("\n");
        assert.ok(calls.indexOf("dovecot step done") >= 0 && calls.indexOf("dovecot step done") < calls.indexOf("reload dovecot"), calls.join(" | "));
    });

    it("ispmail-certificate: a certificate for another key is refused and the installed one stays", { skip: needsRoot("the script installs the certificate as root:ssl-cert") }, () => {
        const rig = certificateRig();
        rig.run();
        const before = rig.installed().serialNumber;
        const other = rig.newKey("other.pem");
        assert.throws(() => rig.run(["--force"], { FAKE_CA_SIGNS_KEY: other }), (e: Error & { stderr?: string }) => /does not carry the configured key; not installed/.test(String(e.stderr)));
        assert.equal(rig.installed().serialNumber, before);
    });
});
