/**
 * An engine-faithful harness: runs the Pulumi program (index.ts) the way `pulumi up` and
 * `pulumi preview` would, on Pulumi's own mock API, with a state file instead of a backend.
 *
 * What it keeps of the engine's behaviour (checked against the engine's and the providers' docs,
 * shared/PULUMI-NOTES.md):
 * - **Concurrency.** The SDK registers a resource once its inputs are known and the resources it
 *   depends on have registered; a registration completes when its provider operation completes.
 *   The mock `newResource` below *is* the provider operation (it runs the command over SSH in the
 *   lab), so independent resources run at the same time, dependents wait — as `--parallel`
 *   unbounded does.
 * - **Operations from state.** Each resource is classified against its inputs in the state file:
 *   none -> create; a changed input the provider replaces for (`triggers` of a command, the image
 *   of a server, ...) -> replace; any other changed input -> update (a command without an
 *   `update` re-runs `create`); equal -> same, and nothing runs. `ignoreChanges` keeps the old
 *   value from state, also for a replacement (pulumi/pulumi#2657). Resources in state that the
 *   program no longer registers are deleted.
 * - **Aliases.** A resource that is not in state under its name but is under one of its `aliases`
 *   (same type unless the alias says otherwise) is that resource renamed: it takes over the state
 *   entry and is classified against it, so a rename alone is `same` — not a create and a delete.
 * - **Preview.** Nothing runs; a resource that would be created, replaced or updated gets its
 *   inputs back and no computed outputs, so whatever the program builds from them is unknown, as
 *   in a real preview; unknown inputs show as such in the plan.
 *
 * The providers' work is a {@link Providers} object: the lab's runs commands over SSH and makes
 * the mail guest from the server's user data (lab/engine-lab.ts); the unit tests give fakes.
 */
import { createHash } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import * as pulumi from "@pulumi/pulumi";
import { isUnknown } from "@pulumi/pulumi/output";

export type Operation = "create" | "update" | "replace" | "same" | "delete";

export interface ResourceState {
    readonly type: string;
    readonly name: string;
    readonly id: string;
    /** Inputs as the provider got them (secrets unwrapped: the state file is root-only). */
    readonly inputs: Record<string, unknown>;
    /** What the provider computed (ids, addresses, a command's stdout, ...). */
    readonly outputs: Record<string, unknown>;
}

export interface EngineState {
    readonly version: 1;
    resources: Record<string, ResourceState>;
    /** Ids handed out to resources whose provider gives none. */
    nextId: number;
}

export const emptyState = (): EngineState => ({ version: 1, resources: {}, nextId: 1000 });

export interface PlanEntry {
    /** `type::name` (the program's names are unique per type). */
    readonly key: string;
    readonly type: string;
    readonly name: string;
    readonly op: Operation;
    /** Top-level inputs that differ from state; "(unknown)" marks a value known only during `up`. */
    readonly changed: readonly string[];
    /** The changed inputs that force the replacement. */
    readonly replaceBecause: readonly string[];
    seconds?: number;
    /** When the provider operation started and ended (ms since the epoch; `up` only). */
    startedAt?: number;
    endedAt?: number;
    /** The `type::name` the resource had in state, when it was found through an alias. */
    readonly renamedFrom?: string;
    /** A step command's changed summary lines, as `pulumi preview --diff` shows its `triggers`. */
    readonly triggerDiff?: readonly string[];
    /** What the provider reported (a step's result line), or its error. */
    detail?: string;
    error?: string;
}

export interface ProviderRequest {
    readonly type: string;
    readonly name: string;
    readonly op: Exclude<Operation, "same" | "delete">;
    readonly inputs: Record<string, unknown>;
    readonly old?: ResourceState;
    /** An id for a new resource, if the provider has none of its own. */
    readonly newId: string;
}

export interface ProviderResult {
    readonly id?: string;
    readonly outputs: Record<string, unknown>;
    /** A line for the plan table (e.g. a step's result). */
    readonly detail?: string;
}

export interface Providers {
    /** Runs a create, update or replace (only during `up`). */
    apply(req: ProviderRequest): Promise<ProviderResult>;
    /** Deletes a resource the program no longer has (only during `up`). */
    delete?(old: ResourceState): Promise<void>;
    /** Invokes (data sources such as cloudflare.getZone). */
    call?(token: string, inputs: Record<string, unknown>): Record<string, unknown>;
}

