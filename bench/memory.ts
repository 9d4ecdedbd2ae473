/**
 * Benchmark 7 (issue 19, target 4): the whole mail server's memory, as PSS (proportional set size:
 * shared pages divided among the processes sharing them, so the sum is what the processes hold) of
 * every process on the lab's mail guest, by systemd unit (its cgroup, sub-cgroups included), idle
 * and at its peak under load. Target: <= 1 GiB both idle and under load.
 *
 * Idle: every step applied, then a settle, then samples over a few seconds (median). Load: the
 * throughput benchmark's inbound batch (bench/smtp-load.ts: smtp-source on the foreign MTA guest ->
 * port 25 -> Rspamd milter -> LMTP -> Maildir, ~2 KB and 1 MB messages, milter on) while IMAP
 * clients log in, list and read and the webmail's login page is fetched over HTTPS
 * (bench/memory-clients.py, from the host); a sampler on the guest (a transient systemd unit, left
 * out of the sums) reads every process's /proc/<pid>/smaps_rollup every 0.5 s. Nothing of the
 * server's configuration is changed; the batches are expunged afterwards.
 *
 * Excluded from the server's total: the sampler's own unit and user.slice (SSH login sessions: the
 * benchmark's own commands), reported apart.
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LAB } from "../lab/lab";
import { inLabNet, run, sleep } from "../lab/proc";
import { guest, labModel } from "../lab/testkit";
import { applyToMail, labServer, tally, type Log } from "./lab-session";
import { mib, parseSamples, peaks, pssByDaemon, pssByUnit, sampleCommand, samplerScript, topOf, totalPss, unitOf, type PssSample, type UnitPss } from "./pss";
import type { BenchOutcome } from "./report";
import { cleanForeign, messageFile, sendFromForeign, type SendResult } from "./smtp-load";
import { summarize } from "./stats";

/** Issue 19, target 4. */
export const TARGET_MIB = 1024;
/** Published minimum memory of comparable all-in-one mail servers (issue 19), as they state it. */
export const ANCHORS: readonly { readonly name: string; readonly minimum: string; readonly mib: number }[] = [
    { name: "Mail-in-a-Box", minimum: "512 MB", mib: 512 },
    { name: "docker-mailserver", minimum: "512 MB", mib: 512 },
    { name: "Mailu", minimum: "1 GB", mib: 1024 },
    { name: "mailcow", minimum: "6 GiB", mib: 6144 },
];

const RCPT = "carol@example.com";
const MAILDIR = "/var/vmail/example.com/carol/Maildir";
const SENDER = `bench@${LAB.foreignDomain}`;
const SUBJECT = "ispmail-bench memory";
const SAMPLER_UNIT = "ispmail-bench-memory.service";
const SAMPLES = "/run/ispmail-bench-memory.samples";
const STOP = "/run/ispmail-bench-memory.stop";
const SCRIPT = "/run/ispmail-bench-memory.sh";
/** IMAP users the clients log in as during the load (the lab's own mailboxes). */
const IMAP_USERS = ["alice@example.org", "bob@example.org", "carol@example.com"];

/** Not the server: the sampler and SSH login sessions (the benchmark's own commands). */
const notServer = (cgroup: string) => topOf(cgroup) === "user.slice" || unitOf(cgroup) === SAMPLER_UNIT;

interface Phase {
    readonly totalMiB: number;
    readonly perUnit: readonly UnitPss[];
    readonly perDaemon: ReturnType<typeof pssByDaemon>;
    /** Login sessions and the sampler, left out of the total. */
    readonly excludedMiB: number;
    readonly samples: number;
}

function idlePhase(samples: readonly PssSample[]): Phase {
    // The sample with the median total, as it is (units of one moment).
    const sorted = [...samples].sort((a, b) => totalPss(a, notServer) - totalPss(b, notServer));
    const mid = sorted[sorted.length >> 1];
    const perUnit = pssByUnit(mid, notServer);
    return { totalMiB: mib(totalPss(mid, notServer)), perUnit, perDaemon: pssByDaemon(perUnit), excludedMiB: mib(totalPss(mid) - totalPss(mid, notServer)), samples: samples.length };
}

function peakPhase(samples: readonly PssSample[]): Phase & { peakAt: number; sumOfUnitPeaksMiB: number } {
    const p = peaks(samples, notServer);
    const at = samples.find((s) => s.at === p.peakAt)!;
    return {
        totalMiB: mib(p.peakTotalKiB),
        perUnit: p.perUnit,
        perDaemon: pssByDaemon(p.perUnit),
        excludedMiB: mib(totalPss(at) - p.peakTotalKiB),
        samples: samples.length,
        peakAt: p.peakAt,
        sumOfUnitPeaksMiB: mib(p.perUnit.reduce((s, u) => s + u.pssKiB, 0)),
    };
}

