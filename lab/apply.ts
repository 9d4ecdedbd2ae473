/**
 * The lab's sequential transport for steps (the foreign MTA, the benchmarks, and e2e tests of
 * config changes; `npm run lab` applies the mail server's steps through the program itself, see
 * lab/engine-lab.ts): each step's apply script (components/steps.ts, the very script the Pulumi
 * components send) goes over SSH on stdin to the same remoteApplyCommand as root — with its secrets
 * resolved just before, as `command.remote` gets them through a secret stdin.
 */
import { parseStepResult, remoteApplyCommand, renderApplyScript, resolveSecrets, secretsOf, type Step, type StepResult } from "../components/steps";
import type { GuestPlan } from "./lab";
import { sshExec } from "./ssh";

export interface AppliedStep {
    readonly name: string;
    readonly result: StepResult;
    readonly seconds: number;
    readonly actions: readonly string[];
    readonly changedFiles: readonly string[];
}

export class StepFailed extends Error {
    constructor(
        readonly step: string,
        readonly code: number,
        readonly stderr: string,
        /** The steps applied before this one (for the progress table). */
        readonly applied: readonly AppliedStep[] = [],
    ) {
        super(`step ${step} failed (exit ${code}):\n${stderr.trim().split("\n").slice(-60).join("\n")}`);
        this.name = "StepFailed";
    }
}

export interface ApplyOptions {
    /** Per-step limit; package installs through the proxy are the slow part. */
    readonly stepTimeoutMs?: number;
    /** Progress lines (the scripts' `log` lines on stderr), e.g. for a console. */
    readonly onLog?: (line: string) => void;
}

/** Applies one step on a guest over its own SSH session; throws {@link StepFailed} (with `applied`) on failure. */
export async function applyStep(
    guest: GuestPlan,
    step: Step,
    secrets: Readonly<Record<string, string>>,
    opts: ApplyOptions = {},
    applied: readonly AppliedStep[] = [],
): Promise<AppliedStep> {
    const script = renderApplyScript(resolveSecrets(step, secrets));
    const start = Date.now();
    let pending = "";
    const r = await sshExec(guest, remoteApplyCommand(step, { holdsSecrets: secretsOf(step).length > 0 }), {
        input: script,
        timeoutMs: opts.stepTimeoutMs ?? 30 * 60_000,
        onStderr: opts.onLog
            ? (chunk) => {
                  const lines = (pending + chunk).split("\n");
                  pending = lines.pop() ?? "";
                  for (const l of lines) if (l.startsWith(`[${step.name}]`)) opts.onLog!(l);
              }
            : undefined,
    });
    const seconds = (Date.now() - start) / 1000;
    const parsed = parseStepResult(r.stdout);
    if (r.code !== 0 || !parsed) throw new StepFailed(step.name, r.code, r.stderr || r.stdout, applied);
    return { name: step.name, result: parsed.result, seconds, actions: parsed.actions, changedFiles: parsed.changedFiles };
}

/** Applies steps in the given order on a guest; stops at the first failure (throws {@link StepFailed}). */
export async function applySteps(
    guest: GuestPlan,
    steps: readonly Step[],
    secrets: Readonly<Record<string, string>>,
    opts: ApplyOptions = {},
): Promise<AppliedStep[]> {
    const applied: AppliedStep[] = [];
    for (const step of steps) applied.push(await applyStep(guest, step, secrets, opts, applied));
    return applied;
}

/**
 * Applies steps as the Pulumi engine runs their commands when all of them are to run (every
 * command replaced): each one starts as soon as the steps it names in `after` are done, the
 * others concurrently, one SSH session each. The result is in the given order; a failure stops
 * new starts and is thrown once the running ones end.
 */
export async function applyStepsConcurrently(
    guest: GuestPlan,
    steps: readonly Step[],
    secrets: Readonly<Record<string, string>>,
    opts: ApplyOptions = {},
): Promise<AppliedStep[]> {
    const byName = new Map(steps.map((s) => [s.name, s]));
    const done = new Map<string, Promise<AppliedStep>>();
    let failed = false;
    const run = (step: Step): Promise<AppliedStep> => {
        let p = done.get(step.name);
        if (!p) {
            const deps = step.after.flatMap((n) => byName.get(n) ?? []).map(run);
            p = Promise.all(deps).then(() => {
                if (failed) throw new Error(`step ${step.name} not started: an earlier step failed`);
                return applyStep(guest, step, secrets, opts).catch((e: unknown) => {
                    failed = true;
                    throw e;
                });
            });
            done.set(step.name, p);
        }
        return p;
    };
    const all = await Promise.allSettled(steps.map(run));
    const firstFailure = all.find((r): r is PromiseRejectedResult => r.status === "rejected" && r.reason instanceof StepFailed) ?? all.find((r) => r.status === "rejected");
    if (firstFailure) throw (firstFailure as PromiseRejectedResult).reason;
    return all.map((r) => (r as PromiseFulfilledResult<AppliedStep>).value);
}

/** The table `npm run lab` prints: step, changed/unchanged, seconds, actions. */
export function formatApplyTable(title: string, rows: readonly AppliedStep[]): string {
    const nameWidth = Math.max(4, ...rows.map((r) => r.name.length));
    const lines = [`${title}`, `  ${"step".padEnd(nameWidth)}  ${"result".padEnd(9)}  ${"seconds".padStart(7)}  actions`];
    for (const r of rows) {
        const actions = r.actions.length ? r.actions.join("; ") : r.changedFiles.length ? `wrote ${r.changedFiles.join(", ")}` : "";
        lines.push(`  ${r.name.padEnd(nameWidth)}  ${r.result.padEnd(9)}  ${r.seconds.toFixed(1).padStart(7)}  ${actions}`);
    }
    if (rows.length === 0) lines.push("  (no steps applied)");
    const changed = rows.filter((r) => r.result === "changed").length;
    lines.push(`  ${changed} changed, ${rows.length - changed} unchanged`);
    return lines.join("\n");
}
