/**
 * `npm run bench [-- name...]`: runs the benchmarks of issues 9 and 19 (all, or the named ones), writes
 * bench/results/<date>-<name>.json for each and rebuilds the summary table in bench/README.md.
 * Needs root and the lab (lab/README.md) for all but program-scale; every lab benchmark holds the
 * lab lock while it runs and leaves the lab running with every step applied.
 *
 * Run counts are sized for about an hour on the 2-core machine (47.0 min on 2026-11-30 with 2 converge
 * and 3 no-op runs; now 3 and 5: both targets sit near their line, and a median of 2 is their mean;
 * program evaluation 5, its runs spread by a third on a busy machine); ISPMAIL_BENCH_RUNS=N overrides all.
 */
import { acquireLabLock } from "../lab/lock";
import { giveMailSlotBack, benchConverge } from "./converge";
import { benchDirectoryScale } from "./directory-scale";
import { benchImap } from "./imap";
import { benchLatency } from "./latency";
import { withLab } from "./lab-session";
import { benchMemory } from "./memory";
import { benchNoop } from "./noop";
import { benchOneChange } from "./one-change";
import { benchProgramScale } from "./program-scale";
import { updateReadme, writeResult, type BenchOutcome } from "./report";
import { secondsSince } from "./stats";
import { benchThroughput } from "./throughput";

const log = (line: string) => console.log(`[bench] ${line}`);
const override = Number(process.env.ISPMAIL_BENCH_RUNS) || undefined;
const runs = (n: number) => override ?? n;

interface Bench {
    readonly name: string;
    readonly lab: boolean;
    readonly run: () => Promise<BenchOutcome>;
}

const BENCHES: readonly Bench[] = [
    { name: "converge", lab: true, run: () => benchConverge({ runs: runs(3), log }) },
    { name: "noop", lab: true, run: () => benchNoop({ runs: runs(5), log }) },
    { name: "one-change", lab: true, run: () => benchOneChange({ runs: runs(2), log }) },
    { name: "directory-scale", lab: true, run: () => benchDirectoryScale({ runs: runs(3), users: 5000, log }) },
    { name: "program-scale", lab: false, run: () => benchProgramScale({ runs: runs(5), log }) },
    { name: "throughput", lab: true, run: () => benchThroughput({ runs: runs(2), small: 1000, large: 50, log }) },
    { name: "memory", lab: true, run: () => benchMemory({ runs: runs(2), small: 1000, large: 50, settleSeconds: 30, log }) },
    { name: "latency", lab: true, run: () => benchLatency({ runs: runs(2), messages: 1000, rate: 20, log }) },
    { name: "imap", lab: true, run: () => benchImap({ runs: runs(5), messages: 10_000, log }) },
];
export const BENCH_ORDER = BENCHES.map((b) => b.name);

async function main(argv: readonly string[]): Promise<number> {
    const unknown = argv.filter((a) => !BENCH_ORDER.includes(a));
    if (unknown.length) throw new Error(`unknown benchmark ${unknown.join(", ")}; known: ${BENCH_ORDER.join(", ")}`);
    const chosen = BENCHES.filter((b) => argv.length === 0 || argv.includes(b.name));
    if (chosen.some((b) => b.lab) && process.getuid?.() !== 0) throw new Error("the lab benchmarks need root (the lab does)");
    const start = process.hrtime.bigint();
    let failed = 0;
    for (const b of chosen) {
        const t0 = process.hrtime.bigint();
        log(`${b.name}: start`);
        try {
            const outcome = await (b.lab ? withLab(log, b.run, () => giveMailSlotBack(log)) : b.run());
            const { file } = writeResult(outcome, secondsSince(t0));
            log(`${b.name}: ${outcome.met === undefined ? "" : outcome.met ? "target met; " : "TARGET MISSED; "}${outcome.headline} (${secondsSince(t0).toFixed(0)} s) -> ${file}`);
        } catch (e) {
            failed++;
            log(`${b.name}: FAILED: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
        }
        updateReadme(BENCH_ORDER);
    }
    log(`done in ${(secondsSince(start) / 60).toFixed(1)} min; ${failed ? `${failed} failed` : "all ran"}; summary in bench/README.md`);
    return failed ? 1 : 0;
}

process.on("SIGINT", () => {
    // An interrupted converge benchmark must not leave the lab's mail slot lent out.
    log("interrupted: putting the lab's mail guest back if it was lent out");
    acquireLabLock()
        .then(async (lock) => {
            await giveMailSlotBack(log);
            lock.release();
        })
        .finally(() => process.exit(130));
});

main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
        console.error(`[bench] FAILED: ${e instanceof Error ? e.message : String(e)}`);
        process.exit(1);
    },
);