/** A few samples right now, `count` of them `intervalSeconds` apart (run over SSH, a login session). */
async function sampleNow(count: number, intervalSeconds: number): Promise<PssSample[]> {
    const out = await guest("mail").execOk(`for i in $(seq 1 ${count}); do ${sampleCommand()}; [ "$i" = ${count} ] || sleep ${intervalSeconds}; done`, { timeoutMs: 120_000 });
    return parseSamples(out);
}

async function startSampler(intervalSeconds: number): Promise<void> {
    const mail = guest("mail");
    await mail.execOk(`systemctl stop ${SAMPLER_UNIT} 2>/dev/null; systemctl reset-failed ${SAMPLER_UNIT} 2>/dev/null; rm -f ${STOP} ${SAMPLES}; cat > ${SCRIPT}`, { input: samplerScript(SAMPLES, STOP, intervalSeconds) });
    await mail.execOk(`systemd-run --quiet --collect --unit=${SAMPLER_UNIT} --description='ispmail bench: PSS sampler (bench/memory.ts)' bash ${SCRIPT}`);
}

async function stopSampler(): Promise<PssSample[]> {
    const mail = guest("mail");
    await mail.exec(`touch ${STOP}; for i in $(seq 1 50); do systemctl is-active --quiet ${SAMPLER_UNIT} || break; sleep 0.2; done; systemctl stop ${SAMPLER_UNIT} 2>/dev/null; true`, { timeoutMs: 60_000 });
    const text = await mail.execOk(`cat ${SAMPLES}`, { timeoutMs: 120_000 });
    await mail.exec(`rm -f ${STOP} ${SAMPLES} ${SCRIPT}`);
    // The last sample may have been cut short by the stop: drop it unless it is the only one.
    const samples = parseSamples(text);
    return samples.length > 1 ? samples.slice(0, -1) : samples;
}

async function expunge(): Promise<void> {
    await guest("mail").exec(`doveadm expunge -u ${RCPT} mailbox '*' subject '${SUBJECT}'`, { timeoutMs: 300_000 });
}

interface ClientLoad {
    readonly imapSessions: number;
    readonly imapErrors: number;
    readonly webRequests: number;
    readonly webErrors: number;
}

/** IMAP logins and webmail requests from the host until `stopFile` exists (bench/memory-clients.py). */
function startClients(stopFile: string, passwords: Readonly<Record<string, string>>, webHost: string | undefined): Promise<ClientLoad> {
    const [cmd, args] = inLabNet("python3", [join(__dirname, "memory-clients.py")]);
    const input = JSON.stringify({ host: LAB.mail.ipv4, users: IMAP_USERS.map((u) => ({ user: u, password: passwords[u] })), webHost, stopFile, parallel: 3 });
    return run(cmd, args, { input, timeoutMs: 900_000 }).then((r) => {
        if (r.code !== 0) throw new Error(`memory clients failed (exit ${r.code}): ${r.stderr.slice(-2000)}`);
        return JSON.parse(r.stdout.trim().split("\n").pop()!) as ClientLoad;
    });
}

interface MemoryRun {
    readonly idle: Phase;
    readonly load: ReturnType<typeof peakPhase>;
    readonly afterLoad: Phase;
    readonly batches: readonly (SendResult & { kind: string })[];
    readonly clients: ClientLoad;
}

export interface MemoryOptions {
    readonly runs: number;
    /** ~2 KB messages per run (4 SMTP sessions) and 1 MB messages (2 sessions). */
    readonly small: number;
    readonly large: number;
    /** Seconds to wait after the apply before the idle samples. */
    readonly settleSeconds: number;
    readonly log: Log;
}