/**
 * Inputs whose change makes the provider replace the resource (its ForceNew properties). A type
 * not listed is updated in place; "*" means every input.
 */
export const REPLACE_ON: Readonly<Record<string, readonly string[]>> = {
    "command:remote:Command": ["triggers"],
    "hcloud:index/server:Server": ["image", "location", "datacenter", "userData", "sshKeys"],
    "hcloud:index/primaryIp:PrimaryIp": ["type", "location", "datacenter", "assigneeType"],
    "hcloud:index/volume:Volume": ["location"],
    "hcloud:index/volumeAttachment:VolumeAttachment": ["serverId", "volumeId"],
    "hcloud:index/sshKey:SshKey": ["publicKey"],
    "hcloud:index/rdns:Rdns": ["serverId", "primaryIpId", "floatingIpId", "loadBalancerId", "ipAddress"],
    "tls:index/privateKey:PrivateKey": ["algorithm", "rsaBits", "ecdsaCurve"],
    "random:index/randomPassword:RandomPassword": ["*"],
    "cloudflare:index/dnsRecord:DnsRecord": ["zoneId"],
};

// ---------------------------------------------------------------------------------------------
// Classification (pure)
// ---------------------------------------------------------------------------------------------
// How the SDK marks a secret value on the wire (@pulumi/pulumi runtime/rpc specialSecretSig).
const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";
const SIG_KEY = "4dabf18193072939515e22adb298388d";

/** Whether a value as the mock monitor receives it is a secret envelope. */
export function isSecretEnvelope(value: unknown): boolean {
    return typeof value === "object" && value !== null && (value as Record<string, unknown>)[SIG_KEY] === SECRET_SIG;
}

/** Whether a value holds a preview's unknown somewhere. */
export function hasUnknown(value: unknown): boolean {
    if (isUnknown(value)) return true;
    if (Array.isArray(value)) return value.some(hasUnknown);
    if (value && typeof value === "object") return Object.values(value as Record<string, unknown>).some(hasUnknown);
    return false;
}

/** Inputs with the secret envelopes removed. */
export function unwrapSecrets(value: unknown): unknown {
    if (Array.isArray(value)) return value.map(unwrapSecrets);
    if (value && typeof value === "object" && !isUnknown(value)) {
        const o = value as Record<string, unknown>;
        if (isSecretEnvelope(o)) return unwrapSecrets(o.value);
        return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, unwrapSecrets(v)]));
    }
    return value;
}

export interface Classified {
    readonly op: Exclude<Operation, "delete">;
    /** The inputs to record: `ignoreChanges` keys keep their value from state. */
    readonly inputs: Record<string, unknown>;
    readonly changed: string[];
    readonly replaceBecause: string[];
}

/** create / update / replace / same, by the engine's rules. */
export function classify(type: string, inputs: Record<string, unknown>, old: ResourceState | undefined, ignoreChanges: readonly string[] = []): Classified {
    if (!old) return { op: "create", inputs, changed: [], replaceBecause: [] };
    const effective = { ...inputs };
    for (const key of ignoreChanges) if (key in old.inputs) effective[key] = old.inputs[key];
    const keys = [...new Set([...Object.keys(effective), ...Object.keys(old.inputs)])].sort();
    const changedKeys = keys.filter((k) => hasUnknown(effective[k]) || !isDeepStrictEqual(effective[k], old.inputs[k]));
    if (!changedKeys.length) return { op: "same", inputs: effective, changed: [], replaceBecause: [] };
    const forcing = REPLACE_ON[type] ?? [];
    const replaceBecause = changedKeys.filter((k) => forcing.includes("*") || forcing.includes(k));
    const changed = changedKeys.map((k) => (hasUnknown(effective[k]) ? `${k} (unknown)` : k));
    return { op: replaceBecause.length ? "replace" : "update", inputs: effective, changed, replaceBecause };
}

/**
 * Data sources without a cloud: `cloudflare.getZone` answers an active zone with an id derived from
 * its name (stable across runs); other invokes echo their inputs. The lab's providers and the
 * unit-test mocks both use it.
 */
export function fakeCall(token: string, inputs: Record<string, unknown>): Record<string, unknown> {
    if (token === "cloudflare:index/getZone:getZone") {
        const name = String((inputs.filter as { name?: string } | undefined)?.name ?? "");
        return { id: createHash("sha256").update(`zone:${name}`).digest("hex").slice(0, 32), name, status: "active" };
    }
    return inputs;
}

