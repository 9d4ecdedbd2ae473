/**
 * The web and certbot steps as rendered data: which names Apache serves and how, the TLS policy,
 * the MTA-STS and autoconfig documents, and the certbot parameters. Pure (no server); the lab
 * e2e tests (test/e2e/web.test.ts) check the same things against the running Apache.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { XMLParser, XMLValidator } from "fast-xml-parser";
import { parseConfig, type Model } from "../../components/config";
import { certificateDomains, CERT_NAME, DEPLOY_HOOK_PATH } from "../../components/services/certbot";
import { ACME_WEBROOT, AUTOCONFIG_XML_PATH, DB_ADMIN_PORT, MTA_STS_POLICY_PATH, PLACEHOLDER_ROOT, renderApacheSites, renderAutoconfigXml, renderAutodiscoverPhp } from "../../components/services/web";
import { mtaStsPolicy } from "../../components/dns/records";
import { renderApplyScript, type Step } from "../../components/steps";
import { readStatic } from "../../components/templates";
import { validRawConfig } from "../fixtures/config";
import { SERVICE, stepsOf, webHosts } from "../../components/services";
import { NEXTCLOUD_ROOT } from "../../components/paths";
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

    it("installs PHP-FPM, not mod_php, and Adminer from Debian", () => {
        const pkgs = webStep(model()).packages ?? [];
        assert.ok(pkgs.includes("php8.4-fpm") && pkgs.includes("adminer") && pkgs.includes("apache2"));
        assert.ok(!pkgs.some((p) => p.startsWith("libapache2-mod-php")));
        // apt satisfies adminer's "php-fpm | mod_php" with what is already in the same request.
        assert.ok(pkgs.indexOf("php8.4-fpm") < pkgs.indexOf("adminer"));
    });
});

describe("apache: names and vhosts", () => {
    // The web hosts of the fixture, written out: mailHost (always one), MTA-STS and autoconfig of
    // both domains, and the groupware's host when it has a name of its own.
    const FIXTURE_WEB_HOSTS = ["autoconfig.example.com", "autoconfig.example.org", "mta-sts.example.com", "mta-sts.example.org", "mx1.example.org"];
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

    it("the database admin listens on the loopback addresses only and is not in any public vhost", () => {
        const sites = renderApacheSites(model(), webHosts(model()));
        const listens = sites.flatMap((s) => [...s.content.matchAll(/^Listen (\S+)/gm)].map((l) => l[1]));
        assert.deepEqual(listens.sort(), [`127.0.0.1:${DB_ADMIN_PORT}`, `[::1]:${DB_ADMIN_PORT}`].sort());
        const dbadmin = virtualHosts(model()).filter((v) => v.body.includes("adminer"));
        assert.equal(dbadmin.length, 1);
        assert.deepEqual(dbadmin[0].addresses.sort(), [`127.0.0.1:${DB_ADMIN_PORT}`, `[::1]:${DB_ADMIN_PORT}`].sort());
        // Debian enables adminer.conf for every vhost; the step turns that off.
        assert.match(readStatic("apache/apply.sh"), /for conf in [^;]*\badminer\b[^;]*; do\n\s+if \[ -e "\/etc\/apache2\/conf-enabled\/\$conf\.conf" \]; then\n\s+a2disconf/);
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
        assert.deepEqual(certificateDomains(m, webHosts(m)), ["autoconfig.example.com", "autoconfig.example.org", "cloud.example.org", "mta-sts.example.com", "mta-sts.example.org", "mx1.example.org"]);
        assert.deepEqual(certificateDomains(m, ["mx1.example.org", "b.example.org", "a.example.org", "b.example.org"]), ["a.example.org", "b.example.org", "mx1.example.org"]);
    });

    it("passes the stack's ACME directory, contact address and webroot to the script", () => {
        const m = model((raw) => (raw.acme = { directoryUrl: "https://198.51.100.1:14000/dir" }));
        const [step] = stepsOf(SERVICE.certbot, m);
        const vars = execFileSync("bash", ["-c", `${step.script.split("\n").filter((l) => /^[A-Z_]+='/.test(l)).join("\n")}\nprintf '%s\\n' "$CERT_NAME" "$ACME_SERVER" "$ACME_EMAIL" "$ACME_WEBROOT" "$CERT_DOMAINS" "$DEPLOY_HOOK"`], {
            encoding: "utf8",
        });
        assert.deepEqual(vars.trim().split("\n"), [CERT_NAME, "https://198.51.100.1:14000/dir", "postmaster@example.org", ACME_WEBROOT, "autoconfig.example.com autoconfig.example.org mta-sts.example.com mta-sts.example.org mx1.example.org", DEPLOY_HOOK_PATH]);
        assert.match(step.script, /certonly --non-interactive --agree-tos --no-eff-email --email "\$ACME_EMAIL"/);
        assert.equal(step.files.find((f) => f.path === DEPLOY_HOOK_PATH)?.mode, "0755");
    });

    it("a failed renewal (certbot.service) mails the administrator (OnFailure= drop-in)", () => {
        const [step] = stepsOf(SERVICE.certbot, model());
        const dropIn = step.files.find((f) => f.path === "/etc/systemd/system/certbot.service.d/ispmail-alert.conf");
        assert.ok(dropIn, "certbot has no drop-in for certbot.service");
        assert.equal(dropIn.mode, "0644");
        assert.match(dropIn.content, /^\[Unit\]\nOnFailure=ispmail-alert@%n\.service$/m);
        // systemd reads a new drop-in only after daemon-reload, which the script runs when it changed.
        assert.match(step.script, /^if changed [^\n]*\/etc\/systemd\/system\/certbot\.service\.d[ ;][^\n]*\n\s+systemctl daemon-reload$/m);
    });

    it("shell variables keep any address as it is (quotes, $, backticks)", () => {
        const nasty = "o'brien$(touch /tmp/x)`id`@example.org";
        const out = execFileSync("bash", ["-c", `${shellAssignments({ ACME_EMAIL: nasty })}\nprintf '%s' "$ACME_EMAIL"`], { encoding: "utf8" });
        assert.equal(out, nasty);
    });

    /** Runs the deploy hook with a fake systemctl (apache2 and dovecot "running"); returns its calls. */
    function runDeployHook(lineage: string, tlsDir: string): string[] {
        const bin = mkdtempSync(join(tmpdir(), "ispmail-bin-"));
        const calls = join(bin, "calls");
        writeFileSync(join(bin, "systemctl"), `#!/bin/sh\necho "$*" >> ${calls}\ncase "$*" in "is-active --quiet apache2"|"is-active --quiet dovecot"|reload*) exit 0;; *) exit 3;; esac\n`, { mode: 0o755 });
        execFileSync("sh", [join(__dirname, "../../files/certbot/deploy-hook.sh")], {
            env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, RENEWED_LINEAGE: lineage, ISPMAIL_TLS_DIR: tlsDir },
            stdio: ["ignore", "ignore", "ignore"],
        });
        return existsSync(calls) ? readFileSync(calls, "utf8").trim().split("\n") : [];
    }

    function fakeLineage(name: string): string {
        const live = join(mkdtempSync(join(tmpdir(), "ispmail-le-")), "live", name);
        mkdirSync(live, { recursive: true });
        writeFileSync(join(live, "fullchain.pem"), "CHAIN\n");
        writeFileSync(join(live, "privkey.pem"), "KEY\n");
        return live;
    }

    it("the deploy hook installs our lineage with the convention's modes and reloads only running daemons", { skip: needsRoot("the hook installs the certificate as root:root (install -o root, chown)") }, () => {
        const tls = join(mkdtempSync(join(tmpdir(), "ispmail-tls-")), "tls");
        const calls = runDeployHook(fakeLineage(CERT_NAME), tls);
        assert.equal(readFileSync(join(tls, "fullchain.pem"), "utf8"), "CHAIN\n");
        assert.equal(readFileSync(join(tls, "privkey.pem"), "utf8"), "KEY\n");
        assert.equal(statSync(join(tls, "fullchain.pem")).mode & 0o777, 0o644);
        assert.equal(statSync(join(tls, "privkey.pem")).mode & 0o777, 0o640);
        assert.deepEqual(readdirSync(tls).sort(), ["fullchain.pem", "privkey.pem"], "no temporary files left");
        assert.deepEqual(calls.filter((c) => c.startsWith("reload")), ["reload dovecot", "reload apache2"]);
        assert.deepEqual(calls.filter((c) => c.startsWith("is-active")).map((c) => c.split(" ").pop()), ["postfix", "dovecot", "apache2"]);
    });

    it("the deploy hook leaves certificates of other lineages alone", () => {
        const tls = join(mkdtempSync(join(tmpdir(), "ispmail-tls-")), "tls");
        const calls = runDeployHook(fakeLineage("someone-else"), tls);
        assert.equal(existsSync(tls), false);
        assert.deepEqual(calls, []);
    });

    it("reloads exactly postfix, dovecot and apache2, and only those that run", () => {
        const hook = readStatic("certbot/deploy-hook.sh");
        assert.match(hook, /for service in postfix dovecot apache2; do\n\s+if systemctl is-active --quiet "\$service"; then\n\s+systemctl reload "\$service"/);
        assert.match(hook, /put "\$lineage\/privkey\.pem" "\$dir\/privkey\.pem" 0640 "\$keygroup"/);
        assert.match(hook, /put "\$lineage\/fullchain\.pem" "\$dir\/fullchain\.pem" 0644 root/);
    });
});
