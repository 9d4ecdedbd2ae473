import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash, generateKeyPairSync } from "node:crypto";
import { describe, it } from "node:test";
import { parseConfig } from "../../components/config";
import { recordResourceNames, recordTemplate, toCloudflareRecord } from "../../components/dns/cloudflare";
import { caaIssueValue, sshfpOf, dnsZones, mtaStsPolicy, renderDnsRecords, tlsaOfKey, txtContent, txtText, type DnsRecord } from "../../components/dns/records";
import { validRawConfig } from "../fixtures/config";

const IPV4 = "203.0.113.25";
const IPV6 = "2001:db8:25::1";
// Shaped like a real 2048-bit SPKI (392 base64 characters); content does not matter here.
const KEY_B = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "b".repeat(392 - 44 - 8) + "IDAQAB==";
const KEY_A = "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA" + "a".repeat(392 - 44 - 8) + "IDAQAB==";

const model = (change: (raw: Record<string, any>) => void = () => {}, stack = "test") => {
    const raw = validRawConfig();
    change(raw);
    return parseConfig(raw, { stack }).model;
};
const TLSA_1 = `3 1 1 ${"1".repeat(64)}`;
const TLSA_2 = `3 1 1 ${"2".repeat(64)}`;
const TLSA = { tls1: TLSA_1, tls2: TLSA_2 };
const render = (m = model()) => renderDnsRecords({ model: m, ipv4: IPV4, ipv6: IPV6, dkimPublicKeys: { s2026a: KEY_A, s2026b: KEY_B }, tlsa: TLSA });
const sorted = (rs: readonly DnsRecord[]) => [...rs].sort((a, b) => `${a.name} ${a.type} ${a.content}`.localeCompare(`${b.name} ${b.type} ${b.content}`));

