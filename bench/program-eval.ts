/**
 * Child process of the program-scale benchmark: evaluates the real entry point (index.ts) once under
 * the mock harness (test/harness/mocks.ts) with the config read from the JSON file named by its
 * argument, `{ config, secretKeys }` (5,000 users do not fit in an environment variable), and prints one JSON
 * line: seconds spent in the evaluation (registration of every resource until the runtime settles) and
 * the CPU seconds of this process meanwhile (less sensitive to a busy machine than the wall time),
 * resource counts by type and the number of DNS records. A fresh process per evaluation, because
 * index.ts runs the program when it is first imported. program-scale.ts starts it as the CLI starts the
 * program: Pulumi.yaml's node arguments, TypeScript loaded through bench/cli-runtime.js.
 */
import { readFileSync } from "node:fs";
import { runMocked } from "../test/harness/mocks";

async function main(): Promise<void> {
    const { config, secretKeys } = JSON.parse(readFileSync(process.argv[2], "utf8")) as { config: Record<string, string>; secretKeys: string[] };
    const start = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    const run = await runMocked(() => require("../index") as Record<string, unknown>, { stack: "staging", config, secretKeys });
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    const cpuSeconds = (cpu.user + cpu.system) / 1e6;
    if (run.error !== undefined) throw run.error;
    const byType: Record<string, number> = {};
    for (const r of run.resources) byType[r.type] = (byType[r.type] ?? 0) + 1;
    const stdinBytes = run.resources
        .filter((r) => r.type === "command:remote:Command")
        .reduce((sum, r) => sum + (typeof r.inputs.stdin === "string" ? Buffer.byteLength(r.inputs.stdin) : 0), 0);
    process.stdout.write(`${JSON.stringify({ seconds, cpuSeconds, resources: run.resources.length, byType, stdinBytes, rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20), execArgv: process.execArgv })}\n`);
}

main().then(
    () => process.exit(0),
    (e: unknown) => {
        process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
        process.exit(1);
    },
);
