/**
 * No mail lost, no abuse (issue 13), against a strict foreign world: the foreign MTA enforces
 * DMARC (p=reject refused at SMTP time), signs its own mail with DKIM, and example.net publishes
 * p=reject. Each test drives the foreign MTA or a real client and reads what the other side saw.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { before, describe, test } from "node:test";
import { SERVICE, stepsOf } from "../../components/services";
import { applyOnGuest, guest, LAB, labModelWith, labSession } from "../../lab/testkit";
import { eventually, FOREIGN_RCPT, foreignMessage, headerBlock, sendFromForeign, shellQuote, sleep, submit, swaks, token, type ForeignSmtpResult } from "./clients";

const mail = guest("mail");
const foreign = guest("foreign");
const FOREIGN_MX = LAB.foreign.ipv4;

/** A message from the foreign MTA's own address to ours (as its Postfix would connect), with a Message-ID to find it by. */
async function sendFromForeignHost(req: { envelope: string; rcpt: string; headerFrom: string; subject: string }): Promise<ForeignSmtpResult & { messageId: string }> {
    const messageId = `${randomBytes(8).toString("hex")}@${LAB.foreignDomain}`;
    const headers = { From: req.headerFrom, To: req.rcpt, Subject: req.subject, "Message-ID": `<${messageId}>`, Date: new Date().toUTCString() };
    return { ...(await sendFromForeign({ from: req.envelope, to: req.rcpt, message: { headers, body: "Please pay the attached invoice today.\r\n" } })), messageId };
}

/** The stored message in a mailbox on our server whose text contains `needle` (polled; Dovecot's
 * index and cache files, which hold headers too, are not messages). */
function storedMessage(address: string, needle: string): Promise<string> {
    const [local, domain] = address.split("@");
    return eventually(`"${needle}" in ${address}'s mailbox`, async () => {
        const r = await mail.exec(`grep -rl -F --exclude='dovecot*' -- ${shellQuote(needle)} /var/vmail/${domain}/${local}/Maildir 2>/dev/null | head -n1 | xargs -r cat`);
        return r.stdout.includes(needle) ? r.stdout : undefined;
    });
}

