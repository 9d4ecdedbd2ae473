/**
 * How the benchmarks use the lab: every lab operation holds the lab lock (lab/lock.ts), starts from
 * a running lab (brought up with lab/orchestrate.ts when it is not), and leaves it running with
 * every step applied. Steps, model and secrets are the lab's own (lab/testkit.ts).
 */
import type { Step } from "../components/steps";
import { applySteps, applyStepsConcurrently, StepFailed, type AppliedStep } from "../lab/apply";
import { LAB } from "../lab/lab";
import { acquireLabLock } from "../lab/lock";
import { labLooksUp, labUp } from "../lab/orchestrate";
import { inLabNet, run, sleep } from "../lab/proc";
import { guest, labSecrets, labServerSteps } from "../lab/testkit";

export type Log = (line: string) => void;

/**
 * Runs `fn` holding the lab lock, on a running lab. `recover` runs first, before the lab is checked:
 * it puts back what an interrupted benchmark left (see converge.ts, giveMailSlotBack).
 */
export async function withLab<T>(log: Log, fn: () => Promise<T>, recover?: () => Promise<unknown>): Promise<T> {
    const lock = await acquireLabLock();
    try {
        await recover?.();
        if (!labLooksUp()) {
            log("the lab is not up: bringing it up first (npm run lab)");
            await labUp((line) => log(`[lab] ${line}`));
        }
        return await fn();
    } finally {
        lock.release();
    }
}

/** The mail server's steps and secrets, exactly as `npm run lab` applies them. */
export function labServer(): { steps: Step[]; secrets: Record<string, string> } {
    return { steps: labServerSteps(), secrets: labSecrets() };
}

/** What one apply did, counted the way issue 9 asks: files, service restarts, package operations. */
export interface Tally {
    readonly filesWritten: number;
    readonly restarts: number;
    readonly packageOperations: number;
    /** Every other action a step script reported (rebuilt a map, synced rows, ...). */
    readonly otherActions: number;
    readonly changedSteps: readonly string[];
    /** "step: action" / "step: wrote path" lines, for the JSON. */
    readonly details: readonly string[];
}

const RESTART = /^(reloaded|restarted) /;
/** The prelude's "installed pkg..." action (other scripts say e.g. "installed certificate ... into /etc/..."). */
const PACKAGES = /^installed [a-z0-9][a-z0-9+.:-]*( [a-z0-9][a-z0-9+.:-]*)*$/;

export function tally(applied: readonly AppliedStep[]): Tally {
    let filesWritten = 0;
    let restarts = 0;
    let packageOperations = 0;
    let otherActions = 0;
    const details: string[] = [];
    for (const s of applied) {
        filesWritten += s.changedFiles.length;
        for (const f of s.changedFiles) details.push(`${s.name}: wrote ${f}`);
        for (const a of s.actions) {
            details.push(`${s.name}: ${a}`);
            if (RESTART.test(a)) restarts++;
            else if (PACKAGES.test(a)) packageOperations++;
            else otherActions++;
        }
    }
    return { filesWritten, restarts, packageOperations, otherActions, changedSteps: applied.filter((s) => s.result === "changed").map((s) => s.name), details };
}

/** Packages the apply scripts reported installing ("installed a b c"). */
export function installedPackages(applied: readonly AppliedStep[]): string[] {
    return applied.flatMap((s) => s.actions.filter((a) => PACKAGES.test(a)).flatMap((a) => a.slice("installed ".length).split(" ")));
}

/**
 * Applies every step to the lab's mail guest. An SSH session lost on the way (ssh's exit 255, seen
 * right after a guest boots and under full mail load) is not a step failure: the whole apply is
 * retried once (steps are idempotent); a step that really fails is reported at once.
 */
export async function applyToMail(
    steps: readonly Step[],
    secrets: Readonly<Record<string, string>>,
    schedule: "in order" | "as the engine" = "in order",
): Promise<AppliedStep[]> {
    const apply = schedule === "in order" ? applySteps : applyStepsConcurrently;
    try {
        return await apply(LAB.mail, steps, secrets);
    } catch (e) {
        if (!(e instanceof StepFailed) || e.code !== 255) throw e;
        await sleep(3_000);
        return apply(LAB.mail, steps, secrets);
    }
}

/**
 * Main PIDs of the long-running daemons on the mail guest. A reload keeps the PID (Postfix's master,
 * Dovecot, Apache re-read their configuration in place); a restart changes it.
 */
export const DAEMONS = ["postfix", "dovecot", "rspamd", "postgresql", "apache2", "php8.4-fpm", "valkey-server"] as const;

export async function daemonPids(): Promise<Record<string, string>> {
    const out = await guest("mail").execOk(
        [
            "printf 'postfix %s\\n' \"$(cat /var/spool/postfix/pid/master.pid 2>/dev/null | tr -d ' ' || true)\"",
            "for u in dovecot rspamd postgresql@17-main apache2 php8.4-fpm valkey-server; do printf '%s %s\\n' \"${u%@*}\" \"$(systemctl show -p MainPID --value \"$u\")\"; done",
        ].join("; "),
    );
    return Object.fromEntries(out.trim().split("\n").map((l) => l.split(" ") as [string, string]));
}

/** Daemons whose PID differs between two snapshots. */
export function changedPids(before: Record<string, string>, after: Record<string, string>): string[] {
    return Object.keys(before).filter((d) => before[d] !== after[d]);
}

/**
 * Forgets cached link-layer addresses on the lab side: after a guest of another kind took over an
 * address (the benchmark guests use the mail guest's slot), stale entries would delay the first
 * packets by seconds.
 */
export async function flushNeighbours(): Promise<void> {
    const [cmd, args] = inLabNet("ip", ["neigh", "flush", "dev", LAB.bridge]);
    await run(cmd, args, { timeoutMs: 10_000 });
    await guest("foreign").exec("ip neigh flush all 2>/dev/null || true", { timeoutMs: 15_000 });
}
