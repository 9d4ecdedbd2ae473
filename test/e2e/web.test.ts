/**
 * The web side of the server, in the lab, with real clients from the lab network: Apache's
 * redirects and headers, the TLS policy of every TLS port, MTA-STS as a sending MTA sees it
 * (DNS id + HTTPS policy), mail client autoconfiguration, the loopback-only database admin, the
 * ACME certificate and its renewal reaching every daemon, and Nextcloud's SQL user backend
 * queries against the real mail directory.
 */
import assert from "node:assert/strict";
import { Resolver } from "node:dns/promises";
import * as http from "node:http";
import * as https from "node:https";
import { connect as netConnect } from "node:net";
import { readFileSync } from "node:fs";
import { X509Certificate } from "node:crypto";
import { before, describe, it } from "node:test";
import { XMLParser, XMLValidator } from "fast-xml-parser";
import type { Model } from "../../components/config";
import { mtaStsPolicy } from "../../components/dns/records";
import { certificateDomains } from "../../components/services/certbot";
import { renderNextcloudConfig, SQL_RAW_QUERIES } from "../../components/services/nextcloud";
import { DB_ADMIN_PORT } from "../../components/services/web";
import { resolveSecrets, type Step } from "../../components/steps";
import { applyOnGuest, client, guest, LAB, labModelWith, PATHS, labSession } from "../../lab/testkit";
import { SERVICE, stepsOf, webHosts } from "../../components/services";

const MAIL = LAB.mail;
const resolver = new Resolver({ timeout: 3000, tries: 2 });
resolver.setServers([LAB.dns]);

let model: Model;
let secrets: Record<string, string>;

before(async () => {
    ({ model, secrets } = await labSession());
});

interface Answer {
    readonly status: number;
    readonly headers: http.IncomingHttpHeaders;
    readonly body: string;
}

/** The address a client would use for a name: its A record in the lab DNS. */
async function addressOf(host: string): Promise<string> {
    const [a] = await resolver.resolve4(host);
    assert.ok(a, `${host} has no A record in the lab DNS`);
    return a;
}

/** One HTTP(S) request to `host` at the address the lab DNS gives for it, with SNI and Host set. */
async function request(url: string, opts: { method?: string; body?: string; headers?: Record<string, string>; ca?: string } = {}): Promise<Answer> {
    const u = new URL(url);
    const address = await addressOf(u.hostname);
    const lib = u.protocol === "https:" ? https : http;
    return new Promise((resolve, reject) => {
        const req = lib.request(
            {
                host: address,
                port: u.port || (u.protocol === "https:" ? 443 : 80),
                path: u.pathname + u.search,
                method: opts.method ?? "GET",
                headers: { Host: u.host, ...(opts.headers ?? {}) },
                servername: u.hostname,
                // Certificate trust is its own test below; here the content is what matters.
                rejectUnauthorized: opts.ca !== undefined,
                ...(opts.ca ? { ca: opts.ca } : {}),
                timeout: 10_000,
            },
            (res) => {
                const chunks: Buffer[] = [];
                res.on("data", (c: Buffer) => chunks.push(c));
                res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }));
            },
        );
        req.on("timeout", () => req.destroy(new Error(`${url}: timed out`)));
        req.on("error", reject);
        req.end(opts.body);
    });
}

/** Whether a TCP connection to address:port is refused (nothing listens there for us). */
function tcpOutcome(host: string, port: number): Promise<"connected" | "refused" | string> {
    return new Promise((resolve) => {
        const socket = netConnect({ host, port, timeout: 5000 });
        socket.on("connect", () => {
            socket.destroy();
            resolve("connected");
        });
        socket.on("timeout", () => {
            socket.destroy();
            resolve("timeout");
        });
        socket.on("error", (e: NodeJS.ErrnoException) => resolve(e.code === "ECONNREFUSED" ? "refused" : (e.code ?? e.message)));
    });
}

/** The TLS ports of the server and how a client starts TLS on each. */
const TLS_PORTS = [
    { port: 443, starttls: [] as string[], what: "https" },
    { port: 465, starttls: [] as string[], what: "submissions" },
    { port: 587, starttls: ["-starttls", "smtp"], what: "submission (STARTTLS)" },
    { port: 993, starttls: [] as string[], what: "imaps" },
] as const;

