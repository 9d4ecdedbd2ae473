#!/usr/bin/env node
// `npm test`: the type check, the unit tests, then the end-to-end suite against the lab when this
// machine can run it (root, systemd-nspawn, mmdebstrap) — otherwise it says clearly that it skips
// it. With ISPMAIL_REQUIRE_LAB=1 (set by .ci/run) a machine that cannot run the lab fails instead.
// Exits non-zero on any failure; the output ends with node's test runner summary (nothing is
// printed after the last suite: the exit code tells).
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

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

const failures = [];
if (step("type check", "npx", ["tsc", "--noEmit"]) !== 0) failures.push("type check");

const skip = labSkipReason();
if (skip) {
    if (process.env.ISPMAIL_REQUIRE_LAB === "1") {
        console.error(`\nFAILED: the lab cannot run here but ISPMAIL_REQUIRE_LAB=1: ${skip}`);
        failures.push("lab prerequisites");
    } else {
        // Said before the unit tests, so that their summary stays the last lines.
        console.log(`\nSKIPPED e2e: ${skip}`);
    }
}

// Debian 13's own tools for the unit tests that check rendered config files (cached under .lab/;
// built once in about a minute). Without root or mmdebstrap those tests skip and say why.
if (process.getuid?.() === 0 && onPath("mmdebstrap")) {
    if (step("trixie tools chroot", "bash", ["test/harness/build-trixie-chroot.sh"]) !== 0) failures.push("trixie tools chroot");
}

const units = unitTests();
if (units.length === 0) {
    console.log("\nno unit tests found under test/unit");
} else if (step(`unit tests (${units.length} files)`, process.execPath, ["--import", "tsx", "--test", "--test-concurrency=1", ...units]) !== 0) {
    failures.push("unit tests");
}

if (!skip) {
    // Said before the e2e suite runs, so that its summary stays the last lines.
    if (failures.length) console.error(`\nnpm test will FAIL already: ${failures.join(", ")}`);
    if (step("e2e suite against the lab", "npx", ["tsx", "lab/cli.ts", "test"]) !== 0) failures.push("e2e suite");
}

process.exit(failures.length ? 1 : 0);
