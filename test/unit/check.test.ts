/**
 * `npm run check`: the comparisons and cross-checks, against a DNS that serves exactly what a test
 * hands it (the lab model's zone, written out in the test, then altered the way records break in
 * real life).
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { describe, test } from "node:test";
import type { Model } from "../../components/config";
import { mtaStsPolicy, renderDnsRecords, type DnsRecord } from "../../components/dns/records";
import { checkDkim, checkDnssec, checkMtaSts, checkSpf, mxPatternMatches, policyId } from "../../check/consistency";
import { parseServer, presentation } from "../../check/wire";
import { readGreeting } from "../../check/net";
import { createServer } from "node:net";
import { checkPtr, compareRecords, expectedValue } from "../../check/dns";
import { formatFinding, type Finding } from "../../check/findings";
import { loadIntended, stackFileForCheck } from "../../check/intended";
import type { Lookup, LookupType } from "../../check/lookup";
import { labModel } from "../fixtures/config";

const model: Model = labModel();
const IPV4 = "192.0.2.10";
const IPV6 = "2001:db8:2::10";
const dkimKey = (bits: number) => generateKeyPairSync("rsa", { modulusLength: bits }).publicKey.export({ type: "spki", format: "der" }).toString("base64");
const KEY = dkimKey(2048);
const TLSA = `3 1 1 ${"d".repeat(64)}`;
const rendered = renderDnsRecords({ model, ipv4: IPV4, ipv6: IPV6, dkimPublicKeys: { lab2026: KEY }, tlsa: { [model.tlsKeys[0]]: TLSA } });

/** A zone as a resolver answers: "TYPE name" -> the values check/lookup.ts hands on. */
type Served = ReadonlyMap<string, readonly string[]>;

/**
 * The lab model's records as the DNS serves them, written out here in the form check/lookup.ts
 * hands them over (TXT character-strings joined without quotes, names without the root dot), not
 * derived with check/dns.ts's normaliser: a wrong normaliser then shows up as a problem.
 */
function labZone(): Served {
    const zone = new Map<string, string[]>();
    const add = (type: string, name: string, ...values: string[]) => zone.set(`${type} ${name}`, values);
    add("A", "mx1.example.org", IPV4);
    add("AAAA", "mx1.example.org", IPV6);
    add("TXT", "mx1.example.org", "v=spf1 a -all");
    add("TXT", "example.com._report._dmarc.example.org", "v=DMARC1");
    add("TLSA", "_25._tcp.mx1.example.org", TLSA);
    add("A", "webmail.example.org", IPV4);
    add("AAAA", "webmail.example.org", IPV6);
    for (const d of ["example.org", "example.com"]) {
        for (const host of [`mta-sts.${d}`, `autoconfig.${d}`]) {
            add("A", host, IPV4);
            add("AAAA", host, IPV6);
        }
        add("CAA", d, '0 issue "letsencrypt.org; validationmethods=http-01"', '0 issuewild ";"', '0 iodef "mailto:postmaster@example.org"');
        add("MX", d, "10 mx1.example.org");
        add("TXT", d, "v=spf1 mx -all");
        add("TXT", `_dmarc.${d}`, "v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:postmaster@example.org");
        // Over 255 bytes: rendered as two character-strings, read as one text.
        add("TXT", `lab2026._domainkey.${d}`, `v=DKIM1; k=rsa; p=${KEY}`);
        add("TXT", `_mta-sts.${d}`, `v=STSv1; id=${mtaStsPolicy(model).id}`);
        add("TXT", `_smtp._tls.${d}`, "v=TLSRPTv1; rua=mailto:postmaster@example.org");
        add("SRV", `_submissions._tcp.${d}`, "0 1 465 mx1.example.org");
        add("SRV", `_submission._tcp.${d}`, "0 1 587 mx1.example.org");
        add("SRV", `_imaps._tcp.${d}`, "0 1 993 mx1.example.org");
        for (const off of ["_imap._tcp", "_pop3._tcp", "_pop3s._tcp"]) add("SRV", `${off}.${d}`, "0 0 0 .");
    }
    return zone;
}
const served = labZone();