/** An openssl s_client handshake against the mail server; `ok` when a session was established. */
async function handshake(port: number, starttls: readonly string[], extra: readonly string[]): Promise<{ ok: boolean; out: string }> {
    const r = await client("openssl", ["s_client", "-connect", `${MAIL.ipv4}:${port}`, "-servername", model.mailHost, ...starttls, ...extra], {
        input: "",
        timeoutMs: 20_000,
    });
    const out = r.stdout + r.stderr;
    // A session that was established names its cipher; "Cipher is (NONE)" / "0000" means no session.
    const cipher = /Cipher is (\S+)/.exec(out)?.[1] ?? /Cipher\s+:\s+(\S+)/.exec(out)?.[1];
    return { ok: r.code === 0 && cipher !== undefined && cipher !== "(NONE)" && cipher !== "0000", out };
}

/** The serial number of the certificate served on a port (hex, upper case). */
async function servedSerial(port: number, starttls: readonly string[]): Promise<string> {
    const r = await client("openssl", ["s_client", "-connect", `${MAIL.ipv4}:${port}`, "-servername", model.mailHost, ...starttls], { input: "", timeoutMs: 20_000 });
    const pem = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout)?.[0];
    assert.ok(pem, `no certificate on port ${port}: ${r.stderr.slice(0, 400)}`);
    return new X509Certificate(pem).serialNumber.toUpperCase();
}

describe("web: apache", () => {
    it("web: plain HTTP is redirected to the same URL over HTTPS, for every web host", async () => {
        for (const host of webHosts(model)) {
            const r = await request(`http://${host}/some/path?x=1`);
            assert.equal(r.status, 301, host);
            assert.equal(r.headers.location, `https://${host}/some/path?x=1`, host);
        }
    });

    it("web: ACME http-01 challenges are served over plain HTTP, not redirected", async () => {
        const token = `e2e-probe-${process.pid}-${Date.now()}`;
        const path = `/var/www/acme/.well-known/acme-challenge/${token}`;
        await guest("mail").execOk(`install -m 0644 /dev/stdin ${path}`, { input: "probe-content\n" });
        try {
            for (const host of [model.mailHost, `mta-sts.${model.domains[1]}`]) {
                const r = await request(`http://${host}/.well-known/acme-challenge/${token}`);
                assert.equal(r.status, 200, host);
                assert.equal(r.body, "probe-content\n", host);
            }
        } finally {
            await guest("mail").exec(`rm -f ${path}`);
        }
    });

    it("web: HTTPS answers carry HSTS and the security headers on every web host", async () => {
        for (const host of webHosts(model)) {
            const r = await request(`https://${host}/`);
            const hsts = String(r.headers["strict-transport-security"] ?? "");
            assert.ok(Number(/max-age=(\d+)/.exec(hsts)?.[1]) >= 31536000, `${host}: HSTS ${hsts}`);
            assert.equal(r.headers["x-content-type-options"], "nosniff", host);
            assert.equal(r.headers["referrer-policy"], "no-referrer", host);
            assert.equal(r.headers["x-frame-options"], "SAMEORIGIN", host);
            assert.equal(r.headers.server, "Apache", `${host}: the server banner names no version`);
        }
    });

    it("web: the groupware host answers (placeholder page while Nextcloud is off)", async () => {
        const r = await request(`https://${model.nextcloud.host}/`);
        assert.equal(r.status, 200);
        if (!model.nextcloud.enabled) assert.match(r.body, new RegExp(`<h1>${model.nextcloud.host.replace(/\./g, "\\.")}</h1>`));
    });

    it("web: apache2ctl configtest passes on the server", async () => {
        const r = await guest("mail").exec("apache2ctl configtest");
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stderr + r.stdout, /Syntax OK/);
    });
});

describe("web: TLS policy on every TLS port", () => {
    // Everything OpenSSL can offer in TLS 1.2 that is not forward-secret AEAD (Mozilla intermediate).
    const WEAK_TLS12 = "aNULL:eNULL:EXPORT:LOW:DES:3DES:RC4:MD5:SHA1:SHA256:SHA384:kRSA:PSK:SRP:@SECLEVEL=0";

    for (const { port, starttls, what } of TLS_PORTS.filter((p) => p.port !== 587)) {
        it(`tls: ${what} (${port}) refuses SSLv3/TLS 1.0/TLS 1.1`, async () => {
            for (const proto of ["-tls1", "-tls1_1"]) {
                const r = await handshake(port, starttls, [proto, "-cipher", "ALL:@SECLEVEL=0"]);
                assert.equal(r.ok, false, `${port} accepted ${proto}:\n${r.out.slice(0, 600)}`);
            }
        });

        it(`tls: ${what} (${port}) speaks TLS 1.2 and 1.3`, async () => {
            assert.ok((await handshake(port, starttls, ["-tls1_2"])).ok, `${port}: no TLS 1.2`);
            assert.ok((await handshake(port, starttls, ["-tls1_3"])).ok, `${port}: no TLS 1.3`);
        });

        it(`tls: ${what} (${port}) accepts no weak TLS 1.2 cipher (CBC, RSA key exchange, RC4, 3DES, NULL, export)`, async () => {
            const r = await handshake(port, starttls, ["-tls1_2", "-cipher", WEAK_TLS12]);
            assert.equal(r.ok, false, `${port} accepted a weak cipher:\n${/Cipher is \S+/.exec(r.out)?.[0] ?? r.out.slice(0, 600)}`);
        });
    }
});

