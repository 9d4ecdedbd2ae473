/**
 * npm run check -- --stack <name> [--outputs outputs.json | --ipv4 A --ipv6 B] [--dns-server IP] [--online]
 * npm run check -- --preflight --stack <name> [--from IP]   (before the first up: check/preflight.ts)
 *
 * Compares what the stack should be with what is observed (see check/run.ts) and prints one line
 * per finding; exits 1 when there is a problem, 2 on a usage error. `--stack lab` checks the lab
 * from inside its network namespace.
 */
import { spawnSync } from "node:child_process";
import { parseArgs } from "node:util";
import { formatFinding, summary } from "./findings";
import { loadIntended } from "./intended";
import { runChecks, type RunOptions } from "./run";

const USAGE = "usage: npm run check -- --stack <name> [--outputs outputs.json | --ipv4 ADDRESS --ipv6 ADDRESS] [--dns-server IP] [--online]\n       npm run check -- --preflight --stack <name> [--from YOUR_PUBLIC_IPV4]   (before the first pulumi up)";

async function main(argv: string[]): Promise<number> {
    const { values } = parseArgs({
        args: argv,
        options: {
            stack: { type: "string" },
            outputs: { type: "string" },
            ipv4: { type: "string" },
            ipv6: { type: "string" },
            "dns-server": { type: "string" },
            online: { type: "boolean", default: false },
            preflight: { type: "boolean", default: false },
            from: { type: "string" },
            help: { type: "boolean", default: false },
        },
        strict: true,
    });
    if (values.help || !values.stack) {
        console.error(USAGE);
        return values.help ? 0 : 2;
    }

    if (values.preflight) {
        const { preflight } = await import("./preflight");
        const findings = await preflight({ stack: values.stack, from: values.from });
        for (const f of findings) console.log(formatFinding(f));
        console.log(`preflight ${values.stack}: ${summary(findings)}`);
        return findings.some((f) => f.status === "problem") ? 1 : 0;
    }

    const opts: RunOptions = { online: values.online };
    if (values.stack === "lab") {
        const lab = await import("../lab/proc");
        // 198.51.100.0/24 outside the lab's namespace may be a real network: check from inside it.
        if (!lab.inLabNetns()) {
            const [cmd, args] = lab.inLabNet(process.execPath, [...process.execArgv, __filename, ...argv]);
            return spawnSync(cmd, args, { stdio: "inherit" }).status ?? 1;
        }
        const { guest, LAB } = await import("../lab/testkit");
        Object.assign(opts, { onServer: (c: string) => guest("mail").exec(c), outboundTarget: LAB.foreign.ipv4 });
    }

    const intended = await loadIntended({
        stack: values.stack,
        ipv4: values.ipv4,
        ipv6: values.ipv6,
        outputsFile: values.outputs,
        dnsServer: values["dns-server"],
    });
    const started = Date.now();
    const findings = await runChecks(intended, opts);
    for (const f of findings) console.log(formatFinding(f));
    console.log(`check ${intended.stack}: ${summary(findings)} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return findings.some((f) => f.status === "problem") ? 1 : 0;
}

main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
        console.error(`check: ${e instanceof Error ? e.message : String(e)}`);
        process.exit(2);
    },
);
