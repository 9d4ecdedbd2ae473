/**
 * Runs the real entry point (index.ts) under mocks in this process and prints one JSON line:
 * { resources, outputs, error }. Config comes the way the CLI gives it: PULUMI_CONFIG and
 * PULUMI_CONFIG_SECRET_KEYS in the environment; the stack name from ISPMAIL_MOCK_STACK.
 * A fresh process per run, because index.ts runs the program when it is first imported.
 *
 *   PULUMI_CONFIG='{"ispmail:mailHost":"mx1.example.org",...}' ISPMAIL_MOCK_STACK=prod \
 *     node --import tsx test/harness/run-index.ts
 */
import * as pulumi from "@pulumi/pulumi";
import { runMocked, valueOf } from "./mocks";

async function main(): Promise<void> {
    const config = JSON.parse(process.env.PULUMI_CONFIG || "{}") as Record<string, string>;
    const secretKeys = JSON.parse(process.env.PULUMI_CONFIG_SECRET_KEYS || "[]") as string[];
    const run = await runMocked(() => require("../../index") as Record<string, unknown>, { stack: process.env.ISPMAIL_MOCK_STACK ?? "staging", config, secretKeys });
    const outputs: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(run.result ?? {})) outputs[k] = pulumi.Output.isInstance(v) ? await valueOf(v) : v;
    const error = run.error === undefined ? null : { name: (run.error as Error).name, message: (run.error as Error).message, runError: pulumi.RunError.isInstance(run.error) };
    process.stdout.write(`${JSON.stringify({ resources: run.resources, outputs, error })}\n`);
}

main().catch((e: unknown) => {
    process.stderr.write(`${String(e)}\n`);
    process.exit(1);
});
