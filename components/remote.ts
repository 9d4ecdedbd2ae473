/**
 * Steps as resources: `ispmail:index:ServerConfig` turns each {@link Step} into one
 * `command.remote.Command` that sends the step's apply script to bash over SSH, on stdin.
 *
 * Pitfalls this follows (shared/PULUMI-NOTES.md):
 * - the script, with its secrets resolved, travels only on stdin, as a secret Output; the `create`
 *   string is the constant {@link remoteApplyCommand}, so a failing command's error cannot quote a
 *   secret, and it fails a step whose script did not run to its result line;
 * - each step's stdin is built from the secrets that step references and nothing else, so a new
 *   secret (a new user's password) leaves every other step's stdin known and unchanged in preview;
 * - `addPreviousOutputInEnv: false`: the provider would otherwise send the previous stdout as an SSH
 *   environment variable on every update, which sshd refuses (AcceptEnv) with a warning;
 * - `triggers` = ["server <id>", ...the step's summary lines ({@link stepSummary}: each file with a
 *   short hash of its content, placeholders unresolved, so harmless; the packages; the script)]:
 *   `pulumi preview --diff` shows which file of which step changes, and a changed step is replaced
 *   (run again); the server id re-runs every step on a new machine, because a changed connection
 *   alone is only an update;
 * - steps that hold secrets log nothing and their stdout/stderr are secret outputs;
 * - one command per step (each opens its own SSH connection), ordered by the steps' `after`;
 * - no `delete`: removing a step from the program leaves the server as it is.
 */
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { remoteApplyCommand, renderApplyScript, resolveSecrets, secretsOf, stepHash, stepSummary, type Step } from "./steps";
import { componentType } from "./component-types";

/** How every command reaches the server. */
export interface ServerConnection {
    readonly host: string;
    readonly user: string;
    /** OpenSSH private key of the deploy key (secret). */
    readonly privateKey: string;
    /** The server's host public key ("ssh-ed25519 AAAA..."): the connection is refused if it differs. */
    readonly hostKey: string;
}

/** Installing packages on a small VPS can take a while; the provider's default is shorter. */
const STEP_TIMEOUTS: pulumi.CustomTimeouts = { create: "40m", update: "40m" };

/**
 * The first command on a machine: wait until SSH answers and cloud-init has finished (host key and
 * authorized_keys in place, apt sources ready). A fresh server needs a minute or two to boot, more
 * than the default 10 dial attempts of 15 s, so this one command raises the limit; all later ones
 * run after it. `cloud-init status --wait` exits 2 for "done with recoverable errors", which is fine.
 */
export function waitForMachine(
    name: string,
    args: { connection: pulumi.Input<ServerConnection>; serverId: pulumi.Input<string> },
    opts: pulumi.CustomResourceOptions,
): command.remote.Command {
    const connection = pulumi.output(args.connection).apply((c) => ({ ...c, dialErrorLimit: 60, perDialTimeout: 10 }));
    return new command.remote.Command(
        name,
        {
            connection: pulumi.secret(connection),
            create: "cloud-init status --wait >/dev/null || [ $? -eq 2 ]; echo ready",
            triggers: [args.serverId],
            addPreviousOutputInEnv: false,
        },
        { ...opts, customTimeouts: { create: "20m", update: "20m" } },
    );
}

/** Secret values by name, each its own Output: a step waits only for the secrets it uses. */
export type SecretInputs = Readonly<Record<string, pulumi.Input<string>>>;

/** One step as a command: the helper both ServerConfig and the Host's ssh-access step use. */
export function stepCommand(
    step: pulumi.Input<Step>,
    args: {
        connection: pulumi.Input<ServerConnection>;
        serverId: pulumi.Input<string>;
        /** Exactly the secrets the step references (known up front, also for a deferred step). */
        secrets: SecretInputs;
        /** The step's summary lines ({@link stepSummary}, placeholders unresolved). */
        summary: pulumi.Input<string[]>;
        name: string;
        /** {@link Step.background}: known up front, it is part of the command. */
        background?: boolean;
    },
    opts: pulumi.CustomResourceOptions,
): command.remote.Command {
    const holdsSecrets = Object.keys(args.secrets).length > 0;
    const stdin = pulumi.all([step, pulumi.all(args.secrets)]).apply(([s, values]) => renderApplyScript(resolveSecrets(s as Step, values)));
    return new command.remote.Command(
        args.name,
        {
            connection: pulumi.secret(pulumi.output(args.connection)),
            create: remoteApplyCommand({ name: args.name, background: args.background }, { holdsSecrets }),
            stdin: pulumi.secret(stdin),
            triggers: pulumi.all([args.serverId, args.summary]).apply(([serverId, summary]) => [`server ${serverId}`, ...summary]),
            addPreviousOutputInEnv: false,
            ...(holdsSecrets ? { logging: command.types.enums.remote.Logging.None } : {}),
        },
        {
            ...opts,
            customTimeouts: STEP_TIMEOUTS,
            ...(holdsSecrets ? { additionalSecretOutputs: ["stdout", "stderr"] } : {}),
        },
    );
}

