/**
 * Mail clients for the e2e suites, run on the test host inside the lab namespace: swaks for SMTP
 * (passwords in its environment, never in argv), and the foreign MTA's mailbox as the receiving end.
 */
import { randomBytes } from "node:crypto";
import { run } from "../../lab/proc";
import { guest, LAB } from "../../lab/testkit";

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

export function shellQuote(s: string): string {
    return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * A mail user's submission (587 STARTTLS or 465 implicit TLS) with AUTH PLAIN; `source` binds the
 * client to one of the test host's lab addresses.
 */
export function submit(user: string, password: string, opts: { port?: 587 | 465; from?: string; headerFrom?: string; to: string; subject: string; body?: string; extraHeaders?: string[]; source?: string }): Promise<SmtpAnswer> {
    const port = opts.port ?? 587;
    const args = ["--server", MX, "--port", String(port), port === 465 ? "--tlsc" : "--tls", "--auth", "PLAIN", "--auth-user", user];
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

/** The message's header block with folded lines unfolded. */
export function headerBlock(message: string): string {
    return message.split(/\r?\n\r?\n/)[0].replace(/\r?\n[ \t]+/g, " ");
}
