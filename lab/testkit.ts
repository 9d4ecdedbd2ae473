/**
 * The e2e tests' view of the lab:
 *
 *   import { ensureLab, guest, LAB } from "../../lab/testkit";
 *   before(ensureLab);
 *   const r = await guest("mail").exec("postconf -h myhostname");
 *
 * Tests run inside the lab's network namespace (`npm run test:e2e` puts them there), so real clients
 * (swaks, openssl s_client, python3, kdig, node:dns) reach the lab addresses and nothing else.
 * Outside it, 198.51.100.x could be someone's real network (documentation ranges are used as LANs:
 * 192.0.2.0/24 is this machine's), so {@link ensureLab}
 * refuses to run there.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { applySteps, type AppliedStep } from "./apply";
import { guestPlan, LAB, PATHS, REPO_DIR, type GuestName } from "./lab";
import { LOCK_HELD_ENV } from "./lock";
import { labDeployment, labDkimSigning, labLooksUp, type LabDeployment } from "./orchestrate";
import { inLabNetns, run, type RunResult } from "./proc";
import { sshExec } from "./ssh";
import type { ConfiguredSecrets, Model } from "../components/config";
import { renderServerSteps } from "../components/services";
import type { Step } from "../components/steps";
import { ensureSecrets, loadLabStack } from "./stack";
import type { EngineRun } from "./engine";
import { labEngineFromStack } from "./engine-lab";

export { LAB, PATHS, labDkimSigning };
export type { GuestName, RunResult };

export interface ExecOptions {
    /** Sent to the command's stdin. */
    readonly input?: string;
    /** Default 60 s; the command is killed after it (code 124). */
    readonly timeoutMs?: number;
}

export interface Guest {
    /** Runs a shell command as root on the guest (over SSH with the deploy key). */
    exec(command: string, opts?: ExecOptions): Promise<RunResult>;
    /** Like exec, but throws with stderr when the command fails; returns stdout. */
    execOk(command: string, opts?: ExecOptions): Promise<string>;
}

export function guest(name: GuestName): Guest {
    const plan = guestPlan(name);
    const exec = (command: string, opts: ExecOptions = {}) => sshExec(plan, command, { input: opts.input, timeoutMs: opts.timeoutMs ?? 60_000 });
    return {
        exec,
        async execOk(command, opts) {
            const r = await exec(command, opts);
            if (r.code !== 0) throw new Error(`${name}: \`${command}\` failed (exit ${r.code}):\n${r.stderr || r.stdout}`);
            return r.stdout;
        },
    };
}

/**
 * Makes sure the tests can use the lab: refuses to run outside the lab network namespace, and
 * brings the lab up (`tsx lab/cli.ts up`) when it is not running.
 */
export async function ensureLab(): Promise<void> {
    if (!inLabNetns()) {
        throw new Error(
            `e2e tests must run inside the lab network namespace (${LAB.netns}); use \`npm run test:e2e\` ` +
                `(198.51.100.0/24 outside it may be a real network).`,
        );
    }
    if (labLooksUp()) return;
    const r = await new Promise<number>((resolve) => {
        const child = spawn(process.execPath, ["--import", "tsx", join(REPO_DIR, "lab", "cli.ts"), "up"], { cwd: REPO_DIR, stdio: "inherit" });
        child.on("close", (code) => resolve(code ?? 1));
    });
    if (r !== 0) throw new Error(`lab up failed (exit ${r}) ${process.env[LOCK_HELD_ENV] ? "" : "(is another lab operation running?)"}`);
}

/** Applies steps on a guest the way `npm run lab` does (for tests of idempotence or drift). */
export function applyOnGuest(name: GuestName, steps: readonly Step[], secrets: Readonly<Record<string, string>>): Promise<AppliedStep[]> {
    return applySteps(guestPlan(name), steps, secrets);
}

/**
 * Deploys another config to the lab's mail server exactly as `npm run lab` deploys lab/stack.yaml:
 * new secrets generated and kept, records published on the lab DNS, the DKIM signer decided from
 * the records' ages, every mail step applied. Tests of config changes (e.g. a DKIM rotation) use it
 * and deploy {@link labModel} again afterwards.
 */
export async function deployLabConfig(model: Model, configured: ConfiguredSecrets = labStack().configured): Promise<LabDeployment & { applied: AppliedStep[] }> {
    const secrets = ensureSecrets(model, configured);
    const deployment = await labDeployment(model, secrets);
    return { ...deployment, applied: await applySteps(guestPlan("mail"), deployment.steps, secrets) };
}

/** The mail server's steps for a model as the lab deploys it now (with the DKIM signer it would pick). */
export function labServerSteps(model: Model = labModel()): Step[] {
    return renderServerSteps(model, { dkimSigner: labDkimSigning(model).selector });
}

/** The lab stack's model, as `npm run lab` renders the steps from it. */
export function labModel(): Model {
    return labModelWith({});
}

/** The lab stack's model with some `ispmail:*` keys (without namespace) replaced, validated as usual. */
export function labModelWith(overrides: Readonly<Record<string, unknown>>): Model {
    return labStack(overrides).model;
}

/** lab/stack.yaml with the lab's deploy key, as `npm run lab` loads it (with `overrides`: model and configured secrets of a config change). */
export function labStack(overrides: Readonly<Record<string, unknown>> = {}): ReturnType<typeof loadLabStack> {
    return loadLabStack(readFileSync(`${PATHS.deployKey}.pub`, "utf8").trim(), overrides);
}

/** What most e2e suites start with: the lab up, its model and its secrets. */
export async function labSession(): Promise<{ model: Model; secrets: Record<string, string> }> {
    await ensureLab();
    return { model: labModel(), secrets: labSecrets() };
}

/**
 * The lab stack's secrets by name, as the steps got them: generated ones from .lab/secrets.json and
 * passwords set in lab/stack.yaml (mailbox passwords are `user:<address>`).
 */
export function labSecrets(): Record<string, string> {
    const { model, configured } = labStack();
    return ensureSecrets(model, configured);
}

/**
 * `pulumi up` (or preview) of index.ts against the lab through the engine harness, as `npm run lab`
 * runs it, with stack keys replaced or resources forced to be replaced (`pulumi up --replace`).
 */
export function labEngineRun(opts: { preview: boolean; overrides?: Readonly<Record<string, unknown>>; replace?: readonly string[] }): Promise<EngineRun> {
    return labEngineFromStack({ ...opts, log: () => undefined });
}

/** Runs a client program on the test host (inside the lab namespace), bounded. */
export function client(cmd: string, args: readonly string[], opts: ExecOptions = {}): Promise<RunResult> {
    return run(cmd, args, { input: opts.input, timeoutMs: opts.timeoutMs ?? 60_000 });
}