export async function benchMemory(opts: MemoryOptions): Promise<BenchOutcome> {
    const mail = guest("mail");
    const foreign = guest("foreign");
    const { steps, secrets } = labServer();
    const model = labModel();
    const passwords = Object.fromEntries(IMAP_USERS.map((u) => [u, secrets[`user:${u}`]]));
    for (const [u, p] of Object.entries(passwords)) if (!p) throw new Error(`no password for ${u} in the lab's secrets`);
    const webHost = model.webmail.enabled ? model.webmail.host : undefined;
    const applied = tally(await applyToMail(steps, secrets)); // start from the applied state
    await expunge();
    await foreign.execOk("cat > /root/bench-mem-small.eml", { input: messageFile({ bodyBytes: 2 * 1024, sender: SENDER, rcpt: RCPT, rcptName: "Carol", subject: SUBJECT }) });
    await foreign.execOk("cat > /root/bench-mem-large.eml", { input: messageFile({ bodyBytes: 1024 * 1024, sender: SENDER, rcpt: RCPT, rcptName: "Carol", subject: SUBJECT }) });
    const guestMem = (await mail.execOk("nproc; free -m | awk '/^Mem:/ {print $2}'")).trim().split("\n");
    const runs: MemoryRun[] = [];
    const clientStop = `/tmp/ispmail-bench-memory-clients.${process.pid}.stop`;
    try {
        for (let i = 1; i <= opts.runs; i++) {
            opts.log(`memory run ${i}: settling ${opts.settleSeconds} s, then idle samples`);
            await sleep(opts.settleSeconds * 1000);
            const idle = idlePhase(await sampleNow(5, 1));
            opts.log(`memory run ${i}: idle ${idle.totalMiB} MiB (${idle.perDaemon.slice(0, 6).map((d) => `${d.daemon} ${d.mib}`).join(", ")})`);
            await startSampler(0.5);
            rmSync(clientStop, { force: true });
            const clients = startClients(clientStop, passwords, webHost);
            clients.catch(() => undefined); // awaited below; not unhandled if the batch fails first
            const batches: (SendResult & { kind: string })[] = [];
            try {
                await sleep(2000); // the clients' first logins before the mail arrives
                for (const [kind, count, sessions] of [["small", opts.small, 4], ["large", opts.large, 2]] as const) {
                    if (count === 0) continue;
                    const b = await sendFromForeign({ file: `/root/bench-mem-${kind}.eml`, count, sessions, sender: SENDER, rcpt: RCPT, maildir: MAILDIR, log: (l) => opts.log(`memory: ${l}`) });
                    batches.push({ ...b, kind });
                    opts.log(`memory run ${i}: ${count} ${kind} messages delivered in ${b.seconds.toFixed(1)} s, lost ${b.lost}`);
                }
            } finally {
                writeFileSync(clientStop, "");
            }
            const clientLoad = await clients;
            rmSync(clientStop, { force: true });
            const load = peakPhase(await stopSampler());
            opts.log(`memory run ${i}: peak under load ${load.totalMiB} MiB over ${load.samples} samples (${load.perDaemon.slice(0, 6).map((d) => `${d.daemon} ${d.mib}`).join(", ")}); IMAP sessions ${clientLoad.imapSessions}, web requests ${clientLoad.webRequests}`);
            await expunge();
            await sleep(10_000);
            const afterLoad = idlePhase(await sampleNow(5, 1));
            opts.log(`memory run ${i}: 10 s after the load ${afterLoad.totalMiB} MiB`);
            runs.push({ idle, load, afterLoad, batches, clients: clientLoad });
        }
    } finally {
        await mail.exec(`touch ${STOP}; systemctl stop ${SAMPLER_UNIT} 2>/dev/null; rm -f ${STOP} ${SAMPLES} ${SCRIPT}`);
        await cleanForeign(["/root/bench-mem-small.eml", "/root/bench-mem-large.eml"]);
        await expunge();
    }
    const idle = summarize(runs.map((r) => r.idle.totalMiB));
    const peak = summarize(runs.map((r) => r.load.totalMiB));
    const lost = runs.flatMap((r) => r.batches).reduce((n, b) => n + b.lost, 0);
    const met = idle.max <= TARGET_MIB && peak.max <= TARGET_MIB;
    // Per daemon: the run with the highest peak total, idle and peak side by side.
    const worst = runs.reduce((a, b) => (b.load.totalMiB > a.load.totalMiB ? b : a));
    const daemons = [...new Set([...worst.idle.perDaemon, ...worst.load.perDaemon].map((d) => d.daemon))];
    const perDaemon = daemons
        .map((d) => ({ daemon: d, idleMiB: worst.idle.perDaemon.find((x) => x.daemon === d)?.mib ?? 0, peakMiB: worst.load.perDaemon.find((x) => x.daemon === d)?.mib ?? 0, processes: worst.load.perDaemon.find((x) => x.daemon === d)?.processes ?? 0 }))
        .sort((a, b) => b.peakMiB - a.peakMiB);
    const named = perDaemon.filter((d) => !/\.(service|scope|slice)$/.test(d.daemon) && d.daemon !== "/");
    const rest = perDaemon.filter((d) => !named.includes(d));
    const restPeak = Math.round(rest.reduce((s, d) => s + d.peakMiB, 0) * 10) / 10;
    const webApps = [model.webmail.enabled ? `Roundcube (${model.webmail.host})` : undefined, model.nextcloud.enabled ? `Nextcloud (${model.nextcloud.host})` : undefined, model.dbAdmin !== "none" ? `${model.dbAdmin} (loopback)` : undefined].filter(Boolean);
    const notes = [
        `PSS = sum of Pss in /proc/<pid>/smaps_rollup over every process of the lab's mail guest (systemd-nspawn container: its own processes only; the kernel, page cache and tmpfs are not in PSS), by systemd unit from /sys/fs/cgroup (sub-cgroups counted to their service). Left out of the total: the sampler (${SAMPLER_UNIT}) and user.slice (SSH sessions: the benchmark's own commands), ${worst.load.excludedMiB} MiB at the peak.`,
        `Idle: every step applied, ${opts.settleSeconds} s settle, the median of 5 samples 1 s apart. Load: ${opts.small} messages of ~2 KB (4 SMTP sessions) then ${opts.large} of ~1 MB (2 sessions) from the foreign MTA to ${RCPT} with the milter on (bench/smtp-load.ts, the throughput benchmark's sender; no configuration changed), while 3 IMAP clients log in, SELECT INBOX, FETCH headers and a body and log out in a loop as ${IMAP_USERS.join(", ")}${webHost ? `, and the webmail's login page (https://${webHost}/) is fetched in a loop` : ""}; sampled every 0.5 s. Peak = the sample with the highest total (per daemon: each one's own highest sample, so the per-daemon peaks add up to more than the total: ${worst.load.sumOfUnitPeaksMiB} MiB in the worst run). ${opts.runs} runs.`,
        `Web applications on in the lab stack: ${webApps.join(", ") || "none"}${model.nextcloud.enabled ? "" : "; Nextcloud is off (ispmail:nextcloud.enabled defaults to false and lab/stack.yaml does not enable it), so its PHP workers are not in these figures"}. Guest: ${guestMem[0]} CPUs, the host's ${guestMem[1]} MiB visible (no memory limit on the container).`,
        `Per daemon, idle -> peak (MiB, the run with the highest peak): ${perDaemon.map((d) => `${d.daemon} ${d.idleMiB} -> ${d.peakMiB}`).join("; ")}.`,
        `Anchors' published minimum memory, for comparison (their own figures for the whole host, not measured here): ${ANCHORS.map((a) => `${a.name} ${a.minimum}`).join(", ")}; target ${TARGET_MIB} MiB.`,
        `Load delivered: ${runs.flatMap((r) => r.batches).map((b) => `${b.delivered}/${b.sent} ${b.kind} in ${b.seconds.toFixed(1)} s`).join(", ")}; IMAP sessions ${runs.map((r) => r.clients.imapSessions).join(", ")} (errors ${runs.map((r) => r.clients.imapErrors).join(", ")}), web requests ${runs.map((r) => r.clients.webRequests).join(", ")} (errors ${runs.map((r) => r.clients.webErrors).join(", ")}). The apply at the start changed: ${applied.changedSteps.join(", ") || "nothing"}.`,
    ];
    if (lost) notes.push(`${lost} messages not delivered within the run (deferred or refused: see the mail guest's journal); the memory figures stand, the load was that much lighter.`);
    if (!met) notes.push(`Over ${TARGET_MIB} MiB (idle max ${idle.max}, peak max ${peak.max}): the largest are ${perDaemon.slice(0, 3).map((d) => `${d.daemon} ${d.peakMiB} MiB`).join(", ")}.`);
    return {
        name: "memory",
        title: "Whole server's memory (PSS of every process on the mail guest), idle and at the peak under mail + IMAP load",
        target: `<= ${TARGET_MIB} MiB idle and under load`,
        met,
        headline:
            `idle ${idle.min} / ${idle.median} MiB, peak under load ${peak.min} / ${peak.median} MiB; at the peak: ${named.map((d) => `${d.daemon} ${d.peakMiB}`).join(", ")}, other units ${restPeak}; ` +
            `anchors' minimums: ${ANCHORS.map((a) => `${a.name} ${a.minimum}`).join(", ")}`,
        notes,
        data: { targetMiB: TARGET_MIB, anchors: ANCHORS, webApps, idleMiB: idle, peakMiB: peak, perDaemon, lost, runs },
    };
}
