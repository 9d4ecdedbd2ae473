/**
 * The mock harness: run the program (or one component) under `pulumi.runtime.setMocks` with a given
 * stack config, no CLI and no plugins, and get back every registered resource with its inputs and
 * the options the engine would see (protect, parent, dependencies, ignoreChanges, ...).
 *
 * How: the mocks record inputs; the mock monitor's registerResource is wrapped to read the request
 * itself (RegisterResourceRequest carries the options). The mocks return the outputs the program
 * reads (addresses, keys, random results), derived from the resource name so that two runs of the
 * same config give the same values: a test can compare the inputs of two runs directly.
 *
 * One run at a time per process (the Pulumi runtime is global); `runMocked` serialises them.
 */
import { createHash, generateKeyPairSync } from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import { fakeCall, isSecretEnvelope, settle, unwrapSecrets } from "../../lab/engine";

export interface RegisteredResource {
    readonly urn: string;
    readonly type: string;
    readonly name: string;
    /** false for component resources. */
    readonly custom: boolean;
    readonly parent: string;
    /** Inputs as the provider would get them (secrets unwrapped). */
    readonly inputs: Record<string, unknown>;
    /** Top-level input keys that were sent as secrets. */
    readonly secretInputs: readonly string[];
    readonly protect: boolean;
    /** URNs this resource depends on (dependsOn and input dependencies). */
    readonly dependencies: readonly string[];
    readonly ignoreChanges: readonly string[];
    readonly deleteBeforeReplace: boolean;
    /** Left in the cloud when deleted from the stack. */
    readonly retainOnDelete: boolean;
    readonly additionalSecretOutputs: readonly string[];
}

export interface RegisteredInvoke {
    readonly token: string;
    readonly inputs: Record<string, unknown>;
}

export interface MockRunOptions {
    readonly stack?: string;
    readonly project?: string;
    /** Full keys ("ispmail:users") -> value; non-strings are passed as JSON as the CLI does. */
    readonly config?: Readonly<Record<string, unknown>>;
    /** Full keys that the stack marks secret. */
    readonly secretKeys?: readonly string[];
    readonly preview?: boolean;
    /**
     * Extra provider outputs for a resource, merged over the defaults (e.g. a Cloudflare record's
     * `createdOn`, to place it in time).
     */
    readonly outputs?: (type: string, name: string, inputs: Record<string, unknown>) => Record<string, unknown> | undefined;
}

export interface MockRun<T> {
    readonly result?: T;
    /** What the program threw, if it threw. */
    readonly error?: unknown;
    readonly resources: RegisteredResource[];
    readonly invokes: RegisteredInvoke[];
}

// ---------------------------------------------------------------------------------------------
// Deterministic fake outputs
// ---------------------------------------------------------------------------------------------
const digest = (s: string) => createHash("sha256").update(s).digest();

/** A numeric id (Hetzner ids are integers; the program converts them with Number()). */
const numericId = (key: string) => String(100000 + (digest(key).readUInt32BE(0) % 900000));

const keyCache = new Map<string, Record<string, string>>();

/** "ssh-ed25519 <base64 of string(type) + string(key)>" (RFC 8709 wire format). */
function opensshEd25519(publicKeyDer: Buffer): string {
    const field = (b: Buffer) => {
        const length = Buffer.alloc(4);
        length.writeUInt32BE(b.length, 0);
        return Buffer.concat([length, b]);
    };
    const raw = publicKeyDer.subarray(publicKeyDer.length - 32);
    const blob = Buffer.concat([field(Buffer.from("ssh-ed25519")), field(raw)]);
    return `ssh-ed25519 ${blob.toString("base64")}\n`;
}