describe("web: mta-sts", () => {
    it("mta-sts: every domain publishes an id in DNS and serves the matching policy as text/plain", async () => {
        const policy = mtaStsPolicy(model);
        for (const domain of model.domains) {
            const txt = (await resolver.resolveTxt(`_mta-sts.${domain}`)).map((parts) => parts.join(""));
            assert.deepEqual(txt, [`v=STSv1; id=${policy.id}`], domain);
            const r = await request(`https://mta-sts.${domain}/.well-known/mta-sts.txt`);
            assert.equal(r.status, 200, domain);
            assert.match(String(r.headers["content-type"]), /^text\/plain/, domain);
            assert.equal(r.body, policy.text, `${domain}: the served policy is not the one whose id is in DNS`);
            // What a sender checks: the policy names the MX the domain publishes.
            const mx = (await resolver.resolveMx(domain)).map((m) => m.exchange);
            assert.match(r.body, new RegExp(`^mx: ${mx[0].replace(/\./g, "\\.")}\\r$`, "m"));
            assert.match(r.body, new RegExp(`^mode: ${model.mtaSts.mode}\\r$`, "m"));
        }
    });

    it("mta-sts: the policy host serves nothing else", async () => {
        assert.equal((await request(`https://mta-sts.${model.domains[0]}/`)).status, 404);
        assert.equal((await request(`https://mta-sts.${model.domains[0]}/.well-known/other.txt`)).status, 404);
    });
});

describe("web: mail client autoconfiguration", () => {
    const parser = new XMLParser({ ignoreAttributes: false, isArray: (name) => ["domain", "outgoingServer", "Protocol"].includes(name) });

    it("autoconfig: Thunderbird's XML parses and names IMAP 993, SMTP 465 and 587 on mailHost", async () => {
        for (const domain of model.domains) {
            for (const path of ["/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"]) {
                const r = await request(`https://autoconfig.${domain}${path}?emailaddress=someone%40${domain}`);
                assert.equal(r.status, 200, `${domain}${path}`);
                assert.match(String(r.headers["content-type"]), /xml/);
                assert.equal(XMLValidator.validate(r.body), true, `${domain}${path} is not well-formed XML`);
                const provider = parser.parse(r.body).clientConfig.emailProvider;
                assert.ok(provider.domain.includes(domain));
                const imap = provider.incomingServer;
                assert.deepEqual([imap.hostname, imap.port, imap.socketType, imap.username], [model.mailHost, 993, "SSL", "%EMAILADDRESS%"]);
                const smtp = provider.outgoingServer.map((s: any) => `${s.hostname}:${s.port}/${s.socketType}`);
                assert.deepEqual(smtp, [`${model.mailHost}:465/SSL`, `${model.mailHost}:587/STARTTLS`]);
            }
        }
    });

    it("autodiscover: Outlook's POST gets the servers with the address as login; GET gets them too", async () => {
        const user = model.users[model.users.length - 1].address;
        const body =
            `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">` +
            `<Request><EMailAddress>${user.toUpperCase()}</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`;
        const domain = user.split("@")[1];
        const posted = await request(`https://autoconfig.${domain}/Autodiscover/Autodiscover.xml`, { method: "POST", body, headers: { "Content-Type": "text/xml" } });
        assert.equal(posted.status, 200, posted.body.slice(0, 300));
        const account = parser.parse(posted.body).Autodiscover.Response.Account;
        const protocols = account.Protocol.map((p: any) => `${p.Type} ${p.Server}:${p.Port} ${p.Encryption} ${p.LoginName}`);
        assert.deepEqual(protocols, [`IMAP ${model.mailHost}:993 SSL ${user}`, `SMTP ${model.mailHost}:465 SSL ${user}`, `SMTP ${model.mailHost}:587 TLS ${user}`]);

        const got = await request(`https://autoconfig.${domain}/autodiscover/autodiscover.xml`);
        assert.equal(got.status, 200);
        const ports = parser.parse(got.body).Autodiscover.Response.Account.Protocol.map((p: any) => [p.Port, p.LoginName]);
        assert.deepEqual(ports, [[993, undefined], [465, undefined], [587, undefined]]);
    });

    it("autodiscover: an address of a foreign domain gets no login name", async () => {
        const body = `<Autodiscover><Request><EMailAddress>rcpt@${LAB.foreignDomain}</EMailAddress></Request></Autodiscover>`;
        const r = await request(`https://autoconfig.${model.domains[0]}/autodiscover/autodiscover.xml`, { method: "POST", body });
        assert.equal(r.status, 200);
        assert.doesNotMatch(r.body, /LoginName/);
    });
});

