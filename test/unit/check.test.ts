/**
 * `npm run check`: the comparisons and cross-checks, against a DNS that serves exactly what a test
 * hands it (a map built from rendered records, then altered the way records break in real life).
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { describe, test } from "node:test";
import type { Model } from "../../components/config";
import { mtaStsPolicy, renderDnsRecords, txtContent, type DnsRecord } from "../../components/dns/records";
import { checkDkim, checkMtaSts, checkSpf, mxPatternMatches, policyId } from "../../check/consistency";
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
const rendered = renderDnsRecords({ model, ipv4: IPV4, ipv6: IPV6, dkimPublicKeys: { lab2026: KEY } });

/** A DNS serving `records` (+ PTRs), in the normalised form check/lookup.ts produces. */
function zoneLookup(records: readonly DnsRecord[], ptr: Record<string, string[]> = { [IPV4]: [model.mailHost], [IPV6]: [model.mailHost] }): Lookup {
    return {
        async resolve(name: string, type: LookupType) {
            if (type === "PTR") return ptr[name] ?? [];
            return records.filter((r) => r.name === name && r.type === type).map(expectedValue);
        },
    };
}
const replace = (records: readonly DnsRecord[], name: string, type: string, content: string | null): DnsRecord[] => {
    const kept = records.filter((r) => !(r.name === name && r.type === type));
    const template = records.find((r) => r.name === name && r.type === type)!;
    return content === null ? kept : [...kept, { ...template, content }];
};
const problems = (fs: readonly Finding[]) => fs.filter((f) => f.status === "problem");

describe("check", () => {
    test("check: the rendered record set, served as is, has no problem", async () => {
        const fs = await compareRecords(rendered, zoneLookup(rendered), { fix: "npm run lab" });
        assert.equal(problems(fs).length, 0, fs.map(formatFinding).join("\n"));
        assert.equal(fs.length, new Set(rendered.map((r) => `${r.type} ${r.name}`)).size);
    });

    test("check: a changed record is named, with both values and the fix", async () => {
        const served = replace(rendered, "_dmarc.example.com", "TXT", txtContent("v=DMARC1; p=none"));
        const fs = problems(await compareRecords(rendered, zoneLookup(served), { fix: "npm run lab" }));
        assert.equal(fs.length, 1);
        assert.match(formatFinding(fs[0]), /^PROBLEM dns: TXT _dmarc\.example\.com: missing "v=DMARC1; p=reject.*unexpected "v=DMARC1; p=none".* -> fix: npm run lab$/);
    });

    test("check: a second SPF record and a missing MX are problems; foreign TXT records are ignored", async () => {
        let served = [...rendered, { ...rendered.find((r) => r.name === "example.org" && r.type === "TXT")!, content: txtContent("v=spf1 a -all") }];
        served = [...served, { ...served.find((r) => r.name === "example.org" && r.type === "TXT")!, content: txtContent("google-site-verification=abc") }];
        served = replace(served, "example.com", "MX", null);
        const fs = problems(await compareRecords(rendered, zoneLookup(served), { fix: "f" }));
        assert.deepEqual(fs.map((f) => f.message.split(":")[0]).sort(), ["MX example.com", "TXT example.org"]);
        assert.match(fs.find((f) => f.message.startsWith("TXT"))!.message, /unexpected "v=spf1 a -all"/);
    });

    test("check: PTR must be exactly the mail host for both families", async () => {
        assert.equal(problems(await checkPtr([IPV4, IPV6], model.mailHost, zoneLookup(rendered), "f")).length, 0);
        const fs = problems(await checkPtr([IPV4, IPV6], model.mailHost, zoneLookup(rendered, { [IPV4]: [model.mailHost], [IPV6]: ["static.10.2.0.192.clients.your-server.de"] }), "f"));
        assert.equal(fs.length, 1);
        assert.match(fs[0].message, /PTR of 2001:db8:2::10 is static/);
    });

    test("check: SPF must let the MX's addresses send; one record only", async () => {
        assert.equal(problems(await checkSpf(model, { ipv4: IPV4, ipv6: IPV6 }, zoneLookup(rendered), "f")).length, 0);
        const narrow = replace(rendered, "example.org", "TXT", txtContent(`v=spf1 ip4:${IPV4} -all`));
        const fs = problems(await checkSpf(model, { ipv4: IPV4, ipv6: IPV6 }, zoneLookup(narrow), "f"));
        assert.equal(fs.length, 1);
        assert.match(fs[0].message, /example\.org SPF .* does not permit 2001:db8:2::10/);
    });

    test("check: the signing DKIM key must be published as a valid RSA >= 2048 key", async () => {
        assert.equal(problems(await checkDkim(model, zoneLookup(rendered), "f")).length, 0);
        const weak = replace(rendered, "lab2026._domainkey.example.com", "TXT", txtContent(`v=DKIM1; k=rsa; p=${dkimKey(1024)}`));
        assert.match(problems(await checkDkim(model, zoneLookup(weak), "f"))[0].message, /lab2026\._domainkey\.example\.com: key is rsa 1024 bits/);
        const gone = replace(rendered, "lab2026._domainkey.example.org", "TXT", null);
        assert.match(problems(await checkDkim(model, zoneLookup(gone), "f"))[0].message, /lab2026\._domainkey\.example\.org \(the signing selector\) has 0 DKIM key records/);
    });

    test("check: the MTA-STS policy served must cover the MX and match the announced id", async () => {
        const policy = mtaStsPolicy(model);
        const serve = (body: string) => async () => ({ status: 200, body });
        assert.equal(policyId(policy.text), policy.id, "check computes ids like components/dns/mta-sts.ts");
        assert.equal(problems(await checkMtaSts(model, zoneLookup(rendered), serve(policy.text), "f")).length, 0);
        const stale = policy.text.replace("max_age: 604800", "max_age: 86400");
        assert.match(problems(await checkMtaSts(model, zoneLookup(rendered), serve(stale), "f"))[0].message, /does not belong to the policy served/);
        const otherMx = policy.text.replace(`mx: ${model.mailHost}`, "mx: mx2.example.org");
        assert.match(problems(await checkMtaSts(model, zoneLookup(rendered), serve(otherMx), "f"))[0].message, /does not cover the MX mx1\.example\.org/);
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
