/**
 * Benchmark 6: IMAP on a 10,000-message mailbox. The mailbox is generated on the mail guest by
 * writing Maildir files directly (a bash loop, owned by vmail) and `doveadm force-resync`, then a
 * python3 imaplib client on the host (inside the lab network) logs in over 993 and times SELECT and
 * FETCH of every message's headers. The first run after the resync is reported apart (Dovecot
 * fills its cache then); the mailbox is deleted afterwards.
 */
import { join } from "node:path";
import { LAB } from "../lab/lab";
import { inLabNet, run } from "../lab/proc";
import { guest } from "../lab/testkit";
import { labServer, type Log } from "./lab-session";
import type { BenchOutcome } from "./report";
import { summarize } from "./stats";

const USER = "carol@example.com";
const MAILDIR = "/var/vmail/example.com/carol/Maildir";
const MAILBOX = "bench10k";

interface ImapRun {
    readonly connectLogin: number;
    readonly select: number;
    readonly fetchHeaderFields: number;
    readonly fetchHeaders: number;
    readonly selectAndFetch: number;
    readonly exists: number;
    readonly fetched: number;
    readonly fetchedFull: number;
    readonly headerBytes: number;
}

/** Writes `count` small messages into a new Maildir++ folder and lets Dovecot index them. */
function generateScript(count: number): string {
    const dir = `${MAILDIR}/.${MAILBOX}`;
    return `set -euo pipefail
dir=${dir}
rm -rf "$dir"
install -d -o vmail -g vmail -m 0700 "$dir" "$dir/cur" "$dir/new" "$dir/tmp"
now=$(date +%s)
start=$(date +%s.%N)
export TZ=UTC0
for ((i = 1; i <= ${count}; i++)); do
  # bash builtins only (printf's %(...)T formats the date): 10,000 forks would take longer than the rest.
  printf -v when '%(%a, %d %b %Y %H:%M:%S +0000)T' "$((now - ${count} + i))"
  printf 'Return-Path: <sender%d@example.net>\\r\\nFrom: Sender %d <sender%d@example.net>\\r\\nTo: Carol <${USER}>\\r\\nSubject: ispmail-bench message %d of ${count}\\r\\nDate: %s\\r\\nMessage-ID: <bench-%d@example.net>\\r\\nMIME-Version: 1.0\\r\\nContent-Type: text/plain; charset=utf-8\\r\\n\\r\\nBody of message %d.\\r\\n' \\
    "$i" "$i" "$i" "$i" "$when" "$i" "$i" > "$dir/cur/$((now - ${count} + i)).M$i.bench:2,S"
done
chown -R vmail:vmail "$dir"
written=$(date +%s.%N)
doveadm force-resync -u ${USER} ${MAILBOX}
done_=$(date +%s.%N)
printf '%s %s %s\\n' "$start" "$written" "$done_"`;
}

export async function benchImap(opts: { runs: number; messages: number; log: Log }): Promise<BenchOutcome> {
    const mail = guest("mail");
    const { secrets } = labServer();
    const password = secrets[`user:${USER}`];
    if (!password) throw new Error(`no password for ${USER} in the lab's secrets`);
    let runs: ImapRun[] = [];
    let generation = { writeSeconds: 0, resyncSeconds: 0 };
    try {
        // Dovecot may be reloading after an earlier apply: wait (bounded) until its userdb answers.
        await mail.execOk(`for i in $(seq 1 60); do doveadm user ${USER} >/dev/null 2>&1 && exit 0; sleep 1; done; doveadm user ${USER}`, { timeoutMs: 90_000 });
        const out = await mail.execOk("bash -s", { input: generateScript(opts.messages), timeoutMs: 600_000 });
        const [start, written, done] = out.trim().split(" ").map(Number);
        generation = { writeSeconds: written - start, resyncSeconds: done - written };
        opts.log(`imap: wrote ${opts.messages} messages in ${generation.writeSeconds.toFixed(1)} s, force-resync ${generation.resyncSeconds.toFixed(1)} s`);
        const [cmd, args] = inLabNet("python3", [join(__dirname, "imap-fetch.py")]);
        const r = await run(cmd, args, { input: JSON.stringify({ host: LAB.mail.ipv4, user: USER, password, mailbox: MAILBOX, runs: opts.runs + 1 }), timeoutMs: 900_000 });
        if (r.code !== 0) throw new Error(`imap client failed (exit ${r.code}): ${r.stderr.slice(-2000)}`);
        runs = (JSON.parse(r.stdout.trim().split("\n").pop()!) as { runs: ImapRun[] }).runs;
        for (const [i, x] of runs.entries()) opts.log(`imap run ${i}: SELECT ${x.select.toFixed(3)} s, FETCH header fields ${x.fetchHeaderFields.toFixed(2)} s, FETCH full headers ${x.fetchHeaders.toFixed(2)} s (${x.fetched} messages)`);
    } finally {
        await mail.exec(`doveadm mailbox delete -u ${USER} ${MAILBOX} 2>/dev/null; rm -rf ${MAILDIR}/.${MAILBOX}; doveadm force-resync -u ${USER} INBOX`, { timeoutMs: 120_000 });
    }
    const [cold, ...warm] = runs;
    const complete = runs.every((x) => x.exists === opts.messages && x.fetched === opts.messages && x.fetchedFull === opts.messages);
    const s = (k: keyof ImapRun) => summarize(warm.map((x) => x[k]));
    const select = s("select");
    const fetch = s("fetchHeaderFields");
    const full = s("fetchHeaders");
    const both = s("selectAndFetch");
    return {
        name: "imap",
        title: `IMAP: SELECT + FETCH headers of a ${opts.messages.toLocaleString("en")}-message mailbox over 993`,
        target: `all ${opts.messages} messages fetched (no time target)`,
        met: complete,
        headline: `SELECT ${select.min.toFixed(3)} / ${select.median.toFixed(3)} s; FETCH header fields ${fetch.min.toFixed(2)} / ${fetch.median.toFixed(2)} s; full headers ${full.min.toFixed(2)} / ${full.median.toFixed(2)} s; first run after resync ${cold.selectAndFetch.toFixed(2)} s`,
        notes: [
            `Mailbox generated by writing ${opts.messages} Maildir files directly (${generation.writeSeconds.toFixed(1)} s) + \`doveadm force-resync\` (${generation.resyncSeconds.toFixed(1)} s), user ${USER}, deleted afterwards.`,
            `python3 imaplib from the host in the lab network to ${LAB.mail.ipv4}:993, a new connection per run; "header fields" = FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)]), "full headers" = FETCH 1:* BODY.PEEK[HEADER]. Min/median over ${warm.length} runs after the first; the first (cold cache) is reported apart. TLS certificate not verified (timing only).`,
        ],
        data: { messages: opts.messages, generation, cold, select, fetchHeaderFields: fetch, fetchHeaders: full, selectAndFetch: both, runs },
    };
}