/** Real key material (the program parses public keys), generated once per resource name. */
function privateKeyOutputs(name: string, algorithm: string): Record<string, string> {
    const cacheKey = `${algorithm}:${name}`;
    const cached = keyCache.get(cacheKey);
    if (cached) return cached;
    let out: Record<string, string>;
    if (algorithm === "RSA") {
        const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
        out = {
            privateKeyPem: privateKey.export({ type: "pkcs1", format: "pem" }).toString(),
            privateKeyPemPkcs8: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
            privateKeyOpenssh: "-----BEGIN OPENSSH PRIVATE KEY-----\nmock\n-----END OPENSSH PRIVATE KEY-----\n",
            publicKeyPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
            publicKeyOpenssh: "ssh-rsa AAAAmock\n",
        };
    } else {
        const { publicKey, privateKey } = generateKeyPairSync("ed25519");
        out = {
            privateKeyPem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
            privateKeyPemPkcs8: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
            privateKeyOpenssh: `-----BEGIN OPENSSH PRIVATE KEY-----\nmock-${name}\n-----END OPENSSH PRIVATE KEY-----\n`,
            publicKeyPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
            publicKeyOpenssh: opensshEd25519(publicKey.export({ type: "spki", format: "der" })),
        };
    }
    keyCache.set(cacheKey, out);
    return out;
}

/** When mocked Cloudflare records were created and last modified, unless a test says otherwise. */
export const MOCK_RECORD_TIME = "2026-01-01T00:00:00.000Z";

/** Mock outputs per resource type: what the provider would add to the inputs (also the engine tests' fake providers). */
export function mockState(args: Pick<pulumi.runtime.MockResourceArgs, "type" | "name" | "inputs" | "custom">): { id: string; state: Record<string, unknown> } {
    const inputs = args.inputs as Record<string, unknown>;
    const key = `${args.type}::${args.name}`;
    switch (args.type) {
        case "tls:index/privateKey:PrivateKey":
            return { id: numericId(key), state: { ...inputs, ...privateKeyOutputs(args.name, String(inputs.algorithm)) } };
        case "random:index/randomPassword:RandomPassword": {
            const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            const result = [...digest(key)].map((b) => alphabet[b % alphabet.length]).join("").slice(0, Number(inputs.length ?? 32));
            return { id: "none", state: { ...inputs, result } };
        }
        case "hcloud:index/primaryIp:PrimaryIp": {
            const n = digest(key)[0];
            return inputs.type === "ipv6"
                ? { id: numericId(key), state: { ...inputs, ipAddress: `2001:db8:${n.toString(16)}::`, ipNetwork: `2001:db8:${n.toString(16)}::/64` } }
                : { id: numericId(key), state: { ...inputs, ipAddress: `203.0.113.${n % 250}` } };
        }
        case "hcloud:index/server:Server":
            return { id: numericId(key), state: { ...inputs, status: "running" } };
        case "cloudflare:index/dnsRecord:DnsRecord":
            // Cloudflare stamps every record; by default these are long-published records.
            return { id: numericId(key), state: { ...inputs, createdOn: MOCK_RECORD_TIME, modifiedOn: MOCK_RECORD_TIME } };
        case "cloudflare:index/zoneDnssec:ZoneDnssec": {
            // The DS record Cloudflare reports for a signed zone (ECDSA P-256, SHA-256 digest).
            const zone = args.name.replace(/^dnssec:/, "");
            return { id: numericId(key), state: { ...inputs, ds: `${zone}. 3600 IN DS ${digest(key).readUInt16BE(0)} 13 2 ${digest(`${key}:ds`).toString("hex").toUpperCase()}` } };
        }
        case "command:remote:Command":
            return { id: `${args.name}-id`, state: { ...inputs, stdout: 'ispmail-step-result:{"result":"changed","files":[],"actions":[]}\n', stderr: "" } };
        default:
            return { id: args.custom === false ? "" : numericId(key), state: { ...inputs } };
    }
}

export function mockCall(args: Pick<pulumi.runtime.MockCallArgs, "token" | "inputs">): Record<string, unknown> {
    return fakeCall(args.token, args.inputs as Record<string, unknown>);
}

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------
interface RequestLike {
    getType(): string;
    getName(): string;
    getParent(): string;
    getCustom(): boolean;
    getProtect(): boolean;
    getDependenciesList(): string[];
    getIgnorechangesList(): string[];
    getDeletebeforereplace(): boolean;
    getRetainondelete(): boolean | undefined;
    getAdditionalsecretoutputsList(): string[];
    getObject(): { toJavaScript(): Record<string, unknown> } | undefined;
}

type Callback = (err: unknown, response?: { getUrn(): string }) => void;

let queue: Promise<unknown> = Promise.resolve();

