/**
 * The mail core in the lab (issue 6): Postfix, Dovecot 2.4 and Rspamd on mx1.example.org, driven by
 * real clients from the test host (swaks, python3 imaplib/smtplib, sieve-connect) and by the foreign
 * MTA mx.example.net, whose Rspamd records DKIM/SPF/DMARC verdicts of what it receives.
 *
 * Passwords never go on a client's command line: swaks gets them from its environment
 * (SWAKS_OPT_auth_password), python from stdin, sieve-connect from a file descriptor.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Model } from "../../components/config";
import { SERVICE, stepsOf } from "../../components/services";
import { MILTER_SOCKET } from "../../components/services/rspamd";
import type { Step } from "../../components/steps";
import { applyOnGuest, client, guest, LAB, labDkimSigning, labSession } from "../../lab/testkit";
import { controllerLearnsOf, controllerLearnsSettled, eventually, FOREIGN_RCPT, foreignMessage, headerBlock, messageIdOf, MX, sendFromForeign, shellQuote, submit, swaks, token } from "./clients";

const mail = guest("mail");
const FOREIGN_MX = LAB.foreign.ipv4;
const GTUBE_REJECT = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
/** Rspamd's GTUBE variant for "add header" (enabled by gtube_patterns = all): spam, but below reject. */
const GTUBE_ADD_HEADER = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

const IMAP_CLIENT = String.raw`
import imaplib, json, ssl, sys
req = json.load(sys.stdin)
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
out = {}
m = imaplib.IMAP4_SSL(req["host"], 993, ssl_context=ctx, timeout=60)
m.login(req["user"], req["password"])
typ, boxes = m.list()
out["list"] = [b.decode() for b in boxes if b]
if req.get("mailbox"):
    typ, data = m.select('"%s"' % req["mailbox"], readonly=req.get("op") != "copy")
    out["select"] = typ
    out["selectText"] = data[0].decode() if data and data[0] else ""
    if typ == "OK" and req.get("subject"):
        if req["subject"].isascii():
            typ, ids = m.search("UTF-8", "SUBJECT", '"%s"' % req["subject"])
        else:  # sent as an IMAP literal: imaplib only quotes ASCII
            m.literal = req["subject"].encode("utf-8")
            typ, ids = m.search("UTF-8", "SUBJECT")
        found = ids[0].split() if typ == "OK" and ids[0] else []
        out["headers"] = []
        for i in found:
            typ, msg = m.fetch(i, "(BODY.PEEK[HEADER])")
            out["headers"].append(msg[0][1].decode("utf-8", "replace"))
        if req.get("op") == "copy" and found:
            out["copy"] = m.copy(found[-1], '"%s"' % req["dest"])[0]
m.logout()
json.dump(out, sys.stdout)
`;

interface ImapResult {
    list: string[];
    select?: string;
    selectText?: string;
    headers?: string[];
    copy?: string;
}

async function imap(user: string, password: string, req: { mailbox?: string; subject?: string; op?: "copy"; dest?: string } = {}): Promise<ImapResult> {
    const r = await client("python3", ["-c", IMAP_CLIENT], { input: JSON.stringify({ host: MX, user, password, ...req }), timeoutMs: 90_000 });
    assert.equal(r.code, 0, `imap as ${user}: ${r.stderr}`);
    return JSON.parse(r.stdout) as ImapResult;
}

/** Waits until a message with this subject is in the mailbox; returns its header block. */
function imapMessage(user: string, password: string, mailbox: string, subject: string): Promise<string> {
    return eventually(`"${subject}" in ${user}'s ${mailbox}`, async () => {
        const r = await imap(user, password, { mailbox, subject });
        return r.headers?.length ? r.headers[r.headers.length - 1] : undefined;
    });
}