describe("web: database admin", () => {
    it("dbadmin: refused from the lab network (IPv4 and IPv6), absent from the public vhosts", async () => {
        assert.equal(await tcpOutcome(MAIL.ipv4, DB_ADMIN_PORT), "refused");
        assert.equal(await tcpOutcome(MAIL.ipv6, DB_ADMIN_PORT), "refused");
        assert.equal((await request(`https://${model.mailHost}/adminer/`)).status, 404);
        assert.equal((await request(`https://${model.mailHost}/adminer/conf.php`)).status, 404);
    });

    it("dbadmin: Adminer is served on localhost inside the server (SSH tunnel target)", async () => {
        for (const url of [`http://127.0.0.1:${DB_ADMIN_PORT}/adminer/`, `http://[::1]:${DB_ADMIN_PORT}/adminer/`]) {
            const page = await guest("mail").execOk(`php -r 'echo file_get_contents($argv[1]);' '${url}'`);
            assert.match(page, /<title>Login - Adminer/, url);
            assert.match(page, /pgsql/, `${url}: Adminer offers PostgreSQL`);
        }
    });
});

describe("web: certificate", () => {
    it("certbot: the ACME certificate names every web host and is what Apache serves", async () => {
        const pem = await guest("mail").execOk("cat /etc/letsencrypt/live/ispmail/cert.pem");
        const cert = new X509Certificate(pem);
        const names = (cert.subjectAltName ?? "").split(", ").map((n) => n.replace(/^DNS:/, "")).sort();
        assert.deepEqual(names, certificateDomains(model, webHosts(model)));
        assert.equal(await servedSerial(443, []), cert.serialNumber.toUpperCase());
        const renewal = await guest("mail").execOk("cat /etc/letsencrypt/renewal/ispmail.conf");
        assert.match(renewal, new RegExp(`^server = ${model.acme.directoryUrl.replace(/[.]/g, "\\.")}$`, "m"));
        assert.equal((await guest("mail").exec("systemctl is-enabled certbot.timer")).stdout.trim(), "enabled");
    });

    it("certbot: a forced renewal is picked up on 443, 465, 587 (STARTTLS) and 993", { timeout: 240_000 }, async () => {
        const before = await servedSerial(443, []);
        // Without a terminal, `certbot renew` first sleeps a random time of up to 8 minutes (to spread
        // the load on Let's Encrypt); the timer keeps that, the test does not wait for it.
        const r = await guest("mail").exec("certbot renew --force-renewal --cert-name ispmail --non-interactive --no-random-sleep-on-renew", { timeoutMs: 180_000 });
        assert.equal(r.code, 0, `certbot renew failed:\n${r.stderr.slice(-1500)}`);
        const installed = new X509Certificate(await guest("mail").execOk("cat /etc/ispmail/tls/fullchain.pem")).serialNumber.toUpperCase();
        assert.notEqual(installed, before, "the deploy hook did not install the renewed certificate");
        // Reloads are asynchronous (Postfix/Dovecot re-spawn their listeners): allow a few seconds.
        let served: Record<number, string> = {};
        for (let attempt = 0; attempt < 10; attempt++) {
            served = {};
            for (const { port, starttls } of TLS_PORTS) served[port] = await servedSerial(port, starttls);
            if (Object.values(served).every((s) => s === installed)) break;
            await new Promise((res) => setTimeout(res, 1000));
        }
        assert.deepEqual(served, { 443: installed, 465: installed, 587: installed, 993: installed });
    });

    it("certbot: the served chain verifies against pebble's issuing root for every web host", async () => {
        const ca = readFileSync(PATHS.pebbleIssuingRoot, "utf8");
        for (const host of webHosts(model)) {
            const r = await request(`https://${host}/`, { ca });
            assert.ok(r.status > 0, host);
        }
    });

    it("certbot: a second apply of the certbot step changes nothing", async () => {
        const [result] = await applyOnGuest("mail", stepsOf(SERVICE.certbot, model), secrets);
        assert.equal(result.result, "unchanged", JSON.stringify(result));
    });
});

