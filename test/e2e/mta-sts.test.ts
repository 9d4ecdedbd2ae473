/**
 * Trust on the wire (issue 14), sending: the per-destination TLS policy, DANE first, then MTA-STS
 * (the tls-policy step). The foreign provider publishes MTA-STS policies in enforce mode
 * (lab/lab.ts LAB.mtaSts; policy hosts on the foreign guest with certificates of the lab CA, which
 * the guests trust as they trust public CAs):
 *  - sts-ok.example.net: its MX presents a certificate of the lab CA for its name;
 *  - sts-mismatch.example.net: its MX presents the foreign MTA's self-signed certificate;
 *  - sts-dane.example.net: the same self-signed certificate, but its MX (mx.example.net) publishes a
 *    matching TLSA record, so DANE decides and MTA-STS never overrides it (RFC 8461, section 2).
 */
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { ensureLab, guest, LAB, labSecrets } from "../../lab/testkit";
import { deliveryLine, escapeRegExp, foreignMessage, guestNow, postfixLogSince, queueIdOf, shellQuote, submit, token } from "./clients";

const mail = guest("mail");
const STS = LAB.mtaSts;
const DANE_TABLE = "socketmap:inet:127.0.0.1:8462:dane-first";
const STS_TABLE = "socketmap:inet:127.0.0.1:8461:postfix";

/** `postmap -q` of one table on the server: the answer, or undefined when the key is not found. */
async function lookup(key: string, table: string): Promise<string | undefined> {
    const r = await mail.exec(`postmap -q ${shellQuote(key)} ${shellQuote(table)}`);
    if (r.code === 1 && r.stdout === "" && r.stderr === "") return undefined;
    assert.equal(r.code, 0, `postmap -q ${key} ${table}: exit ${r.code}: ${r.stderr}`);
    return r.stdout.trim();
}

describe("outbound TLS policy: DANE first, then MTA-STS (lab)", { timeout: 400_000 }, () => {
    let password: string;
    before(async () => {
        await ensureLab();
        password = labSecrets()["user:alice@example.org"];
    });

    const send = async (to: string, subject: string) => {
        const sent = await submit("alice@example.org", password, { to, subject });
        assert.equal(sent.code, 250, sent.transcript);
        return queueIdOf(sent.transcript);
    };

    test("tls-policy: the DANE table answers 'dane' exactly where a signed MX publishes TLSA; the MTA-STS table holds each enforce policy", async () => {
        assert.equal(await lookup(LAB.foreignDomain, DANE_TABLE), "dane");
        assert.equal(await lookup(STS.dane.domain, DANE_TABLE), "dane");
        assert.equal(await lookup(STS.ok.domain, DANE_TABLE), undefined);
        assert.equal(await lookup(STS.mismatch.domain, DANE_TABLE), undefined);
        // A zone whose signatures do not validate is not "no DANE": Postfix gets a temporary error.
        const bogus = await mail.exec(`postmap -q dnssec-failed.${LAB.foreignDomain} ${DANE_TABLE}`);
        assert.notEqual(bogus.code, 0);
        assert.match(bogus.stderr, /DNS lookup failed/, bogus.stderr);

        assert.match((await lookup(STS.ok.domain, STS_TABLE)) ?? "", new RegExp(`^secure match=${escapeRegExp(STS.ok.mx)}\\b`));
        assert.match((await lookup(STS.mismatch.domain, STS_TABLE)) ?? "", new RegExp(`^secure match=${escapeRegExp(STS.mismatch.mx)}\\b`));
        // Asked alone, this table would make the DANE domain's mail wait for a public CA's certificate.
        assert.match((await lookup(STS.dane.domain, STS_TABLE)) ?? "", new RegExp(`^secure match=${escapeRegExp(STS.dane.mx)}\\b`));
        assert.equal(await lookup(LAB.foreignDomain, STS_TABLE), undefined, "example.net publishes no MTA-STS policy");
        assert.equal((await mail.execOk("postconf -h smtp_tls_policy_maps")).trim(), `${DANE_TABLE}, ${STS_TABLE}`);
    });

    test("mta-sts: mail to an enforce-mode domain whose MX has a trusted certificate for its name leaves over verified TLS", async () => {
        const since = await guestNow();
        const subject = token("mta-sts ok");
        const queueId = await send(`${LAB.foreignUser}@${STS.ok.domain}`, subject);
        await foreignMessage(subject);
        const sent = await deliveryLine(mail, since, queueId, `${LAB.foreignUser}@${STS.ok.domain}`, "sent");
        assert.match(sent, new RegExp(`relay=${escapeRegExp(STS.ok.mx)}\\[`), sent);
        assert.match(await postfixLogSince(since), new RegExp(`^Verified TLS connection established to ${escapeRegExp(STS.ok.mx)}\\[`, "m"));
    });

    test("mta-sts: mail to an enforce-mode domain whose MX certificate does not verify is deferred, not sent", async (t) => {
        const rcpt = `${LAB.foreignUser}@${STS.mismatch.domain}`;
        const since = await guestNow();
        const queueId = await send(rcpt, token("mta-sts mismatch"));
        t.after(async () => {
            await mail.exec(`postsuper -d ${queueId} >/dev/null 2>&1 || true`);
        });
        const line = await deliveryLine(mail, since, queueId, rcpt, "deferred");
        assert.match(line, /status=deferred \(Server certificate not (trusted|verified)\)/, line);
        assert.doesNotMatch(await postfixLogSince(since), new RegExp(`${queueId}: to=<${escapeRegExp(rcpt)}>.*status=sent`), "sent anyway");
        assert.match(await mail.execOk("postqueue -p"), new RegExp(`^${queueId}\\b`, "m"), "it waits in the queue for a retry");
    });

    test("dane first: a domain with MTA-STS and DANE gets DANE, which accepts the certificate the MTA-STS policy alone would refuse", async () => {
        const since = await guestNow();
        const subject = token("sts and dane");
        const queueId = await send(`${LAB.foreignUser}@${STS.dane.domain}`, subject);
        await foreignMessage(subject);
        await deliveryLine(mail, since, queueId, `${LAB.foreignUser}@${STS.dane.domain}`, "sent");
        // The MX's certificate is self-signed (the mismatch test shows the MTA-STS policy refusing
        // it): it verified through its TLSA record.
        assert.match(await postfixLogSince(since), new RegExp(`^Verified TLS connection established to ${escapeRegExp(STS.dane.mx)}\\[`, "m"));
    });

    test("tls-policy: while the DANE table is down, mail waits in the queue rather than go out under a weaker policy", async (t) => {
        const rcpt = `${LAB.foreignUser}@${LAB.foreignDomain}`;
        await mail.execOk("systemctl stop ispmail-dane-first-policy");
        t.after(() => mail.execOk("systemctl start ispmail-dane-first-policy"));
        const since = await guestNow();
        const subject = token("policy table down");
        const queueId = await send(rcpt, subject);
        const line = await deliveryLine(mail, since, queueId, rcpt, "deferred");
        assert.match(line, /status=deferred/, line);
        assert.match(await mail.execOk("postqueue -p"), new RegExp(`^${queueId}\\b`, "m"));
        // Back up, the same message leaves on the next attempt.
        await mail.execOk("systemctl start ispmail-dane-first-policy && sleep 1");
        await mail.execOk(`postqueue -i ${queueId}`);
        await foreignMessage(subject);
        await deliveryLine(mail, since, queueId, rcpt, "sent");
    });
});