const SMTP_PROBE = String.raw`
import json, smtplib, ssl, sys, base64
req = json.load(sys.stdin)
out = {}
s = smtplib.SMTP(req["host"], req["port"], timeout=60)
s.ehlo("probe.example.net")
out["features"] = sorted(s.esmtp_features.keys())
if req.get("tryAuth"):
    cred = base64.b64encode(("\0%s\0%s" % (req["user"], req["password"])).encode()).decode()
    out["auth"] = list(s.docmd("AUTH", "PLAIN " + cred))
    out["auth"][1] = out["auth"][1].decode()
if req.get("starttls"):
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    s.starttls(context=ctx)
    s.ehlo("probe.example.net")
    out["featuresAfterTls"] = sorted(s.esmtp_features.keys())
s.quit()
json.dump(out, sys.stdout)
`;

async function smtpProbe(req: { port: number; tryAuth?: boolean; starttls?: boolean; user?: string; password?: string }): Promise<{ features: string[]; featuresAfterTls?: string[]; auth?: [number, string] }> {
    const r = await client("python3", ["-c", SMTP_PROBE], { input: JSON.stringify({ host: MX, ...req }), timeoutMs: 90_000 });
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
}

/** A file of about `megabytes` MB of base64 text (a realistic attachment body). */
async function bigBody(dir: string, megabytes: number): Promise<string> {
    const path = join(dir, `body-${megabytes}mb.txt`);
    const out = createWriteStream(path);
    const line = 76;
    const chunk = Buffer.alloc(57 * 1000);
    let written = 0;
    while (written < megabytes * 1_000_000) {
        const text = randomBytes(chunk.length).toString("base64").replace(new RegExp(`(.{${line}})`, "g"), "$1\n") + "\n";
        if (!out.write(text)) await new Promise<void>((r) => out.once("drain", () => r()));
        written += text.length;
    }
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    return path;
}

/** Main PIDs of the mail daemons (Postfix's master from its pid file: its unit is a wrapper). */
async function daemonPids(): Promise<Record<string, string>> {
    const out = await mail.execOk("echo postfix=$(cat /var/spool/postfix/pid/master.pid | tr -d ' '); for s in dovecot rspamd valkey-server; do echo $s=$(systemctl show -p MainPID --value $s); done");
    return Object.fromEntries(out.trim().split("\n").map((l) => l.split("=") as [string, string]));
}

function mailSteps(model: Model): Step[] {
    return [...stepsOf(SERVICE.tls, model), ...stepsOf(SERVICE.rspamd, model), ...stepsOf(SERVICE.dkimSigner, model, { facts: { dkimSigner: labDkimSigning(model).selector } }), ...stepsOf(SERVICE.dovecot, model), ...stepsOf(SERVICE.postfix, model)];
}

