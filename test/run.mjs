#!/usr/bin/env node
// `npm test [unit test files]`: the type check, the unit tests (all of test/unit, or the files
// given), then the end-to-end suite against the lab. Exits non-zero on any failure.
//
// What it asks of the machine, set by one environment variable (test/harness/node-tests.mjs,
// testPolicy):
//
//   neither              A developer's run. The e2e suite runs when this machine can run the lab
//                        (root, Debian, the lab's host packages, which it installs) and says
//                        "SKIPPED e2e: why" otherwise. Skipped tests are listed with their reasons
//                        but do not fail the run.
//   ISPMAIL_REQUIRE_LAB=1
//                        Strict, with the lab (.ci/run; the deploy workflow's test job). The e2e
//                        suite must run: a machine that cannot run the lab fails. Any test that
//                        did not run, unit or e2e, fails the run.
//   ISPMAIL_E2E=off      Strict, without the lab (the pull request workflow on a GitHub-hosted
//                        runner). The e2e suite is deliberately not run, and says so. Any unit test
//                        that did not run fails the run.
//
// "Did not run" is any test or suite that node's test runner reports as skipped (`{ skip }`,
// `t.skip()`, a skipped `describe`) or todo; each says its reason. A test that needs root, the
// trixie chroot or a host tool skips with the reason where that is missing, so the strict runs are
// where every one of them must run. Both variables at once, or another value, are refused.
//
// As root with mmdebstrap, the trixie tools chroot the config-checking unit tests use is built
// first (test/harness/build-trixie-chroot.sh, at ISPMAIL_TRIXIE_CHROOT or .lab/trixie-tools).
//
// Output: each suite ends with node's test runner summary; after it comes only the list of its
// tests that did not run, if any (and in a strict run, FAILED with that list).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { runReportingSkips, skipVerdict, testPolicy } from "./harness/node-tests.mjs";

const root = join(fileURLToPath(import.meta.url), "..", "..");
process.chdir(root);

function step(title, cmd, args) {
    console.log(`\n=== ${title}: ${cmd} ${args.join(" ")}`);
    const r = spawnSync(cmd, args, { stdio: "inherit" });
    if (r.error) console.error(r.error.message);
    return r.status ?? 1;
}

/** test/unit/**\/*.test.ts, expanded here (node 20's --test takes no globs). */
function unitTests(dir = join(root, "test", "unit")) {
    if (!existsSync(dir)) return [];
    return readdirSync(dir)
        .sort()
        .flatMap((name) => {
            const path = join(dir, name);
            if (statSync(path).isDirectory()) return unitTests(path);
            return name.endsWith(".test.ts") ? [relative(root, path)] : [];
        });
}

function onPath(cmd) {
    return (process.env.PATH ?? "").split(":").some((d) => d && existsSync(join(d, cmd)));
}

/** The lab host's packages and their commands (lab/host-packages.list, also read by lab/prereqs.ts). */
function hostCommands() {
    return readFileSync(join(root, "lab", "host-packages.list"), "utf8")
        .split("\n")
        .map((l) => l.replace(/#.*/, "").trim().split(/\s+/))
        .filter(([name, cmd]) => name && cmd && cmd !== "-")
        .map(([name, cmd]) => ({ name, cmd }));
}

/** Why the lab cannot run on this machine, or undefined when it can. */
function labSkipReason() {
    if (process.getuid?.() !== 0) return "not running as root (the lab needs network namespaces and systemd-nspawn)";
    // As root on Debian, install what is missing (the same list and code as `npm run lab`).
    if (existsSync("/etc/debian_version") && hostCommands().some(({ cmd }) => !onPath(cmd))) {
        step("lab host packages", "npx", ["tsx", "lab/cli.ts", "prereqs"]);
    }
    for (const { name, cmd } of hostCommands()) {
        if (!onPath(cmd)) return `${cmd} is not installed (Debian package ${name}; \`npx tsx lab/cli.ts prereqs\` installs the lab's host packages)`;
    }
    return undefined;
}

let policy;
try {
    policy = testPolicy(process.env);
} catch (e) {
    console.error(`npm test: ${e.message}`);
    process.exit(2);
}

const failures = [];

/** A node test runner suite, reporting the tests that did not run (fail them when strict). */
function suite(title, label, cmd, args) {
    console.log(`\n=== ${title}: ${cmd} ${args.join(" ")}`);
    const r = runReportingSkips(cmd, args);
    if (r.status !== 0) failures.push(label);
    const verdict = skipVerdict(policy, label, r.skipped, root);
    if (verdict.lines.length) (verdict.fails ? console.error : console.log)(`\n${verdict.lines.join("\n")}`);
    if (verdict.fails) failures.push(`${label} that did not run`);
}

if (step("type check", "npx", ["tsc", "--noEmit"]) !== 0) failures.push("type check");

// Why the e2e suite does not run here (undefined: it runs).
let e2eSkip;
if (policy.e2e === "off") {
    e2eSkip = "ISPMAIL_E2E=off";
    // Said before the unit tests, so that their summary stays the last lines.
    console.log("\nNOT RUN e2e: ISPMAIL_E2E=off, no lab here (the e2e suite runs in .ci/run, as root on Debian: deploy.yml's test job, before every pulumi up)");
} else {
    e2eSkip = labSkipReason();
    if (e2eSkip && policy.e2e === "required") {
        console.error(`\nFAILED: the lab cannot run here but ${policy.why}: ${e2eSkip}`);
        failures.push("lab prerequisites");
    } else if (e2eSkip) {
        console.log(`\nSKIPPED e2e: ${e2eSkip}`);
    }
}

// Debian 13's own tools for the unit tests that check rendered config files (cached; built once
// in about a minute). Without root or mmdebstrap those tests skip and say why.
if (process.getuid?.() === 0 && onPath("mmdebstrap")) {
    const target = process.env.ISPMAIL_TRIXIE_CHROOT ?? join(".lab", "trixie-tools");
    if (step("trixie tools chroot", "bash", ["test/harness/build-trixie-chroot.sh", target]) !== 0) failures.push("trixie tools chroot");
}

const given = process.argv.slice(2);
const units = given.length ? given : unitTests();
if (units.length === 0) {
    console.error("\nno unit tests found under test/unit");
    failures.push("unit tests (none found)");
} else {
    suite(`unit tests (${units.length} files)`, "unit tests", process.execPath, ["--import", "tsx", "--test", "--test-concurrency=1", ...units]);
}

if (!e2eSkip) {
    // Said before the e2e suite runs, so that its summary stays the last lines.
    if (failures.length) console.error(`\nnpm test will FAIL already: ${failures.join(", ")}`);
    suite("e2e suite against the lab", "e2e tests", "npx", ["tsx", "lab/cli.ts", "test"]);
}

process.exit(failures.length ? 1 : 0);
