/**
 * The certificate key rollover (issue 14, proof 7) in the lab, as the config changes of
 * docs/OPERATIONS.md deployed the way `npm run lab` deploys them, with the foreign MTA (DANE,
 * validating) delivering to us after every stage:
 *
 *   [tls1]        -> as the lab runs: the certificate carries tls1, one TLSA record
 *   [tls1, tls2]  -> tls2's TLSA published beside tls1's; nothing on the server changes
 *   [tls2, tls1]  -> the certificate switches to tls2 (tls and certbot steps); both records stay
 *   [tls2]        -> tls1's record goes; nothing on the server changes
 *
 * "Wait the TTL" between the stages is what the TTL does for a real sender, without waiting 300 s:
 * the foreign resolver's cache flushed for our TLSA name, and the foreign Postfix reloaded, because
 * its smtp processes keep TLSA answers in a cache of their own for the records' TTL (a first run
 * without the reload deferred the mail after the switch: "Server certificate not verified", the
 * very failure the wait in docs/OPERATIONS.md prevents). Afterwards lab/stack.yaml is deployed
 * again, which moves the certificate back to tls1.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { smtpTlsaName, tlsaOfKey } from "../../components/dns/records";
import { tlsKeySecret } from "../../components/secrets";
import type { AppliedStep } from "../../lab/apply";
import { deployLabConfig, ensureLab, guest, LAB, labModel, labModelWith, labSecrets } from "../../lab/testkit";
import { eventually, FOREIGN_RCPT, shellQuote, swaks, token } from "./clients";

const mail = guest("mail");
const foreign = guest("foreign");
const changed = (applied: readonly AppliedStep[]) => applied.filter((s) => s.result !== "unchanged").map((s) => s.name);
const tlsaName = smtpTlsaName(labModel().mailHost);
const tlsaOf = (key: string) => tlsaOfKey(labSecrets()[tlsKeySecret(key)]);

/** The TTL has passed for the foreign MTA: its resolver and its smtp processes forget our TLSA records. */
async function ttlPassed(): Promise<void> {
    await foreign.execOk(`unbound-control flush_type ${tlsaName} TLSA >/dev/null && postfix reload 2>/dev/null`);
}

/** The TLSA records a validating resolver gets for us (the foreign MTA's unbound, after the TTL). */
async function publishedTlsa(): Promise<string[]> {
    await ttlPassed();
    const out = await foreign.execOk(`dig +short ${tlsaName} TLSA`);
    return out
        .split("\n")
        .filter(Boolean)
        .map((l) => {
            // dig splits the hash into groups: "3 1 1 20705C03... 8718A794".
            const [usage, selector, matching, ...hash] = l.trim().split(/\s+/);
            return `${usage} ${selector} ${matching} ${hash.join("").toLowerCase()}`;
        })
        .sort();
}

/** The key hash of the certificate the server serves now. */
async function servedTlsa(): Promise<string> {
    return tlsaOfKey(await mail.execOk("openssl x509 -in /etc/ispmail/tls/fullchain.pem -noout -pubkey"));
}

/** The foreign MTA (DANE) delivers one message to alice: the log line of the verified connection. */
async function foreignDeliversVerified(): Promise<void> {
    const since = (await foreign.execOk("date '+%Y-%m-%d %H:%M:%S'")).trim();
    const r = await swaks(["--server", LAB.foreign.ipv4, "--port", "25", "--from", FOREIGN_RCPT, "--to", "alice@example.org", "--h-Subject", token("tls rollover")]);
    assert.equal(r.code, 250, r.transcript);
    const queueId = /queued as ([0-9A-F]+)/.exec(r.transcript)?.[1];
    const log = () => foreign.execOk(`journalctl --since ${shellQuote(since)} --no-pager -o cat -u postfix.service`);
    const line = await eventually("the foreign MTA's delivery to us", async () => (await log()).split("\n").find((l) => l.startsWith(`${queueId}: to=<alice@example.org>`) && /status=(sent|deferred)/.test(l)));
    assert.match(line, /status=sent/, line);
    assert.match(await log(), /^Verified TLS connection established to mx1\.example\.org\[/m);
}

describe("certificate key rollover (lab)", { timeout: 900_000 }, () => {
    before(async () => {
        await ensureLab();
        const current = await deployLabConfig(labModel());
        assert.deepEqual(changed(current.applied), []);
    });

    after(async () => {
        const restored = await deployLabConfig(labModel());
        assert.deepEqual(changed(restored.applied).sort(), ["certbot", "tls"]);
        assert.equal(await servedTlsa(), tlsaOf("tls1"));
        assert.deepEqual(await publishedTlsa(), [tlsaOf("tls1")]);
        await foreignDeliversVerified();
    });

    test("tls rollover: publish, switch, retire; the foreign MTA verifies us at every stage", async () => {
        assert.equal(await servedTlsa(), tlsaOf("tls1"));

        const publish = await deployLabConfig(labModelWith({ tlsKeys: ["tls1", "tls2"] }));
        assert.deepEqual(changed(publish.applied), [], "publishing the next key changes nothing on the server");
        assert.deepEqual(await publishedTlsa(), [tlsaOf("tls1"), tlsaOf("tls2")].sort());
        assert.equal(await servedTlsa(), tlsaOf("tls1"));
        await foreignDeliversVerified();

        const switched = await deployLabConfig(labModelWith({ tlsKeys: ["tls2", "tls1"] }));
        assert.deepEqual(changed(switched.applied).sort(), ["certbot", "tls"]);
        const certbot = switched.applied.find((s) => s.name === "certbot")!;
        assert.ok(certbot.actions.some((a) => /the configured key changed/.test(a)), certbot.actions.join("; "));
        assert.equal(await servedTlsa(), tlsaOf("tls2"));
        assert.deepEqual(await publishedTlsa(), [tlsaOf("tls1"), tlsaOf("tls2")].sort());
        await foreignDeliversVerified();

        const retired = await deployLabConfig(labModelWith({ tlsKeys: ["tls2"] }));
        assert.deepEqual(changed(retired.applied), [], "retiring the old record changes nothing on the server");
        assert.deepEqual(await publishedTlsa(), [tlsaOf("tls2")]);
        await foreignDeliversVerified();
    });
});
