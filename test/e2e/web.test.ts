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
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { X509Certificate } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { XMLParser, XMLValidator } from "fast-xml-parser";
import type { Model } from "../../components/config";
import { mtaStsPolicy, tlsaOfKey } from "../../components/dns/records";
import { tlsKeySecret } from "../../components/secrets";
import { labDig } from "../../lab/dns";
import { renderNextcloudConfig, SQL_RAW_QUERIES } from "../../components/services/nextcloud";
import { resolveSecrets, type Step } from "../../components/steps";
import { applyOnGuest, client, guest, LAB, labModelWith, PATHS, labSession } from "../../lab/testkit";
import { SERVICE, stepsOf, webHosts } from "../../components/services";
import { loginAccepted, sleep, tcpOutcome } from "./clients";

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


/** The TLS ports of the server and how a client starts TLS on each. */
const TLS_PORTS = [
    { port: 443, starttls: [] as string[], what: "https" },
    { port: 465, starttls: [] as string[], what: "submissions" },
    { port: 587, starttls: ["-starttls", "smtp"], what: "submission (STARTTLS)" },
    { port: 993, starttls: [] as string[], what: "imaps" },
] as const;

/** An openssl s_client handshake against the mail server; `ok` when a session was established. */
async function handshake(port: number, starttls: readonly string[], extra: readonly string[], host: string = MAIL.ipv4): Promise<{ ok: boolean; out: string }> {
    const r = await client("openssl", ["s_client", "-connect", `${host}:${port}`, "-servername", model.mailHost, ...starttls, ...extra], {
        input: "",
        timeoutMs: 20_000,
    });
    const out = r.stdout + r.stderr;
    // A session that was established names its cipher; "Cipher is (NONE)" / "0000" means no session.
    const cipher = /Cipher is (\S+)/.exec(out)?.[1] ?? /Cipher\s+:\s+(\S+)/.exec(out)?.[1];
    return { ok: r.code === 0 && cipher !== undefined && cipher !== "(NONE)" && cipher !== "0000", out };
}

/**
 * testssl.sh's protocol scan (its own sockets, so SSLv2 and SSLv3 are tried too, which Debian's
 * OpenSSL cannot speak): finding per protocol id (SSLv2, SSLv3, TLS1, TLS1_1, TLS1_2, TLS1_3).
 */
