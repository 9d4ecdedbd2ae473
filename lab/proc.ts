/**
 * Processes for the lab: bounded command runs, detached daemons tracked by pid files, bounded waits,
 * and entering the lab's network namespace.
 */
import { spawn, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LAB, PATHS } from "./lab";

export interface RunResult {
    readonly stdout: string;
    readonly stderr: string;
    readonly code: number;
}

export interface RunOptions {
    /** Written to the command's stdin (then closed). */
    readonly input?: string;
    /** Killed (SIGKILL) after this long; the result then has code 124. */
    readonly timeoutMs?: number;
    readonly env?: NodeJS.ProcessEnv;
    readonly cwd?: string;
    /** Called with each chunk of stderr as it arrives (progress lines of long runs). */
    readonly onStderr?: (chunk: string) => void;
}

/** Runs a command to completion (no shell), with a timeout; never throws for a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const timeoutMs = opts.timeoutMs ?? 120_000;
    return new Promise((resolve, reject) => {
        const child = spawn(cmd, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ["pipe", "pipe", "pipe"] });
        const out: Buffer[] = [];
        const err: Buffer[] = [];
        let timedOut = false;
        const timer = setTimeout(() => {
            timedOut = true;
            child.kill("SIGKILL");
        }, timeoutMs);
        child.stdout.on("data", (b: Buffer) => out.push(b));
        child.stderr.on("data", (b: Buffer) => {
            err.push(b);
            opts.onStderr?.(b.toString("utf8"));
        });
        child.on("error", (e) => {
            clearTimeout(timer);
            reject(new Error(`${cmd}: ${e.message}`));
        });
        child.on("close", (code, signal) => {
            clearTimeout(timer);
            const stderr = Buffer.concat(err).toString("utf8") + (timedOut ? `\n[lab] ${cmd} killed after ${timeoutMs} ms\n` : "");
            resolve({ stdout: Buffer.concat(out).toString("utf8"), stderr, code: timedOut ? 124 : (code ?? (signal ? 128 : 1)) });
        });
        // A command that does not read its stdin must not make us crash with EPIPE.
        child.stdin.on("error", () => undefined);
        child.stdin.end(opts.input ?? "");
    });
}

/** Like {@link run}, but throws with the command's stderr when it fails. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const r = await run(cmd, args, opts);
    if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed (exit ${r.code}):\n${(r.stderr || r.stdout).trim()}`);
    return r;
}

/** Synchronous, for quick checks (ip, findmnt). Returns "" on failure. */
export function quick(cmd: string, args: readonly string[]): string {
    const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 20_000 });
    return r.status === 0 ? r.stdout : "";
}

// ---------------------------------------------------------------------------------------------
// The lab network namespace
// ---------------------------------------------------------------------------------------------
export const NETNS_PATH = `/run/netns/${LAB.netns}`;

/**
 * `nsenter --net=...` runs a program inside the lab's network namespace without remounting /sys
 * (unlike `ip netns exec`, which hides the cgroup mounts systemd-nspawn needs).
 */
export function inLabNet(cmd: string, args: readonly string[]): [string, string[]] {
    return ["nsenter", [`--net=${NETNS_PATH}`, "--", cmd, ...args]];
}

/** True when this process already runs in the lab's network namespace. */
export function inLabNetns(): boolean {
    try {
        const mine = statSync("/proc/self/ns/net");
        const lab = statSync(NETNS_PATH);
        return mine.ino === lab.ino && mine.dev === lab.dev;
    } catch {
        return false;
    }
}

// ---------------------------------------------------------------------------------------------
// Bounded waiting
// ---------------------------------------------------------------------------------------------
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Polls `check` until it returns true: at most `tries` times, `intervalMs` apart, and never longer
 * than `timeoutMs` in all. Throws naming `what` when it gives up.
 */
export async function waitFor(what: string, check: () => Promise<boolean> | boolean, opts: { tries: number; intervalMs: number; timeoutMs: number }): Promise<number> {
    const start = Date.now();
    for (let i = 1; i <= opts.tries; i++) {
        if (await check()) return Date.now() - start;
        if (Date.now() - start + opts.intervalMs > opts.timeoutMs) break;
        await sleep(opts.intervalMs);
    }
    throw new Error(`timed out after ${((Date.now() - start) / 1000).toFixed(1)} s waiting for ${what}`);
}