// ---------------------------------------------------------------------------------------------
// Running the program
// ---------------------------------------------------------------------------------------------
export interface EngineRunOptions {
    /** Loads (requires) the program; called once the mocks are in place. */
    readonly program: () => Record<string, unknown>;
    readonly project: string;
    readonly stack: string;
    /** Full keys ("ispmail:users") -> value (non-strings as JSON, as the CLI passes them). */
    readonly config: Readonly<Record<string, unknown>>;
    readonly secretKeys?: readonly string[];
    readonly preview: boolean;
    readonly state: EngineState;
    readonly providers: Providers;
    /**
     * Called with the state after each completed operation, as the engine checkpoints: an `up`
     * cut short keeps what was done (a rerun does not make the server again).
     */
    readonly onCheckpoint?: (state: EngineState) => void;
    /** `type::name` of resources to replace even when unchanged (`pulumi up --replace`). */
    readonly replace?: readonly string[];
    /** Called as each resource's operation starts and ends (progress lines). */
    readonly onEvent?: (entry: PlanEntry, phase: "start" | "end") => void;
}

export interface EngineRun {
    readonly plan: PlanEntry[];
    /** The new state (after `up`); the given one unchanged in preview. */
    readonly state: EngineState;
    /** The program's exports whose value is known. */
    readonly outputs: Record<string, unknown>;
    /** Everything that failed (program errors and resource operations). */
    readonly errors: string[];
    readonly seconds: number;
}

interface RequestLike {
    getType(): string;
    getName(): string;
    getCustom(): boolean;
    getIgnorechangesList(): string[];
    getAliasesList(): AliasLike[];
}

interface AliasLike {
    getSpec(): { getName(): string; getType(): string } | undefined;
}

type Callback = (err: unknown, response?: unknown) => void;

let running = false;

