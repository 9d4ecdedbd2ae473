/**
 * Benchmark 3: one changed Postfix setting. A rendered variant of the lab's steps differs from them
 * in one line of /etc/postfix/main.cf (message_size_limit one byte higher); applying it must write
 * that one file and reload Postfix only — the PIDs of Dovecot, Rspamd, PostgreSQL, Apache (and
 * PHP-FPM, Valkey) stay the same. Then the original steps are applied again (the revert), which must
 * do the same in reverse. Timed: the apply of all steps (as the lab applies them) and the postfix
 * step alone (what `pulumi up` runs, since only that command's trigger hash changed).
 */
import type { Step } from "../components/steps";
import { applyToMail, changedPids, daemonPids, labServer, tally, type Log } from "./lab-session";
import type { BenchOutcome } from "./report";
import { secondsSince, summarize } from "./stats";

const MAIN_CF = "/etc/postfix/main.cf";

/** The steps with one main.cf line changed: message_size_limit + 1 byte. */
export function withOnePostfixChange(steps: readonly Step[]): { steps: Step[]; before: string; after: string } {
    let before = "";
    let after = "";
    const changed = steps.map((s) => {
        if (s.name !== "postfix") return s;
        const files = s.files.map((f) => {
            if (f.path !== MAIN_CF) return f;
            const content = f.content.replace(/^message_size_limit = (\d+)$/m, (line, n: string) => {
                before = line;
                after = `message_size_limit = ${Number(n) + 1}`;
                return after;
            });
            return { ...f, content };
        });
        return { ...s, files };
    });
    if (!before) throw new Error(`the postfix step's ${MAIN_CF} has no message_size_limit line to change`);
    return { steps: changed, before, after };
}

interface Apply {
    readonly direction: "change" | "revert";
    readonly seconds: number;
    readonly postfixStepSeconds: number;
    readonly filesWritten: readonly string[];
    readonly actions: readonly string[];
    readonly restartedDaemons: readonly string[];
}

export async function benchOneChange(opts: { runs: number; log: Log }): Promise<BenchOutcome> {
    const { steps, secrets } = labServer();
    const variant = withOnePostfixChange(steps);
    await applyToMail(steps, secrets); // start from the applied state
    const applies: Apply[] = [];
    for (let i = 1; i <= opts.runs; i++) {
        for (const [direction, list] of [["change", variant.steps], ["revert", steps]] as const) {
            const pidsBefore = await daemonPids();
            const start = process.hrtime.bigint();
            const applied = await applyToMail(list, secrets);
            const seconds = secondsSince(start);
            const t = tally(applied);
            const restartedDaemons = changedPids(pidsBefore, await daemonPids());
            const a: Apply = {
                direction,
                seconds,
                postfixStepSeconds: applied.find((s) => s.name === "postfix")?.seconds ?? NaN,
                filesWritten: applied.flatMap((s) => s.changedFiles),
                actions: applied.flatMap((s) => s.actions.map((x) => `${s.name}: ${x}`)),
                restartedDaemons,
            };
            applies.push(a);
            opts.log(`one-change ${i} ${direction}: ${seconds.toFixed(1)} s (postfix step ${a.postfixStepSeconds.toFixed(1)} s), wrote ${a.filesWritten.join(", ") || "nothing"}, ${a.actions.join("; ") || "no actions"}, PIDs changed: ${restartedDaemons.join(", ") || "none"}`);
            if (t.packageOperations) opts.log(`one-change: unexpected package operations: ${t.details.join("; ")}`);
        }
    }
    const ok = (a: Apply) =>
        a.filesWritten.length === 1 && a.filesWritten[0] === MAIN_CF && a.actions.length === 1 && a.actions[0] === "postfix: reloaded postfix" && a.restartedDaemons.length === 0;
    const met = applies.every(ok);
    const all = summarize(applies.map((a) => a.seconds));
    const postfixOnly = summarize(applies.map((a) => a.postfixStepSeconds));
    const notes = [
        `Change: \`${variant.before}\` -> \`${variant.after}\` in the postfix step's ${MAIN_CF}; each of ${opts.runs} runs applies the variant and then the original steps (both counted as one-change applies, ${applies.length} in all).`,
        "Postfix's master PID stays the same on `postfix reload` (it re-reads main.cf in place), so \"only Postfix reloads\" = the step results report exactly `reloaded postfix` and no daemon PID changed.",
    ];
    if (!met) notes.push(`Not only Postfix: ${applies.filter((a) => !ok(a)).map((a) => `${a.direction}: wrote ${a.filesWritten.join(", ")}; ${a.actions.join("; ")}; PIDs changed ${a.restartedDaemons.join(", ") || "none"}`).join(" | ")}`);
    return {
        name: "one-change",
        title: "One changed Postfix setting: only Postfix reloads",
        target: "only postfix reloads; other daemons' PIDs unchanged",
        met,
        headline: `${applies.filter(ok).length}/${applies.length} applies touched only main.cf + postfix reload; all steps ${all.min.toFixed(1)} / ${all.median.toFixed(1)} s, postfix step alone ${postfixOnly.min.toFixed(1)} / ${postfixOnly.median.toFixed(1)} s`,
        notes,
        data: { seconds: all, postfixStepSeconds: postfixOnly, change: { before: variant.before, after: variant.after }, applies },
    };
}