describe("no mail lost, no abuse (lab, strict foreign world)", { timeout: 600_000 }, () => {
    let secrets: Record<string, string>;
    const pw = (address: string) => {
        const p = secrets[`user:${address}`];
        assert.ok(p, `no password for ${address}`);
        return p;
    };

    before(async () => {
        ({ secrets } = await labSession());
    });

    test("strict world: the foreign MTA refuses mail that fails example.net's DMARC p=reject, from our server's address", async () => {
        // Sent from the mail guest (not the foreign MTA's own network): SPF fails, no DKIM.
        const probe = String.raw`
import smtplib
s = smtplib.SMTP("${LAB.foreign.ipv4}", 25, local_hostname="${LAB.mail.fqdn}", timeout=60)
s.ehlo()
try:
    s.sendmail("spoofer@${LAB.foreignDomain}", ["${FOREIGN_RCPT}"], b"From: spoofer@${LAB.foreignDomain}\r\nTo: ${FOREIGN_RCPT}\r\nSubject: spoof\r\n\r\nhi\r\n")
    print("250 accepted")
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
`;
        const answer = (await mail.execOk("python3 -", { input: probe })).trim();
        assert.match(answer, /^5\d\d /, answer);
    });

    test("bounces: our bounce of a forward the foreign MTA refused reaches it and passes its DMARC enforcement (SPF on the host name)", async () => {
        // gone@example.com forwards to a user example.net does not have: the foreign MTA refuses
        // the forward, so our Postfix bounces to the original sender, from MAILER-DAEMON@mx1 with an
        // empty envelope. Without SPF on mx1.example.org that bounce failed DMARC (p=reject covers
        // the subdomain) and the strict receiver refused it: the sender never learned of the loss.
        const subject = token("bounce probe");
        const sent = await swaks(["--server", FOREIGN_MX, "--port", "25", "--from", FOREIGN_RCPT, "--to", "gone@example.com", "--h-Subject", subject]);
        assert.equal(sent.code, 250, sent.transcript);
        const bounce = headerBlock(await foreignMessage(subject));
        assert.match(bounce, /^Return-Path: <>$/m, bounce);
        assert.match(bounce, new RegExp(`^From: .*MAILER-DAEMON@${LAB.mail.fqdn.replace(/\./g, "\\.")}`, "m"), bounce);
        const ar = /^Authentication-Results: (.*)$/m.exec(bounce)?.[1] ?? "";
        assert.match(ar, /dmarc=pass \(policy=reject\)/, bounce);
        assert.match(ar, /spf=pass .*smtp\.helo=mx1\.example\.org/, ar);
    });

    test("forged senders: mail claiming one of our domains without DKIM or SPF is refused at SMTP time (5xx), envelope ours or not", async () => {
        for (const envelope of ["ceo@example.org", FOREIGN_RCPT]) {
            const subject = token(`forged ${envelope}`);
            const r = await sendFromForeignHost({ envelope, rcpt: "alice@example.org", headerFrom: "CEO <ceo@example.org>", subject });
            assert.equal(r.code, 554, JSON.stringify(r));
            assert.equal(r.stage, "data", JSON.stringify(r));
            // Refused because of DMARC, not for some other score: Rspamd's verdict for this message.
            const log = await mail.execOk(`grep -F -- ${shellQuote(`<${r.messageId}>`)} /var/log/rspamd/rspamd.log | grep -F task_write_log | tail -n1`);
            assert.match(log, /DMARC_POLICY_REJECT\(/, log);
        }
        // Control: the same client with a From: it may use (example.net, SPF pass) is accepted.
        const control = await sendFromForeignHost({ envelope: FOREIGN_RCPT, rcpt: "alice@example.org", headerFrom: FOREIGN_RCPT, subject: token("not forged") });
        assert.equal(control.code, 250, JSON.stringify(control));
    });

    test("sender checks: list-style mail with our user as envelope sender and a valid foreign DKIM signature is accepted on port 25", async () => {
        // A list (or forwarder) at example.net keeps alice@example.org as envelope sender; the
        // message is signed by example.net (the foreign MTA signs mail from its users' network).
        // SPF for example.org fails from there, but DMARC for the From: domain passes by DKIM.
        const subject = token("list post");
        const sent = await swaks(["--server", FOREIGN_MX, "--port", "25", "--from", "alice@example.org", "--to", "carol@example.com", "--h-From", `Announce <announce@${LAB.foreignDomain}>`, "--h-Subject", subject, "--h-List-Id", `<announce.${LAB.foreignDomain}>`]);
        assert.equal(sent.code, 250, sent.transcript);
        const stored = headerBlock(await storedMessage("carol@example.com", subject));
        assert.match(stored, /^Return-Path: <alice@example\.org>$/m, stored);
        assert.match(stored, /dkim=pass header\.d=example\.net/, stored);
        assert.match(stored, /dmarc=pass/, stored);
        // Port 25 no longer carries login checks Postfix could not apply there ("ignored: no SASL").
        const warnings = await mail.execOk("journalctl -u postfix.service --since -10min -o cat --no-pager | grep -c 'ignored: no SASL support' || true");
        assert.equal(warnings.trim(), "0", "port 25 still lists sender-login restrictions that Postfix ignores without SASL");
    });

    test("compromised account: a login over its hourly sending limit gets 4xx, the administrator one notice; another login still sends, and so does it an hour later", async (t) => {
        // A limit of 3 an hour for the test (ispmail:mailPolicy.sendLimit.perHour; default 200).
        const limited = labModelWith({ mailPolicy: { sendLimit: { perHour: 3, perDay: 1000 } } });
        await applyOnGuest("mail", stepsOf(SERVICE.rspamd, limited), secrets);
        t.after(async () => {
            await applyOnGuest("mail", stepsOf(SERVICE.rspamd, (await labSession()).model), secrets);
        });
        // The bucket and the notice marker of an earlier run of this test must not count.
        await mail.execOk("valkey-cli --scan --pattern 'RL*' | xargs -r valkey-cli del >/dev/null");
        await mail.execOk("valkey-cli --scan --pattern 'ispmail_ratelimit_notice:*' | xargs -r valkey-cli del >/dev/null");
        const noticeMarker = (login: string) => `Subject: mx1.example.org: ${login} reached its sending limit`;
        const noticesFor = async (login: string) =>
            Number((await mail.execOk(`grep -rlF --exclude='dovecot*' -- ${shellQuote(noticeMarker(login))} /var/vmail/example.org/alice/Maildir | wc -l`)).trim());
        const noticesBefore = await noticesFor("bob@example.org");
        const codes: number[] = [];
        for (let i = 1; i <= 6; i++) {
            const r = await submit("bob@example.org", pw("bob@example.org"), { to: FOREIGN_RCPT, subject: token(`rate ${i}`) });
            codes.push(r.code);
        }
        // Rspamd's leaky bucket: the limit's messages pass; once it is full every further one is
        // deferred (451, the client may retry later), never accepted and dropped.
        const firstRefused = codes.indexOf(451);
        assert.deepEqual(codes.slice(0, 3), [250, 250, 250], `bob's messages: ${codes.join(", ")}`);
        assert.ok(firstRefused >= 3 && firstRefused <= 4, `bob's messages: ${codes.join(", ")} (none or a late 451)`);
        assert.ok(codes.slice(firstRefused).every((c) => c === 451), `bob's messages: ${codes.join(", ")}`);
        // Per login: carol is not held back by bob's bucket.
        const other = await submit("carol@example.com", pw("carol@example.com"), { to: FOREIGN_RCPT, subject: token("rate other") });
        assert.equal(other.code, 250, other.transcript);

        // The administrator hears of it once (ispmail:adminEmail, here postmaster@example.org ->
        // alice), however many messages were deferred.
        assert.ok(codes.filter((c) => c === 451).length >= 2, `bob's messages: ${codes.join(", ")} (one 451 cannot show a single notice)`);
        const notices = await eventually("the sending limit notice in alice's mailbox", async () => {
            const n = await noticesFor("bob@example.org");
            return n > noticesBefore ? n : undefined;
        });
        await sleep(5000);
        assert.equal(await noticesFor("bob@example.org"), noticesBefore + 1, "not exactly one notice");
        const notice = headerBlock(await storedMessage("alice@example.org", noticeMarker("bob@example.org")));
        assert.match(notice, /^From: ispmail on mx1\.example\.org <postmaster@mx1\.example\.org>$/m, notice);
        assert.match(notice, /^Auto-Submitted: auto-generated$/m, notice);
        assert.equal(notices, noticesBefore + 1);

        // An hour later the bucket has drained and bob sends again. The hour is simulated by moving
        // the buckets' last-leak time (Rspamd's field "l", in ms) an hour back, as if it had passed.
        await mail.execOk(`for k in $(valkey-cli --scan --pattern 'RL*'); do [ "$(valkey-cli type "$k")" = hash ] || continue; l=$(valkey-cli hget "$k" l); valkey-cli hset "$k" l $((l - 3600000)) >/dev/null; done`);
        const later = await submit("bob@example.org", pw("bob@example.org"), { to: FOREIGN_RCPT, subject: token("rate an hour later") });
        assert.equal(later.code, 250, later.transcript);
    });

    test("alerts: a failed backup unit mails the administrator (ispmail:adminEmail, here postmaster@example.org -> alice)", async (t) => {
        // The real unit with its command replaced for this run only (a runtime drop-in in /run).
        const dropIn = "/run/systemd/system/ispmail-backup.service.d";
        t.after(async () => {
            await mail.execOk(`rm -rf ${dropIn} && systemctl daemon-reload && systemctl reset-failed ispmail-backup.service`);
        });
        const marker = `simulated backup failure ${randomBytes(6).toString("hex")}`;
        await mail.execOk(`mkdir -p ${dropIn} && printf '[Service]\\nExecStart=\\nExecStart=/bin/sh -c "echo ${marker} >&2; exit 3"\\n' > ${dropIn}/zz-fail.conf && systemctl daemon-reload`);
        const run = await mail.exec("systemctl start ispmail-backup.service");
        assert.notEqual(run.code, 0, "the backup unit did not fail, so this proves nothing");
        // The alert carries the unit's last log lines, so the marker says which failure it reports.
        const alert = await storedMessage("alice@example.org", marker);
        const headers = headerBlock(alert);
        assert.match(headers, /^Subject: \[mx1\.example\.org\] ispmail-backup\.service failed$/m, headers);
        assert.match(headers, /^Auto-Submitted: auto-generated$/m, headers);
        assert.match(headers, /^Return-Path: <root@mx1\.example\.org>$/m, headers);
    });

    test("signing: a local account other than the server's own senders cannot submit with sendmail (no DKIM-signed mail in our name)", async (t) => {
        // sendmail's mail is DKIM-signed for whatever From: it carries; before authorized_submit_users
        // any shell account could send signed mail as ceo@example.org.
        await mail.execOk("id ispmail-e2e-local >/dev/null 2>&1 || useradd --no-create-home --shell /bin/sh ispmail-e2e-local");
        t.after(async () => {
            await mail.execOk("userdel ispmail-e2e-local 2>/dev/null || true");
        });
        const subject = token("local forgery");
        const r = await mail.exec(`su -s /bin/sh ispmail-e2e-local -c '/usr/sbin/sendmail -t -i'`, { input: `From: ceo@example.org\nTo: ${FOREIGN_RCPT}\nSubject: ${subject}\n\nPlease pay.\n` });
        assert.notEqual(r.code, 0, "sendmail accepted the local account's message");
        assert.match(r.stderr, /User ispmail-e2e-local\(\d+\) is not allowed to submit mail/, r.stderr);
        assert.equal((await mail.execOk("postqueue -j | grep -c ispmail-e2e-local || true")).trim(), "0");
    });

    test("signing: a Sieve vacation reply leaves DKIM-signed from the user's own address; one with :from another address of ours is refused, not signed", async (t) => {
        // Pigeonhole puts any `:from` into the reply's From header, and Rspamd signs what the
        // server submits itself; the rule for local mail refuses a From that is not the envelope
        // sender (the script owner's address).
        const own = token("vacation own");
        const other = token("vacation as ceo");
        const script = [
            `require ["vacation"];`,
            `if header :contains "subject" "own address" { vacation :days 1 :subject "${own}" "I am away."; }`,
            `else { vacation :days 1 :from "ceo@example.org" :subject "${other}" "Please pay the invoice."; }`,
            "",
        ].join("\n");
        await mail.execOk("doveadm sieve put -u bob@example.org -a ispmail-e2e-vacation", { input: script });
        t.after(async () => {
            await mail.execOk("doveadm sieve deactivate -u bob@example.org && doveadm sieve delete -u bob@example.org ispmail-e2e-vacation");
        });
        // Fresh senders (rcpt+tag@example.net): vacation answers each sender once a day.
        const tag = randomBytes(4).toString("hex");
        const triggers = [
            [`${LAB.foreignUser}+own${tag}@${LAB.foreignDomain}`, token("own address")],
            [`${LAB.foreignUser}+ceo${tag}@${LAB.foreignDomain}`, token("as ceo")],
        ];
        for (const [from, subject] of triggers) {
            const sent = await swaks(["--server", FOREIGN_MX, "--port", "25", "--from", from, "--to", "bob@example.org", "--h-Subject", subject]);
            assert.equal(sent.code, 250, sent.transcript);
        }
        const reply = headerBlock(await foreignMessage(own));
        assert.match(reply, /^From: <?bob@example\.org>?$/m, reply);
        assert.match(reply, /^Return-Path: <bob@example\.org>$/m, reply);
        assert.match(reply, /dkim=pass header\.d=example\.org/, reply);
        assert.match(reply, /dmarc=pass/, reply);
        // The other reply was refused by our Rspamd (bounced to bob, who learns why), and neither
        // delivery was lost: both triggering messages are in bob's INBOX.
        const refusal = await eventually("the refusal of the vacation reply as ceo@example.org", async () => {
            const log = await mail.execOk(`journalctl --since -10min --no-pager | grep -F 'milter-reject' | grep -F ${shellQuote(`to=<${triggers[1][0]}>`)} || true`);
            return log.trim() || undefined;
        });
        assert.match(refusal, /5\.7\.1 From header must be the sender's own address/, refusal);
        for (const [, subject] of triggers) await storedMessage("bob@example.org", subject);
        const abroad = await foreign.execOk(`grep -rlF -- ${shellQuote(other)} /home/${LAB.foreignUser}/Maildir | wc -l`);
        assert.equal(abroad.trim(), "0", "the reply as ceo@example.org reached the foreign MTA");
    });

    test("forwarding: a Sieve redirect leaves with the user's address as envelope sender, an alias forward with an SRS address of ours: both pass SPF and DMARC at the strict receiver, the forward with our ARC seal", async (t) => {
        // bob redirects everything to rcpt+sieve@example.net. The original is example.net's own,
        // signed mail, injected at the foreign MTA (the lab host is its users' network).
        const script = `require ["copy"];\nredirect :copy "${LAB.foreignUser}+sieve@${LAB.foreignDomain}";\n`;
        await mail.execOk("doveadm sieve put -u bob@example.org -a ispmail-e2e-redirect", { input: script });
        t.after(async () => {
            await mail.execOk("doveadm sieve deactivate -u bob@example.org && doveadm sieve delete -u bob@example.org ispmail-e2e-redirect");
        });
        const viaSieve = token("sieve redirect");
        const viaAlias = token("alias forward");
        for (const [to, subject] of [["bob@example.org", viaSieve], ["forward@example.com", viaAlias]]) {
            const sent = await swaks(["--server", FOREIGN_MX, "--port", "25", "--from", FOREIGN_RCPT, "--to", to, "--h-Subject", subject]);
            assert.equal(sent.code, 250, sent.transcript);
        }
        const redirected = headerBlock(await foreignMessage(viaSieve));
        assert.match(redirected, /^Return-Path: <bob@example\.org>$/m, redirected);
        assert.match(redirected, /spf=pass [^;]*smtp\.mailfrom=bob@example\.org/, redirected);
        assert.match(redirected, /dmarc=pass/, redirected);
        // The alias forward leaves with an SRS envelope sender of ours (PostSRSd): SPF passes at
        // the receiver, and the original's DKIM signature (example.net) is intact.
        const forwarded = headerBlock(await foreignMessage(viaAlias));
        const srs = /^Return-Path: <(SRS0=[^=]+=[^=]+=example\.net=rcpt@mx1\.example\.org)>$/m.exec(forwarded)?.[1];
        assert.ok(srs, `no SRS envelope sender:\n${forwarded}`);
        // (Rspamd quotes the address, since "=" needs it there.)
        assert.match(forwarded, new RegExp(`spf=pass [^;]*smtp\\.mailfrom="?${srs.replace(/[.+=]/g, "\\$&")}"?`), forwarded);
        assert.match(forwarded, /dkim=pass header\.d=example\.net/, forwarded);
        assert.match(forwarded, /dmarc=pass/, forwarded);
        // And it carries our ARC seal (example.com, the alias's domain) over what we saw on
        // arrival, which the receiver verifies.
        assert.match(forwarded, /^ARC-Seal: i=1; s=[a-z0-9]+; d=example\.com;/m, forwarded);
        assert.match(forwarded, /^ARC-Authentication-Results: i=1; [^\n]*dkim=pass header\.d=example\.net[^\n]*spf=pass/m, forwarded);
        assert.match(forwarded, /arc=pass \("example\.com:s=[a-z0-9]+:i=1"\)/, forwarded);
    });
});