/** Runs the program once under the engine rules (one run at a time per process). */
export async function runEngine(opts: EngineRunOptions): Promise<EngineRun> {
    if (running) throw new Error("the engine harness runs one program at a time");
    running = true;
    const start = Date.now();
    const state: EngineState = JSON.parse(JSON.stringify(opts.state)) as EngineState;
    const plan: PlanEntry[] = [];
    const errors: string[] = [];
    const registered = new Set<string>();
    const ignoreChangesOf = new Map<string, string[]>();
    const aliasesOf = new Map<string, string[]>();
    const onRejection = (e: unknown) => errors.push(e instanceof Error ? e.message : String(e));
    process.on("unhandledRejection", onRejection);
    try {
        const config: Record<string, string> = {};
        for (const [k, v] of Object.entries(opts.config)) config[k] = typeof v === "string" ? v : JSON.stringify(v);
        pulumi.runtime.setAllConfig(config, [...(opts.secretKeys ?? [])]);

        let inFlight = 0;
        await pulumi.runtime.setMocks(
            {
                async newResource(args) {
                    const key = `${args.type}::${args.name}`;
                    if (args.custom === false) return { id: "", state: {} };
                    if (registered.has(key)) throw new Error(`two resources named ${key}`);
                    registered.add(key);
                    const inputs = unwrapSecrets(args.inputs) as Record<string, unknown>;
                    const renamedFrom = state.resources[key] ? undefined : aliasesOf.get(key)?.find((k) => state.resources[k] && !registered.has(k));
                    if (renamedFrom) {
                        // The state entry moves to the new name (in preview too: a copy of the state).
                        state.resources[key] = { ...state.resources[renamedFrom], name: args.name };
                        delete state.resources[renamedFrom];
                        registered.add(renamedFrom);
                    }
                    const old = state.resources[key];
                    const classified = classify(args.type, inputs, old, ignoreChangesOf.get(key));
                    const forced = old !== undefined && opts.replace?.includes(key) === true;
                    const c: Classified = forced ? { ...classified, op: "replace", replaceBecause: ["--replace"] } : classified;
                    const triggerDiff = old && c.changed.includes("triggers") ? summaryDiff(old.inputs.triggers, c.inputs.triggers) : [];
                    const entry: PlanEntry = {
                        key,
                        type: args.type,
                        name: args.name,
                        op: c.op,
                        changed: c.changed,
                        replaceBecause: c.replaceBecause,
                        ...(renamedFrom ? { renamedFrom } : {}),
                        ...(triggerDiff.length ? { triggerDiff } : {}),
                    };
                    plan.push(entry);
                    if (c.op === "same") return { id: old!.id, state: { ...old!.inputs, ...old!.outputs } };
                    // Preview: inputs only, computed outputs unknown (a known id only when kept).
                    if (opts.preview) return { id: c.op === "update" ? old!.id : "", state: c.inputs };
                    opts.onEvent?.(entry, "start");
                    const began = Date.now();
                    entry.startedAt = began;
                    try {
                        const newId = String(state.nextId++);
                        const r = await opts.providers.apply({ type: args.type, name: args.name, op: c.op, inputs: c.inputs, old, newId });
                        const id = r.id ?? (c.op === "update" ? old!.id : newId);
                        state.resources[key] = { type: args.type, name: args.name, id, inputs: c.inputs, outputs: r.outputs };
                        opts.onCheckpoint?.(state);
                        entry.detail = r.detail;
                        return { id, state: { ...c.inputs, ...r.outputs } };
                    } catch (e) {
                        entry.error = e instanceof Error ? e.message : String(e);
                        errors.push(`${key}: ${entry.error}`);
                        throw e;
                    } finally {
                        entry.endedAt = Date.now();
                        entry.seconds = (entry.endedAt - began) / 1000;
                        opts.onEvent?.(entry, "end");
                    }
                },
                call(args) {
                    return opts.providers.call?.(args.token, args.inputs as Record<string, unknown>) ?? (args.inputs as Record<string, unknown>);
                },
            },
            opts.project,
            opts.stack,
            opts.preview,
        );
        // The mock monitor's newResource does not see resource options: read ignoreChanges from
        // the request itself, and count registrations in flight to know when the program is done.
        const monitor = pulumi.runtime.getMonitor() as unknown as { registerResource(req: RequestLike, cb: Callback): Promise<void> };
        const original = monitor.registerResource.bind(monitor);
        monitor.registerResource = (req: RequestLike, cb: Callback) => {
            inFlight++;
            const key = `${req.getType()}::${req.getName()}`;
            ignoreChangesOf.set(key, req.getIgnorechangesList());
            const aliases = req.getAliasesList().flatMap((a) => {
                const spec = a.getSpec();
                return spec ? [`${spec.getType() || req.getType()}::${spec.getName() || req.getName()}`] : [];
            });
            if (aliases.length) aliasesOf.set(key, aliases);
            return original(req, (err, response) => {
                inFlight--;
                cb(err, response);
            });
        };

        let exported: Record<string, unknown> = {};
        try {
            exported = opts.program();
        } catch (e) {
            errors.push(e instanceof Error ? e.message : String(e));
        }
        await settle(() => inFlight);
        const outputs: Record<string, unknown> = {};
        for (const [name, value] of Object.entries(exported)) {
            const v = pulumi.Output.isInstance(value) ? await knownValue(value) : value;
            if (v !== undefined) outputs[name] = unwrapSecrets(v);
        }

        // Deletes: what state has and the program no longer registers (none when it failed early).
        const gone = Object.values(state.resources).filter((r) => !registered.has(`${r.type}::${r.name}`));
        for (const r of errors.length ? [] : gone) {
            const entry: PlanEntry = { key: `${r.type}::${r.name}`, type: r.type, name: r.name, op: "delete", changed: [], replaceBecause: [] };
            plan.push(entry);
            if (opts.preview) continue;
            await opts.providers.delete?.(r);
            delete state.resources[entry.key];
            opts.onCheckpoint?.(state);
        }
        return { plan, state: opts.preview ? opts.state : state, outputs, errors, seconds: (Date.now() - start) / 1000 };
    } finally {
        process.off("unhandledRejection", onRejection);
        running = false;
    }
}

/** An Output's value, or undefined when it is unknown (preview) or failed. */
function knownValue(o: pulumi.Output<unknown>): Promise<unknown> {
    const internal = o as unknown as { promise(): Promise<unknown>; isKnown: Promise<boolean> };
    return Promise.all([internal.isKnown, internal.promise()]).then(
        ([known, v]) => (known ? v : undefined),
        () => undefined,
    );
}

/**
 * Waits until the runtime's RPC queue has drained and no registration is in flight; throws after
 * `timeoutMs` (the unit-test mocks bound it; the engine's provider operations may take minutes).
 */
