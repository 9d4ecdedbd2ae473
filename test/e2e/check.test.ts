/**
 * `npm run check -- --stack lab` against the running lab: clean on a healthy lab, and when what is
 * served and what the stack says differ, the broken record is named with its fix.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { txtContent } from "../../components/dns/records";
import { formatFinding } from "../../check/findings";
import { loadIntended } from "../../check/intended";
import { runChecks } from "../../check/run";
import { client, ensureLab, guest, LAB } from "../../lab/testkit";

const REPO = join(__dirname, "..", "..");

describe("check", { timeout: 300_000 }, () => {
    before(ensureLab);

    test("check: passes on a healthy lab (npm run check -- --stack lab exits 0)", async () => {
        const t0 = Date.now();
        const r = await client(process.execPath, ["--import", "tsx", join(REPO, "check", "cli.ts"), "--stack", "lab"], { timeoutMs: 240_000 });
        const problems = r.stdout.split("\n").filter((l) => l.startsWith("PROBLEM"));
        assert.deepEqual(problems, [], r.stdout + r.stderr);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stdout, /^check lab: 0 problem\(s\), \d+ ok/m);
        // Every area was looked at, not skipped.
        for (const area of ["dns", "ptr", "mx", "spf", "dmarc", "dkim", "port", "tls", "mta-sts", "outbound-25"]) assert.match(r.stdout, new RegExp(`^ok +${area}:`, "m"), `no ok line for ${area}`);
        console.log(`# check on the lab: ${((Date.now() - t0) / 1000).toFixed(1)} s, ${r.stdout.split("\n").filter((l) => l.startsWith("ok")).length} ok lines`);
    });

    test("check: names the record that differs from the stack, with the fix", async () => {
        const intended = await loadIntended({ stack: "lab" });
        // The stack now says p=quarantine for example.com; the lab DNS still serves p=reject.
        const changed = intended.records.map((r) => (r.name === "_dmarc.example.com" && r.type === "TXT" ? { ...r, content: txtContent("v=DMARC1; p=quarantine") } : r));
        const findings = await runChecks({ ...intended, records: changed }, { onServer: (c) => guest("mail").exec(c), outboundTarget: LAB.foreign.ipv4 });
        const problems = findings.filter((f) => f.status === "problem").map(formatFinding);
        assert.equal(problems.length, 1, problems.join("\n"));
        assert.match(problems[0], /^PROBLEM dns: TXT _dmarc\.example\.com: missing "v=DMARC1; p=quarantine"; unexpected "v=DMARC1; p=reject/);
        assert.match(problems[0], /-> fix: .*npm run lab/);
    });

    test("check: a wrong PTR expectation is reported for both families", async () => {
        const intended = await loadIntended({ stack: "lab" });
        const findings = await runChecks({ ...intended, model: { ...intended.model, mailHost: "mx9.example.org" } }, {});
        const ptr = findings.filter((f) => f.check === "ptr" && f.status === "problem");
        assert.equal(ptr.length, 2, ptr.map(formatFinding).join("\n"));
        assert.match(ptr[0].message, new RegExp(`PTR of ${LAB.mail.ipv4.replace(/\./g, "\\.")} is mx1\\.example\\.org, expected exactly mx9\\.example\\.org`));
    });
});
