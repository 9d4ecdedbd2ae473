/**
 * Benchmark 1: a fresh converge of the whole server against the floor. Both run on a NEW guest of
 * the mail guest's kind (a fresh copy of the cached rootfs, booted as the lab boots its mail guest)
 * through the same apt proxy, whose cache the lab has already filled (warm for both):
 *   - converge: every step of renderServerSteps (the packages step first: every package in one
 *     apt run), in order over SSH, and under the engine harness;
 *   - floor: the packages step alone (the same packages, debconf answers and install-time files).
 * The converge is measured twice, on two new guests: every step in order over SSH (lab/apply.ts), and
 * index.ts itself under the engine harness as a new stack (steps concurrent as `pulumi up` runs
 * them). Target: converge / floor <= 1.2, both ways.
 *
 * The guests take the lab mail guest's slot (198.51.100.10, mx1.example.org) one after the other:
 * ACME validation, DNS and PTR all point there, and the lab has only this one. The lab's own mail
 * guest is stopped (not changed) meanwhile and booted again afterwards, with every step re-applied
 * to prove it is as it was. A journal (.lab/bench/lab-slot.json) marks the slot as lent, so an
 * interrupted run puts the lab back first thing next time.
 */
import { existsSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { PACKAGES_STEP } from "../components/services";
import { applySteps, type AppliedStep } from "../lab/apply";
import { bootGuest, createGuest, guestExists, guestRunning, removeGuest, removeOrphanContainers, stopGuest, type GuestPlace } from "../lab/guests";
import { guestRoot, LAB, PATHS, STATE_DIR, type GuestPlan } from "../lab/lab";
import { networkExists } from "../lab/network";
import { ensureRootfs } from "../lab/rootfs";
import { emptyState } from "../lab/engine";
import { labEngine } from "../lab/engine-lab";
import { pinHostKey } from "../lab/ssh";
import { quick, stopDaemon, waitFor } from "../lab/proc";
import { applyToMail, flushNeighbours, installedPackages, labServer, tally, type Log } from "./lab-session";
import type { BenchOutcome } from "./report";
import { secondsSince, summarize } from "./stats";

const BENCH_STATE = join(STATE_DIR, "bench");
const JOURNAL = join(BENCH_STATE, "lab-slot.json");

/** A new guest of the mail guest's kind, in the mail guest's slot (same addresses and name). */
// Machine name short enough that nspawn's host-side veth is plainly "vb-" + it (15 characters).
const BENCH_GUEST: GuestPlan = { ...LAB.mail, machine: "ispmail-bnch" };

/**
 * Waits until no container holds the slot's address: the veth of a stopped container goes away only
 * once every process of it has ended. A container left behind (its nspawn killed) is ended.
 */
async function slotVacant(machines: readonly string[]): Promise<void> {
    const held = () => {
        const ports = quick("ip", ["-n", LAB.netns, "-o", "link", "show", "master", LAB.bridge]);
        return machines.some((m) => ports.includes(` vb-${m}@`));
    };
    const wait = () => waitFor("the mail slot's veth to go", () => !held(), { tries: 150, intervalMs: 200, timeoutMs: 30_000 });
    try {
        await wait();
    } catch {
        await removeOrphanContainers();
        await wait();
    }
}
const BENCH_PLACE: GuestPlace = { dir: join(BENCH_STATE, "guest"), dataDir: join(BENCH_STATE, "data"), daemon: "bench-guest" };

async function discardBenchGuest(): Promise<void> {
    // A throw-away guest need not shut down cleanly: a short grace, then its init is killed.
    await stopDaemon(BENCH_PLACE.daemon, 5_000);
    await slotVacant([BENCH_GUEST.machine]);
    removeGuest(BENCH_GUEST, BENCH_PLACE);
    rmSync(BENCH_PLACE.dataDir!, { recursive: true, force: true });
}

/** Stops the lab's mail guest; the journal says the slot is lent until {@link giveMailSlotBack}. */
async function takeMailSlot(log: Log): Promise<void> {
    mkdirSync(BENCH_STATE, { recursive: true });
    writeFileSync(JOURNAL, JSON.stringify({ lentAt: new Date().toISOString() }));
    log("converge: stopping the lab's mail guest (its slot is lent to the bench guests)");
    await stopGuest(LAB.mail);
    await slotVacant([LAB.mail.machine, BENCH_GUEST.machine]);
}

/**
 * Puts the lab's mail guest back: bench guest gone, the mail guest's own host key pinned again (a
 * bench guest's replaced it), booted, every step applied.
 */
export async function giveMailSlotBack(log: Log): Promise<AppliedStep[] | undefined> {
    if (!existsSync(JOURNAL)) return undefined;
    await discardBenchGuest();
    if (guestExists(LAB.mail)) pinHostKey(LAB.mail, guestRoot(LAB.mail));
    if (!networkExists() || !guestExists(LAB.mail)) {
        // The lab itself is gone (destroyed meanwhile): `lab up` builds it anew, nothing to boot.
        rmSync(JOURNAL, { force: true });
        return undefined;
    }
    await flushNeighbours();
    if (!guestRunning(LAB.mail)) {
        const seconds = await bootGuest(LAB.mail);
        log(`converge: the lab's mail guest is back (SSH after ${seconds.toFixed(1)} s)`);
    }
    const { steps, secrets } = labServer();
    const applied = await applyToMail(steps, secrets);
    rmSync(JOURNAL, { force: true });
    return applied;
}

async function freshBenchGuest(rootfs: string, deployKey: string): Promise<number> {
    await discardBenchGuest();
    await createGuest(BENCH_GUEST, rootfs, deployKey, BENCH_PLACE);
    await flushNeighbours();
    return bootGuest(BENCH_GUEST, BENCH_PLACE);
}

export interface ConvergeRun {
    /** Every step in order over SSH (lab/apply.ts). */
    readonly convergeSeconds: number;
    /** index.ts under the engine harness, steps concurrent as `pulumi up` runs them: from the machine being ready to the last command done. */
    readonly engineSeconds: number;
    readonly floorSeconds: number;
    readonly bootSeconds: { converge: number; engine: number; floor: number };
    /** The immediate second converge on the fresh guest (issue 9, benchmark 2, on a new machine). */
    readonly secondApply: { seconds: number; filesWritten: number; restarts: number; packageOperations: number };
    /** The same after the engine's converge: every step again, in order. */
    readonly engineSecondApply: { seconds: number; filesWritten: number; restarts: number; packageOperations: number };
    readonly stepSeconds: Record<string, number>;
    /** Per command of the engine's run: start and end in seconds after the machine was ready. */
    readonly engineSteps: Record<string, { start: number; end: number }>;
    /** Packages a step other than the packages step installed (should be none: the one apt run has them all). */
    readonly installedLater: readonly string[];
}

const COMMAND_TYPE = "command:remote:Command";

/** A new stack's `pulumi up` of index.ts on a fresh bench guest (made by the program's hcloud.Server, cloud-init). */
async function engineConverge(i: number, opts: { deployKey: string; secrets: Readonly<Record<string, string>>; rootfs: string; log: Log }): Promise<{ seconds: number; bootSeconds: number; steps: Record<string, { start: number; end: number }> }> {
    await discardBenchGuest();
    await flushNeighbours();
    const run = await labEngine({
        preview: false,
        deployPublicKey: opts.deployKey,
        secrets: opts.secrets,
        rootfs: opts.rootfs,
        state: emptyState(),
        server: { guest: BENCH_GUEST, place: BENCH_PLACE },
        log: (l) => {
            if (/ (done|FAILED) in /.test(l)) opts.log(`engine ${i}: ${l}`);
        },
    });
    if (run.errors.length) throw new Error(`engine converge failed:\n  ${run.errors.join("\n  ")}`);
    const commands = run.plan.filter((e) => e.type === COMMAND_TYPE && e.startedAt !== undefined && e.endedAt !== undefined);
    const ready = commands.find((e) => e.name === "machine-ready");
    const server = run.plan.find((e) => e.type === "hcloud:index/server:Server");
    if (!ready || !server?.startedAt || !server.endedAt) throw new Error("engine converge: no machine-ready command or server in the plan");
    const after = commands.filter((e) => e !== ready);
    const t0 = ready.endedAt!;
    const steps = Object.fromEntries(after.map((e) => [e.name, { start: Math.round((e.startedAt! - t0) / 100) / 10, end: Math.round((e.endedAt! - t0) / 100) / 10 }]));
    return { seconds: (Math.max(...after.map((e) => e.endedAt!)) - t0) / 1000, bootSeconds: (t0 - server.startedAt) / 1000, steps };
}

export async function benchConverge(opts: { runs: number; log: Log }): Promise<BenchOutcome> {
    const { log } = opts;
    const { steps, secrets } = labServer();
    // The floor is the packages step alone: every step's packages in one apt run, with the same
    // debconf answers and install-time files (the packages the converge installs, nothing else).
    const install = steps.find((s) => s.name === PACKAGES_STEP);
    if (!install) throw new Error("the lab's steps have no packages step");
    const floorPackages = [...(install.packages ?? [])];
    const rootfs = (await ensureRootfs(log)).dir;
    const deployKey = readFileSync(`${PATHS.deployKey}.pub`, "utf8").trim();
    const runs: ConvergeRun[] = [];
    let labRestore: AppliedStep[] | undefined;
    let failure: unknown;
    await takeMailSlot(log);
    try {
        for (let i = 1; i <= opts.runs; i++) {
            const bootC = await freshBenchGuest(rootfs, deployKey);
            let start = process.hrtime.bigint();
            const applied = await applySteps(BENCH_GUEST, steps, secrets, { onLog: (l) => log(`converge ${i}: ${l}`) });
            const convergeSeconds = secondsSince(start);
            const installedLater = installedPackages(applied.filter((s) => s.name !== PACKAGES_STEP));
            start = process.hrtime.bigint();
            const second = tally(await applySteps(BENCH_GUEST, steps, secrets));
            const secondSeconds = secondsSince(start);
            log(`converge ${i}: ${convergeSeconds.toFixed(1)} s in order; second apply ${secondSeconds.toFixed(1)} s (${second.filesWritten} files, ${second.restarts} restarts, ${second.packageOperations} package operations)`);

            const engine = await engineConverge(i, { deployKey, secrets, rootfs, log });
            start = process.hrtime.bigint();
            const engineSecond = tally(await applySteps(BENCH_GUEST, steps, secrets));
            const engineSecondSeconds = secondsSince(start);
            log(`engine ${i}: ${engine.seconds.toFixed(1)} s from machine-ready to the last command; every step again in order ${engineSecondSeconds.toFixed(1)} s (${engineSecond.filesWritten}/${engineSecond.restarts}/${engineSecond.packageOperations})`);

            const bootF = await freshBenchGuest(rootfs, deployKey);
            start = process.hrtime.bigint();
            await applySteps(BENCH_GUEST, [install], secrets);
            const floorSeconds = secondsSince(start);
            log(`floor ${i}: ${floorSeconds.toFixed(1)} s for ${floorPackages.length} packages`);
            runs.push({
                convergeSeconds,
                engineSeconds: engine.seconds,
                floorSeconds,
                bootSeconds: { converge: bootC, engine: engine.bootSeconds, floor: bootF },
                secondApply: { seconds: secondSeconds, filesWritten: second.filesWritten, restarts: second.restarts, packageOperations: second.packageOperations },
                engineSecondApply: { seconds: engineSecondSeconds, filesWritten: engineSecond.filesWritten, restarts: engineSecond.restarts, packageOperations: engineSecond.packageOperations },
                stepSeconds: Object.fromEntries(applied.map((s) => [s.name, Math.round(s.seconds * 10) / 10])),
                engineSteps: engine.steps,
                installedLater,
            });
        }
    } catch (e) {
        failure = e;
    }
    try {
        labRestore = await giveMailSlotBack(log);
    } catch (e) {
        if (failure === undefined) failure = e;
        else log(`converge: putting the lab's mail guest back failed too: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (failure !== undefined) throw failure;
    const restored = labRestore ? tally(labRestore) : undefined;
    const converge = summarize(runs.map((r) => r.convergeSeconds));
    const engine = summarize(runs.map((r) => r.engineSeconds));
    const floor = summarize(runs.map((r) => r.floorSeconds));
    const ratios = summarize(runs.map((r) => r.convergeSeconds / r.floorSeconds));
    const engineRatios = summarize(runs.map((r) => r.engineSeconds / r.floorSeconds));
    const TARGET = 1.2;
    const met = ratios.median <= TARGET && engineRatios.median <= TARGET;
    const last = runs[runs.length - 1];
    const slowest = Object.entries(last.stepSeconds).sort((a, b) => b[1] - a[1]).slice(0, 5);
    // The converge's own packages step is the floor's very work on another fresh guest: how much it
    // differs from the floor is the machine's noise, and what follows it is the configuration.
    const inOrderPackagesOf = (r: ConvergeRun) => r.stepSeconds[install.name] ?? NaN;
    const enginePackagesOf = (r: ConvergeRun) => r.engineSteps[install.name] ?? { start: NaN, end: NaN };
    const inOrderPackages = summarize(runs.map((r) => inOrderPackagesOf(r)));
    const enginePackages = summarize(runs.map((r) => enginePackagesOf(r).end - enginePackagesOf(r).start));
    const inOrderConfig = summarize(runs.map((r) => r.convergeSeconds - inOrderPackagesOf(r)));
    const engineConfig = summarize(runs.map((r) => r.engineSeconds - enginePackagesOf(r).end));
    const pair = (r: ConvergeRun["secondApply"]) => `${r.filesWritten}/${r.restarts}/${r.packageOperations} in ${r.seconds.toFixed(1)} s`;
    const notes = [
        `Each run: three fresh copies of the cached rootfs in the mail guest's slot, one after the other (boot not counted): (1) every step in order over SSH (lab/apply.ts, one SSH session per step); (2) index.ts under the engine harness as a new stack (empty state): the program's hcloud.Server becomes the guest through cloud-init, and its commands run concurrently as \`pulumi up\` runs them — timed from the machine-ready command's end to the last command's end; (3) the floor. ${opts.runs} runs. apt proxy cache warm for all (the lab guest had fetched every package before); package lists refreshed by the same rule everywhere (apt-get update when older than 60 min).`,
        `Floor = the packages step alone: one \`apt-get install --no-install-recommends\` of the ${floorPackages.length} packages every step lists (the union; what the step scripts used to install themselves, postgresql-17 and systemd-timesyncd, is declared now), with the steps' debconf answers and postgresql-common's createcluster drop-in in place first. The converge runs the very same step first, then configures.`,
        `Slowest steps of the last in-order converge: ${slowest.map(([n, sec]) => `${n} ${sec} s`).join(", ")}. Engine (last run, seconds after machine-ready, start-end): ${Object.entries(last.engineSteps).sort((a, b) => a[1].start - b[1].start).map(([n, t]) => `${n} ${t.start}-${t.end}`).join(", ")}.`,
        `The packages step inside the converge took ${inOrderPackages.min.toFixed(1)} / ${inOrderPackages.median.toFixed(1)} s in order and ${enginePackages.min.toFixed(1)} / ${enginePackages.median.toFixed(1)} s under the engine, against the floor's ${floor.min.toFixed(1)} / ${floor.median.toFixed(1)} s for the same work on another fresh guest (min / median). The configuration after it: in order ${inOrderConfig.min.toFixed(1)} / ${inOrderConfig.median.toFixed(1)} s, engine ${engineConfig.min.toFixed(1)} / ${engineConfig.median.toFixed(1)} s; with the floor in place of the converge's own packages step the ratio would be ${((floor.median + inOrderConfig.median) / floor.median).toFixed(2)} in order and ${((floor.median + engineConfig.median) / floor.median).toFixed(2)} engine (a diagnostic; the target is judged on the measured totals).`,
        `Packages installed by a step after the packages step: ${[...new Set(runs.flatMap((r) => r.installedLater))].join(", ") || "none"}.`,
        `The second apply right after each converge (files/restarts/package operations): in order ${runs.map((r) => pair(r.secondApply)).join("; ")}; after the engine's ${runs.map((r) => pair(r.engineSecondApply)).join("; ")}.`,
        restored
            ? `The lab's mail guest was stopped meanwhile and booted again; re-applying every step to it changed ${restored.changedSteps.length ? restored.changedSteps.join(", ") : "nothing"}.`
            : "The lab's mail guest was not restored (see the log).",
    ];
    if (!met) {
        notes.push(
            `Ratio in order ${ratios.median.toFixed(2)}, engine ${engineRatios.median.toFixed(2)} (target ${TARGET}): the converge pays ${(converge.median - floor.median).toFixed(0)} s (in order) and ${(engine.median - floor.median).toFixed(0)} s (engine) over the floor, spent in the steps listed above.`,
        );
    }
    return {
        name: "converge",
        title: "Fresh converge of the whole server vs installing its packages alone",
        target: `converge / floor <= ${TARGET}, in order and under the engine harness`,
        met,
        headline: `in order ${converge.min.toFixed(1)} / ${converge.median.toFixed(1)} s, engine ${engine.min.toFixed(1)} / ${engine.median.toFixed(1)} s, floor ${floor.min.toFixed(1)} / ${floor.median.toFixed(1)} s: ratio ${ratios.min.toFixed(2)} / ${ratios.median.toFixed(2)} in order, ${engineRatios.min.toFixed(2)} / ${engineRatios.median.toFixed(2)} engine`,
        notes,
        data: { converge, engine, floor, ratio: ratios, engineRatio: engineRatios, runs, floorPackages, debconf: install.debconf ?? [], labRestore: restored },
    };
}
