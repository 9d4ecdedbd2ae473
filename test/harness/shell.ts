/**
 * Runs one shell function of a step script (files/<service>/apply.sh) for real with bash, with
 * the commands it calls replaced by stubs on PATH that record their arguments: how the function
 * decides, without a server.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** The definition of shell function `name` in `script`: `name() { ... }` on one line, or up to the first line that is `}`. */
export function shellFunction(script: string, name: string): string {
    const lines = script.split("\n");
    const start = lines.findIndex((l) => l.startsWith(`${name}() {`));
    if (start < 0) throw new Error(`no function ${name}() in the script`);
    if (lines[start].trimEnd().endsWith("}")) return lines[start];
    const end = lines.findIndex((l, i) => i > start && l === "}");
    if (end < 0) throw new Error(`function ${name}() does not end with a line "}"`);
    return lines.slice(start, end + 1).join("\n");
}

export interface StubbedRun {
    readonly code: number | null;
    readonly stdout: string;
    readonly stderr: string;
    /** Every stub call in order: the command's name and its arguments, space-separated. */
    readonly calls: readonly string[];
}

/**
 * Runs `script` with bash (`set -euo pipefail`, as the step scripts run) where each command in
 * `stubs` is a bash script body that first has its call recorded. `log` is defined as the prelude
 * defines it.
 */
export function runWithStubs(script: string, stubs: Readonly<Record<string, string>>): StubbedRun {
    const dir = mkdtempSync("/tmp/ispmail-stubs-");
    try {
        const bin = join(dir, "bin");
        const callLog = join(dir, "calls.log");
        mkdirSync(bin);
        for (const [name, body] of Object.entries(stubs)) {
            writeFileSync(join(bin, name), `#!/bin/bash\necho "${name} $*" >> ${callLog}\n${body}\n`, { mode: 0o755 });
        }
        const r = spawnSync("bash", ["-c", `set -euo pipefail\nlog() { printf '%s\\n' "$*" >&2; }\n${script}`], {
            encoding: "utf8",
            timeout: 10_000,
            env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, STUB_DIR: dir },
        });
        const calls = existsSync(callLog) ? readFileSync(callLog, "utf8").split("\n").filter(Boolean).map((l) => l.trimEnd()) : [];
        return { code: r.status, stdout: r.stdout, stderr: r.stderr, calls };
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
}

/**
 * A rendered apply script whose state (ISPMAIL_STATE_DIR: debconf and package stamps, pending
 * reloads) goes to `dir` instead of the host's /var/lib/ispmail, for tests that run it for real.
 */
export function withStateDir(script: string, dir: string): string {
    const line = /^ISPMAIL_STATE_DIR=.*$/m;
    if (!line.test(script)) throw new Error("the script sets no ISPMAIL_STATE_DIR");
    return script.replace(line, `ISPMAIL_STATE_DIR='${dir.replace(/'/g, "'\\''")}'`);
}