// ---------------------------------------------------------------------------------------------
// Daemons: started detached, logs in .lab/logs/<name>.log, tracked by .lab/run/<name>.pid
// ---------------------------------------------------------------------------------------------
interface PidRecord {
    readonly pid: number;
    /** Process start time (clock ticks since boot, /proc/PID/stat field 22): tells a reused pid apart. */
    readonly start: string;
    readonly cmd: string;
}

const pidFile = (name: string) => join(PATHS.run, `${name}.pid`);
export const logFile = (name: string) => join(PATHS.logs, `${name}.log`);

/** The start time of a live process; undefined when it is gone or a zombie (exited, not yet reaped). */
function processStart(pid: number): string | undefined {
    try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        // Field 2 (comm) may contain spaces; fields after the closing parenthesis are fixed:
        // [0] is field 3 (state), [19] is field 22 (starttime).
        const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
        return fields[0] === "Z" || fields[0] === "X" ? undefined : fields[19];
    } catch {
        return undefined;
    }
}

function readPid(name: string): PidRecord | undefined {
    try {
        return JSON.parse(readFileSync(pidFile(name), "utf8")) as PidRecord;
    } catch {
        return undefined;
    }
}

/** The pid of a daemon the lab started, if it is still that very process. */
export function daemonPid(name: string): number | undefined {
    const rec = readPid(name);
    if (!rec) return undefined;
    return processStart(rec.pid) === rec.start ? rec.pid : undefined;
}

/** Starts a daemon detached from us (own session, output to its log); returns its pid. */
export function startDaemon(name: string, cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): number {
    mkdirSync(PATHS.run, { recursive: true });
    mkdirSync(PATHS.logs, { recursive: true });
    const log = openSync(logFile(name), "a");
    writeFileSync(log, `\n--- ${new Date().toISOString()} ${cmd} ${args.join(" ")}\n`);
    const child = spawn(cmd, args, { detached: true, stdio: ["ignore", log, log], env });
    closeSync(log);
    if (!child.pid) throw new Error(`could not start ${name} (${cmd})`);
    child.unref();
    const start = processStart(child.pid);
    if (start === undefined) throw new Error(`${name} (${cmd}) exited at once; see ${logFile(name)}`);
    writeFileSync(pidFile(name), JSON.stringify({ pid: child.pid, start, cmd } satisfies PidRecord));
    return child.pid;
}

/** Stops a daemon the lab started: SIGTERM, a bounded wait, then SIGKILL. Returns whether it ran. */
export async function stopDaemon(name: string, graceMs = 15_000): Promise<boolean> {
    const pid = daemonPid(name);
    rmSync(pidFile(name), { force: true });
    if (pid === undefined) return false;
    const start = processStart(pid);
    process.kill(pid, "SIGTERM");
    const gone = () => processStart(pid) !== start;
    try {
        await waitFor(`${name} (pid ${pid}) to exit`, gone, { tries: Math.ceil(graceMs / 100), intervalMs: 100, timeoutMs: graceMs });
    } catch {
        // Children first: for systemd-nspawn the child is the container's init, and killing init
        // ends the whole container; killing only nspawn would leave the container running, orphaned.
        for (const child of childPids(pid)) killQuietly(child, "SIGKILL");
        killQuietly(pid, "SIGKILL");
        await waitFor(`${name} (pid ${pid}) to die`, gone, { tries: 50, intervalMs: 100, timeoutMs: 5_000 });
    }
    return true;
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
    try {
        process.kill(pid, signal);
    } catch {
        /* already gone */
    }
}

/** Direct children of a process. */
export function childPids(pid: number): number[] {
    try {
        return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
        return [];
    }
}

/** True while a process exists and has not exited (a zombie has). */
export function isAlive(pid: number): boolean {
    return processStart(pid) !== undefined;
}

/** The parent pid of a live process. */
export function parentPid(pid: number): number | undefined {
    try {
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    } catch {
        return undefined;
    }
}

/** Names of daemons that have a pid file (running or stale). */
export function knownDaemons(): string[] {
    if (!existsSync(PATHS.run)) return [];
    return readdirSync(PATHS.run)
        .filter((f) => f.endsWith(".pid"))
        .map((f) => f.slice(0, -".pid".length));
}
