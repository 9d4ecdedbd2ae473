/**
 * Results: one JSON file per benchmark and run day (bench/results/<date>-<name>.json), and the
 * summary table in bench/README.md, rebuilt from the newest result of each benchmark so that
 * running one benchmark updates only its row.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describeMachine, machineInfo, type MachineInfo } from "./machine";

export const BENCH_DIR = __dirname;
export const RESULTS_DIR = join(BENCH_DIR, "results");
const README = join(BENCH_DIR, "README.md");
const TABLE_START = "<!-- bench:summary:start (written by `npm run bench`) -->";
const TABLE_END = "<!-- bench:summary:end -->";

/** What a benchmark measured; `run.ts` adds date, machine and duration. */
export interface BenchOutcome {
    /** Short id, also the file name part: "converge", "noop", ... */
    readonly name: string;
    /** The question it answers, for the table. */
    readonly title: string;
    /** The target from issue 9, if it has one ("ratio <= 1.5"). */
    readonly target?: string;
    /** Whether the target was met; undefined when there is no target. */
    readonly met?: boolean;
    /** The figures in one line, for the table. */
    readonly headline: string;
    /** Conditions a reader must know (warm cache, scaled down, what was switched off), and for a
     *  missed target what would close it. */
    readonly notes: readonly string[];
    /** Every figure, with min/median summaries. */
    readonly data: Record<string, unknown>;
}

export interface BenchResult extends BenchOutcome {
    readonly date: string;
    readonly finishedAt: string;
    readonly seconds: number;
    readonly machine: MachineInfo;
}

export function today(): string {
    return new Date().toISOString().slice(0, 10);
}

export function writeResult(outcome: BenchOutcome, seconds: number): { file: string; result: BenchResult } {
    mkdirSync(RESULTS_DIR, { recursive: true });
    const result: BenchResult = { ...outcome, date: today(), finishedAt: new Date().toISOString(), seconds: Math.round(seconds * 10) / 10, machine: machineInfo() };
    const file = join(RESULTS_DIR, `${result.date}-${result.name}.json`);
    writeFileSync(file, JSON.stringify(result, null, 2) + "\n");
    return { file, result };
}

/** The newest result of each benchmark, in the order given. */
export function latestResults(order: readonly string[]): BenchResult[] {
    if (!existsSync(RESULTS_DIR)) return [];
    const all = readdirSync(RESULTS_DIR)
        .filter((f) => f.endsWith(".json"))
        .map((f) => JSON.parse(readFileSync(join(RESULTS_DIR, f), "utf8")) as BenchResult);
    const newest = new Map<string, BenchResult>();
    for (const r of all) {
        const seen = newest.get(r.name);
        if (!seen || seen.finishedAt < r.finishedAt) newest.set(r.name, r);
    }
    return order.flatMap((n) => (newest.has(n) ? [newest.get(n)!] : []));
}

const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");

/** `order` gives each benchmark its number (the numbering), whichever results exist. */
export function renderSummary(results: readonly BenchResult[], order: readonly string[]): string {
    const lines = [
        "| # | benchmark | target | result | figures (min / median of the runs) | date | machine |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ];
    results.forEach((r) => {
        const verdict = r.met === undefined ? "—" : r.met ? "**met**" : "**missed**";
        lines.push(`| ${order.indexOf(r.name) + 1} | ${cell(r.title)} | ${cell(r.target ?? "—")} | ${verdict} | ${cell(r.headline)} | ${r.date} | ${cell(describeMachine(r.machine))} |`);
    });
    const notes = results.filter((r) => r.notes.length);
    if (notes.length) {
        lines.push("", "Conditions and, where a target was missed, what would close it:", "");
        for (const r of notes) {
            lines.push(`- **${r.name}** (\`bench/results/${r.date}-${r.name}.json\`):`);
            for (const n of r.notes) lines.push(`  - ${n}`);
        }
    }
    return lines.join("\n");
}

/** Replaces the generated table in bench/README.md (between its markers) with the newest results. */
export function updateReadme(order: readonly string[]): void {
    const text = existsSync(README) ? readFileSync(README, "utf8") : `# Benchmarks\n\n${TABLE_START}\n${TABLE_END}\n`;
    const start = text.indexOf(TABLE_START);
    const end = text.indexOf(TABLE_END);
    if (start < 0 || end < start) throw new Error(`bench/README.md lacks the summary markers ${TABLE_START} ... ${TABLE_END}`);
    const table = renderSummary(latestResults(order), order);
    writeFileSync(README, `${text.slice(0, start + TABLE_START.length)}\n${table}\n${text.slice(end)}`);
}