/** A DNS serving `zone` (+ PTRs). */
function zoneLookup(zone: Served, ptr: Record<string, string[]> = { [IPV4]: [model.mailHost], [IPV6]: [model.mailHost] }): Lookup {
    return {
        async resolve(name: string, type: LookupType) {
            if (type === "PTR") return ptr[name] ?? [];
            return [...(zone.get(`${type} ${name}`) ?? [])];
        },
    };
}
/** The zone with the values of one name and type replaced (null: removed). */
const replace = (zone: Served, name: string, type: string, ...values: string[] | [null]): Served => {
    const changed = new Map(zone);
    if (values[0] === null) changed.delete(`${type} ${name}`);
    else changed.set(`${type} ${name}`, values as string[]);
    return changed;
};
const problems = (fs: readonly Finding[]) => fs.filter((f) => f.status === "problem");

describe("check", () => {
    test("check: the rendered record set, served as is, has no problem", async () => {
        assert.deepEqual([...new Set(rendered.map((r) => `${r.type} ${r.name}`))].sort(), [...served.keys()].sort(), "the written-out zone has every name and type rendered");
        assert.ok(rendered.some((r) => r.type === "TXT" && r.content.startsWith('"v=DKIM1') && r.content.includes('" "')), "the DKIM record spans two character-strings");
        const fs = await compareRecords(rendered, zoneLookup(served), { fix: "npm run lab" });
        assert.equal(problems(fs).length, 0, fs.map(formatFinding).join("\n"));
        assert.equal(fs.length, served.size);
        assert.deepEqual(fs.filter((f) => f.message.startsWith("TLSA ")).map((f) => f.status), ["ok"]);
    });

    test("check: a TLSA record that no longer matches the certificate key is a problem naming both values", async () => {
        const other = `3 1 1 ${"e".repeat(64)}`;
        const fs = problems(await compareRecords(rendered, zoneLookup(replace(served, "_25._tcp.mx1.example.org", "TLSA", other)), { fix: "npm run lab" }));
        assert.equal(fs.length, 1, fs.map(formatFinding).join("\n"));
        assert.match(fs[0].message, new RegExp(`TLSA _25\\._tcp\\.mx1\\.example\\.org: missing "${TLSA}"; unexpected "${other}"`));
        // Without the stack outputs the key is unknown: TLSA is not compared (nor DKIM content).
        const unknownKeys = await compareRecords(rendered, zoneLookup(replace(served, "_25._tcp.mx1.example.org", "TLSA", other)), { fix: "f", skipDkimContent: true });
        assert.deepEqual(unknownKeys.filter((f) => f.message.startsWith("TLSA ")), []);
    });

    test("check: a zone without a DS record at its parent is named with the registrar fix; dns.dnssec false checks nothing", async () => {
        const ds = "2371 13 2 " + "A".repeat(64);
        const withDs = replace(replace(served, "example.org", "DS", ds), "example.com", "DS", ds);
        assert.equal(problems(await checkDnssec(model, zoneLookup(withDs))).length, 0);
        const missing = problems(await checkDnssec(model, zoneLookup(replace(withDs, "example.com", "DS", null))));
        assert.deepEqual(missing.map((f) => f.message.split(" ")[0]), ["example.com"]);
        assert.match(missing[0].message, /no DS record at its parent/);
        assert.match(missing[0].fix ?? "", /pulumi stack output dnssecDs/);
        const off = await checkDnssec({ ...model, dns: { ...model.dns, dnssec: false } }, zoneLookup(served));
        assert.deepEqual(off.map((f) => f.status), ["ok"]);
    });

    test("check: the SMTP greeting is read to its last line, as postscreen sends it (220- first, 220 after a wait)", async () => {
        const server = createServer((socket) => {
            socket.write("220-mx1.example.org ESMTP\r\n");
            setTimeout(() => socket.write("220 mx1.example.org ESMTP\r\n"), 300);
            socket.on("data", () => socket.end());
        });
        await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
        try {
            const port = (server.address() as { port: number }).port;
            assert.equal(await readGreeting("127.0.0.1", port), "220 mx1.example.org ESMTP");
        } finally {
            server.close();
        }
    });

    test("check: the wire lookup's answers read in the rendered form; server addresses of every shape", () => {
        const tlsa = presentation({ type: "TLSA", name: "_25._tcp.mx1.example.org", data: { usage: 3, selector: 1, matchingType: 1, certificate: Buffer.from("ab".repeat(32), "hex") } });
        assert.equal(tlsa, `3 1 1 ${"ab".repeat(32)}`);
        assert.equal(presentation({ type: "SSHFP", name: "mx1.example.org", data: { algorithm: 4, hash: 2, fingerprint: "CD".repeat(32) } }), `4 2 ${"cd".repeat(32)}`);
        assert.equal(presentation({ type: "DS", name: "example.org", data: { keyTag: 2371, algorithm: 13, digestType: 2, digest: Buffer.from("ef".repeat(32), "hex") } }), `2371 13 2 ${"EF".repeat(32)}`);
        assert.deepEqual(parseServer("192.0.2.1"), { host: "192.0.2.1", port: 53 });
        assert.deepEqual(parseServer("192.0.2.1:5353"), { host: "192.0.2.1", port: 5353 });
        assert.deepEqual(parseServer("[2001:db8::1]:53"), { host: "2001:db8::1", port: 53 });
        assert.deepEqual(parseServer("2001:db8::1"), { host: "2001:db8::1", port: 53 });
    });

    test("check: expected values are compared in the form the resolver gives", () => {
        const of = (type: string, name: string) => rendered.filter((r) => r.type === type && r.name === name).map(expectedValue);
        assert.deepEqual(of("TXT", "_dmarc.example.com"), ["v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:postmaster@example.org"]);
        assert.deepEqual(of("TXT", "lab2026._domainkey.example.org"), [`v=DKIM1; k=rsa; p=${KEY}`]);
        assert.deepEqual(of("MX", "example.com"), ["10 mx1.example.org"]);
        const upper: DnsRecord = { zone: "example.org", type: "MX", name: "example.org", ttl: 300, content: "10 MX1.Example.ORG." };
        assert.equal(expectedValue(upper), "10 mx1.example.org");
        assert.equal(expectedValue({ ...upper, type: "AAAA", name: "mx1.example.org", content: "2001:0db8:0002:0000::0010" }), "2001:db8:2::10");
        assert.equal(expectedValue({ ...upper, type: "TXT", content: '"a \\"quoted\\" " "part"' }), 'a "quoted" part');
    });

    test("check: a changed record is named, with both values and the fix", async () => {
        const changed = replace(served, "_dmarc.example.com", "TXT", "v=DMARC1; p=none");
        const fs = problems(await compareRecords(rendered, zoneLookup(changed), { fix: "npm run lab" }));
        assert.equal(fs.length, 1);
        assert.match(formatFinding(fs[0]), /^PROBLEM dns: TXT _dmarc\.example\.com: missing "v=DMARC1; p=reject.*unexpected "v=DMARC1; p=none".* -> fix: npm run lab$/);
    });

    test("check: a second SPF record and a missing MX are problems; foreign TXT records are ignored", async () => {
        let changed = replace(served, "example.org", "TXT", "v=spf1 mx -all", "v=spf1 a -all", "google-site-verification=abc");
        changed = replace(changed, "example.com", "MX", null);
        const fs = problems(await compareRecords(rendered, zoneLookup(changed), { fix: "f" }));
        assert.deepEqual(fs.map((f) => f.message.split(":")[0]).sort(), ["MX example.com", "TXT example.org"]);
        assert.match(fs.find((f) => f.message.startsWith("TXT"))!.message, /unexpected "v=spf1 a -all"/);
    });

    test("check: PTR must be exactly the mail host for both families", async () => {
        assert.equal(problems(await checkPtr([IPV4, IPV6], model.mailHost, zoneLookup(served), "f")).length, 0);
        const fs = problems(await checkPtr([IPV4, IPV6], model.mailHost, zoneLookup(served, { [IPV4]: [model.mailHost], [IPV6]: ["static.10.2.0.192.clients.your-server.de"] }), "f"));
        assert.equal(fs.length, 1);
        assert.match(fs[0].message, /PTR of 2001:db8:2::10 is static/);
    });

    test("check: SPF must let the MX's addresses send; one record only", async () => {
        assert.equal(problems(await checkSpf(model, { ipv4: IPV4, ipv6: IPV6 }, zoneLookup(served), "f")).length, 0);
        const narrow = replace(served, "example.org", "TXT", `v=spf1 ip4:${IPV4} -all`);
        const fs = problems(await checkSpf(model, { ipv4: IPV4, ipv6: IPV6 }, zoneLookup(narrow), "f"));
        assert.equal(fs.length, 1);
        assert.match(fs[0].message, /example\.org SPF .* does not permit 2001:db8:2::10/);
    });

    test("check: the signing DKIM key must be published as a valid RSA >= 2048 key", async () => {
        assert.equal(problems(await checkDkim(model, zoneLookup(served), "f")).length, 0);
        const weak = replace(served, "lab2026._domainkey.example.com", "TXT", `v=DKIM1; k=rsa; p=${dkimKey(1024)}`);
        assert.match(problems(await checkDkim(model, zoneLookup(weak), "f"))[0].message, /lab2026\._domainkey\.example\.com: key is rsa 1024 bits/);
        const gone = replace(served, "lab2026._domainkey.example.org", "TXT", null);
        assert.match(problems(await checkDkim(model, zoneLookup(gone), "f"))[0].message, /lab2026\._domainkey\.example\.org \(the signing selector\) has 0 DKIM key records/);
    });

    test("check: the MTA-STS policy served must cover the MX and match the announced id", async () => {
        const policy = mtaStsPolicy(model);
        const serve = (body: string) => async () => ({ status: 200, body });
        assert.equal(policyId(policy.text), policy.id, "check computes ids like components/dns/mta-sts.ts");
        assert.equal(problems(await checkMtaSts(model, zoneLookup(served), serve(policy.text), "f")).length, 0);
        const stale = policy.text.replace("max_age: 604800", "max_age: 86400");
        assert.match(problems(await checkMtaSts(model, zoneLookup(served), serve(stale), "f"))[0].message, /does not belong to the policy served/);
        const otherMx = policy.text.replace(`mx: ${model.mailHost}`, "mx: mx2.example.org");
        assert.match(problems(await checkMtaSts(model, zoneLookup(served), serve(otherMx), "f"))[0].message, /does not cover the MX mx1\.example\.org/);
        assert.ok(mxPatternMatches("*.example.org", "mx1.example.org") && !mxPatternMatches("*.example.org", "a.mx1.example.org"));
    });

    test("check: a real stack file with encrypted values loads, with addresses given on the command line", async () => {
        const { raw, secretKeys } = stackFileForCheck("config:\n  ispmail:users:\n    - address: a@example.org\n      password:\n        secure: v1:abc\n");
        assert.deepEqual(secretKeys, ["ispmail:users"]);
        assert.ok(!JSON.stringify(raw).includes("v1:abc"));
        const intended = await loadIntended({ stack: "prod", ipv4: "203.0.113.7", ipv6: "2001:db8:7::1" });
        assert.equal(intended.dkimKnown, false);
        assert.ok(intended.records.some((r) => r.type === "MX"));
        await assert.rejects(loadIntended({ stack: "prod", ipv4: "203.0.113.7" }), /IPv6 address is needed/);
    });
});