describe("dns: record set", () => {
    it("dns: a two-domain stack publishes exactly the reviewed record set", () => {
        // Written out by hand from issue 3 (not generated): review changes here line by line.
        const stsId = createHash("sha256").update("version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmax_age: 604800\r\n").digest("hex").slice(0, 32);
        const dkim = (key: string) => {
            const text = `v=DKIM1; k=rsa; p=${key}`;
            return `"${text.slice(0, 255)}" "${text.slice(255)}"`;
        };
        const r = (zone: string, name: string, type: DnsRecord["type"], content: string): DnsRecord => ({ zone, name, type, ttl: 3600, content });
        const perDomain = (d: string) => [
            r(d, d, "MX", "10 mx1.example.org"),
            r(d, d, "TXT", '"v=spf1 mx -all"'),
            r(d, `_dmarc.${d}`, "TXT", '"v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:postmaster@example.org"'),
            r(d, `s2026b._domainkey.${d}`, "TXT", dkim(KEY_B)),
            r(d, `s2026a._domainkey.${d}`, "TXT", dkim(KEY_A)),
            r(d, `_mta-sts.${d}`, "TXT", `"v=STSv1; id=${stsId}"`),
            r(d, `_smtp._tls.${d}`, "TXT", '"v=TLSRPTv1; rua=mailto:postmaster@example.org"'),
            r(d, `_submissions._tcp.${d}`, "SRV", "0 1 465 mx1.example.org"),
            r(d, `_submission._tcp.${d}`, "SRV", "0 1 587 mx1.example.org"),
            r(d, `_imaps._tcp.${d}`, "SRV", "0 1 993 mx1.example.org"),
            r(d, `_imap._tcp.${d}`, "SRV", "0 0 0 ."),
            r(d, `_pop3._tcp.${d}`, "SRV", "0 0 0 ."),
            r(d, `_pop3s._tcp.${d}`, "SRV", "0 0 0 ."),
        ];
        const caa = (z: string) => [
            r(z, z, "CAA", '0 issue "letsencrypt.org; validationmethods=http-01"'),
            r(z, z, "CAA", '0 issuewild ";"'),
            r(z, z, "CAA", '0 iodef "mailto:postmaster@example.org"'),
        ];
        const expected = [
            r("example.org", "mx1.example.org", "A", IPV4),
            r("example.org", "mx1.example.org", "AAAA", IPV6),
            r("example.org", "mta-sts.example.org", "A", IPV4),
            r("example.org", "mta-sts.example.org", "AAAA", IPV6),
            r("example.org", "autoconfig.example.org", "A", IPV4),
            r("example.org", "autoconfig.example.org", "AAAA", IPV6),
            r("example.com", "mta-sts.example.com", "A", IPV4),
            r("example.com", "mta-sts.example.com", "AAAA", IPV6),
            r("example.com", "autoconfig.example.com", "A", IPV4),
            r("example.com", "autoconfig.example.com", "AAAA", IPV6),
            r("example.org", "webmail.example.org", "A", IPV4),
            r("example.org", "webmail.example.org", "AAAA", IPV6),
            ...caa("example.org"),
            ...caa("example.com"),
            ...perDomain("example.org"),
            ...perDomain("example.com"),
            // Issue 13: the server's own mail (bounces from MAILER-DAEMON@mx1, root's alerts) passes
            // SPF on the host name; example.com's DMARC reports may go to example.org (RFC 7489 §7.1).
            r("example.org", "mx1.example.org", "TXT", '"v=spf1 a -all"'),
            r("example.org", "example.com._report._dmarc.example.org", "TXT", '"v=DMARC1"'),
            // Issue 14: DANE for mail sent to us, the certificate key's hash.
            r("example.org", "_25._tcp.mx1.example.org", "TLSA", TLSA_1),
        ];
        assert.deepEqual(sorted(render()), sorted(expected));
        assert.equal(render().length, 47);
    });

    it("dns: CAA binds issuance to the configured ACME account once ispmail:acme.accountUri is set", () => {
        const uri = "https://acme-v02.api.letsencrypt.org/acme/acct/123456789";
        const records = render(model((raw) => (raw.acme = { accountUri: uri })));
        const issue = records.filter((x) => x.type === "CAA" && x.content.startsWith("0 issue "));
        assert.ok(issue.length >= 1);
        for (const x of issue) assert.equal(x.content, `0 issue "letsencrypt.org; validationmethods=http-01; accounturi=${uri}"`);
        // The Cloudflare record keeps the whole value in its data.
        const cf = toCloudflareRecord(issue[0]) as { data?: { value?: string } };
        assert.equal(cf.data?.value, caaIssueValue(uri));
    });

    it("dns: the SSH host key is published as SSHFP on mailHost, as ssh-keygen -r computes it, and as Cloudflare data", () => {
        const { publicKey } = generateKeyPairSync("ed25519");
        const raw = publicKey.export({ type: "spki", format: "der" }).subarray(-32);
        const blob = Buffer.concat([Buffer.from([0, 0, 0, 11]), Buffer.from("ssh-ed25519"), Buffer.from([0, 0, 0, 32]), raw]);
        const line = `ssh-ed25519 ${blob.toString("base64")} root@mx1`;
        const data = sshfpOf(line);
        assert.match(data, /^4 2 [0-9a-f]{64}$/);
        const keygen = spawnSync("ssh-keygen", ["-r", "mx1.example.org", "-f", "/dev/stdin"], { input: line + "\n", encoding: "utf8" });
        if (keygen.status === 0) assert.match(keygen.stdout, new RegExp(`^mx1\\.example\\.org IN SSHFP ${data}$`, "m"), keygen.stdout);
        const records = renderDnsRecords({ model: model(), ipv4: IPV4, ipv6: IPV6, dkimPublicKeys: { s2026a: KEY_A, s2026b: KEY_B }, sshfp: [data], tlsa: TLSA });
        const sshfp = records.filter((r) => r.type === "SSHFP");
        assert.deepEqual(sshfp.map((r) => `${r.zone} ${r.name} ${r.content}`), [`example.org mx1.example.org ${data}`]);
        const [algorithm, type, fingerprint] = data.split(" ");
        assert.deepEqual(toCloudflareRecord(sshfp[0]).data, { algorithm: Number(algorithm), type: Number(type), fingerprint });
        assert.throws(() => sshfpOf("ssh-dss AAAA"), /not an SSH public key this program publishes as SSHFP/);
        // Without a known host key (the check tool, the lab until it has one) there is none.
        assert.equal(render().filter((r) => r.type === "SSHFP").length, 0);
    });

    it("dns: adding users, aliases and shares changes no record", () => {
        const more = model((raw) => {
            raw.users.push({ address: "dave@example.com" });
            raw.aliases.push({ source: "team@example.org", destination: "dave@example.com" });
            raw.sharedMailboxes.push({ mailbox: "carol@example.com", sharedTo: "dave@example.com" });
        });
        assert.deepEqual(render(more), render());
    });

    it("dns: the groupware SRV records (RFC 6764) appear only when Nextcloud is enabled", () => {
        const withCloud = model((raw) => {
            raw.nextcloud = { enabled: true, version: "31.0.9", sha256: "ab".repeat(32), host: "cloud.example.org" };
        });
        const records = render(withCloud);
        const srv = records.filter((x) => x.name.startsWith("_cal") || x.name.startsWith("_card")).map((x) => `${x.name} ${x.content}`);
        assert.deepEqual(srv.sort(), [
            "_caldavs._tcp.example.com 0 1 443 cloud.example.org",
            "_caldavs._tcp.example.org 0 1 443 cloud.example.org",
            "_carddavs._tcp.example.com 0 1 443 cloud.example.org",
            "_carddavs._tcp.example.org 0 1 443 cloud.example.org",
        ]);
        assert.ok(records.some((x) => x.name === "cloud.example.org" && x.type === "A" && x.content === IPV4), "groupware host gets an A record");
        assert.ok(!render().some((x) => x.name.startsWith("_caldavs")));
    });

    it("dns: a missing DKIM public key is an error, not a silently missing record", () => {
        assert.throws(() => renderDnsRecords({ model: model(), ipv4: IPV4, ipv6: IPV6, dkimPublicKeys: { s2026b: KEY_B }, tlsa: TLSA }), /s2026a/);
        assert.throws(() => renderDnsRecords({ model: model(), ipv4: IPV4, ipv6: IPV6, dkimPublicKeys: { s2026a: KEY_A, s2026b: KEY_B }, tlsa: {} }), /TLSA data for TLS key "tls1"/);
    });

    it("dns: TLSA 3 1 1 on _25._tcp.<mailHost> for every listed TLS key, as Cloudflare structured data", () => {
        const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048, privateKeyEncoding: { type: "pkcs1", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } });
        const data = tlsaOfKey(privateKey);
        assert.match(data, /^3 1 1 [0-9a-f]{64}$/);
        // The same hash as the usual recipe: openssl's DER SubjectPublicKeyInfo, sha256.
        const der = spawnSync("openssl", ["pkey", "-pubout", "-outform", "DER"], { input: privateKey });
        if (der.status === 0) assert.equal(data, `3 1 1 ${createHash("sha256").update(der.stdout).digest("hex")}`);
        const tlsaOf = (rs: readonly DnsRecord[]) => rs.filter((r) => r.type === "TLSA").map((r) => `${r.zone} ${r.name} ${r.content}`);
        assert.deepEqual(tlsaOf(render()), [`example.org _25._tcp.mx1.example.org ${TLSA_1}`]);
        // Rollover: the next key's record is published beside the current one, in list order.
        const both = model((raw) => (raw.tlsKeys = ["tls2", "tls1"]));
        assert.deepEqual(tlsaOf(render(both)), [`example.org _25._tcp.mx1.example.org ${TLSA_2}`, `example.org _25._tcp.mx1.example.org ${TLSA_1}`]);
        const [record] = render().filter((r) => r.type === "TLSA");
        assert.deepEqual(toCloudflareRecord(record).data, { usage: 3, selector: 1, matchingType: 1, certificate: "1".repeat(64) });
        assert.equal(toCloudflareRecord(record).content, undefined);
    });
});

