/**
 * DKIM rotation in the lab, as a sequence of config changes deployed the way `npm run lab` deploys
 * (records on the lab DNS, the signer decided from the records' ages, every mail step applied), with
 * the foreign MTA's Rspamd verifying what it receives:
 *
 *   [lab2026]                -> as the lab runs: lab2026 signs
 *   [lab2026, lab2027]       -> lab2027 published and installed, lab2026 still signs
 *   [lab2027, lab2026] early -> nothing on the server changes: lab2027 is younger than its TTL
 *   [lab2027, lab2026] later -> after the TTL only dkim-signer changes; the foreign MTA verifies lab2027,
 *                               and lab2026 is still published
 *
 * The DNS TTL is lowered to 60 s (the least the config allows) so the wait stays short; afterwards
 * lab/stack.yaml is deployed again, which drops lab2027 and signs with lab2026 (long published).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { dkimRecordName } from "../../components/dkim";
import { dkimPublicKeyFromPem, dkimKeySecret } from "../../components/secrets";
import { labPublishedAt } from "../../lab/dns";
import { client, deployLabConfig, ensureLab, guest, LAB, labModel, labModelWith, labSecrets } from "../../lab/testkit";
import type { AppliedStep } from "../../lab/apply";
import { FOREIGN_RCPT, foreignMessage, headerBlock, sleep, submit, token } from "./clients";

const OLD = "lab2026";
const NEW = "lab2027";
const TTL = 60;
const DOMAIN = "example.org";

const changed = (applied: readonly AppliedStep[]) => applied.filter((s) => s.result !== "unchanged").map((s) => s.name);

/** The DKIM TXT records the lab DNS serves for a selector in example.org (kdig, the lab's resolver). */
async function published(selector: string): Promise<string[]> {
    const r = await client("kdig", [`@${LAB.dns}`, dkimRecordName(selector, DOMAIN), "TXT", "+short", "+time=2", "+retry=1"]);
    assert.equal(r.code, 0, r.stderr);
    // kdig prints a long TXT as several quoted strings: join them back into one.
    return r.stdout.split("\n").filter(Boolean).map((l) => l.replace(/"\s*"/g, "").replace(/"/g, ""));
}

/** Sends from alice to the foreign MTA and returns what its Rspamd concluded about the DKIM signature. */
async function signatureSeenAbroad(): Promise<{ selector: string | undefined; verdict: string }> {
    const secrets = labSecrets();
    const subject = token("dkim rotation");
    const sent = await submit("alice@example.org", secrets["user:alice@example.org"], { to: FOREIGN_RCPT, subject });
    assert.equal(sent.code, 250, sent.transcript);
    const headers = headerBlock(await foreignMessage(subject));
    const signature = headers.split("\n").find((l) => /^DKIM-Signature:/i.test(l)) ?? "";
    const verdict = headers.split("\n").filter((l) => /^Authentication-Results:/i.test(l)).join("\n");
    return { selector: /\bs=([a-z0-9-]+);/.exec(signature)?.[1], verdict };
}

describe("dkim rotation (lab)", { timeout: 900_000 }, () => {
    const suiteStart = Date.now();

    // Removing a selector from the config leaves its key file on the server (keys are never deleted
    // by a config change); this suite removes the new key itself so that each run starts clean.
    const dropNewKey = () => guest("mail").execOk(`rm -f /srv/ispmail/dkim/${NEW}.key`);

    before(async () => {
        await ensureLab();
        await dropNewKey();
        const current = await deployLabConfig(labModel());
        assert.equal(current.dkim.selector, OLD, current.dkim.reason);
    });

    after(async () => {
        // Back to lab/stack.yaml: lab2027 leaves DNS, lab2026 signs (published all along).
        const restored = await deployLabConfig(labModel());
        assert.equal(restored.dkim.selector, OLD, restored.dkim.reason);
        assert.deepEqual(await published(NEW), []);
        await dropNewKey();
        console.log(`# dkim rotation suite: ${((Date.now() - suiteStart) / 1000).toFixed(1)} s`);
    });

    test("dkim: a selector added at the end is published and installed; the old one keeps signing", async () => {
        const d = await deployLabConfig(labModelWith({ dkimSelectors: [OLD, NEW], dns: { ttl: TTL } }));
        assert.deepEqual([d.dkim.selector, d.dkim.state], [OLD, "settled"], d.dkim.reason);
        assert.deepEqual(changed(d.applied), ["rspamd"], JSON.stringify(d.applied.filter((s) => s.result !== "unchanged")));
        const rspamd = d.applied.find((s) => s.name === "rspamd")!;
        assert.ok(rspamd.changedFiles.includes(`/srv/ispmail/dkim/${NEW}.key`), rspamd.changedFiles.join(", "));
        assert.equal(d.applied.find((s) => s.name === "dkim-signer")?.result, "unchanged", "the signing config is unchanged");

        const key = dkimPublicKeyFromPem(labSecrets()[dkimKeySecret(NEW)]);
        assert.deepEqual(await published(NEW), [`v=DKIM1; k=rsa; p=${key}`]);
        const mode = (await guest("mail").execOk(`stat -c '%U %a' /srv/ispmail/dkim/${NEW}.key`)).trim();
        assert.equal(mode, "_rspamd 600");

        const seen = await signatureSeenAbroad();
        assert.equal(seen.selector, OLD);
        assert.match(seen.verdict, /dkim=pass/, seen.verdict);
    });

    test("dkim: listed first, the new selector does not sign before its record has been public for the TTL, then does", async () => {
        // The old selector must itself be old enough to keep signing (it is, unless the lab came up
        // within the last minute): wait for that, bounded by the TTL.
        const oldSince = labPublishedAt("TXT")(dkimRecordName(OLD, DOMAIN));
        assert.ok(oldSince, `${OLD} has a publication time`);
        const oldWait = oldSince.getTime() + TTL * 1000 - Date.now();
        if (oldWait > 0) await sleep(Math.min(oldWait + 500, TTL * 1000));

        const rotated = labModelWith({ dkimSelectors: [NEW, OLD], dns: { ttl: TTL } });
        const early = await deployLabConfig(rotated);
        assert.deepEqual([early.dkim.selector, early.dkim.wanted, early.dkim.state], [OLD, NEW, "waiting"], early.dkim.reason);
        assert.deepEqual(changed(early.applied), [], "nothing on the server changes before the TTL has passed");
        const before = await signatureSeenAbroad();
        assert.equal(before.selector, OLD);
        assert.match(before.verdict, /dkim=pass/, before.verdict);

        // Wait until the new record has been public for its TTL (bounded: at most TTL + 2 s).
        const readyAt = new Date(early.dkim.readyAt!).getTime();
        const wait = readyAt - Date.now();
        assert.ok(wait <= TTL * 1000, `ready at ${early.dkim.readyAt}, ${wait} ms from now`);
        if (wait > 0) await sleep(wait + 1000);

        const later = await deployLabConfig(rotated);
        assert.deepEqual([later.dkim.selector, later.dkim.state], [NEW, "settled"], later.dkim.reason);
        assert.deepEqual(changed(later.applied), ["dkim-signer"]);
        const signer = later.applied.find((s) => s.name === "dkim-signer")!;
        // The signer and the ARC seal switch together.
        assert.deepEqual(signer.changedFiles, ["/etc/rspamd/local.d/dkim_signing.conf", "/etc/rspamd/local.d/arc.conf"]);
        assert.ok(signer.actions.some((a) => /reloaded rspamd/.test(a)), signer.actions.join("; "));

        const afterSwitch = await signatureSeenAbroad();
        assert.equal(afterSwitch.selector, NEW, "the foreign MTA receives mail signed with the new selector");
        assert.match(afterSwitch.verdict, /dkim=pass/, afterSwitch.verdict);
        assert.equal((await published(OLD)).length, 1, "the old record stays until it is removed from the config");

        const again = await deployLabConfig(rotated);
        assert.deepEqual(changed(again.applied), [], "a further deployment changes nothing");
    });
});