async function testsslProtocols(target: string, opts: { ip?: string; starttls?: string } = {}): Promise<Record<string, string>> {
    const dir = mkdtempSync(join(tmpdir(), "ispmail-testssl-"));
    try {
        const json = join(dir, "scan.json");
        const args = ["-p", "--quiet", "--color", "0", "--warnings", "off", "--jsonfile", json, ...(opts.starttls ? ["--starttls", opts.starttls] : []), ...(opts.ip ? ["--ip", opts.ip] : []), target];
        const r = await client("testssl", args, { timeoutMs: 180_000 });
        assert.ok(existsSync(json), `testssl.sh ${target} wrote no result (exit ${r.code}):\n${(r.stdout + r.stderr).slice(-800)}`);
        const findings = JSON.parse(readFileSync(json, "utf8")) as Array<{ id: string; finding: string }>;
        return Object.fromEntries(findings.filter((f) => /^(SSLv[23]|TLS1(_[123])?)$/.test(f.id)).map((f) => [f.id, f.finding]));
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
}

/** openssl s_server on loopback offering TLS 1.0 and every cipher at security level 0 (the tests' positive control). */
async function startOldTlsServer(): Promise<{ port: number; stop: () => void }> {
    const dir = mkdtempSync(join(tmpdir(), "ispmail-oldtls-"));
    const made = await client("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"), "-days", "1", "-subj", "/CN=old-tls.invalid"]);
    assert.equal(made.code, 0, made.stderr);
    const port = 40000 + Math.floor(Math.random() * 20000);
    const server = spawn("openssl", ["s_server", "-accept", `127.0.0.1:${port}`, "-cert", join(dir, "cert.pem"), "-key", join(dir, "key.pem"), "-cipher", "ALL:@SECLEVEL=0", "-min_protocol", "TLSv1", "-max_protocol", "TLSv1.2", "-www", "-quiet"], { stdio: "ignore" });
    for (let i = 0; i < 50 && (await tcpOutcome("127.0.0.1", port)) !== "connected"; i++) await sleep(100);
    const stop = () => {
        server.kill();
        rmSync(dir, { recursive: true, force: true });
    };
    return { port, stop };
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
    /** The scanned ports (testssl.sh speaks STARTTLS smtp, not sieve: 4190 is checked with openssl below). */
    const SCANNED = [
        { port: 25, starttls: "smtp", what: "smtp (STARTTLS, opportunistic)" },
        { port: 443, starttls: undefined, what: "https" },
        { port: 465, starttls: undefined, what: "submissions" },
        { port: 587, starttls: "smtp", what: "submission (STARTTLS)" },
        { port: 993, starttls: undefined, what: "imaps" },
    ] as const;
    const scans = new Map<number, Promise<Record<string, string>>>();
    let control: { port: number; stop: () => void };
    let controlScan: Promise<Record<string, string>>;

    before(async () => {
        // The positive control: a local server that offers TLS 1.0 and a weak TLS 1.2 cipher, so
        // that the scanner and the openssl client are shown to find what the server must refuse.
        control = await startOldTlsServer();
        // testssl.sh takes ~20 s a port: scan them all at once.
        controlScan = testsslProtocols(`127.0.0.1:${control.port}`);
        for (const p of SCANNED) scans.set(p.port, testsslProtocols(`${model.mailHost}:${p.port}`, { ip: MAIL.ipv4, starttls: p.starttls }));
    });
    after(() => control?.stop());

    it("tls (control): the scanner and the client find TLS 1.0 and a weak cipher where a server offers them", async () => {
        const found = await controlScan;
        assert.match(found.TLS1 ?? "", /^offered/, JSON.stringify(found));
        assert.ok((await handshake(control.port, [], ["-tls1", "-cipher", "ALL:@SECLEVEL=0"], "127.0.0.1")).ok, "openssl speaks TLS 1.0 here");
        assert.ok((await handshake(control.port, [], ["-tls1_2", "-cipher", WEAK_TLS12], "127.0.0.1")).ok, "openssl offers the weak TLS 1.2 suites here");
    });

    for (const { port, what } of SCANNED) {
        it(`tls: ${what} (${port}) offers TLS 1.2 and 1.3 only: no SSLv2, SSLv3, TLS 1.0 or 1.1 (testssl.sh)`, async () => {
            const found = await scans.get(port)!;
            for (const old of ["SSLv2", "SSLv3", "TLS1", "TLS1_1"]) assert.match(found[old] ?? "", /^not offered/, `${port} ${old}: ${found[old]}`);
            for (const current of ["TLS1_2", "TLS1_3"]) assert.match(found[current] ?? "", /^offered/, `${port} ${current}: ${found[current]}`);
        });
    }

    it("tls: managesieve (4190, STARTTLS) refuses TLS 1.0 and 1.1 with the server's alert, and speaks 1.2 and 1.3", async () => {
        for (const proto of ["-tls1", "-tls1_1"]) {
            const r = await handshake(4190, ["-starttls", "sieve"], [proto, "-cipher", "ALL:@SECLEVEL=0"]);
            assert.equal(r.ok, false, `4190 accepted ${proto}`);
            assert.match(r.out, /alert protocol version|unsupported protocol/i, `4190 ${proto}: refused by the server, not by the client:\n${r.out.slice(0, 600)}`);
        }
        assert.ok((await handshake(4190, ["-starttls", "sieve"], ["-tls1_2"])).ok, "4190: no TLS 1.2");
        assert.ok((await handshake(4190, ["-starttls", "sieve"], ["-tls1_3"])).ok, "4190: no TLS 1.3");
    });

    // Port 25 keeps Postfix's broader opportunistic cipher list on purpose (files/postfix/main.cf:
    // the alternative for an old peer is clear text); the mandatory-TLS ports do not.
    for (const { port, starttls, what } of [...TLS_PORTS, { port: 4190, starttls: ["-starttls", "sieve"], what: "managesieve" }]) {
        it(`tls: ${what} (${port}) accepts no weak TLS 1.2 cipher (CBC, RSA key exchange, RC4, 3DES, NULL, export)`, async () => {
            const r = await handshake(port, starttls, ["-tls1_2", "-cipher", WEAK_TLS12]);
            assert.equal(r.ok, false, `${port} accepted a weak cipher:\n${/Cipher is \S+/.exec(r.out)?.[0] ?? r.out.slice(0, 600)}`);
            assert.match(r.out, /alert handshake failure|no shared cipher|handshake failure/i, `${port}: refused by the server:\n${r.out.slice(0, 600)}`);
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

describe("web: certificate", () => {
    it("certbot: the ACME certificate names every web host, carries the stack's TLS key (its TLSA) and is what Apache serves", async () => {
        const pem = await guest("mail").execOk("cat /etc/ispmail/tls/fullchain.pem");
        const cert = new X509Certificate(pem);
        const names = (cert.subjectAltName ?? "").split(", ").map((n) => n.replace(/^DNS:/, "")).sort();
        // lab/stack.yaml: mailHost (also the groupware host), each domain's MTA-STS and autoconfig
        // names, and the webmail's (webmail.<first domain>).
        assert.deepEqual(names, ["autoconfig.example.com", "autoconfig.example.org", "mta-sts.example.com", "mta-sts.example.org", "mx1.example.org", "webmail.example.org"]);
        assert.equal(await servedSerial(443, []), cert.serialNumber.toUpperCase());
        // The key is the stack's (lab: .lab/secrets.json, Pulumi: tls.PrivateKey), so the TLSA record
        // the lab DNS serves for it matches the served certificate.
        assert.equal(tlsaOfKey(cert.publicKey.export({ type: "spki", format: "pem" }) as string), tlsaOfKey(secrets[tlsKeySecret(model.tlsKeys[0])]));
        assert.deepEqual((await labDig(`_25._tcp.${model.mailHost}`, "TLSA")).map((x) => x.toLowerCase()), [tlsaOfKey(secrets[tlsKeySecret(model.tlsKeys[0])])]);
        assert.equal(await guest("mail").execOk("cat /var/lib/ispmail/certificate/server").then((x) => x.trim()), model.acme.directoryUrl);
        assert.equal((await guest("mail").exec("systemctl is-enabled ispmail-certificate.timer")).stdout.trim(), "enabled");
        // No certbot-managed lineage: its renewal would bring another key.
        assert.equal((await guest("mail").exec("test -e /etc/letsencrypt/renewal/ispmail.conf")).code, 1);
    });

    it("certbot: a forced renewal keeps the key and is picked up on 443, 465, 587 (STARTTLS) and 993", { timeout: 240_000 }, async () => {
        const before = await servedSerial(443, []);
        const r = await guest("mail").exec("/usr/local/sbin/ispmail-certificate --force", { timeoutMs: 180_000 });
        assert.equal(r.code, 0, `ispmail-certificate failed:\n${r.stderr.slice(-1500)}`);
        assert.match(r.stdout, /\(renewal forced\); reloaded: postfix dovecot apache2/);
        const renewed = new X509Certificate(await guest("mail").execOk("cat /etc/ispmail/tls/fullchain.pem"));
        assert.equal(tlsaOfKey(renewed.publicKey.export({ type: "spki", format: "pem" }) as string), tlsaOfKey(secrets[tlsKeySecret(model.tlsKeys[0])]), "the renewal kept the key");
        const installed = renewed.serialNumber.toUpperCase();
        assert.notEqual(installed, before, "ispmail-certificate did not install the renewed certificate");
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

/**
 * Nextcloud's archive cannot be fetched in the lab, so the app itself never runs here. What is real:
 * the rendered config parsed by the guest's PHP 8.4, and each of its queries prepared by PostgreSQL
 * as the role Nextcloud connects with. The logins and the search then run through a re-implementation
 * of user_backend_sql_raw's calls (its DSN, prepare/execute and password_verify), said so in the names.
 */
describe("nextcloud: SQL user backend against the mail directory", () => {
    /**
     * The user backend's config as the nextcloud step renders it (with Nextcloud enabled on the lab
     * stack), secrets resolved: the very queries and credentials Nextcloud would use.
     */
    function backendConfigPhp(): string {
        const m = labModelWith({ nextcloud: { enabled: true, version: "31.0.9", sha256: "ab".repeat(32) } });
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
$db = new PDO($c['dsn'], $c['db_user'], $c['db_password']);
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

    it("nextcloud: the guest's PHP 8.4 parses the rendered config; user_backend_sql_raw's settings are all there", async () => {
        const version = await guest("mail").execOk("php -r 'echo PHP_MAJOR_VERSION, \".\", PHP_MINOR_VERSION;'");
        assert.equal(version.trim(), "8.4");
        const dir = (await guest("mail").execOk("mktemp -d")).trim();
        try {
            // The file with its secrets goes over stdin into a root-only temp dir, never into argv.
            await guest("mail").execOk(`umask 077; cat > ${dir}/config.php`, { input: backendConfigPhp() });
            const lint = await guest("mail").exec(`php -l ${dir}/config.php`);
            assert.equal(lint.code, 0, lint.stdout + lint.stderr);
            const keys = await guest("mail").execOk(`php -r 'include "${dir}/config.php"; echo json_encode(array_keys($CONFIG["user_backend_sql_raw"])), "\\n", json_encode(array_keys($CONFIG["user_backend_sql_raw"]["queries"]));'`);
            const [settings, queries] = keys.trim().split("\n").map((l) => JSON.parse(l) as string[]);
            for (const k of ["dsn", "db_type", "db_host", "db_port", "db_name", "db_user", "db_password", "queries"]) assert.ok(settings.includes(k), `${k} missing: ${settings.join(", ")}`);
            assert.deepEqual(queries.sort(), ["count_users", "get_display_name", "get_email_address", "get_password_hash_for_user", "get_users", "set_display_name", "set_password_hash_for_user", "user_exists"]);
        } finally {
            await guest("mail").exec(`rm -rf ${dir}`);
        }
    });

    it("nextcloud: PostgreSQL prepares and runs every query as nextcloudauth, and nothing beyond its view", async () => {
        const pgpass = "/root/.ispmail-e2e-nextcloud-pgpass";
        await guest("mail").execOk(`umask 077; cat > ${pgpass}`, { input: `127.0.0.1:5432:mailserver:nextcloudauth:${secrets["db.nextcloudauth"]}\n` });
        const psql = (sql: string) => guest("mail").exec(`PGPASSFILE=${pgpass} psql -X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U nextcloudauth -d mailserver`, { input: sql });
        try {
            for (const [name, query] of Object.entries(SQL_RAW_QUERIES)) {
                // Named parameters (:username, :search) become $1, $2 as PDO sends them; get_users
                // gets the LIMIT/OFFSET the app appends.
                const names: string[] = [];
                const positional = (name === "get_users" ? `${query} LIMIT :limit OFFSET :offset` : query).replace(/:([a-z_]+)/g, (_, n: string) => {
                    if (!names.includes(n)) names.push(n);
                    return `$${names.indexOf(n) + 1}`;
                });
                const types = names.map((n) => (n === "limit" || n === "offset" ? "int" : "text"));
                // The writes get values their trigger accepts (an Argon2id hash of nothing in use)
                // and run in a transaction that is rolled back: alice's row stays as it is.
                const value = (n: string) =>
                    n === "limit" ? "1" : n === "offset" ? "0" : n === "search" ? "'%example%'"
                    : n === "new_password_hash" ? "'$argon2id$v=19$m=65536,t=4,p=1$ZTJlLXNhbHQtZTJlLXNhbHQ$aGFzaC1oYXNoLWhhc2gtaGFzaC1oYXNoLWhhc2g'"
                    : n === "new_display_name" ? "'Alice (rolled back)'" : "'alice@example.org'";
                const values = names.map(value);
                // PostgreSQL checks privileges when a statement runs, not when it is prepared: both.
                const r = await psql(`BEGIN;\nPREPARE q${types.length ? `(${types.join(", ")})` : ""} AS ${positional};\nEXECUTE q${values.length ? `(${values.join(", ")})` : ""};\nROLLBACK;\n`);
                assert.equal(r.code, 0, `${name}: ${r.stderr}`);
            }
            // Control: the same session, the same way, on the users table: refused.
            const denied = await psql("PREPARE q AS SELECT password_hash FROM users;\nEXECUTE q;\n");
            assert.notEqual(denied.code, 0);
            assert.match(denied.stderr, /permission denied for table users/);
        } finally {
            await guest("mail").exec(`rm -f ${pgpass}`);
        }
    });

    it("nextcloud (a re-implementation of user_backend_sql_raw's calls in the guest's PHP): the right mail password is accepted, a wrong one and an unknown user refused", async () => {
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
        // What the config hands the app uses the login view only (written out, not the constant it was made from).
        for (const [name, q] of Object.entries(report.queries as Record<string, string>)) assert.match(q, name.startsWith("set_") ? /^UPDATE nextcloud_users SET / : /\bFROM nextcloud_users\b/, name);
    });

    it("nextcloud (a re-implementation of user_backend_sql_raw's calls in the guest's PHP): user search and count see the mail users, the role cannot read the users table", async () => {
        const report = await runBackend([], "example.org");
        const expected = model.users.filter((u) => u.address.includes("example.org")).map((u) => u.address).sort();
        assert.deepEqual(report.search, expected);
        assert.equal(Number(report.count), model.users.length);
        assert.equal(report.users_table, "42501", "nextcloudauth must get permission denied on the users table");
    });

    // Users change their own password and display name (migration 008). Bob's account: alice's is
    // the webmail browser tests'. The after() below gives him back his configured ones.
    type Write =
        | { op: "password"; username: string; password: string; algorithm?: "bcrypt" }
        | { op: "display"; username: string; name: string }
        | { op: "sql"; sql: string; params: Record<string, string> };

    /**
     * Runs user_backend_sql_raw's writes in the server's PHP as nextcloudauth: UserBackend::setPassword
     * (user_exists, then password_hash() with the configured hash_algorithm_for_new_passwords, then
     * set_password_hash_for_user binding :username and :new_password_hash) and setDisplayName
     * (set_display_name binding :username and :new_display_name), or any statement. Reports the
     * affected row count, the hash stored, or the SQLSTATE of a refusal.
     */
    async function runWrites(writes: Write[]): Promise<{ rows?: number; hash?: string; error?: string; exists?: boolean }[]> {
        const php =
            backendConfigPhp() +
            `
$c = $CONFIG['user_backend_sql_raw'];
$q = $c['queries'];
$db = new PDO($c['dsn'], $c['db_user'], $c['db_password']);
$db->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
// UserBackend::hashPassword's mapping of the configured algorithm.
$algorithms = ['bcrypt' => PASSWORD_BCRYPT, 'argon2i' => PASSWORD_ARGON2I, 'argon2id' => PASSWORD_ARGON2ID];
$out = [];
foreach (json_decode(base64_decode('${Buffer.from(JSON.stringify(writes)).toString("base64")}'), true) as $t) {
    try {
        if ($t['op'] === 'password') {
            $s = $db->prepare($q['user_exists']);
            $s->execute(['username' => $t['username']]);
            if (!$s->fetchColumn()) { $out[] = ['exists' => false]; continue; }
            $hash = password_hash($t['password'], $algorithms[$t['algorithm'] ?? $c['hash_algorithm_for_new_passwords']]);
            $s = $db->prepare($q['set_password_hash_for_user']);
            $s->execute([':username' => $t['username'], ':new_password_hash' => $hash]);
            $out[] = ['rows' => $s->rowCount(), 'hash' => $hash];
        } elseif ($t['op'] === 'display') {
            $s = $db->prepare($q['set_display_name']);
            $s->execute([':username' => $t['username'], ':new_display_name' => $t['name']]);
            $out[] = ['rows' => $s->rowCount()];
        } else {
            $s = $db->prepare($t['sql']);
            $s->execute($t['params']);
            $out[] = ['rows' => $s->rowCount()];
        }
    } catch (PDOException $e) {
        $out[] = ['error' => $e->getCode()];
    }
}
echo json_encode($out), "\\n";
`;
        const stdout = await guest("mail").execOk("php", { input: php, timeoutMs: 60_000 });
        return JSON.parse(stdout.trim().split("\n").pop()!);
    }

    /** A query as postgres on the server (the directory as it really is). */
    const directory = async (query: string) => (await guest("mail").execOk("runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -d mailserver", { input: query })).trim();
    const bobRow = (column: "password_hash" | "display_name" | "config_display_name") => directory(`SELECT ${column} FROM users WHERE local = 'bob' AND domain = 'example.org'`);

    after(async () => {
        if (!model) return;
        // Bob's configured password and display name, whatever a test left behind: the hash of
        // his configured password (its digest is still the recorded one, so the sync keeps it).
        const bob = model.users.find((u) => u.address === "bob@example.org")!;
        const configured = secrets[`user:${bob.address}`];
        if (!(await loginAccepted("imap", bob.address, configured))) {
            const hash = (await guest("mail").execOk("doveadm pw -s ARGON2ID", { input: `${configured}\n${configured}\n` })).trim();
            await directory(`UPDATE users SET password_hash = '${hash}' WHERE local = 'bob' AND domain = 'example.org'`);
        }
        if ((await bobRow("display_name")) !== (bob.displayName ?? "")) {
            await directory(`UPDATE users SET display_name = ${bob.displayName ? `'${bob.displayName}'` : "NULL"}, config_display_name = ${bob.displayName ? `'${bob.displayName}'` : "NULL"} WHERE local = 'bob' AND domain = 'example.org'`);
        }
        assert.equal(await loginAccepted("imap", bob.address, configured), true, "bob's configured password works again");
        const [applied] = await applyOnGuest("mail", stepsOf(SERVICE.directory, model), secrets);
        assert.equal(applied.result, "unchanged", applied.actions.join("; "));
    });

    it("nextcloud (a re-implementation of user_backend_sql_raw's calls in the guest's PHP): a new password set with set_password_hash_for_user (PHP's Argon2id) opens IMAP, the old one no longer; an apply of the directory keeps it", async () => {
        const bob = "bob@example.org";
        const configured = secrets[`user:${bob}`];
        const own = `bob's nextcloud ${globalThis.crypto.randomUUID()}`;
        const [set] = await runWrites([{ op: "password", username: bob, password: own }]);
        assert.equal(set.rows, 1, JSON.stringify(set));
        assert.match(set.hash!, /^\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$/);
        // Stored in Dovecot's form, which IMAP and SMTP AUTH (and the webmail) read.
        assert.equal(await bobRow("password_hash"), `{ARGON2ID}${set.hash}`);
        assert.equal(await loginAccepted("imap", bob, own), true, "IMAP takes the password set in Nextcloud");
        assert.equal(await loginAccepted("imap", bob, configured), false, "IMAP refuses the old one");
        // Nextcloud's own login (password_verify against the view) too.
        const login = await runBackend([{ username: bob, password: own }, { username: bob, password: configured }], "example");
        assert.deepEqual(login.login.map((l: any) => l.accepted), [true, false]);

        // An apply with no config change (the directory step, as `npm run lab` runs it) keeps his.
        const [applied] = await applyOnGuest("mail", stepsOf(SERVICE.directory, model), secrets);
        assert.equal(applied.result, "unchanged", applied.actions.join("; "));
        assert.equal(await loginAccepted("imap", bob, own), true, "still his after the apply");
    });

    it("nextcloud (a re-implementation of user_backend_sql_raw's calls in the guest's PHP): set_display_name changes the display name; an apply keeps it, a changed configured display name replaces it", async () => {
        const bob = model.users.find((u) => u.address === "bob@example.org")!;
        const own = "Bob (his own, e2e)";
        assert.deepEqual(await runWrites([{ op: "display", username: bob.address, name: own }]), [{ rows: 1 }]);
        assert.equal(await bobRow("display_name"), own);
        assert.equal((await runBackend([{ username: bob.address, password: "" }], "example")).login[0].display, own, "get_display_name reads it");

        const [kept] = await applyOnGuest("mail", stepsOf(SERVICE.directory, model), secrets);
        assert.equal(kept.result, "unchanged", kept.actions.join("; "));
        assert.equal(await bobRow("display_name"), own, "the user's own name survives an apply");

        // The admin changes bob's configured display name: it replaces his own; then back to the
        // lab's configuration (a change again, so the configured name is back too).
        const renamed: Model = { ...model, users: model.users.map((u) => (u.address === bob.address ? { ...u, displayName: "Bob (configured, e2e)" } : u)) };
        try {
            const [applied] = await applyOnGuest("mail", stepsOf(SERVICE.directory, renamed), secrets);
            assert.deepEqual(applied.actions, ["synced directory: users +0 ~1 -0"]);
            assert.equal(await bobRow("display_name"), "Bob (configured, e2e)");
            assert.equal(await bobRow("config_display_name"), "Bob (configured, e2e)");
        } finally {
            const [restored] = await applyOnGuest("mail", stepsOf(SERVICE.directory, model), secrets);
            assert.deepEqual(restored.actions, ["synced directory: users +0 ~1 -0"]);
        }
        assert.equal(await bobRow("display_name"), bob.displayName ?? "");
    });

    it("nextcloud (a re-implementation of user_backend_sql_raw's calls in the guest's PHP): nextcloudauth cannot change a username, write or read the users table, or store a bcrypt hash (the app's default)", async () => {
        const bob = "bob@example.org";
        const before = await bobRow("password_hash");
        const results = await runWrites([
            { op: "sql", sql: "UPDATE nextcloud_users SET username = :new WHERE username = :username", params: { new: "mallory@example.org", username: bob } },
            { op: "sql", sql: "UPDATE users SET password_hash = :hash WHERE local = 'bob'", params: { hash: "{PLAIN}guessme" } },
            { op: "sql", sql: "UPDATE users SET display_name = :name WHERE local = 'bob'", params: { name: "Mallory" } },
            { op: "sql", sql: "SELECT password_hash FROM users WHERE local = :local", params: { local: "bob" } },
            { op: "password", username: bob, password: "a bcrypt password 2026", algorithm: "bcrypt" },
        ]);
        assert.deepEqual(results, [{ error: "42501" }, { error: "42501" }, { error: "42501" }, { error: "42501" }, { error: "23514" }]);
        assert.equal(await bobRow("password_hash"), before, "nothing changed");
        assert.equal(await directory("SELECT count(*) FROM users WHERE local = 'mallory'"), "0");
    });
});
