/**
 * `up` and `destroy`: the whole lab in order. Each piece is idempotent, so `up` on a running lab
 * only re-renders what may have changed (DNS zones, steps) and reports every step unchanged.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Model } from "../components/config";
import { planDkimSigning, selectorPublishedAt, type DkimSigningPlan } from "../components/dkim";
import { factStepCandidates, renderServerSteps, settledFacts } from "../components/services";
import type { Step } from "../components/steps";
import { applySteps, formatApplyTable, StepFailed, type AppliedStep } from "./apply";
import type { EngineRun } from "./engine";
import { ENGINE_STATE_FILE, formatEngineRun, labEngine } from "./engine-lab";
import { APT_PROXY_DAEMONS, ensureAptProxy } from "./aptproxy";
import { ensureDns, KNOT_DAEMON, labPublishedAt } from "./dns";
import { ensureForeignWebCertificate, renderForeignMtaSteps } from "./foreign";
import { bootGuest, createGuest, guestDaemon, guestExists, guestRunning, removeGuest, removeOrphanContainers, staleBase, stopGuest } from "./guests";
import { GUESTS, LAB, PATHS, STATE_DIR } from "./lab";
import { destroyNetwork, ensureNetwork, netnsPids, networkExists } from "./network";
import { ensureLabCa, ensurePebble, PEBBLE_DAEMON } from "./pebble";
import { daemonPid, isAlive, knownDaemons, parentPid, quick, stopDaemon, waitFor } from "./proc";
import { ensureRootfs } from "./rootfs";
import { ensureDeployKey } from "./ssh";
import { dkimPublicKeys, ensureSecrets, loadLabStack, tlsaData } from "./stack";

export type Log = (line: string) => void;

export interface UpReport {
    readonly timings: Record<string, number>;
    /** The program's `up` against the mail server (undefined when it could not run). */
    readonly engine?: EngineRun;
    readonly foreign: readonly AppliedStep[];
}

async function timed<T>(timings: Record<string, number>, name: string, fn: () => Promise<T>): Promise<T> {
    const start = Date.now();
    try {
        return await fn();
    } finally {
        timings[name] = (Date.now() - start) / 1000;
    }
}

