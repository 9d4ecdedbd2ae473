/**
 * The lab's command line (run as root):
 *   tsx lab/cli.ts up              build/boot what is missing, serve DNS/ACME/apt, then `pulumi up` of
 *                                  index.ts through the engine harness (lab/engine.ts)
 *   tsx lab/cli.ts preview [KEY=JSON ...]   `pulumi preview` of index.ts against the lab's state, with
 *                                  ispmail:KEY replaced (e.g. 'dkimSelectors=["lab2026","lab2027"]')
 *   tsx lab/cli.ts test [files]    up, then the e2e suite (test/e2e/*.test.ts) inside the lab network
 *   tsx lab/cli.ts destroy [--all] stop and remove everything the lab runs (--all: its caches too)
 *   tsx lab/cli.ts status          what runs
 *   tsx lab/cli.ts ssh mail|foreign [command]   a root shell (or command) on a guest
 *   tsx lab/cli.ts prereqs         install the lab host's missing Debian packages (root on Debian)
 */
import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { GUESTS, guestPlan, LAB, REPO_DIR, type GuestName } from "./lab";
import { acquireLabLock, LOCK_HELD_ENV } from "./lock";
import { ensureHostPackages } from "./prereqs";
import { formatEngineRun, labEngineFromStack } from "./engine-lab";
import { checkLeftovers, formatUpReport, labDestroy, labLooksUp, labUp } from "./orchestrate";
import { daemonPid, inLabNet, knownDaemons } from "./proc";
import { sshArgs } from "./ssh";

const log = (line: string) => console.log(`[lab] ${line}`);

function requireRoot(): void {
    if (process.getuid?.() !== 0) throw new Error("the lab needs root (network namespaces, systemd-nspawn)");
}

/** A newcomer's first command must work on a fresh Debian machine: install what the lab needs first. */
function requireHost(): void {
    requireRoot();
    const installed = ensureHostPackages(log);
    if (installed.length) log(`installed ${installed.length} host packages`);
}

async function withLock<T>(fn: () => Promise<T>): Promise<T> {
    const lock = await acquireLabLock();
    try {
        return await fn();
    } finally {
        lock.release();
    }
}

async function up(): Promise<void> {
    const start = Date.now();
    const report = await labUp(log);
    console.log(formatUpReport(report));
    const t = report.timings;
    const parts = Object.entries(t).map(([k, v]) => `${k} ${v.toFixed(1)}s`);
    console.log(`[lab] up in ${((Date.now() - start) / 1000).toFixed(1)} s (${parts.join(", ")})`);
}

/** `pulumi preview` of the program against the lab's state: what an up with these changes would do. */
async function preview(assignments: readonly string[]): Promise<number> {
    const overrides: Record<string, unknown> = {};
    for (const a of assignments) {
        const eq = a.indexOf("=");
        if (eq < 1) throw new Error(`usage: lab preview [KEY=JSON ...], e.g. 'users=[{"address":"dave@example.org"}]' (got ${a})`);
        overrides[a.slice(0, eq).replace(/^ispmail:/, "")] = JSON.parse(a.slice(eq + 1));
    }
    const r = await labEngineFromStack({ preview: true, overrides, log });
    console.log(formatEngineRun("pulumi preview (engine harness):", r));
    return r.errors.length ? 1 : 0;
}

function e2eFiles(args: readonly string[]): string[] {
    if (args.length) return [...args];
    const dir = join(REPO_DIR, "test", "e2e");
    return readdirSync(dir)
        .filter((f) => f.endsWith(".test.ts"))
        .sort()
        .map((f) => join("test", "e2e", f));
}

/** Runs node's test runner inside the lab namespace, so every client reaches lab addresses only. */
function runE2e(files: readonly string[]): Promise<number> {
    const [cmd, args] = inLabNet(process.execPath, ["--import", "tsx", "--test", "--test-concurrency=1", "--test-timeout=600000", ...files]);
    return new Promise((resolve, reject) => {
        const child = spawn(cmd, args, { cwd: REPO_DIR, stdio: "inherit", env: { ...process.env, [LOCK_HELD_ENV]: "1" } });
        child.on("error", reject);
        child.on("close", (code) => resolve(code ?? 1));
    });
}

async function main(argv: readonly string[]): Promise<number> {
    const [command = "up", ...rest] = argv;
    switch (command) {
        case "prereqs":
            requireHost();
            return 0;
        case "up":
            requireHost();
            await withLock(up);
            return 0;
        case "preview":
            requireRoot();
            return withLock(() => preview(rest));
        case "test": {
            requireHost();
            // Nothing is printed after the suite: node's test runner summary stays the last lines.
            return withLock(async () => {
                await up();
                return runE2e(e2eFiles(rest));
            });
        }
        case "destroy": {
            requireRoot();
            const report = await withLock(() => labDestroy({ all: rest.includes("--all") }, log));
            if (report.leftovers.length) {
                console.error(`[lab] NOT clean:\n  ${report.leftovers.join("\n  ")}`);
                return 1;
            }
            log(`clean: no ${LAB.netns} namespace, no ${LAB.bridge} bridge, no lab mounts or processes`);
            return 0;
        }
        case "status": {
            log(labLooksUp() ? "up" : "not (fully) up");
            for (const d of knownDaemons()) log(`  ${d}: ${daemonPid(d) ?? "not running"}`);
            for (const l of checkLeftovers()) log(`  ${l}`);
            return 0;
        }
        case "ssh": {
            requireRoot();
            const name = rest[0] as GuestName;
            if (!GUESTS.some((g) => g.name === name)) throw new Error(`usage: lab ssh ${GUESTS.map((g) => g.name).join("|")} [command]`);
            const [cmd, args] = inLabNet("ssh", [...sshArgs(guestPlan(name), { tty: rest.length === 1 }), ...rest.slice(1)]);
            return new Promise((resolve) => spawn(cmd, args, { stdio: "inherit" }).on("close", (code) => resolve(code ?? 1)));
        }
        default:
            throw new Error(`unknown command ${command}; see lab/cli.ts`);
    }
}

main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
        console.error(`[lab] FAILED: ${e instanceof Error ? e.message : String(e)}`);
        process.exit(1);
    },
);
