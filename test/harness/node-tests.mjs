// What test/run.mjs (`npm test`) needs to be strict about skipped tests, apart from it so that it can
// be tested on a few files (test/unit/node-tests.test.ts): which policy the environment asks for, a
// run of node's test runner that tells which tests did not run, and the verdict on those.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { isAbsolute, relative } from "node:path";
import { fileURLToPath } from "node:url";

const SKIP_REPORTER = fileURLToPath(new URL("./skip-reporter.mjs", import.meta.url));

/**
 * What the environment asks of `npm test` (the semantics test/run.mjs's header documents):
 * - neither variable: e2e "auto" (when this machine can run the lab), skipped tests listed only;
 * - ISPMAIL_REQUIRE_LAB=1 (.ci/run): e2e "required", and any skipped test fails the run;
 * - ISPMAIL_E2E=off (GitHub-hosted runners): e2e "off" (not run, and said so), and any skipped test
 *   fails the run.
 * Any other value, or both at once, is refused: a typo must not make a strict run lenient.
 */
export function testPolicy(env) {
    const requireLab = env.ISPMAIL_REQUIRE_LAB ?? "";
    const e2e = env.ISPMAIL_E2E ?? "";
    if (requireLab !== "" && requireLab !== "1") throw new Error(`ISPMAIL_REQUIRE_LAB must be 1 or unset (got ${JSON.stringify(requireLab)})`);
    if (e2e !== "" && e2e !== "off") throw new Error(`ISPMAIL_E2E must be off or unset (got ${JSON.stringify(e2e)})`);
    if (requireLab && e2e) throw new Error("ISPMAIL_REQUIRE_LAB=1 (the e2e suite must run) and ISPMAIL_E2E=off (it must not) contradict each other: set one");
    if (requireLab) return { e2e: "required", strict: true, why: "ISPMAIL_REQUIRE_LAB=1" };
    if (e2e) return { e2e: "off", strict: true, why: "ISPMAIL_E2E=off" };
    return { e2e: "auto", strict: false, why: "" };
}

/** A NODE_OPTIONS word: double quotes, with backslashes and quotes escaped. */
const optionWord = (s) => `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`;

/**
 * Runs `cmd args` (node's test runner, or a command that starts it, like `tsx lab/cli.ts test`) with
 * two reporters in NODE_OPTIONS: node's usual one on stdout (spec on a terminal, tap otherwise, as
 * without the option) and skip-reporter.mjs into a scratch file. NODE_OPTIONS and not a flag,
 * because a runner started further down (the e2e suite, inside the lab's network namespace) must
 * report too (so `args` must not name a reporter of their own). Returns the exit status and the
 * tests that did not run (and the output, with stdio "pipe").
 */
export function runReportingSkips(cmd, args, { env = process.env, stdio = "inherit" } = {}) {
    const dir = mkdtempSync(`${tmpdir()}/ispmail-skips-`);
    const file = `${dir}/skipped.jsonl`;
    try {
        const reporters = [
            `--test-reporter=${process.stdout.isTTY ? "spec" : "tap"}`,
            "--test-reporter-destination=stdout",
            `--test-reporter=${optionWord(SKIP_REPORTER)}`,
            `--test-reporter-destination=${optionWord(file)}`,
        ];
        const nodeOptions = [env.NODE_OPTIONS, ...reporters].filter(Boolean).join(" ");
        const r = spawnSync(cmd, args, { stdio, encoding: "utf8", env: { ...env, NODE_OPTIONS: nodeOptions } });
        if (r.error) console.error(r.error.message);
        const skipped = existsSync(file)
            ? readFileSync(file, "utf8")
                  .split("\n")
                  .filter(Boolean)
                  .map((line) => JSON.parse(line))
            : [];
        return { status: r.error ? 1 : r.status ?? 1, skipped, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
}

/**
 * The verdict on the tests of one suite (`label`) that did not run: the lines to print, and whether
 * they fail the run (policy.strict). Each line names the file, the test and its reason.
 */
export function skipVerdict(policy, label, skipped, root = process.cwd()) {
    if (skipped.length === 0) return { fails: false, lines: [] };
    const where = (file) => (file && isAbsolute(file) ? relative(root, file) : file || "?");
    const list = skipped.map((s) => `  ${where(s.file)}: ${s.name} -- ${s.kind === "todo" ? "todo: " : ""}${s.reason}`);
    const count = `${skipped.length} of the ${label} did not run`;
    if (policy.strict) return { fails: true, lines: [`FAILED: ${count}, and ${policy.why} asks that every test runs here:`, ...list] };
    return { fails: false, lines: [`${count} (each would fail the run under ISPMAIL_REQUIRE_LAB=1 or ISPMAIL_E2E=off):`, ...list] };
}