export async function settle(inFlight: () => number, timeoutMs = Infinity): Promise<void> {
    const settings = require("@pulumi/pulumi/runtime/settings") as { waitForRPCs?: () => Promise<void> };
    const deadline = Date.now() + timeoutMs;
    for (let quiet = 0; quiet < 3 && Date.now() < deadline; ) {
        if (settings.waitForRPCs) await settings.waitForRPCs().catch(() => undefined);
        await new Promise((r) => setTimeout(r, 20));
        quiet = inFlight() === 0 ? quiet + 1 : 0;
    }
    if (inFlight() !== 0) throw new Error(`the program did not settle within ${timeoutMs / 1000} s`);
}

// ---------------------------------------------------------------------------------------------
// Showing a plan
// ---------------------------------------------------------------------------------------------
const SYMBOL: Record<Operation, string> = { create: "+", update: "~", replace: "+-", same: " ", delete: "-" };

/** The short type name (`command:remote:Command` -> Command, `hcloud:index/server:Server` -> hcloud.Server). */
export function shortType(type: string): string {
    const [pkg, , cls] = type.split(":");
    return pkg === "command" ? "Command" : `${pkg}.${cls}`;
}

/** The plan as a reviewer reads `pulumi preview`: only what changes, one line each. */
export function formatPlan(plan: readonly PlanEntry[], opts: { showSame?: boolean } = {}): string {
    // A rename is shown even when nothing else changes: the reviewer should see it kept the resource.
    const rows = plan.filter((e) => opts.showSame || e.op !== "same" || e.renamedFrom);
    const width = Math.max(10, ...rows.map((e) => `${shortType(e.type)} ${e.name}`.length));
    const lines = rows.map((e) => {
        const what = `${shortType(e.type)} ${e.name}`.padEnd(width);
        const diff = e.changed.length ? `[diff: ${e.changed.map((k) => `~${k}`).join(", ")}]` : "";
        const replaced = e.op === "replace" ? `${diff} replaced for: ${e.replaceBecause.join(", ")}`.trim() : diff;
        const why = [replaced, e.renamedFrom ? `(renamed from ${e.renamedFrom.split("::").slice(1).join("::")})` : ""].filter(Boolean).join(" ");
        const time = e.seconds !== undefined ? `${e.seconds.toFixed(1).padStart(6)} s` : "";
        const detail = e.error ? `FAILED: ${e.error.split("\n")[0]}` : (e.detail ?? "");
        const line = `  ${SYMBOL[e.op].padEnd(2)} ${e.op.padEnd(7)} ${what}  ${[time, why, detail].filter(Boolean).join("  ")}`.trimEnd();
        return [line, ...(e.triggerDiff ?? []).map((d) => `        ${d}`)].join("\n");
    });
    const count = (op: Operation) => plan.filter((e) => e.op === op).length;
    lines.push(`  ${count("create")} to create, ${count("update")} to update, ${count("replace")} to replace, ${count("delete")} to delete, ${count("same")} unchanged`);
    return lines.join("\n");
}

/**
 * What changed between two step summaries (components/steps.ts stepSummary: "file PATH owner:group
 * mode HASH", "packages ...", "script HASH", ...), one line per part: `~ file /etc/postfix/main.cf`,
 * `+ file ...`, `- file ...`, `~ packages a b -> a b c`. A part is known by its kind and, for
 * files and inputs, its name; empty when either side is not such a list (e.g. unknown in preview).
 */
export function summaryDiff(before: unknown, after: unknown): string[] {
    const lines = (v: unknown) => (Array.isArray(v) && v.every((x) => typeof x === "string") ? (v as string[]) : undefined);
    const a = lines(before);
    const b = lines(after);
    if (!a || !b) return [];
    const partOf = (line: string) => {
        const [kind, name] = line.split(" ");
        return kind === "file" || kind === "input" ? `${kind} ${name}` : kind;
    };
    const byPart = (list: string[]) => new Map(list.map((l) => [partOf(l), l]));
    const old = byPart(a);
    const now = byPart(b);
    const out: string[] = [];
    for (const [part, line] of now) {
        const was = old.get(part);
        if (was === undefined) out.push(`+ ${part}`);
        else if (was !== line) out.push(part === "packages" || part === "server" ? `~ ${was} -> ${line.slice(part.length + 1)}` : `~ ${part}`);
    }
    for (const part of old.keys()) if (!now.has(part)) out.push(`- ${part}`);
    return out;
}

/** `type::name -> op` for the resources that change (what tests compare). */
export function changes(plan: readonly PlanEntry[]): Record<string, Operation> {
    return Object.fromEntries(plan.filter((e) => e.op !== "same").map((e) => [`${shortType(e.type)} ${e.name}`, e.op]));
}
