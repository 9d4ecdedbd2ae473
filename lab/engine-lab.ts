/**
 * The program in the lab, as `pulumi up` runs it: index.ts with the lab stack under the engine
 * harness (lab/engine.ts), with providers that act on the lab instead of Hetzner and Cloudflare:
 * - `command.remote.Command`: the command's own `create` over SSH with the connection it was given
 *   (the program's deploy key, its pinned host key, its dial limits), its stdin, concurrently as the
 *   engine starts them;
 * - `hcloud.Server`: the mail guest, made anew and booted by cloud-init from the server's own
 *   `userData` (host key, authorized keys), its data directory kept like the volume;
 * - `hcloud.PrimaryIp`: the mail guest's lab addresses; `random.RandomPassword` and the DKIM
 *   `tls.PrivateKey`s: the lab's secrets (.lab/secrets.json, which the lab DNS publishes from); the
 *   deploy and host keys: real ED25519 keys from ssh-keygen, kept in the state file;
 * - Cloudflare records: recorded with their times (the lab DNS serves the same record set from
 *   renderDnsRecords with the lab's addresses, lab/dns.ts); the rest: recorded only.
 * The state lives in .lab/engine-state.json (root only: it holds secrets, as Pulumi's state does).
 */
import { createPublicKey } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import YAML from "yaml";
import { parseStepResult } from "../components/steps";
import { emptyState, fakeCall, formatPlan, runEngine, type EngineRun, type EngineState, type ProviderRequest, type ProviderResult, type Providers } from "./engine";
import { bootGuest, createGuest, guestExists, guestRunning, labPlace, removeGuest, stopGuest, type GuestPlace } from "./guests";
import { LAB, PATHS, REPO_DIR, STATE_DIR, type GuestPlan } from "./lab";
import { inLabNet, run, runOk } from "./proc";
import { ensureDeployKey, pinHostKeyLine, sshClientArgs } from "./ssh";
import { rootfsDir } from "./rootfs";
import { ensureSecrets, LAB_STACK, labStackRaw, loadLabStack } from "./stack";

export const ENGINE_STATE_FILE = join(STATE_DIR, "engine-state.json");
const SERVER_TYPE = "hcloud:index/server:Server";
export const SERVER_KEY = `${SERVER_TYPE}::server`;

export function loadEngineState(): EngineState {
    return existsSync(ENGINE_STATE_FILE) ? (JSON.parse(readFileSync(ENGINE_STATE_FILE, "utf8")) as EngineState) : emptyState();
}

function saveEngineState(state: EngineState): void {
    writeFileSync(ENGINE_STATE_FILE, JSON.stringify(state, null, 1) + "\n", { mode: 0o600 });
}

/** index.ts, loaded afresh for each run (it runs the program when imported). */
function indexProgram(): Record<string, unknown> {
    const index = require.resolve(join(REPO_DIR, "index"));
    delete require.cache[index];
    return require(index) as Record<string, unknown>;
}

export interface LabEngineOptions {
    readonly preview: boolean;
    /** The lab's deploy public key: the stack's admin key. */
    readonly deployPublicKey: string;
    /** Every secret of the lab stack by name (lab/stack.ts ensureSecrets). */
    readonly secrets: Readonly<Record<string, string>>;
    /** The cached guest rootfs (for a new mail server). */
    readonly rootfs: string;
    /** `ispmail:*` keys (without namespace) replaced, as a changed stack file would. */
    readonly overrides?: Readonly<Record<string, unknown>>;
    /** `type::name` of resources to replace although unchanged (`pulumi up --replace`). */
    readonly replace?: readonly string[];
    readonly log: (line: string) => void;
    /**
     * A stack of its own: start from this state (e.g. emptyState(), a new stack) and keep it in
     * memory only, instead of the lab's state file; its server is {@link server}. The converge
     * benchmark runs the program this way on a throw-away guest.
     */
    readonly state?: EngineState;
    /** Where the program's server goes (the mail guest's slot): the lab's mail guest unless given. */
    readonly server?: ServerSlot;
}

/** A guest in the mail guest's slot (its addresses and name) that the program's hcloud.Server becomes. */
export interface ServerSlot {
    readonly guest: GuestPlan;
    readonly place: GuestPlace;
}

const labServerSlot = (): ServerSlot => ({ guest: LAB.mail, place: labPlace(LAB.mail) });

/**
 * One `pulumi up` (or preview) of index.ts against the lab. Like `pulumi refresh` first: a server
 * in state whose guest is gone (lab:destroy) is gone, so the next up creates it again.
 */