describe("dns: TXT character-strings", () => {
    it("dns: a 2048-bit DKIM record is split into strings of at most 255 bytes that join back to the record", () => {
        const text = `v=DKIM1; k=rsa; p=${KEY_A}`;
        const content = txtContent(text);
        const strings = [...content.matchAll(/"([^"]*)"/g)].map((m) => m[1]);
        assert.deepEqual(strings.map((s) => s.length), [255, text.length - 255]);
        assert.equal(txtText(content), text);
    });

    it("dns: a record of exactly 255 bytes stays one string; 256 bytes become two", () => {
        assert.equal(txtContent("x".repeat(255)), `"${"x".repeat(255)}"`);
        assert.equal(txtContent("x".repeat(256)), `"${"x".repeat(255)}" "x"`);
    });

    it("dns: quotes and backslashes are escaped (RFC 1035 §5.1)", () => {
        assert.equal(txtContent('a"b\\c'), '"a\\"b\\\\c"');
        assert.equal(txtText(txtContent('a"b\\c')), 'a"b\\c');
    });
});

describe("dns: zones", () => {
    it("dns: a subdomain mail domain lives in its parent's zone; CAA only on zone apexes", () => {
        const m = model((raw) => {
            raw.domains = ["example.org", "lists.example.org", "example.com"];
        });
        assert.deepEqual(dnsZones(m), ["example.com", "example.org"]);
        const records = render(m);
        assert.ok(records.filter((x) => x.name.endsWith("lists.example.org")).every((x) => x.zone === "example.org"));
        assert.deepEqual([...new Set(records.filter((x) => x.type === "CAA").map((x) => x.name))].sort(), ["example.com", "example.org"]);
        assert.ok(records.some((x) => x.name === "lists.example.org" && x.type === "MX"));
    });

    it("dns: a zone named in dns.zoneIds (a delegated sub-zone) takes the names below it", () => {
        const m = model((raw) => {
            raw.domains = ["example.org", "lists.example.org"];
            raw.users = [{ address: "alice@example.org" }];
            raw.aliases = [{ source: "postmaster@example.org", destination: "alice@example.org" }];
            raw.sharedMailboxes = [];
            raw.dns = { zoneIds: { "lists.example.org": "0123456789abcdef0123456789abcdef" } };
        });
        assert.deepEqual(dnsZones(m), ["example.org", "lists.example.org"]);
        const records = render(m);
        assert.equal(records.find((x) => x.name === "_dmarc.lists.example.org")?.zone, "lists.example.org");
        assert.equal(records.find((x) => x.name === "_dmarc.example.org")?.zone, "example.org");
        assert.equal(records.filter((x) => x.type === "CAA" && x.name === "lists.example.org").length, 3);
    });

    it("dns: a mailHost outside the mail domains is published in its parent domain's zone", () => {
        const m = model((raw) => {
            raw.mailHost = "mail.provider.net";
        });
        assert.deepEqual(dnsZones(m), ["example.com", "example.org", "provider.net"]);
        assert.equal(render(m).find((x) => x.name === "mail.provider.net" && x.type === "A")?.zone, "provider.net");
    });

    it("dns: a mailHost that is itself a mail domain keeps one SPF record; reports to a foreign address get no authorisation record here", () => {
        const m = model((raw) => {
            raw.mailHost = "example.org";
            raw.adminEmail = "reports@dmarc-service.example";
        });
        const spf = render(m).filter((x) => x.name === "example.org" && x.type === "TXT" && x.content.startsWith('"v=spf1'));
        assert.deepEqual(spf.map((x) => x.content), ['"v=spf1 mx -all"']);
        // dmarc-service.example is not our zone: its owner must publish the consent (docs/OPERATIONS.md).
        assert.deepEqual(render(m).filter((x) => x.name.includes("._report._dmarc.")), []);
    });
});