/** Brings the whole lab up (the caller holds the lab lock) and applies every step. */
export async function labUp(log: Log): Promise<UpReport> {
    const timings: Record<string, number> = {};
    for (const dir of [STATE_DIR, PATHS.run, PATHS.logs]) mkdirSync(dir, { recursive: true });

    const deployKey = await ensureDeployKey();
    const { model, configured } = loadLabStack(deployKey);
    if (model.mailHost !== LAB.mail.fqdn) throw new Error(`lab/stack.yaml: mailHost must be ${LAB.mail.fqdn} (the lab's plan and tests use it), not ${model.mailHost}`);
    const secrets = ensureSecrets(model, configured);
    // Rendering can fail on a bad service module: find out before booting anything (the steps
    // that use deployment facts once per selector that may sign).
    renderServerSteps(model, settledFacts(model));
    factStepCandidates(model);

    await ensureLabCa();
    await ensureForeignWebCertificate();
    const foreignSteps = renderForeignMtaSteps(model.resolver);
    const rootfs = await timed(timings, "rootfs", () => ensureRootfs(log));
    if (rootfs.builtSeconds !== undefined) log(`rootfs built in ${rootfs.builtSeconds.toFixed(1)} s`);
    refuseOtherCheckoutsLab();
    if (await ensureNetwork()) log(`network: namespace ${LAB.netns}, bridge ${LAB.bridge} ${LAB.host.ipv4}/${LAB.prefix.ipv4} ${LAB.host.ipv6}/${LAB.prefix.ipv6}`);
    log(`apt proxy: ${await timed(timings, "aptProxy", ensureAptProxy)} (${LAB.aptProxy.url})`);
    // The records the program publishes at Cloudflare, served by the lab DNS (the program itself
    // decides the DKIM signer from its records' times, as in `pulumi up`).
    const publish = () => ensureDns({ model, dkimPublicKeys: dkimPublicKeys(model, secrets), tlsa: tlsaData(model, secrets) });
    const dns = await timed(timings, "dns", publish);
    log(`dns: ${dns} (knot on ${LAB.dns})`);
    log(`acme: ${await timed(timings, "pebble", ensurePebble)} (pebble on ${LAB.acme.directoryUrl})`);

    if (!GUESTS.every(guestRunning)) {
        const orphans = await removeOrphanContainers();
        if (orphans.length) log(`removed orphaned lab containers (their nspawn was killed): init pids ${orphans.join(", ")}`);
    }
    if (guestExists(LAB.mail) && !existsSync(ENGINE_STATE_FILE)) {
        // A mail guest from before the engine harness (bootstrapped by the lab, not by cloud-init):
        // the program's first up makes its server anew; the data directory stays.
        log("guest mail: made by an older lab; the program's server replaces it");
    }
    // The foreign MTA is lab infrastructure (the lab bootstraps it); the mail server is the
    // program's hcloud.Server, which the engine harness below makes from its own user data.
    await Promise.all(
        [LAB.foreign].map(async (g) => {
            if (!guestExists(g)) {
                await timed(timings, `create-${g.name}`, () => createGuest(g, rootfs.dir, deployKey));
                log(`guest ${g.name}: created from the cached rootfs in ${timings[`create-${g.name}`].toFixed(1)} s`);
            } else if (staleBase(g)) {
                log(`guest ${g.name}: made from an older rootfs; \`npm run lab:destroy\` re-creates it from the new one`);
            }
            if (!guestRunning(g)) {
                const seconds = await bootGuest(g);
                timings[`boot-${g.name}`] = seconds;
                log(`guest ${g.name}: booted, SSH after ${seconds.toFixed(1)} s (${g.fqdn} ${g.ipv4} ${g.ipv6})`);
            }
        }),
    );

    // The two guests are independent: the foreign MTA's steps and the program's `up` at once.
    const [engine, foreign] = await Promise.allSettled([
        timed(timings, "up-mail", () => labEngine({ preview: false, deployPublicKey: deployKey, secrets, rootfs: rootfs.dir, log })),
        timed(timings, "apply-foreign", () => applySteps(LAB.foreign, foreignSteps, {}, { onLog: (line) => log(`foreign ${line}`) })),
    ]);
    const report: UpReport = {
        timings,
        engine: engine.status === "fulfilled" ? engine.value : undefined,
        foreign: foreign.status === "fulfilled" ? foreign.value : foreign.reason instanceof StepFailed ? foreign.reason.applied : [],
    };
    const failure = engine.status === "rejected" ? engine.reason : engine.value.errors.length ? new Error(`pulumi up (engine harness) failed:\n  ${engine.value.errors.join("\n  ")}`) : foreign.status === "rejected" ? foreign.reason : undefined;
    if (failure) {
        // Show how far each guest got before saying what failed.
        console.log(formatUpReport(report));
        throw failure;
    }
    // A new server's host key is known once the engine made it: its SSHFP record, as the program
    // publishes it with the server (unchanged when the server was not replaced).
    const sshfp = await publish();
    if (sshfp !== "unchanged") log(`dns: ${sshfp} (the server's SSHFP record)`);
    return report;
}

export interface LabDeployment {
    readonly dns: Awaited<ReturnType<typeof ensureDns>>;
    readonly dkim: DkimSigningPlan;
    readonly steps: Step[];
}

/**
 * What `pulumi up` does before the server steps, the lab way: publish the records (lab DNS), decide
 * the DKIM signer from how long each selector's records have been served (the same
 * planDkimSigning that reads Cloudflare's timestamps in Pulumi), and render the mail server's steps.
 */
export async function labDeployment(model: Model, secrets: Readonly<Record<string, string>>): Promise<LabDeployment> {
    const dns = await ensureDns({ model, dkimPublicKeys: dkimPublicKeys(model, secrets), tlsa: tlsaData(model, secrets) });
    const dkim = labDkimSigning(model);
    return { dns, dkim, steps: renderServerSteps(model, { dkimSigner: dkim.selector }) };
}

/** Who signs now in the lab: planDkimSigning over the times the lab DNS started serving each record. */
export function labDkimSigning(model: Model): DkimSigningPlan {
    return planDkimSigning(model, selectorPublishedAt(model, labPublishedAt("TXT")), new Date());
}

/**
 * The lab's names and addresses are fixed, so only one checkout's lab can run on a machine. Processes
 * in the lab namespace that this checkout did not start belong to another checkout (e.g. a fresh
 * clone under test): say so instead of failing later on a busy port.
 */
function refuseOtherCheckoutsLab(): void {
    const ownerFile = join(PATHS.run, "owner");
    const owner = existsSync(ownerFile) ? readFileSync(ownerFile, "utf8").trim() : STATE_DIR;
    const running = knownDaemons().filter((d) => daemonPid(d) !== undefined);
    const ours = new Set(running.map(daemonPid));
    const strangers = netnsPids().filter((p) => !ours.has(p) && !ours.has(parentPid(p) ?? -1));
    if ((owner !== STATE_DIR && running.length) || strangers.length) {
        const what = [...running.map((d) => `${d} (pid ${daemonPid(d)})`), ...strangers.map((p) => `${p} ${quick("ps", ["-o", "args=", "-p", String(p)]).trim()}`)];
        throw new Error(`the lab is running from another checkout (${owner}):\n  ${what.join("\n  ")}\nrun \`npm run lab:destroy\` there first`);
    }
    mkdirSync(PATHS.run, { recursive: true });
    writeFileSync(ownerFile, `${STATE_DIR}\n`);
}