export async function labEngine(opts: LabEngineOptions): Promise<EngineRun> {
    const ownStack = opts.state !== undefined;
    const state = opts.state ?? loadEngineState();
    if (!ownStack && state.resources[SERVER_KEY] && !guestExists(LAB.mail)) {
        opts.log("engine: the mail server in the state has no guest any more (refresh): it will be created");
        delete state.resources[SERVER_KEY];
    }
    if (!ownStack && !opts.preview && state.resources[SERVER_KEY] && !guestRunning(LAB.mail)) {
        // A stopped server is started, not replaced: that is the lab's doing, not the program's.
        pinServerHostKey(String(state.resources[SERVER_KEY].inputs.userData));
        const seconds = await bootGuest(LAB.mail, labPlace(LAB.mail), { waitFor: "port" });
        opts.log(`engine: started the mail server's guest (port 22 after ${seconds.toFixed(1)} s)`);
    }
    const config = Object.fromEntries(Object.entries(labStackRaw(opts.deployPublicKey, opts.overrides)).map(([k, v]) => [`ispmail:${k}`, v]));
    const result = await runEngine({
        program: indexProgram,
        project: "ispmail",
        stack: LAB_STACK,
        config,
        preview: opts.preview,
        state,
        providers: labProviders(opts),
        replace: opts.replace,
        // The state is written after every operation (and only then: a run that changes nothing writes nothing).
        ...(opts.preview || ownStack ? {} : { onCheckpoint: saveEngineState }),
        onEvent: (e, phase) => {
            // Progress for what takes time (the server and the steps); the table lists the rest.
            if (e.type !== "command:remote:Command" && e.type !== SERVER_TYPE) return;
            if (phase === "start") opts.log(`engine: ${e.op} ${e.name} ...`);
            else opts.log(`engine: ${e.op} ${e.name} ${e.error ? "FAILED" : "done"} in ${e.seconds?.toFixed(1)} s${e.detail ? ` (${e.detail})` : ""}`);
        },
    });
    return result;
}

/**
 * {@link labEngine} with the lab stack's own deploy key, secrets and rootfs: `lab preview` and the
 * e2e tests, which change stack keys or force replacements.
 */
export async function labEngineFromStack(opts: Pick<LabEngineOptions, "preview" | "overrides" | "replace" | "log">): Promise<EngineRun> {
    const deployPublicKey = await ensureDeployKey();
    const { model, configured } = loadLabStack(deployPublicKey, opts.overrides);
    return labEngine({ ...opts, deployPublicKey, secrets: ensureSecrets(model, configured), rootfs: rootfsDir() });
}

export function formatEngineRun(title: string, r: EngineRun): string {
    return [`${title} (${r.seconds.toFixed(1)} s)`, formatPlan(r.plan), ...r.errors.map((e) => `  error: ${e}`)].join("\n");
}

// ---------------------------------------------------------------------------------------------
// The lab's providers
// ---------------------------------------------------------------------------------------------
function labProviders(opts: LabEngineOptions): Providers {
    return {
        async apply(req) {
            switch (req.type) {
                case "command:remote:Command":
                    return runCommand(req);
                case SERVER_TYPE:
                    return req.op === "update" ? { outputs: req.old!.outputs } : createServer(req, opts);
                case "tls:index/privateKey:PrivateKey":
                    return privateKey(req, opts.secrets);
                case "random:index/randomPassword:RandomPassword": {
                    const result = opts.secrets[req.name];
                    if (result === undefined) throw new Error(`no lab secret named ${req.name} (lab/stack.ts ensureSecrets makes every secret of the stack)`);
                    return { id: "none", outputs: { result } };
                }
                case "hcloud:index/primaryIp:PrimaryIp":
                    return { outputs: req.inputs.type === "ipv6" ? { ipAddress: LAB.mail.ipv6, ipNetwork: `${LAB.mail.ipv6}/${LAB.prefix.ipv6}` } : { ipAddress: LAB.mail.ipv4 } };
                case "cloudflare:index/dnsRecord:DnsRecord": {
                    const now = new Date().toISOString();
                    return { outputs: { createdOn: req.old?.outputs.createdOn ?? now, modifiedOn: now } };
                }
                default:
                    return { outputs: {} };
            }
        },
        async delete(old) {
            if (old.type === SERVER_TYPE) await removeServerGuest(opts.server ?? labServerSlot());
        },
        call: fakeCall,
    };
}

async function removeServerGuest({ guest, place }: ServerSlot): Promise<void> {
    await stopGuest(guest, place);
    removeGuest(guest, place);
}

