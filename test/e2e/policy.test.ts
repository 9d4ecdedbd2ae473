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
import { eventually, FOREIGN_RCPT, foreignMessage, headerBlock, shellQuote, submit, swaks, token } from "./clients";

const mail = guest("mail");
const foreign = guest("foreign");
const FOREIGN_MX = LAB.foreign.ipv4;

/** An SMTP session from the foreign MTA's own address to ours (as its Postfix would connect). */
const SMTP_FROM_FOREIGN = String.raw`
import json, smtplib, sys
req = json.load(sys.stdin)
s = smtplib.SMTP(req["host"], 25, local_hostname=req["helo"], timeout=60)
s.ehlo()
try:
    refused = s.sendmail(req["envelope"], [req["rcpt"]], req["message"].encode("utf-8"))
    out = {"code": 250, "text": "queued", "refused": {k: list(v) for k, v in refused.items()}}
except smtplib.SMTPRecipientsRefused as e:
    code, text = list(e.recipients.values())[0]
    out = {"code": code, "text": text.decode("utf-8", "replace"), "stage": "rcpt"}
except smtplib.SMTPResponseException as e:
    out = {"code": e.smtp_code, "text": e.smtp_error.decode("utf-8", "replace"), "stage": "data"}
s.quit()
print(json.dumps(out))
`;

interface SmtpOutcome {
    code: number;
    text: string;
    stage?: string;
}

async function sendFromForeignHost(req: { envelope: string; rcpt: string; headerFrom: string; subject: string }): Promise<SmtpOutcome & { messageId: string }> {
    const messageId = `${randomBytes(8).toString("hex")}@${LAB.foreignDomain}`;
    const message = [`From: ${req.headerFrom}`, `To: ${req.rcpt}`, `Subject: ${req.subject}`, `Message-ID: <${messageId}>`, `Date: ${new Date().toUTCString()}`, "", "Please pay the attached invoice today.", ""].join("\r\n");
    const input = JSON.stringify({ host: LAB.mail.ipv4, helo: LAB.foreign.fqdn, envelope: req.envelope, rcpt: req.rcpt, message });
    return { ...(JSON.parse((await foreign.execOk("python3 -c " + shellQuote(SMTP_FROM_FOREIGN), { input })).trim()) as SmtpOutcome), messageId };
}

/** The stored message in a mailbox on our server whose text contains `needle` (polled). */
function storedMessage(address: string, needle: string): Promise<string> {
    const [local, domain] = address.split("@");
    return eventually(`"${needle}" in ${address}'s mailbox`, async () => {
        const r = await mail.exec(`grep -rl -F -- ${shellQuote(needle)} /var/vmail/${domain}/${local}/Maildir 2>/dev/null | head -n1 | xargs -r cat`);
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
        const warnings = await mail.execOk("journalctl -u postfix@- --since -10min -o cat --no-pager | grep -c 'ignored: no SASL support' || true");
        assert.equal(warnings.trim(), "0", "port 25 still lists sender-login restrictions that Postfix ignores without SASL");
    });

    test("compromised account: a login over its hourly sending limit gets 4xx; another login still sends", async (t) => {
        // A limit of 3 an hour for the test (ispmail:mailPolicy.sendLimit.perHour; default 200).
        const limited = labModelWith({ mailPolicy: { sendLimit: { perHour: 3, perDay: 1000 } } });
        await applyOnGuest("mail", stepsOf(SERVICE.rspamd, limited), secrets);
        t.after(async () => {
            await applyOnGuest("mail", stepsOf(SERVICE.rspamd, (await labSession()).model), secrets);
        });
        // The bucket of an earlier run of this test must not count.
        await mail.execOk("valkey-cli --scan --pattern 'RL*' | xargs -r valkey-cli del >/dev/null");
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

    test("forwarding: a Sieve redirect leaves with the user's address as envelope sender, an alias forward with an SRS address of ours: both pass SPF and DMARC at the strict receiver", async (t) => {
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
    });
});