export function formatUpReport(r: UpReport): string {
    const mail = r.engine ? formatEngineRun(`mail server (${LAB.mail.fqdn}), pulumi up of index.ts through the engine harness:`, r.engine) : `mail server (${LAB.mail.fqdn}): the program did not run`;
    return [formatApplyTable(`foreign MTA (${LAB.foreign.fqdn}):`, r.foreign), mail].join("\n");
}

/** True when the lab looks up: namespace, DNS and both guests running. */
export function labLooksUp(): boolean {
    return networkExists() && daemonPid(KNOT_DAEMON) !== undefined && GUESTS.every(guestRunning);
}

export interface DestroyReport {
    readonly stopped: string[];
    readonly removed: string[];
    readonly leftovers: string[];
}

/**
 * Stops everything the lab started and removes namespace, bridge and guests. Keeps the cached
 * rootfs, apt cache, data volume, keys and secrets unless `all`.
 */
export async function labDestroy(opts: { all: boolean }, log: Log): Promise<DestroyReport> {
    const stopped: string[] = [];
    const removed: string[] = [];
    await Promise.all(
        GUESTS.map(async (g) => {
            if (await stopGuest(g)) stopped.push(guestDaemon(g));
        }),
    );
    if (networkExists()) for (const pid of await removeOrphanContainers()) stopped.push(`orphaned container (init pid ${pid})`);
    for (const d of [PEBBLE_DAEMON, KNOT_DAEMON, ...APT_PROXY_DAEMONS]) if (await stopDaemon(d)) stopped.push(d);
    // Anything else the lab started and tracked (e.g. from an older version of this code).
    for (const d of knownDaemons()) if (await stopDaemon(d)) stopped.push(d);
    // Whatever still runs inside the lab namespace was started by the lab: end it by pid, giving
    // guests (nspawn powers them off on SIGTERM) the same grace as above.
    const strays = netnsPids().filter((p) => p !== process.pid);
    const alive = () => strays.filter(isAlive);
    for (const [signal, graceMs] of [["SIGTERM", 30_000], ["SIGKILL", 5_000]] as const) {
        const pids = alive();
        if (!pids.length) break;
        for (const pid of pids) {
            try {
                process.kill(pid, signal);
                stopped.push(`pid ${pid} (${signal})`);
            } catch {
                /* already gone */
            }
        }
        await waitFor("stray lab processes to exit", () => alive().length === 0, { tries: graceMs / 200, intervalMs: 200, timeoutMs: graceMs }).catch(() => undefined);
    }
    if (await destroyNetwork()) removed.push(`network namespace ${LAB.netns} (bridge ${LAB.bridge})`);
    for (const g of GUESTS) if (removeGuest(g)) removed.push(`guest ${g.name}`);
    rmSync(PATHS.run, { recursive: true, force: true });
    if (opts.all && existsSync(STATE_DIR)) {
        rmSync(STATE_DIR, { recursive: true, force: true });
        removed.push(`${STATE_DIR} (rootfs cache, apt cache, data volume, keys, secrets)`);
    }
    const leftovers = checkLeftovers();
    for (const s of stopped) log(`stopped ${s}`);
    for (const r of removed) log(`removed ${r}`);
    return { stopped, removed, leftovers };
}

/** What would show that the lab is still around: namespace, bridge, mounts, processes. */
export function checkLeftovers(): string[] {
    const out: string[] = [];
    if (quick("ip", ["netns", "list"]).split("\n").some((l) => l.split(" ")[0] === LAB.netns)) out.push(`ip netns: ${LAB.netns}`);
    if (quick("ip", ["-o", "link", "show"]).includes(` ${LAB.bridge}:`)) out.push(`ip link: ${LAB.bridge}`);
    const mounts = quick("findmnt", ["-rn", "-o", "TARGET"])
        .split("\n")
        .filter((t) => t.startsWith(STATE_DIR) || t === `/run/netns/${LAB.netns}`);
    for (const m of mounts) out.push(`mount: ${m}`);
    const procs = quick("ps", ["-eo", "pid=,args="])
        .split("\n")
        .filter((l) => /systemd-nspawn .*--machine=ispmail-|knotd -c .*\.lab|pebble -config .*\.lab|apt-cacher-ng -c .*\.lab|socat .*apt-proxy\.sock/.test(l));
    for (const p of procs) out.push(`process: ${p.trim()}`);
    return out;
}