/** Runs `fn` under fresh mocks with this config; resolves once every registration has settled. */
export function runMocked<T>(fn: () => T, opts: MockRunOptions = {}): Promise<MockRun<T>> {
    const run = queue.then(() => runOnce(fn, opts));
    queue = run.catch(() => undefined);
    return run;
}

async function runOnce<T>(fn: () => T, opts: MockRunOptions): Promise<MockRun<T>> {
    const config: Record<string, string> = {};
    for (const [k, v] of Object.entries(opts.config ?? {})) config[k] = typeof v === "string" ? v : JSON.stringify(v);
    pulumi.runtime.setAllConfig(config, [...(opts.secretKeys ?? [])]);

    const pending: Array<Omit<RegisteredResource, "inputs"> & { inputsKey: string }> = [];
    const inputsByKey = new Map<string, Record<string, unknown>>();
    const invokes: RegisteredInvoke[] = [];
    await pulumi.runtime.setMocks(
        {
            newResource(args) {
                const inputs = unwrapSecrets(args.inputs) as Record<string, unknown>;
                inputsByKey.set(`${args.type}::${args.name}`, inputs);
                const mocked = mockState(args);
                const extra = opts.outputs?.(args.type, args.name, inputs);
                return extra ? { ...mocked, state: { ...mocked.state, ...extra } } : mocked;
            },
            call(args) {
                invokes.push({ token: args.token, inputs: args.inputs as Record<string, unknown> });
                return mockCall(args);
            },
        },
        opts.project ?? "ispmail",
        opts.stack ?? "staging",
        opts.preview ?? false,
    );

    const monitor = pulumi.runtime.getMonitor() as unknown as { registerResource(req: RequestLike, cb: Callback): Promise<void> };
    const original = monitor.registerResource.bind(monitor);
    let inFlight = 0;
    monitor.registerResource = (req: RequestLike, cb: Callback) => {
        inFlight++;
        const object = req.getObject()?.toJavaScript() ?? {};
        const secretInputs = Object.entries(object)
            .filter(([, v]) => isSecretEnvelope(v))
            .map(([k]) => k);
        return original(req, (err, response) => {
            inFlight--;
            if (!err && response) {
                pending.push({
                    urn: response.getUrn(),
                    type: req.getType(),
                    name: req.getName(),
                    custom: req.getCustom(),
                    parent: req.getParent(),
                    secretInputs,
                    protect: req.getProtect(),
                    dependencies: req.getDependenciesList(),
                    ignoreChanges: req.getIgnorechangesList(),
                    deleteBeforeReplace: req.getDeletebeforereplace(),
                    retainOnDelete: req.getRetainondelete() ?? false,
                    additionalSecretOutputs: req.getAdditionalsecretoutputsList(),
                    inputsKey: `${req.getType()}::${req.getName()}`,
                });
            }
            cb(err, response);
        });
    };

    let result: T | undefined;
    let error: unknown;
    try {
        result = fn();
    } catch (e) {
        error = e;
    }
    await settle(() => inFlight, 60_000);
    const resources = pending.map(({ inputsKey, ...r }) => ({ ...r, inputs: inputsByKey.get(inputsKey) ?? {} }));
    return { ...(error === undefined ? { result } : { error }), resources, invokes };
}

/** The value of an Output (tests only; the program never does this). */
export function valueOf<T>(o: pulumi.Input<T>): Promise<T> {
    return new Promise((resolve) => pulumi.output(o).apply((v) => resolve(v as T)));
}

/** Whether an Output is marked secret. */
export function isSecret(o: pulumi.Output<unknown>): Promise<boolean> {
    return (o as unknown as { isSecret: Promise<boolean> }).isSecret;
}

// ---------------------------------------------------------------------------------------------
// Queries on a run
// ---------------------------------------------------------------------------------------------
export const ofType = (resources: readonly RegisteredResource[], type: string) => resources.filter((r) => r.type === type);

export function one(resources: readonly RegisteredResource[], type: string, name: string): RegisteredResource {
    const found = resources.filter((r) => r.type === type && r.name === name);
    if (found.length !== 1) throw new Error(`expected one ${type} named ${name}, found ${found.length}: ${resources.filter((r) => r.type === type).map((r) => r.name).join(", ")}`);
    return found[0];
}