describe("nextcloud: SQL user backend against the mail directory", () => {
    /**
     * The user backend's config as the nextcloud step renders it (with Nextcloud enabled on the lab
     * stack), secrets resolved: the very queries and credentials Nextcloud would use.
     */
    function backendConfigPhp(): string {
        const m = labModelWith({ nextcloud: { enabled: true, version: "31.0.9", sha256: "0".repeat(64) } });
        const step: Step = { name: "nextcloud-config", description: "", files: [{ path: "/x", content: renderNextcloudConfig(m), secret: true }], script: "", after: [] };
        return resolveSecrets(step, secrets).files[0].content;
    }

    /**
     * Runs user_backend_sql_raw's calls in the server's PHP (PDO pgsql, as the app connects) and
     * prints a JSON report. Everything secret travels on stdin, never on a command line.
     */
    async function runBackend(checks: { username: string; password: string }[], search: string): Promise<any> {
        const php =
            backendConfigPhp() +
            `
$c = $CONFIG['user_backend_sql_raw'];
$q = $c['queries'];
// Exactly the app's DSN (lib/Dbs/Postgresql.php).
$db = new PDO('pgsql:host=' . $c['db_host'] . ';port=' . $c['db_port'] . ';dbname=' . $c['db_name'] . ';user=' . $c['db_user'] . ';password=' . $c['db_password']);
$out = ['login' => [], 'queries' => $q];
foreach (json_decode(base64_decode('${Buffer.from(JSON.stringify(checks)).toString("base64")}'), true) as $t) {
    // UserBackend::checkPassword
    $s = $db->prepare($q['get_password_hash_for_user']);
    $s->execute(['username' => $t['username']]);
    $hash = $s->fetchColumn();
    $s = $db->prepare($q['user_exists']);
    $s->execute(['username' => $t['username']]);
    $exists = $s->fetchColumn();
    $s = $db->prepare($q['get_display_name']);
    $s->execute(['username' => $t['username']]);
    $out['login'][] = ['username' => $t['username'], 'exists' => $exists, 'accepted' => $hash !== false && password_verify($t['password'], $hash), 'display' => $s->fetchColumn()];
}
// UserBackend::getUsers appends LIMIT/OFFSET and binds :search as %term%.
$s = $db->prepare($q['get_users'] . ' LIMIT :limit OFFSET :offset');
$s->bindValue(':search', '%' . ${JSON.stringify(search)} . '%', PDO::PARAM_STR);
$s->bindValue(':limit', 10, PDO::PARAM_INT);
$s->bindValue(':offset', 0, PDO::PARAM_INT);
$s->execute();
$out['search'] = $s->fetchAll(PDO::FETCH_COLUMN, 0);
$out['count'] = $db->query($q['count_users'])->fetchColumn();
// The role can read nothing but its view.
try { $db->query('SELECT password_hash FROM users LIMIT 1'); $out['users_table'] = 'readable'; } catch (PDOException $e) { $out['users_table'] = $e->getCode(); }
echo json_encode($out), "\\n";
`;
        const stdout = await guest("mail").execOk("php", { input: php, timeoutMs: 60_000 });
        return JSON.parse(stdout.trim().split("\n").pop()!);
    }

    it("nextcloud: the right mail password is accepted, a wrong one and an unknown user refused", async () => {
        const [alice, bob] = model.users;
        const report = await runBackend(
            [
                { username: alice.address, password: secrets[`user:${alice.address}`] },
                { username: alice.address, password: `${secrets[`user:${alice.address}`]}x` },
                { username: bob.address, password: secrets[`user:${alice.address}`] },
                { username: bob.address, password: secrets[`user:${bob.address}`] },
                { username: `nobody@${model.domains[0]}`, password: "whatever-password" },
            ],
            "example",
        );
        assert.deepEqual(
            report.login.map((l: any) => [l.username, l.exists, l.accepted]),
            [
                [alice.address, true, true],
                [alice.address, true, false],
                [bob.address, true, false],
                [bob.address, true, true],
                [`nobody@${model.domains[0]}`, false, false],
            ],
        );
        assert.equal(report.login[0].display, alice.displayName ?? alice.address);
        assert.deepEqual(report.queries, SQL_RAW_QUERIES);
    });

    it("nextcloud: user search and count see the mail users, the role cannot read the users table", async () => {
        const report = await runBackend([], "example.org");
        const expected = model.users.filter((u) => u.address.includes("example.org")).map((u) => u.address).sort();
        assert.deepEqual(report.search, expected);
        assert.equal(Number(report.count), model.users.length);
        assert.equal(report.users_table, "42501", "nextcloudauth must get permission denied on the users table");
    });
});