/** The host key the server's user data installs: pinned for the lab's own SSH (tests, lab ssh). */
function pinServerHostKey(userData: string): void {
    const doc = YAML.parse(userData.replace(/^#cloud-config\n/, "")) as { ssh_keys?: { ed25519_public?: string } };
    const key = doc.ssh_keys?.ed25519_public;
    if (!key) throw new Error("the server's user data has no ed25519 host key");
    pinHostKeyLine(LAB.mail, key);
}

/** A new mail server: a fresh guest from the rootfs, first boot by cloud-init from the user data. */
async function createServer(req: ProviderRequest, opts: LabEngineOptions): Promise<ProviderResult> {
    const userData = String(req.inputs.userData ?? "");
    const slot = opts.server ?? labServerSlot();
    await removeServerGuest(slot);
    await createGuest(slot.guest, opts.rootfs, opts.deployPublicKey, slot.place, { userData, instanceId: `ispmail-lab-${req.newId}` });
    pinServerHostKey(userData);
    const seconds = await bootGuest(slot.guest, slot.place, { waitFor: "port" });
    opts.log(`engine: server ${req.newId} booted from its user data (port 22 after ${seconds.toFixed(1)} s)`);
    return { id: req.newId, outputs: { status: "running", ipv4Address: LAB.mail.ipv4 }, detail: `guest ${slot.guest.machine}, cloud-init` };
}

async function privateKey(req: ProviderRequest, secrets: Readonly<Record<string, string>>): Promise<ProviderResult> {
    if (req.inputs.algorithm === "RSA") {
        // The DKIM keys: the lab's secrets, which the lab DNS publishes.
        const pem = secrets[req.name];
        if (!pem) throw new Error(`no lab secret named ${req.name}`);
        const publicKeyPem = createPublicKey(pem).export({ type: "spki", format: "pem" }).toString();
        return { outputs: { privateKeyPem: pem, publicKeyPem } };
    }
    if (req.inputs.algorithm !== "ED25519") throw new Error(`${req.name}: the lab makes RSA and ED25519 keys only, not ${String(req.inputs.algorithm)}`);
    const dir = mkdtempSync(join(STATE_DIR, ".keygen-"));
    try {
        const file = join(dir, "key");
        await runOk("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `ispmail-${req.name}`, "-f", file]);
        return { outputs: { privateKeyOpenssh: readFileSync(file, "utf8"), publicKeyOpenssh: `${readFileSync(`${file}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ")}\n` } };
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
}

interface Connection {
    readonly host: string;
    readonly user: string;
    readonly privateKey: string;
    readonly hostKey?: string;
    readonly dialErrorLimit?: number;
    readonly perDialTimeout?: number;
}

/**
 * What @pulumi/command's remote Command does: dial (retrying up to dialErrorLimit times, each
 * perDialTimeout seconds), check the host key when one is given, run `create` with `stdin`, and
 * fail with the command's output when it exits non-zero.
 */
async function runCommand(req: ProviderRequest): Promise<ProviderResult> {
    const c = req.inputs.connection as Connection;
    const dir = join(PATHS.run, "engine");
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const keyFile = join(dir, `${req.name}.key`);
    const knownHosts = join(dir, `${req.name}.known_hosts`);
    writeFileSync(keyFile, c.privateKey, { mode: 0o600 });
    writeFileSync(knownHosts, c.hostKey ? `${c.host} ${c.hostKey}\n` : "", { mode: 0o600 });
    const args = [
        ...sshClientArgs({ user: c.user, host: c.host, keyFile, knownHosts, checkHostKey: Boolean(c.hostKey), connectTimeoutSeconds: c.perDialTimeout ?? 15 }),
        String(req.inputs.create),
    ];
    const limit = c.dialErrorLimit ?? 10;
    try {
        for (let attempt = 1; ; attempt++) {
            const [cmd, nsArgs] = inLabNet("ssh", args);
            const r = await run(cmd, nsArgs, { input: String(req.inputs.stdin ?? ""), timeoutMs: 40 * 60_000 });
            // ssh's own failures (refused, timed out, host key or key not accepted yet while
            // cloud-init runs) exit 255: the provider's dial retries them.
            if (r.code === 255 && attempt < limit) {
                await new Promise((resolve) => setTimeout(resolve, 1000));
                continue;
            }
            if (r.code !== 0) throw new Error(`Process exited with status ${r.code}${r.code === 255 ? ` (after ${attempt} dial attempts)` : ""}: ${r.stdout}${r.stderr}`.trim());
            const result = parseStepResult(r.stdout);
            const detail = result ? [result.result, ...result.actions].join("; ") : r.stdout.trim().split("\n").pop();
            return { outputs: { stdout: r.stdout, stderr: r.stderr }, detail };
        }
    } finally {
        rmSync(keyFile, { force: true });
        rmSync(knownHosts, { force: true });
    }
}

