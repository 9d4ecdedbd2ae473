/**
 * `npm test`'s strictness (test/harness/node-tests.mjs, used by test/run.mjs): which policy each
 * variable asks for, and that a run of node's test runner names every test that did not run — a
 * skipped test, a skipped suite, a skip decided inside the test, a todo — so that a strict run
 * fails on them. The runner is run for real on a small test file written here.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { runReportingSkips, skipVerdict, testPolicy, type NotRun } from "../harness/node-tests.mjs";

describe("npm test: the variables", () => {
    test("npm test: neither variable is a developer's run; REQUIRE_LAB=1 and E2E=off are strict", () => {
        assert.deepEqual(testPolicy({}), { e2e: "auto", strict: false, why: "" });
        assert.deepEqual(testPolicy({ ISPMAIL_REQUIRE_LAB: "1" }), { e2e: "required", strict: true, why: "ISPMAIL_REQUIRE_LAB=1" });
        assert.deepEqual(testPolicy({ ISPMAIL_E2E: "off" }), { e2e: "off", strict: true, why: "ISPMAIL_E2E=off" });
        assert.deepEqual(testPolicy({ ISPMAIL_REQUIRE_LAB: "", ISPMAIL_E2E: "" }), { e2e: "auto", strict: false, why: "" });
    });

    test("npm test: both at once, or a value with a typo, are refused rather than run leniently", () => {
        assert.throws(() => testPolicy({ ISPMAIL_REQUIRE_LAB: "1", ISPMAIL_E2E: "off" }), /contradict/);
        assert.throws(() => testPolicy({ ISPMAIL_E2E: "of" }), /ISPMAIL_E2E must be off or unset \(got "of"\)/);
        assert.throws(() => testPolicy({ ISPMAIL_REQUIRE_LAB: "yes" }), /ISPMAIL_REQUIRE_LAB must be 1 or unset/);
    });
});

describe("npm test: tests that did not run", () => {
    let dir = "";
    let fixture = "";
    let clean = "";
    /** The environment of a top-level run: not a child of this runner, no reporters of ours. */
    const env = () => {
        const e: Record<string, string | undefined> = { ...process.env };
        delete e.NODE_TEST_CONTEXT;
        delete e.NODE_OPTIONS;
        return e;
    };
    const run = (file: string) => runReportingSkips(process.execPath, ["--test", file], { env: env(), stdio: "pipe" });

    before(() => {
        dir = mkdtempSync(join(tmpdir(), "ispmail-node-tests-"));
        fixture = join(dir, "fixture.test.mjs");
        writeFileSync(
            fixture,
            [
                'import { describe, test } from "node:test";',
                'test("runs", () => {});',
                'test("needs a widget", { skip: "no widget here" }, () => {});',
                'describe("widget suite", { skip: "no widgets at all" }, () => { test("inside", () => {}); });',
                'test("decides at run time", (t) => { t.skip("found no widget"); });',
                'test("later", { todo: "widgets next week" }, () => { throw new Error("not yet"); });',
                'test("no reason", { skip: true }, () => {});',
            ].join("\n"),
        );
        // What lab/cli.ts does for the e2e suite: a program that starts node's test runner itself.
        writeFileSync(
            join(dir, "launcher.mjs"),
            'import { spawnSync } from "node:child_process";\nprocess.exit(spawnSync(process.execPath, ["--test", process.argv[2]], { stdio: "inherit" }).status ?? 1);\n',
        );
        clean = join(dir, "clean.test.mjs");
        writeFileSync(clean, 'import { test } from "node:test";\ntest("runs", () => {});\n');
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    test("npm test: every skipped test, skipped suite, run-time skip and todo is named with its file and reason", () => {
        const r = run(fixture);
        // Control: node's runner itself passes this file, and its summary misses the skipped suite.
        assert.equal(r.status, 0, r.stdout + r.stderr);
        assert.match(r.stdout, /^(# |ℹ )skipped 3$/m);
        assert.deepEqual(r.skipped, [
            { kind: "skipped", file: fixture, name: "needs a widget", reason: "no widget here" },
            { kind: "skipped", file: fixture, name: "widget suite", reason: "no widgets at all" },
            { kind: "skipped", file: fixture, name: "decides at run time", reason: "found no widget" },
            { kind: "todo", file: fixture, name: "later", reason: "widgets next week" },
            { kind: "skipped", file: fixture, name: "no reason", reason: "(no reason given)" },
        ]);
    });

    test("npm test: a test runner started further down (the e2e suite by lab/cli.ts) names them too", () => {
        const r = runReportingSkips(process.execPath, [join(dir, "launcher.mjs"), fixture], { env: env(), stdio: "pipe" });
        assert.equal(r.status, 0, r.stdout + r.stderr);
        assert.deepEqual(r.skipped.map((s) => s.name), ["needs a widget", "widget suite", "decides at run time", "later", "no reason"]);
    });

    test("npm test: a file whose tests all ran reports none", () => {
        const r = run(clean);
        assert.equal(r.status, 0, r.stdout + r.stderr);
        assert.deepEqual(r.skipped, []);
    });

    test("npm test: a strict run fails on them and names each; a developer's run lists them only", () => {
        const skipped: NotRun[] = [{ kind: "skipped", file: join(dir, "unit", "a.test.ts"), name: "a: does x", reason: "needs root: chown" }];
        const strict = skipVerdict(testPolicy({ ISPMAIL_E2E: "off" }), "unit tests", skipped, dir);
        assert.equal(strict.fails, true);
        assert.deepEqual(strict.lines, ["FAILED: 1 of the unit tests did not run, and ISPMAIL_E2E=off asks that every test runs here:", "  unit/a.test.ts: a: does x -- needs root: chown"]);
        const lenient = skipVerdict(testPolicy({}), "unit tests", skipped, dir);
        assert.equal(lenient.fails, false);
        assert.match(lenient.lines[0], /^1 of the unit tests did not run \(each would fail the run under ISPMAIL_REQUIRE_LAB=1 or ISPMAIL_E2E=off\):$/);
        assert.deepEqual(skipVerdict(testPolicy({ ISPMAIL_REQUIRE_LAB: "1" }), "e2e tests", [], dir), { fails: false, lines: [] });
    });
});
