/**
 * Mail clients for the e2e suites, run on the test host inside the lab namespace: swaks for SMTP
 * (passwords in its environment, never in argv), and the foreign MTA's mailbox as the receiving end.
 */
import { randomBytes } from "node:crypto";
import { connect as netConnect } from "node:net";
import { run } from "../../lab/proc";
import { guest, LAB, type Guest } from "../../lab/testkit";

/** The mail server's IPv4 address and the foreign MTA's test recipient. */
export const MX = LAB.mail.ipv4;
export const FOREIGN_RCPT = `${LAB.foreignUser}@${LAB.foreignDomain}`;

export const token = (what: string) => `${what} ${randomBytes(6).toString("hex")}`;
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a value (not undefined), at most `tries` times. */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined>, tries = 40, intervalMs = 1500): Promise<T> {
    for (let i = 0; i < tries; i++) {
        const v = await probe();
        if (v !== undefined) return v;
        await sleep(intervalMs);
    }
    throw new Error(`timed out waiting for ${what} (${tries} tries, ${intervalMs} ms apart)`);
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------
export interface SmtpAnswer {
    /** The last reply code the server gave (e.g. 250 after DATA, or the rejecting code). */
    readonly code: number;
    /** Every server reply line. */
    readonly replies: string[];
    readonly transcript: string;
}

/** swaks with the password (if any) in its environment (swaks reads SWAKS_OPT_*), never in argv. */
export async function swaks(args: readonly string[], password?: string, timeoutMs = 180_000): Promise<SmtpAnswer> {
    const env = password === undefined ? process.env : { ...process.env, SWAKS_OPT_auth_password: password };
    const r = await run("swaks", ["--timeout", "120", ...args], { env, timeoutMs });
    const transcript = r.stdout + r.stderr;
    const replies = transcript.split("\n").filter((l) => /^<[~*-]*\s+\d{3}[ -]/.test(l));
    const last = replies.length ? Number(/(\d{3})/.exec(replies[replies.length - 1])![1]) : 0;
    // QUIT's 221 is not the answer we want: take the reply before it.
    const meaningful = replies.filter((l) => !/\s221[ -]/.test(l));
    const code = meaningful.length ? Number(/(\d{3})/.exec(meaningful[meaningful.length - 1])![1]) : last;
    return { code, replies, transcript };
}

/** `s` as a regular expression that matches exactly it. */
export const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

export function shellQuote(s: string): string {
    return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * A mail user's submission (587 STARTTLS or 465 implicit TLS) with AUTH PLAIN; `source` binds the
 * client to one of the test host's lab addresses.
 */
export function submit(user: string, password: string, opts: { port?: 587 | 465; from?: string; headerFrom?: string; to: string; subject: string; body?: string; extraHeaders?: string[]; source?: string }): Promise<SmtpAnswer> {
    const port = opts.port ?? 587;
    // From an IPv6 source address, to the server's IPv6 address.
    const server = opts.source?.includes(":") ? LAB.mail.ipv6 : MX;
    const args = ["--server", server, "--port", String(port), port === 465 ? "--tlsc" : "--tls", "--auth", "PLAIN", "--auth-user", user];
    if (opts.source) args.push("--local-interface", opts.source);
    args.push("--from", opts.from ?? user, "--to", opts.to, "--h-Subject", opts.subject);
    if (opts.headerFrom) args.push("--h-From", opts.headerFrom);
    for (const h of opts.extraHeaders ?? []) args.push("--add-header", h);
    if (opts.body) args.push("--body", opts.body);
    args.push("--suppress-data");
    return swaks(args, password);
}


/** The whole message with this subject as the foreign MTA stored it (polled until it arrives). */
export function foreignMessage(subject: string): Promise<string> {
    return eventually(`"${subject}" at the foreign MTA`, async () => {
        const r = await guest("foreign").exec(`grep -l -F -- ${shellQuote(subject)} /home/${LAB.foreignUser}/Maildir/new/* 2>/dev/null | head -n1 | xargs -r cat`);
        return r.stdout.includes(subject) ? r.stdout : undefined;
    });
}

/** A guest's clock, in the form journalctl --since takes. */
export const guestNow = async (on: Guest = guest("mail")): Promise<string> => (await on.execOk("date '+%Y-%m-%d %H:%M:%S'")).trim();

/** Postfix's log lines on a guest (the mail server by default) since `since` ({@link guestNow}). */
export function postfixLogSince(since: string, on: Guest = guest("mail")): Promise<string> {
    return on.execOk(`journalctl --since ${shellQuote(since)} --no-pager -o cat -u postfix.service`);
}

/** The queue id Postfix gave a message accepted in this SMTP transcript. */
export function queueIdOf(transcript: string): string {
    const queueId = /queued as ([0-9A-F]+)/.exec(transcript)?.[1];
    if (!queueId) throw new Error(`no "queued as" in the transcript:\n${transcript}`);
    return queueId;
}

/**
 * A message handed to the foreign MTA (the lab host is in its mynetworks), which DKIM-signs it as
 * example.net's and sends it to the recipient's MX, as a provider's user would (as `from`, by
 * default the foreign user). Returns its queue id there.
 */
export async function sendThroughForeign(to: string, subject: string, body?: string, from: string = FOREIGN_RCPT): Promise<string> {
    const r = await swaks(["--server", LAB.foreign.ipv4, "--port", "25", "--from", from, "--to", to, "--h-Subject", subject, ...(body ? ["--body", body] : [])]);
    if (r.code !== 250) throw new Error(`the foreign MTA did not take the message:\n${r.transcript}`);
    return queueIdOf(r.transcript);
}

/** A guest's delivery log line for a queued message to `to` with this status (polled until it is logged). */
export function deliveryLine(on: Guest, since: string, queueId: string, to: string, status: "sent" | "deferred" | "bounced"): Promise<string> {
    return eventually(`the ${status} line for ${queueId} to ${to}`, async () => {
        const log = await postfixLogSince(since, on);
        return log.split("\n").find((l) => l.startsWith(`${queueId}: to=<${to}>`) && l.includes(`status=${status}`));
    });
}

const LOGIN_CHECK = `
import imaplib, smtplib, ssl, sys
protocol, user = sys.argv[1], sys.argv[2]
password = sys.stdin.read()
context = ssl._create_unverified_context()
try:
    if protocol == "imap":
        with imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=context, timeout=30) as imap:
            imap.login(user, password)
    else:
        with smtplib.SMTP("127.0.0.1", 587, timeout=30) as smtp:
            smtp.starttls(context=context)
            smtp.login(user, password)
    print("accepted")
except (imaplib.IMAP4.error, smtplib.SMTPAuthenticationError) as e:
    print("refused", e)
`;

/**
 * Does IMAP (993) or SMTP AUTH (587) accept this login? Asked on the server over loopback, which
 * fail2ban's address jails ignore, so that a test's deliberate failures never ban the lab host;
 * the password goes on stdin, never into argv.
 */
export async function loginAccepted(protocol: "imap" | "smtp", user: string, password: string): Promise<boolean> {
    const r = await guest("mail").exec(`python3 -c ${shellQuote(LOGIN_CHECK)} ${protocol} ${shellQuote(user)}`, { input: password });
    if (r.code !== 0) throw new Error(`${protocol} login check: ${r.stderr}`);
    return r.stdout.startsWith("accepted");
}

/** The Message-ID (without angle brackets) of the message with this subject in a user's mailbox (doveadm, on the server). */
export async function messageIdOf(user: string, mailbox: string, subject: string): Promise<string> {
    const out = await guest("mail").execOk(`doveadm fetch -u ${shellQuote(user)} hdr.message-id mailbox ${shellQuote(mailbox)} subject ${shellQuote(subject)}`);
    const id = /<([^<>\s]+)>/.exec(out)?.[1];
    if (!id) throw new Error(`no Message-ID for "${subject}" in ${user}'s ${mailbox}: ${out.trim()}`);
    return id;
}

/**
 * What Rspamd's controller was asked to learn this message as, in order: its log line "learned
 * message as spam: <Message-ID>" for every learn_spam / learn_ham that went through (Dovecot's
 * imapsieve pipe sends them). Per message, unlike the statfiles' totals, which any autolearn of
 * other mail delivered meanwhile also moves; autolearn at delivery is not in it.
 */
export async function controllerLearnsOf(messageId: string): Promise<("spam" | "ham")[]> {
    const r = await guest("mail").exec(`grep -F -- ${shellQuote(`: ${messageId}`)} /var/log/rspamd/rspamd.log`);
    const learns: ("spam" | "ham")[] = [];
    for (const line of r.stdout.split("\n")) {
        const m = /rspamd_controller_learn_fin_task: .* learned message as (spam|ham): (\S+)$/.exec(line);
        if (m && m[2] === messageId) learns.push(m[1] as "spam" | "ham");
    }
    return learns;
}

/**
 * The controller's learns of a message once there are `count` of them (Dovecot's imapsieve pipe has
 * taken up to 20 s here: up to 60 s), read again 3 s later so that a learn that should not come
 * (e.g. a ham learn right after the spam learn) is in the list too.
 */
export async function controllerLearnsSettled(messageId: string, count: number): Promise<("spam" | "ham")[]> {
    await eventually(`learn ${count} of ${messageId}`, async () => ((await controllerLearnsOf(messageId)).length >= count ? true : undefined), 60, 1000).catch(() => false);
    await sleep(3000);
    return controllerLearnsOf(messageId);
}

/** Waits until a message whose subject contains `subject` is in this user's mailbox (doveadm, on the server). */
export function inMailbox(user: string, mailbox: string, subject: string): Promise<true> {
    return eventually(`"${subject}" in ${user}'s ${mailbox}`, async () =>
        (await guest("mail").exec(`doveadm search -u ${shellQuote(user)} mailbox ${shellQuote(mailbox)} subject ${shellQuote(subject)}`)).stdout.trim() ? true : undefined,
    );
}

/** How a TCP connection to host:port ends: connected, refused (nothing listens), or another error code. */
export function tcpOutcome(host: string, port: number): Promise<"connected" | "refused" | string> {
    return new Promise((resolve) => {
        const socket = netConnect({ host, port, timeout: 5000 });
        socket.on("connect", () => {
            socket.destroy();
            resolve("connected");
        });
        socket.on("timeout", () => {
            socket.destroy();
            resolve("timeout");
        });
        socket.on("error", (e: NodeJS.ErrnoException) => resolve(e.code === "ECONNREFUSED" ? "refused" : (e.code ?? e.message)));
    });
}

/** The message's header block with folded lines unfolded. */
export function headerBlock(message: string): string {
    return message.split(/\r?\n\r?\n/)[0].replace(/\r?\n[ \t]+/g, " ");
}

// ---------------------------------------------------------------------------------------------
// Mail from the foreign world
// ---------------------------------------------------------------------------------------------
/** The SMTP step whose reply a {@link sendFromForeign} result reports. */
export type SmtpStage = "ehlo" | "mail" | "rcpt" | "data";

export interface ForeignSmtpOptions {
    /** Envelope sender (MAIL FROM); "" for a null sender. */
    readonly from: string;
    /** Envelope recipients (RCPT TO). */
    readonly to: string | readonly string[];
    /**
     * The message: raw (header block, blank line, body) or as headers and body; line ends become
     * CRLF. Left out, the session stops after RCPT (RSET, QUIT): no DATA, nothing is queued.
     */
    readonly message?: string | { readonly headers: Readonly<Record<string, string>>; readonly body: string };
    /** MAIL FROM ... SMTPUTF8 (needed for a non-ASCII address); refused at "ehlo" when not offered. */
    readonly smtputf8?: boolean;
    /** The SMTP client's timeout (default 60 s); the run on the foreign guest gets 30 s more. */
    readonly timeoutMs?: number;
}

export interface ForeignSmtpResult {
    /**
     * The reply that decided the outcome: the end-of-DATA reply (250 when queued), the RCPT reply
     * when no message was given, otherwise the refusal (MAIL, all recipients, or DATA).
     */
    readonly code: number;
    /** That reply's text (enhanced status code first, as the server sent it). */
    readonly text: string;
    readonly stage: SmtpStage;
    /** Whether our EHLO answer offered SMTPUTF8. */
    readonly smtputf8Offered: boolean;
    /** Recipients refused while others were accepted (address -> [code, text]). */
    readonly refused: Readonly<Record<string, readonly [number, string]>>;
}

/**
 * One SMTP session from the foreign MTA's host to our port 25, as its Postfix would connect (its
 * address, HELO mx.example.net: SPF passes there, so no greylisting). Everything is sent on
 * stdin as JSON, nothing on the command line.
 */
const SMTP_FROM_FOREIGN = String.raw`
import json, smtplib, sys
req = json.loads(sys.stdin.buffer.read())
s = smtplib.SMTP(req["host"], 25, local_hostname=req["helo"], timeout=req["timeout"])
out = {"refused": {}}
def answer(stage, code, text):
    out.update(stage=stage, code=code, text=text.decode("utf-8", "replace") if isinstance(text, bytes) else text)
msg = None if req["message"] is None else req["message"].encode("utf-8")
code, text = s.ehlo()
out["smtputf8Offered"] = s.has_extn("smtputf8")
if code != 250:
    answer("ehlo", code, text)
elif req["smtputf8"] and not out["smtputf8Offered"]:
    answer("ehlo", 0, "SMTPUTF8 requested, but not offered")
else:
    opts = ["SMTPUTF8"] if req["smtputf8"] else []
    if msg is not None and s.has_extn("size"):
        opts.append("size=%d" % len(msg))
    code, text = s.mail(req["from"], opts)
    if code != 250:
        answer("mail", code, text)
    else:
        accepted = None
        for rcpt in req["to"]:
            code, text = s.rcpt(rcpt)
            if code in (250, 251):
                accepted = accepted or (code, text)
            else:
                out["refused"][rcpt] = [code, text.decode("utf-8", "replace")]
        if accepted is None:
            answer("rcpt", *out["refused"].pop(req["to"][0]))
        elif msg is None:
            answer("rcpt", *accepted)
        else:
            try:
                answer("data", *s.data(msg))
            except smtplib.SMTPDataError as e:
                answer("data", e.smtp_code, e.smtp_error)
if msg is None or out["code"] != 250:
    try:
        s.rset()
    except smtplib.SMTPServerDisconnected:
        pass
try:
    s.quit()
except smtplib.SMTPServerDisconnected:
    pass
print(json.dumps(out))
`;

/** Sends (or, without a message, only offers) mail to our MX from the foreign MTA's host; see {@link ForeignSmtpOptions}. */
export async function sendFromForeign(opts: ForeignSmtpOptions): Promise<ForeignSmtpResult> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const m = opts.message;
    const raw = m === undefined ? null : typeof m === "string" ? m : [...Object.entries(m.headers).map(([k, v]) => `${k}: ${v}`), "", m.body].join("\r\n");
    const input = JSON.stringify({
        host: LAB.mail.ipv4,
        helo: LAB.foreign.fqdn,
        timeout: timeoutMs / 1000,
        from: opts.from,
        to: typeof opts.to === "string" ? [opts.to] : opts.to,
        message: raw === null ? null : raw.replace(/\r?\n/g, "\r\n"),
        smtputf8: opts.smtputf8 ?? false,
    });
    const stdout = await guest("foreign").execOk("python3 -c " + shellQuote(SMTP_FROM_FOREIGN), { input, timeoutMs: timeoutMs + 30_000 });
    return JSON.parse(stdout.trim()) as ForeignSmtpResult;
}
