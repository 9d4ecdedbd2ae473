/**
 * Trust on the wire (issue 14): outbound DANE. The foreign MX publishes a TLSA record (3 1 1 of its
 * key) in the signed lab zone; a second name for it, the MX of tlsa-mismatch.example.net, publishes
 * one that matches no key. Our Postfix sends with smtp_tls_security_level = dane through the
 * server's validating resolver.
 */
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { ensureLab, guest, LAB, labSecrets } from "../../lab/testkit";
import { eventually, FOREIGN_RCPT, foreignMessage, shellQuote, submit, token } from "./clients";

const mail = guest("mail");

/** Postfix's log lines on the server since `since` (journal), as text. */
async function postfixLogSince(since: string): Promise<string> {
    return mail.execOk(`journalctl --since ${shellQuote(since)} --no-pager -o cat -u postfix.service`);
}

describe("DANE, sending (lab)", { timeout: 300_000 }, () => {
    let password: string;
    before(async () => {
        await ensureLab();
        password = labSecrets()["user:alice@example.org"];
    });

    test("dane: mail to a destination whose MX publishes a matching TLSA leaves over a verified TLS connection", async () => {
        const since = (await mail.execOk("date '+%Y-%m-%d %H:%M:%S'")).trim();
        const subject = token("dane verified");
        const sent = await submit("alice@example.org", password, { to: FOREIGN_RCPT, subject });
        assert.equal(sent.code, 250, sent.transcript);
        await foreignMessage(subject);
        const log = await postfixLogSince(since);
        assert.match(log, new RegExp(`^Verified TLS connection established to ${LAB.foreign.fqdn.replace(/\./g, "\\.")}\\[`, "m"), log);
        assert.doesNotMatch(log, new RegExp(`(Untrusted|Anonymous) TLS connection established to ${LAB.foreign.fqdn.replace(/\./g, "\\.")}`), log);
    });

    test("dane: a TLSA record that matches no key defers the mail (4.7.5) instead of sending it unverified", async (t) => {
        const rcpt = `someone@${LAB.daneMismatch.domain}`;
        const since = (await mail.execOk("date '+%Y-%m-%d %H:%M:%S'")).trim();
        const sent = await submit("alice@example.org", password, { to: rcpt, subject: token("dane mismatch") });
        assert.equal(sent.code, 250, sent.transcript);
        const queueId = /queued as ([0-9A-F]+)/.exec(sent.transcript)?.[1];
        assert.ok(queueId, sent.transcript);
        t.after(async () => {
            await mail.exec(`postsuper -d ${queueId} >/dev/null 2>&1 || true`);
        });
        const line = await eventually("the deferral of the mail to the mismatching MX", async () => {
            const log = await postfixLogSince(since);
            return log.split("\n").find((l) => l.startsWith(`${queueId}: to=<${rcpt}>`) && /status=deferred/.test(l));
        });
        assert.match(line, /dsn=4\.7\.5, status=deferred \(Server certificate not verified\)/, line);
        const log = await postfixLogSince(since);
        assert.doesNotMatch(log, new RegExp(`${queueId}: to=<${rcpt.replace(/\./g, "\\.")}>.*status=sent`), "the message was sent anyway");
        // It stays queued for a retry (the operator sees it in mailq), nothing is bounced yet.
        assert.match(await mail.execOk("postqueue -p"), new RegExp(`^${queueId}\\b`, "m"));
    });
});
