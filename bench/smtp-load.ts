/**
 * Inbound mail load, shared by the benchmarks that need it (throughput, memory): Postfix's
 * smtp-source on the foreign MTA guest sends a batch of one pre-formatted message over SMTP to the
 * mail guest's port 25, and the batch is followed until every message is in the recipient's Maildir
 * (or smtp-source is done and Postfix's queue stayed empty: what is missing then is lost).
 *
 * The caller decides the conditions (milter on or off, greylisting, ...) and expunges the batch.
 */
import { LAB } from "../lab/lab";
import { sleep } from "../lab/proc";
import { guest } from "../lab/testkit";

export type Log = (line: string) => void;

/** Every message file of a Maildir, in every folder (Sieve may file some into Junk). */
export const countMaildirCommand = (maildir: string) => `find ${maildir} -type f \\( -path '*/new/*' -o -path '*/cur/*' \\) | wc -l`;

/** A pre-formatted message for smtp-source -F: ordinary headers, `bodyBytes` of text body. */
export function messageFile(opts: { bodyBytes: number; sender: string; rcpt: string; rcptName: string; subject: string }): string {
    const line = "The quick brown fox jumps over the lazy dog, again and again, for the benchmark.";
    const lines = Math.max(1, Math.ceil(opts.bodyBytes / (line.length + 2)));
    return [
        `From: Bench Sender <${opts.sender}>`,
        `To: ${opts.rcptName} <${opts.rcpt}>`,
        `Subject: ${opts.subject}`,
        "Date: Wed, 25 Nov 2026 10:00:00 +0000",
        `Message-ID: <bench-${opts.bodyBytes}@${LAB.foreignDomain}>`,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        ...Array.from({ length: lines }, () => line),
        "",
    ].join("\n");
}

export interface SendOptions {
    /** The message file on the foreign guest (see {@link messageFile}). */
    readonly file: string;
    readonly count: number;
    /** Parallel SMTP sessions. */
    readonly sessions: number;
    readonly sender: string;
    readonly rcpt: string;
    /** The recipient's Maildir on the mail guest, where the batch is counted. */
    readonly maildir: string;
    /** How long to follow the batch; default 600 s. */
    readonly timeoutMs?: number;
    readonly log: Log;
}

export interface SendResult {
    readonly sent: number;
    readonly delivered: number;
    readonly lost: number;
    /** From smtp-source's start to the newest delivered file's mtime (the guests share one clock). */
    readonly seconds: number;
    /** smtp-source's start, epoch seconds. */
    readonly startedAt: number;
}

/** Sends one batch with smtp-source from the foreign guest and waits until it is delivered (or lost). */
export async function sendFromForeign(opts: SendOptions): Promise<SendResult> {
    const mail = guest("mail");
    const foreign = guest("foreign");
    const count = countMaildirCommand(opts.maildir);
    const before = Number((await mail.execOk(count)).trim());
    // smtp-source runs detached on the foreign guest: under full load an SSH session that waits for
    // it may be dropped (missed keep-alives), which would kill it. It prints nothing on success.
    await foreign.execOk(
        `rm -f /root/bench-result; nohup sh -c 't0=$(date +%s.%N); smtp-source -s ${opts.sessions} -m ${opts.count} -F ${opts.file} -f ${opts.sender} -t ${opts.rcpt} -M ${LAB.foreign.fqdn} ${LAB.mail.ipv4}:25 2>/root/bench-stderr; echo "$t0 $?" > /root/bench-result' >/dev/null 2>&1 &`,
    );
    // Followed from one SSH session that stays open (a loop on the mail guest that answers when the
    // batch is in, when Postfix's queue has stayed empty with nothing new arriving, or after a
    // minute), not from a new session every half second: each new session costs the guests ~0.1-0.2
    // s of CPU (sshd, PAM, logind), a fifth of a core taken from the mail server being measured.
    const smtpSourceResult = async () => (await foreign.exec("cat /root/bench-result 2>/dev/null", { timeoutMs: 30_000 })).stdout.trim();
    let delivered = 0;
    let t0 = NaN;
    const timeoutMs = opts.timeoutMs ?? 600_000;
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
        const r = await mail.exec(followCommand(count, before, opts.count), { timeoutMs: 120_000 });
        const [state, n] = r.stdout.trim().split(" ");
        if (r.code !== 0 || !state) {
            await sleep(500); // a dropped session under load: ask again
            continue;
        }
        delivered = Number(n);
        if (state === "in") break;
        if (state === "idle") {
            // The queue is empty and nothing arrives: done if smtp-source is (what is missing then is lost).
            if (await smtpSourceResult()) break;
        }
    }
    // smtp-source's start and exit code (it finishes before its last message is delivered).
    while (Date.now() < deadline) {
        const result = await smtpSourceResult();
        if (result) {
            const [start, rc] = result.split(" ");
            t0 = Number(start);
            if (rc !== "0") opts.log(`smtp-source exit ${rc}: ${(await foreign.exec("tail -c 500 /root/bench-stderr")).stdout}`);
            break;
        }
        await sleep(500);
    }
    if (Number.isNaN(t0)) throw new Error(`smtp-source did not finish within ${timeoutMs / 1000} s`);
    // The last delivery is the newest file's mtime (exact, whatever the polling interval).
    const newest = await mail.execOk(`find ${opts.maildir} -type f \\( -path '*/new/*' -o -path '*/cur/*' \\) -newermt @${t0} -printf '%T@\\n' | sort -n | tail -n 1`);
    const seconds = Number(newest.trim()) - t0;
    return { sent: opts.count, delivered, lost: opts.count - delivered, seconds, startedAt: t0 };
}

/**
 * A shell loop on the mail guest that follows a batch every 0.5 s and prints one line, `STATE N`
 * with N messages of the batch delivered: `in` (all of them), `idle` (Postfix's queue empty and no
 * new message for four polls in a row) or `running` (after a minute; ask again).
 */
export function followCommand(countCommand: string, before: number, want: number): string {
    return [
        `end=$(($(date +%s) + 60)); last=-1; quiet=0`,
        `while :; do n=$(($(${countCommand}) - ${before})); q=$(postqueue -j | wc -l)`,
        `if [ "$n" -ge ${want} ]; then echo "in $n"; exit 0; fi`,
        `if [ "$q" -eq 0 ] && [ "$n" -eq "$last" ]; then quiet=$((quiet + 1)); else quiet=0; fi; last=$n`,
        `if [ "$quiet" -ge 4 ]; then echo "idle $n"; exit 0; fi`,
        `if [ "$(date +%s)" -ge "$end" ]; then echo "running $n"; exit 0; fi`,
        `sleep 0.5; done`,
    ].join("\n");
}

/** Removes the helper files of {@link sendFromForeign} from the foreign guest. */
export async function cleanForeign(files: readonly string[]): Promise<void> {
    await guest("foreign").exec(`rm -f ${[...files, "/root/bench-result", "/root/bench-stderr"].join(" ")}`);
}
