/**
 * Trust on the wire (issue 14): DANE both ways.
 *
 * Sending: the foreign MX publishes a TLSA record (3 1 1 of its key) in the signed lab zone; a
 * second name for it, the MX of tlsa-mismatch.example.net, publishes one that matches no key. Our
 * Postfix sends with smtp_tls_security_level = dane through the server's validating resolver.
 *
 * Receiving: our TLSA record (the stack's certificate key) on _25._tcp.mx1.example.org; the foreign
 * MTA sends with DANE through its own validating unbound, like a large provider. A second name of
 * our server, the MX of tlsa-mismatch.example.org, publishes a TLSA record that matches no key.
 */
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { tlsaOfKey } from "../../components/dns/records";
import { tlsKeySecret } from "../../components/secrets";
import { ensureLab, guest, LAB, labModel, labSecrets } from "../../lab/testkit";
import { deliveryLine, escapeRegExp, FOREIGN_RCPT, foreignMessage, guestNow, postfixLogSince, queueIdOf, sendThroughForeign, submit, token } from "./clients";

const mail = guest("mail");
const foreign = guest("foreign");

describe("DANE, sending (lab)", { timeout: 300_000 }, () => {
    let password: string;
    before(async () => {
        await ensureLab();
        password = labSecrets()["user:alice@example.org"];
    });

    test("dane: mail to a destination whose MX publishes a matching TLSA leaves over a verified TLS connection", async () => {
        const since = await guestNow();
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
        const since = await guestNow();
        const sent = await submit("alice@example.org", password, { to: rcpt, subject: token("dane mismatch") });
        assert.equal(sent.code, 250, sent.transcript);
        const queueId = queueIdOf(sent.transcript);
        t.after(async () => {
            await mail.exec(`postsuper -d ${queueId} >/dev/null 2>&1 || true`);
        });
        const line = await deliveryLine(mail, since, queueId, rcpt, "deferred");
        assert.match(line, /dsn=4\.7\.5, status=deferred \(Server certificate not verified\)/, line);
        const log = await postfixLogSince(since);
        assert.doesNotMatch(log, new RegExp(`${queueId}: to=<${rcpt.replace(/\./g, "\\.")}>.*status=sent`), "the message was sent anyway");
        // It stays queued for a retry (the operator sees it in mailq), nothing is bounced yet.
        assert.match(await mail.execOk("postqueue -p"), new RegExp(`^${queueId}\\b`, "m"));
    });
});

describe("DANE, receiving (lab)", { timeout: 400_000 }, () => {
    const model = labModel();
    const mx = escapeRegExp(model.mailHost);
    before(async () => {
        await ensureLab();
    });

    test("dane: our TLSA record is served signed (ad) to a validating resolver and matches the certificate every port serves", async () => {
        const tlsa = tlsaOfKey(labSecrets()[tlsKeySecret(model.tlsKeys[0])]);
        // The foreign MTA's own unbound, as any DANE sender asks.
        const answer = await foreign.execOk(`dig +dnssec +noall +comments +answer _25._tcp.${model.mailHost} TLSA`);
        assert.match(answer, /flags:[^;]*\bad\b/, answer);
        const rr = answer.toLowerCase().split("\n").find((l) => /\sin\s+tlsa\s/.test(l));
        assert.ok(rr, answer);
        assert.equal(rr.split(/\s+tlsa\s+/)[1].replace(/\s+/g, ""), tlsa.replace(/ /g, ""), "the published data is the certificate key's");
        const served = await mail.execOk("openssl x509 -in /etc/ispmail/tls/fullchain.pem -noout -pubkey");
        assert.equal(tlsaOfKey(served), tlsa);
    });

    test("dane: the foreign MTA (DANE, validating) delivers to us over a verified TLS connection", async () => {
        const since = await guestNow(foreign);
        const subject = token("dane inbound");
        const queueId = await sendThroughForeign("alice@example.org", subject);
        const sent = await deliveryLine(foreign, since, queueId, "alice@example.org", "sent");
        assert.match(sent, new RegExp(`relay=${mx}\\[`), sent);
        const log = await postfixLogSince(since, foreign);
        assert.match(log, new RegExp(`^Verified TLS connection established to ${mx}\\[`, "m"), log);
    });

    test("dane: a TLSA record of ours that matches no key makes the foreign MTA defer (4.7.5), not send in the clear", async (t) => {
        const to = `someone@${LAB.daneMismatchInbound.domain}`;
        const since = await guestNow(foreign);
        const queueId = await sendThroughForeign(to, token("dane inbound mismatch"));
        t.after(async () => {
            await foreign.exec(`postsuper -d ${queueId} >/dev/null 2>&1 || true`);
        });
        const line = await deliveryLine(foreign, since, queueId, to, "deferred");
        assert.match(line, /dsn=4\.7\.5, status=deferred \(Server certificate not verified\)/, line);
        // It never got to SMTP: were DANE ignored, our server would have refused the relay (5.7.1).
        assert.doesNotMatch(await postfixLogSince(since, foreign), new RegExp(`${queueId}: to=<${escapeRegExp(to)}>.*status=(sent|bounced)`));
        assert.match(await foreign.execOk("postqueue -p"), new RegExp(`^${queueId}\\b`, "m"));
    });

    test("dane: a forced certificate renewal keeps the key, so the foreign MTA still verifies us", { timeout: 240_000 }, async () => {
        const before = (await mail.execOk("openssl x509 -in /etc/ispmail/tls/fullchain.pem -noout -serial")).trim();
        const renewal = await mail.exec("/usr/local/sbin/ispmail-certificate --force", { timeoutMs: 180_000 });
        assert.equal(renewal.code, 0, renewal.stderr.slice(-1500));
        assert.notEqual((await mail.execOk("openssl x509 -in /etc/ispmail/tls/fullchain.pem -noout -serial")).trim(), before, "a new certificate");
        const since = await guestNow(foreign);
        const queueId = await sendThroughForeign("alice@example.org", token("dane after renewal"));
        await deliveryLine(foreign, since, queueId, "alice@example.org", "sent");
        assert.match(await postfixLogSince(since, foreign), new RegExp(`^Verified TLS connection established to ${mx}\\[`, "m"));
    });
});