// ---------------------------------------------------------------------------------------------
describe("mail core (lab)", { timeout: 1_800_000 }, () => {
    let model: Model;
    let secrets: Record<string, string>;
    const pw = (address: string) => {
        const p = secrets[`user:${address}`];
        assert.ok(p, `no password for ${address}`);
        return p;
    };
    let scratch: string;
    const suiteStart = Date.now();
    let journalSince: string;

    before(async () => {
        ({ model, secrets } = await labSession());
        scratch = mkdtempSync(join(tmpdir(), "ispmail-mail-e2e-"));
        journalSince = (await mail.execOk("date '+%Y-%m-%d %H:%M:%S'")).trim();
    });

    after(() => {
        if (scratch) rmSync(scratch, { recursive: true, force: true });
        console.log(`# mail core suite: ${((Date.now() - suiteStart) / 1000).toFixed(1)} s`);
    });

    test("submission: a user sends on 587 (STARTTLS + AUTH), another local user reads it over IMAPS 993, without the client's IP or User-Agent", async () => {
        const subject = token("proof-1");
        const sent = await submit("alice@example.org", pw("alice@example.org"), { to: "bob@example.org", subject, extraHeaders: ["User-Agent: E2E-Client/1.0", "X-Originating-IP: [198.51.100.1]"] });
        assert.equal(sent.code, 250, sent.transcript);
        const headers = await imapMessage("bob@example.org", pw("bob@example.org"), "INBOX", subject);
        assert.match(headers, /^DKIM-Signature: .*d=example\.org; s=lab2026;/ms);
        assert.doesNotMatch(headers, /^User-Agent:/im);
        assert.doesNotMatch(headers, /^X-Originating-IP:/im);
        // The test host submitted from 198.51.100.1: no header may name it.
        assert.ok(!headers.includes(LAB.host.ipv4), `client IP in headers:\n${headers}`);
    });

    test("submissions: implicit TLS on 465 delivers", async () => {
        const subject = token("proof-2");
        const sent = await submit("carol@example.com", pw("carol@example.com"), { port: 465, to: "alice@example.org", subject });
        assert.equal(sent.code, 250, sent.transcript);
        await imapMessage("alice@example.org", pw("alice@example.org"), "INBOX", subject);
    });

    test("submission: AUTH before STARTTLS on 587 is refused; port 25 offers no AUTH, not even after STARTTLS", async () => {
        const plain587 = await smtpProbe({ port: 587, tryAuth: true, user: "alice@example.org", password: pw("alice@example.org") });
        assert.ok(plain587.features.includes("starttls"));
        assert.ok(!plain587.features.includes("auth"), "587 offers AUTH before STARTTLS");
        assert.ok(plain587.auth && plain587.auth[0] >= 500, `AUTH in clear text was answered ${JSON.stringify(plain587.auth)}`);
        const tls587 = await smtpProbe({ port: 587, starttls: true });
        assert.ok(tls587.featuresAfterTls?.includes("auth"), "587 does not offer AUTH after STARTTLS");
        const port25 = await smtpProbe({ port: 25, starttls: true });
        assert.ok(!port25.features.includes("auth"));
        assert.ok(!port25.featuresAfterTls?.includes("auth"), "port 25 offers AUTH after STARTTLS");
    });

    test("inbound: the foreign MTA delivers to a local user and to a cross-domain alias", async () => {
        const direct = token("proof-4 direct");
        const alias = token("proof-4 alias");
        // Injected at the foreign MTA (the lab host is in its mynetworks); it looks up our MX itself.
        for (const [to, subject] of [["alice@example.org", direct], ["sales@example.com", alias]]) {
            const r = await swaks(["--server", FOREIGN_MX, "--port", "25", "--from", FOREIGN_RCPT, "--to", to, "--h-Subject", subject]);
            assert.equal(r.code, 250, r.transcript);
        }
        const a = await imapMessage("alice@example.org", pw("alice@example.org"), "INBOX", direct);
        assert.match(a, /^Received: from mx\.example\.net/m);
        // sales@example.com is an alias of bob@example.org (another domain).
        await imapMessage("bob@example.org", pw("bob@example.org"), "INBOX", alias);
    });

    test("utf8: a non-ASCII envelope sender is refused in the SMTP dialogue (553 5.6.7), never accepted and then bounced; an ASCII sender from the same client passes", async () => {
        // Dovecot's LMTP does not offer SMTPUTF8: a message from jörg@... would be accepted on port 25
        // and then bounced by Postfix ("SMTPUTF8 is required, but was not offered"). From the
        // foreign MTA's host, as its Postfix would try it; no DATA, so nothing is ever queued.
        const nonAscii = await sendFromForeign({ from: "jörg@example.net", to: "carol@example.com", smtputf8: true, timeoutMs: 30_000 });
        assert.equal(nonAscii.smtputf8Offered, true, "port 25 still offers SMTPUTF8 (UTF-8 in headers is fine)");
        assert.equal(nonAscii.code, 553, nonAscii.text);
        assert.equal(nonAscii.stage, "rcpt", JSON.stringify(nonAscii));
        assert.match(nonAscii.text, /5\.6\.7 .*Non-ASCII sender/);
        // Control: the same client and recipient with an ASCII sender get past RCPT.
        const ascii = await sendFromForeign({ from: "rcpt@example.net", to: "carol@example.com", timeoutMs: 30_000 });
        assert.deepEqual([ascii.code, ascii.stage], [250, "rcpt"], JSON.stringify(ascii));
    });

    test("utf8: a message with raw UTF-8 headers, relayed by the foreign Postfix with SMTPUTF8, lands in the INBOX with its subject intact; nothing bounces", async () => {
        // The foreign MTA's sendmail detects the UTF-8 headers and requests SMTPUTF8 for the relay
        // (our Received header then says "with UTF8SMTPS"). Before the fix, Postfix accepted it on
        // port 25 and then bounced it at the LMTP hop ("SMTPUTF8 is required, but was not offered").
        const subject = token("Grüße aus Köln");
        const message = [`From: Jörg Müller <${FOREIGN_RCPT}>`, "To: carol@example.com", `Subject: ${subject}`, "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit", "", "Schöne Grüße.", ""].join("\n");
        await guest("foreign").execOk(`/usr/sbin/sendmail -f ${FOREIGN_RCPT} carol@example.com`, { input: message });
        const headers = await imapMessage("carol@example.com", pw("carol@example.com"), "INBOX", subject);
        assert.ok(headers.includes(`Subject: ${subject}\r\n`), headers);
        assert.ok(headers.includes("From: Jörg Müller <"), headers);
        assert.match(headers, /by mx1\.example\.org \(Postfix\) with UTF8SMTPS id (\w+)/, "the relay did not use SMTPUTF8, so this proves nothing");
        const queueId = /with UTF8SMTPS id (\w+)/.exec(headers)![1];
        const log = await eventually(`the delivery of ${queueId} in the mail log`, async () => {
            const lines = await mail.execOk(`journalctl --no-pager -o cat --since -10min | grep -F '${queueId}: ' || true`);
            return /status=/.test(lines) ? lines : undefined;
        });
        assert.match(log, /status=sent/, log);
        assert.doesNotMatch(log, /status=(bounced|deferred)/, log);
    });

    test("postfix: refuses unauthenticated relay (foreign to foreign) with 554 and queues nothing", async () => {
        const subject = token("proof-5");
        const r = await swaks(["--server", MX, "--port", "25", "--ehlo", "probe.example.net", "--from", FOREIGN_RCPT, "--to", `someone-else@${LAB.foreignDomain}`, "--h-Subject", subject]);
        assert.equal(r.code, 554, r.transcript);
        assert.match(r.transcript, /Relay access denied/);
        const queue = await mail.execOk("postqueue -j");
        assert.ok(!queue.includes(`someone-else@${LAB.foreignDomain}`), `relayed mail is queued:\n${queue}`);
    });

    test("submission: an authenticated user cannot send as an address it does not own (envelope or From header)", async () => {
        const alice = pw("alice@example.org");
        const envelope = await submit("alice@example.org", alice, { from: "bob@example.org", to: FOREIGN_RCPT, subject: token("proof-6 envelope") });
        assert.equal(envelope.code, 553, envelope.transcript);
        assert.match(envelope.transcript, /not owned by user alice@example\.org/);
        const header = await submit("alice@example.org", alice, { headerFrom: "bob@example.org", to: FOREIGN_RCPT, subject: token("proof-6 header") });
        assert.equal(header.code, 554, header.transcript);
        assert.match(header.transcript, /From header must be your own address/);
        // Control: an alias of one's own mailbox, even in another domain, is allowed.
        const own = await submit("bob@example.org", pw("bob@example.org"), { from: "sales@example.com", headerFrom: "sales@example.com", to: "alice@example.org", subject: token("proof-6 alias") });
        assert.equal(own.code, 250, own.transcript);
    });

    test("rspamd: GTUBE is rejected at SMTP time; a message scored as spam below reject lands in Junk", async () => {
        const gtube = await swaks(["--server", MX, "--port", "25", "--ehlo", "probe.example.net", "--from", FOREIGN_RCPT, "--to", "alice@example.org", "--h-Subject", token("proof-7 gtube"), "--body", `This is spam.\n${GTUBE_REJECT}\n`]);
        assert.equal(gtube.code, 554, gtube.transcript);
        assert.match(gtube.transcript, /Gtube pattern/i);
        const subject = token("proof-7 junk");
        const spam = await swaks(["--server", MX, "--port", "25", "--ehlo", "probe.example.net", "--from", FOREIGN_RCPT, "--to", "alice@example.org", "--h-Subject", subject, "--body", `Probably spam.\n${GTUBE_ADD_HEADER}\n`]);
        assert.equal(spam.code, 250, spam.transcript);
        const headers = await imapMessage("alice@example.org", pw("alice@example.org"), "Junk", subject);
        assert.match(headers, /^X-Spam: Yes/m);
        const inbox = await imap("alice@example.org", pw("alice@example.org"), { mailbox: "INBOX", subject });
        assert.equal(inbox.headers?.length ?? 0, 0, "the spam also reached INBOX");
    });

    test("rspamd: the milter is a Unix socket that Postfix reaches and other local users cannot; no TCP port", async () => {
        const connect = `import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); print("connected")`;
        assert.equal((await mail.execOk(`ss -Hltn 'sport = :11332' | wc -l`)).trim(), "0", "something still listens on TCP 11332");
        const asPostfix = await mail.exec(`runuser -u postfix -- python3 -c ${shellQuote(connect)} ${MILTER_SOCKET}`);
        assert.equal(asPostfix.stdout.trim(), "connected", asPostfix.stderr);
        const asNobody = await mail.exec(`runuser -u nobody -- python3 -c ${shellQuote(connect)} ${MILTER_SOCKET}`);
        assert.notEqual(asNobody.code, 0, "user nobody reached the milter socket");
        assert.match(asNobody.stderr, /PermissionError/);
    });

    test("dovecot: moving a message into Junk trains Rspamd as spam, moving it out trains it as ham", async () => {
        // Per message and class, from Rspamd's controller log: a total that rose would also pass with
        // the ham script wired to learn_spam, or with autolearn doing the work; and the statfiles'
        // totals also move with the autolearn of other mail delivered meanwhile.
        const subject = token("learn");
        // A body of its own: Rspamd recognises a message it learned before by its content, and would
        // move an earlier run's learn instead of adding one.
        const sent = await submit("carol@example.com", pw("carol@example.com"), { to: "alice@example.org", subject, body: `A perfectly normal message about the quarterly report and the meeting on Tuesday (${subject}).` });
        assert.equal(sent.code, 250, sent.transcript);
        await imapMessage("alice@example.org", pw("alice@example.org"), "INBOX", subject);
        const messageId = await messageIdOf("alice@example.org", "INBOX", subject);
        assert.deepEqual(await controllerLearnsOf(messageId), [], "learned before it was moved");
        await imap("alice@example.org", pw("alice@example.org"), { mailbox: "INBOX", subject, op: "copy", dest: "Junk" });
        assert.deepEqual(await controllerLearnsSettled(messageId, 1), ["spam"], "into Junk: one spam learn, no ham learn");
        // Learning the same message as ham takes back its spam learn (Rspamd relearns a message by its id).
        await imap("alice@example.org", pw("alice@example.org"), { mailbox: "Junk", subject, op: "copy", dest: "INBOX" });
        assert.deepEqual(await controllerLearnsSettled(messageId, 2), ["spam", "ham"], "out of Junk: one ham learn after the spam learn");
    });

    test("outbound: mail to the foreign MTA arrives with DKIM, SPF and DMARC pass as verified there", async () => {
        const subject = token("proof-8");
        const sent = await submit("alice@example.org", pw("alice@example.org"), { to: FOREIGN_RCPT, subject });
        assert.equal(sent.code, 250, sent.transcript);
        const headers = headerBlock(await foreignMessage(subject));
        const ar = headers.split("\n").filter((l) => /^Authentication-Results:/i.test(l)).join("\n");
        assert.match(ar, /dkim=pass[^;]*header\.d=example\.org/, ar || headers);
        assert.match(ar, /spf=pass/, ar);
        assert.match(ar, /dmarc=pass/, ar);
    });

    test("dovecot: with the share configured bob reads alice's INBOX; removing the share from config removes his access", async () => {
        const bob = pw("bob@example.org");
        const sharedInbox = "shared/alice@example.org/INBOX";
        assert.ok(model.sharedMailboxes.some((s) => s.mailbox === "alice@example.org" && s.sharedTo === "bob@example.org"), "lab stack shares alice with bob");
        const withShare = await imap("bob@example.org", bob, { mailbox: sharedInbox });
        assert.ok(withShare.list.some((l) => l.includes("shared/alice@example.org")), `LIST: ${withShare.list.join(" | ")}`);
        assert.equal(withShare.select, "OK");
        assert.ok(Number(withShare.selectText) > 0, "alice's INBOX looks empty to bob");

        const unshared: Model = { ...model, sharedMailboxes: model.sharedMailboxes.filter((s) => !(s.mailbox === "alice@example.org" && s.sharedTo === "bob@example.org")) };
        try {
            await applyOnGuest("mail", [...stepsOf(SERVICE.directory, unshared), ...stepsOf(SERVICE.dovecot, unshared)], secrets);
            const without = await imap("bob@example.org", bob, { mailbox: sharedInbox });
            assert.ok(!without.list.some((l) => l.includes("shared/alice@example.org")), `still listed: ${without.list.join(" | ")}`);
            assert.notEqual(without.select, "OK", "bob can still open alice's INBOX");
        } finally {
            await applyOnGuest("mail", [...stepsOf(SERVICE.directory, model), ...stepsOf(SERVICE.dovecot, model)], secrets);
        }
        const restored = await imap("bob@example.org", bob, { mailbox: sharedInbox });
        assert.equal(restored.select, "OK");
    });

    test("managesieve: a user uploads and activates a script on 4190 and it files the next delivery", async () => {
        const carol = pw("carol@example.com");
        const folder = token("Filed").replace(" ", "-");
        const script = join(scratch, "e2e.sieve");
        writeFileSync(script, `require ["fileinto", "mailbox"];\nif header :contains "Subject" "${folder}" {\n  fileinto :create "${folder}";\n}\n`);
        const sieve = (args: string[]) =>
            client("sh", ["-c", `exec 3<&0; exec sieve-connect --server ${MX} --port 4190 --user carol@example.com --passwordfd 3 --notlsverify "$@" </dev/null`, "sieve-connect", ...args], { input: carol + "\n" });
        try {
            const up = await sieve(["--upload", "--localsieve", script, "--remotesieve", "e2e"]);
            assert.equal(up.code, 0, up.stderr);
            const act = await sieve(["--activate", "--remotesieve", "e2e"]);
            assert.equal(act.code, 0, act.stderr);
            const list = await sieve(["--list"]);
            assert.match(list.stdout, /"?e2e"?\s+ACTIVE/i);
            const subject = `${folder} proof-10`;
            const sent = await submit("alice@example.org", pw("alice@example.org"), { to: "carol@example.com", subject });
            assert.equal(sent.code, 250, sent.transcript);
            await imapMessage("carol@example.com", carol, folder, subject);
        } finally {
            await sieve(["--deactivate"]);
            await sieve(["--delete", "--remotesieve", "e2e"]);
        }
    });

    test("postfix: a 40 MB message is accepted and delivered, a 60 MB one is refused with 552", async () => {
        const alice = pw("alice@example.org");
        const body40 = await bigBody(scratch, 40);
        const subject = token("proof-11 40MB");
        const ok = await submit("alice@example.org", alice, { to: "bob@example.org", subject, body: `@${body40}` });
        assert.equal(ok.code, 250, ok.replies.join("\n"));
        const size = await eventually("the 40 MB message in bob's INBOX", async () => {
            const r = await mail.exec(`doveadm -f flow fetch -u bob@example.org size.physical mailbox INBOX header Subject ${shellQuote(subject.split(" ")[1])}`);
            const m = /size\.physical=(\d+)/.exec(r.stdout);
            return m ? Number(m[1]) : undefined;
        });
        assert.ok(size > 40_000_000, `delivered size ${size}`);
        const body60 = await bigBody(scratch, 60);
        const refused = await submit("alice@example.org", alice, { to: "bob@example.org", subject: token("proof-11 60MB"), body: `@${body60}` });
        assert.equal(refused.code, 552, refused.replies.join("\n"));
    });

    test("quota: crossing 80 % puts one warning in the INBOX; a full mailbox is refused at RCPT (552 5.2.2) to the foreign MTA and nothing bounces here", async () => {
        const tiny: Model = { ...model, users: model.users.map((u) => (u.address === "carol@example.com" ? { ...u, quotaMb: 1 } : u)) };
        // The data volume outlives the guests: what an earlier run left would already fill the 1 MB.
        await mail.execOk("doveadm expunge -u carol@example.com mailbox INBOX subject quota && doveadm expunge -u carol@example.com mailbox INBOX subject 'Your mailbox is' && doveadm quota recalc -u carol@example.com");
        const since = (await mail.execOk("date '+%Y-%m-%d %H:%M:%S'")).trim();
        // From the foreign MTA's address, as its Postfix would deliver (no greylisting: SPF passes).
        const deliver = (subject: string, kilobytes: number) => {
            const body = Array.from({ length: Math.floor((kilobytes * 1024) / 72) }, (_, i) => `line ${String(i).padStart(6, "0")} of a message that fills a mailbox, nothing more to say here.\r\n`).join("");
            return sendFromForeign({ from: FOREIGN_RCPT, to: "carol@example.com", message: { headers: { From: FOREIGN_RCPT, To: "carol@example.com", Subject: subject }, body }, timeoutMs: 120_000 });
        };
        const warnings = async () => Number((await mail.execOk("doveadm search -u carol@example.com mailbox INBOX subject 'Your mailbox is 80% full' | wc -l")).trim());
        try {
            await applyOnGuest("mail", stepsOf(SERVICE.directory, tiny), secrets);
            // 850 KB of 1 MB: past 80 %, below 95 %.
            const first = await deliver(token("quota 850k"), 850);
            assert.equal(first.code, 250, JSON.stringify(first));
            await eventually("the 80 % warning in carol's INBOX", async () => ((await warnings()) >= 1 ? true : undefined));
            assert.equal(await warnings(), 1, "one warning for one crossing");
            // The message that crosses the limit is let in (quota grace); then the mailbox is full.
            const crossing = await deliver(token("quota 400k"), 400);
            assert.equal(crossing.code, 250, JSON.stringify(crossing));
            const percent = async () => Number((await mail.execOk("doveadm -f tab quota get -u carol@example.com | awk -F'\\t' '$2 == \"STORAGE\" { print $5 }'")).trim());
            await eventually("carol at or over her quota", async () => ((await percent()) >= 100 ? true : undefined));
            const refused = await deliver(token("quota over"), 10);
            assert.deepEqual([refused.code, refused.stage], [552, "rcpt"], JSON.stringify(refused));
            assert.match(refused.text, /^5\.2\.2 <carol@example\.com>: Recipient address rejected: Mailbox is full$/);
            assert.equal(await warnings(), 1, "the 80 % warning is not repeated");
            // Nothing was accepted and then bounced here: no LMTP refusal, no bounce sent.
            const log = await mail.execOk(`journalctl --no-pager -o cat --since '${since}' | grep -E 'status=bounced|sender non-delivery' || true`);
            assert.equal(log.trim(), "", log);
        } finally {
            await applyOnGuest("mail", stepsOf(SERVICE.directory, model), secrets);
        }
    });

    test("config: postfix check, doveconf -n and rspamadm configtest are clean", async () => {
        const postfix = await mail.exec("postfix check");
        assert.equal(postfix.code, 0, postfix.stderr);
        assert.equal(postfix.stdout + postfix.stderr, "");
        const doveconf = await mail.exec("doveconf -n >/dev/null");
        assert.equal(doveconf.code, 0, doveconf.stderr);
        assert.equal(doveconf.stderr, "", "doveconf -n warned");
        const rspamd = await mail.exec("rspamadm configtest");
        assert.equal(rspamd.code, 0, rspamd.stderr);
        assert.match(rspamd.stdout, /syntax OK/);
    });

    test("apply: a second apply changes nothing; one changed Postfix setting reloads Postfix only", async () => {
        const steps = mailSteps(model);
        const again = await applyOnGuest("mail", steps, secrets);
        assert.deepEqual(again.filter((s) => s.result !== "unchanged").map((s) => `${s.name}: ${s.actions.join("; ")} ${s.changedFiles.join(" ")}`), []);

        const pidsBefore = await daemonPids();
        const since = (await mail.execOk("date '+%Y-%m-%d %H:%M:%S'")).trim();
        const [postfix] = stepsOf(SERVICE.postfix, model);
        const changedPostfix: Step = {
            ...postfix,
            files: postfix.files.map((f) => (f.path === "/etc/postfix/main.cf" ? { ...f, content: f.content + "\n# e2e: one changed setting\ndelay_warning_time = 2h\n" } : f)),
        };
        try {
            const [r] = await applyOnGuest("mail", [changedPostfix], secrets);
            assert.equal(r.result, "changed");
            assert.deepEqual(r.actions, ["reloaded postfix"]);
            assert.equal((await mail.execOk("postconf -h delay_warning_time")).trim(), "2h");
            const pidsAfter = await daemonPids();
            assert.deepEqual(pidsAfter, pidsBefore, "a daemon was restarted");
            const reloads = await mail.execOk(`journalctl --no-pager -o cat --since ${shellQuote(since)} -u postfix -u dovecot -u rspamd | grep -Ei 'reload|starting|started' || true`);
            assert.match(reloads, /^reload -- version/m, reloads);
            assert.doesNotMatch(reloads, /dovecot|rspamd/i, reloads);
        } finally {
            await applyOnGuest("mail", [postfix], secrets);
        }
    });

    test("secrets: no password or DKIM key appears in any process's argv during an apply, nor in the journal", async () => {
        // Force the paths that handle secrets: the controller hash, the ACL sync and a reload each.
        await mail.execOk("rm -f /etc/rspamd/override.d/worker-controller.inc /var/lib/ispmail/dovecot-shares.applied");
        const sampler = (await mail.execOk("nohup sh -c 'for i in $(seq 1 600); do ps -eo args; echo ===; sleep 0.05; done' > /root/e2e-argv.log 2>&1 & echo $!")).trim();
        assert.match(sampler, /^\d+$/);
        try {
            const applied = await applyOnGuest("mail", mailSteps(model), secrets);
            assert.ok(applied.some((s) => s.actions.includes("hashed the controller password")), "the hash path did not run");
        } finally {
            await mail.exec(`kill ${sampler} 2>/dev/null || true`);
        }
        const argv = await mail.execOk("cat /root/e2e-argv.log; rm -f /root/e2e-argv.log", { timeoutMs: 120_000 });
        assert.ok(argv.split("===").length > 10, "the argv sampler did not run");
        const journal = await mail.execOk(`journalctl --no-pager -o cat --since ${shellQuote(journalSince)}`, { timeoutMs: 120_000 });
        const secretValues = Object.entries(secrets).map(([name, value]) => {
            // For PEM keys, a line of the base64 body is what could leak.
            const needle = value.includes("BEGIN") ? value.split("\n")[2] : value;
            return [name, needle] as const;
        });
        for (const [name, needle] of secretValues) {
            assert.ok(needle && needle.length >= 12, `secret ${name} too short to search for`);
            assert.ok(!argv.includes(needle), `secret ${name} appeared in a process's argv`);
            assert.ok(!journal.includes(needle), `secret ${name} appeared in the journal`);
        }
    });
});