/** The secrets a step references, picked from all of them (ServerConfig has checked every name). */
function secretsFor(step: Step, all: SecretInputs): SecretInputs {
    return Object.fromEntries(secretsOf(step).map((name) => [name, all[name]]));
}

export interface ServerConfigArgs {
    /** The ordered steps (renderServerSteps(model)). */
    readonly steps: readonly Step[];
    /** Every secret by name (GeneratedSecrets.byName); a step referencing another name is a bug, reported at once. */
    readonly secrets: SecretInputs;
    readonly connection: pulumi.Input<ServerConnection>;
    /** Changes when the server is replaced: every step re-runs on the new machine. */
    readonly serverId: pulumi.Input<string>;
    /** The "machine is up" command; every step waits for it. */
    readonly machineReady: pulumi.Resource;
    /** Extra dependencies by step name, e.g. certbot waits for the DNS A/AAAA records. */
    readonly extraDependsOn?: Readonly<Record<string, readonly pulumi.Resource[]>>;
    /**
     * Steps whose content is decided only during the deployment, by name: every content the step
     * may take (checked here, up front) and the one chosen. The rspamd step waits for the DKIM
     * records' publication times this way (components/dkim.ts); all other steps stay plain data.
     */
    readonly deferred?: Readonly<Record<string, DeferredStep>>;
}

export interface DeferredStep {
    readonly candidates: readonly Step[];
    readonly chosen: pulumi.Output<Step>;
}

export class ServerConfig extends pulumi.ComponentResource {
    /** Commands by step name. */
    public readonly commands: Readonly<Record<string, command.remote.Command>>;

    constructor(name: string, args: ServerConfigArgs, opts?: pulumi.ComponentResourceOptions) {
        const [type, options] = componentType("ServerConfig", opts);
        super(type, name, {}, options);
        const known = new Set(Object.keys(args.secrets));
        const commands: Record<string, command.remote.Command> = {};
        const check = (step: Step) => {
            // Render once with placeholders: a bad step (unsafe path, bad mode, unknown step in
            // `after`, unknown secret) fails the program here instead of in the middle of `up`.
            renderApplyScript(step);
            const unknown = secretsOf(step).filter((s) => !known.has(s));
            if (unknown.length) throw new pulumi.ResourceError(`step ${step.name} references unknown secrets: ${unknown.join(", ")}`, this);
        };
        for (const name of Object.keys(args.deferred ?? {})) {
            if (!args.steps.some((s) => s.name === name)) throw new pulumi.ResourceError(`deferred step ${name} is not one of the steps`, this);
        }
        // Every step and every deferred variant is checked before the first command exists.
        for (const step of args.steps) {
            check(step);
            for (const candidate of args.deferred?.[step.name]?.candidates ?? []) {
                check(candidate);
                // Same name, secrets and order: only the content may wait for the deployment.
                if (candidate.name !== step.name || secretsOf(candidate).join() !== secretsOf(step).join() || candidate.after.join() !== step.after.join()) {
                    throw new pulumi.ResourceError(`step ${step.name}: a deferred variant differs in name, secrets or order`, this);
                }
            }
        }
        for (const step of args.steps) {
            const deferred = args.deferred?.[step.name];
            const content: pulumi.Input<Step> = deferred
                ? deferred.chosen.apply((chosen) => {
                      if (!deferred.candidates.some((c) => stepHash(c) === stepHash(chosen))) throw new Error(`step ${step.name}: the chosen content is none of the checked candidates`);
                      return chosen;
                  })
                : step;
            const after = step.after.map((dep) => {
                const c = commands[dep];
                if (!c) throw new pulumi.ResourceError(`step ${step.name} runs after "${dep}", which is not an earlier step`, this);
                return c;
            });
            commands[step.name] = stepCommand(
                content,
                {
                    name: step.name,
                    background: step.background,
                    connection: args.connection,
                    serverId: args.serverId,
                    secrets: secretsFor(step, args.secrets),
                    summary: deferred ? pulumi.output(content).apply((c) => stepSummary(c as Step)) : stepSummary(step),
                },
                { parent: this, dependsOn: [args.machineReady, ...after, ...(args.extraDependsOn?.[step.name] ?? [])] },
            );
        }
        this.commands = commands;
        this.registerOutputs({});
    }
}