describe("dns: MTA-STS policy", () => {
    it("dns: the policy text is what RFC 8461 §3.2 describes and its id follows the content", () => {
        const p = mtaStsPolicy(model());
        assert.equal(p.text, "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmax_age: 604800\r\n");
        assert.match(p.id, /^[a-zA-Z0-9]{1,32}$/);
        const testing = mtaStsPolicy(model((raw) => (raw.mtaSts = { mode: "testing" })));
        const otherMx = mtaStsPolicy(model((raw) => (raw.mailHost = "mx2.example.org")));
        const otherAge = mtaStsPolicy(model((raw) => (raw.mtaSts = { maxAge: 86400 })));
        assert.equal(new Set([p.id, testing.id, otherMx.id, otherAge.id]).size, 4);
        assert.equal(mtaStsPolicy(model((raw) => raw.users.push({ address: "dave@example.org" }))).id, p.id);
    });
});

describe("dns: Cloudflare mapping", () => {
    it("dns: MX, CAA and SRV become Cloudflare's structured fields; nothing is proxied", () => {
        const base = { zone: "example.org", ttl: 300 };
        assert.deepEqual(toCloudflareRecord({ ...base, name: "example.org", type: "MX", content: "10 mx1.example.org" }), {
            name: "example.org", type: "MX", ttl: 300, proxied: false, priority: 10, content: "mx1.example.org",
        });
        assert.deepEqual(toCloudflareRecord({ ...base, name: "example.org", type: "CAA", content: '0 iodef "mailto:postmaster@example.org"' }), {
            name: "example.org", type: "CAA", ttl: 300, proxied: false, data: { flags: 0, tag: "iodef", value: "mailto:postmaster@example.org" },
        });
        assert.deepEqual(toCloudflareRecord({ ...base, name: "_imap._tcp.example.org", type: "SRV", content: "0 0 0 ." }), {
            name: "_imap._tcp.example.org", type: "SRV", ttl: 300, proxied: false, priority: 0, data: { priority: 0, weight: 0, port: 0, target: "." },
        });
        assert.deepEqual(toCloudflareRecord({ ...base, name: "example.org", type: "TXT", content: '"v=spf1 mx -all"' }), {
            name: "example.org", type: "TXT", ttl: 300, proxied: false, content: '"v=spf1 mx -all"',
        });
    });

    it("dns: resource names are unique, name single records by type and owner, and ignore addresses and keys", () => {
        const names = recordResourceNames(recordTemplate(model()));
        assert.equal(new Set(names).size, names.length);
        assert.ok(names.includes("A:mx1.example.org"));
        assert.ok(names.includes("TXT:_mta-sts.example.org"));
        assert.ok(names.includes("TXT:s2026a._domainkey.example.com"));
        assert.equal(names.filter((n) => n.startsWith("CAA:example.org:")).length, 3);
        // A changed policy keeps the resource (an update in place, never two STSv1 records at once).
        const testing = recordResourceNames(recordTemplate(model((raw) => (raw.mtaSts = { mode: "testing" }))));
        assert.deepEqual(testing, names);
        // TLSA records are named by key, so a rollover never renames (deletes) the record in use.
        assert.deepEqual(names.filter((n) => n.startsWith("TLSA:")), ["TLSA:_25._tcp.mx1.example.org:tls1"]);
        const rollover = recordResourceNames(recordTemplate(model((raw) => (raw.tlsKeys = ["tls2", "tls1"]))));
        assert.deepEqual(rollover.filter((n) => n.startsWith("TLSA:")).sort(), ["TLSA:_25._tcp.mx1.example.org:tls1", "TLSA:_25._tcp.mx1.example.org:tls2"]);
    });
});
