/**
 * Benchmark 1: a fresh converge of the whole server against the floor. Both run on a NEW guest of
 * the mail guest's kind (a fresh copy of the cached rootfs, booted as the lab boots its mail guest)
 * through the same apt proxy, whose cache the lab has already filled (warm for both):
 *   - converge: every step of renderServerSteps, applied as `npm run lab` applies them;
 *   - floor: only installing the same Debian packages (with the same debconf answers), one apt run.
 * Target: converge / floor <= 1.5.
 *
 * The guests take the lab mail guest's slot (198.51.100.10, mx1.example.org) one after the other:
 * ACME validation, DNS and PTR all point there, and the lab has only this one. The lab's own mail
 * guest is stopped (not changed) meanwhile and booted again afterwards, with every step re-applied
 * to prove it is as it was. A journal (.lab/bench/lab-slot.json) marks the slot as lent, so an
 * interrupted run puts the lab back first thing next time.
 */
import { existsSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Step } from "../components/steps";
import { applySteps, type AppliedStep } from "../lab/apply";
import { bootGuest, createGuest, guestExists, guestRunning, removeGuest, removeOrphanContainers, stopGuest, type GuestPlace } from "../lab/guests";
import { guestRoot, LAB, PATHS, STATE_DIR, type GuestPlan } from "../lab/lab";
import { networkExists } from "../lab/network";
import { ensureRootfs } from "../lab/rootfs";
import { pinHostKey, sshExec } from "../lab/ssh";
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

/** The floor's apt run: the prelude's own rule for refreshing package lists, then one install. */
function floorScript(packages: readonly string[], debconf: readonly string[]): string {
    return [
        "set -euo pipefail",
        "export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8",
        debconf.length ? `debconf-set-selections <<'EOF'\n${debconf.join("\n")}\nEOF` : "",
        `if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -n1)" ]; then apt-get update -q >&2; fi`,
        `apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold ${packages.join(" ")} >&2`,
    ].join("\n");
}

export interface ConvergeRun {
    readonly convergeSeconds: number;
    readonly floorSeconds: number;
    readonly bootSeconds: { converge: number; floor: number };
    /** The immediate second converge on the fresh guest (issue 9, benchmark 2, on a new machine). */
    readonly secondApply: { seconds: number; filesWritten: number; restarts: number; packageOperations: number };
    readonly stepSeconds: Record<string, number>;
}

export async function benchConverge(opts: { runs: number; log: Log }): Promise<BenchOutcome> {
    const { log } = opts;
    const { steps, secrets } = labServer();
    const stepPackages = [...new Set(steps.flatMap((s: Step) => s.packages ?? []))].sort();
    const debconf = steps.flatMap((s) => s.debconf ?? []);
    const rootfs = (await ensureRootfs(log)).dir;
    const deployKey = readFileSync(`${PATHS.deployKey}.pub`, "utf8").trim();
    const runs: ConvergeRun[] = [];
    let floorPackages: string[] = stepPackages;
    let labRestore: AppliedStep[] | undefined;
    let failure: unknown;
    await takeMailSlot(log);
    try {
        for (let i = 1; i <= opts.runs; i++) {
            // Converge first in each pair: it tells which packages the scripts install beyond the
            // steps' `packages` lists (postgresql, timesyncd), and the floor installs those too.
            const bootC = await freshBenchGuest(rootfs, deployKey);
            let start = process.hrtime.bigint();
            const applied = await applySteps(BENCH_GUEST, steps, secrets, { onLog: (l) => log(`converge ${i}: ${l}`) });
            const convergeSeconds = secondsSince(start);
            floorPackages = [...new Set([...stepPackages, ...installedPackages(applied)])].sort();
            start = process.hrtime.bigint();
            const second = tally(await applySteps(BENCH_GUEST, steps, secrets));
            const secondSeconds = secondsSince(start);
            log(`converge ${i}: ${convergeSeconds.toFixed(1)} s; second apply ${secondSeconds.toFixed(1)} s (${second.filesWritten} files, ${second.restarts} restarts, ${second.packageOperations} package operations)`);

            const bootF = await freshBenchGuest(rootfs, deployKey);
            start = process.hrtime.bigint();
            const r = await sshExec(BENCH_GUEST, "bash -s", { input: floorScript(floorPackages, debconf), timeoutMs: 30 * 60_000 });
            const floorSeconds = secondsSince(start);
            if (r.code !== 0) throw new Error(`floor install failed (exit ${r.code}):\n${r.stderr.slice(-3000)}`);
            log(`floor ${i}: ${floorSeconds.toFixed(1)} s for ${floorPackages.length} packages`);
            runs.push({
                convergeSeconds,
                floorSeconds,
                bootSeconds: { converge: bootC, floor: bootF },
                secondApply: { seconds: secondSeconds, filesWritten: second.filesWritten, restarts: second.restarts, packageOperations: second.packageOperations },
                stepSeconds: Object.fromEntries(applied.map((s) => [s.name, Math.round(s.seconds * 10) / 10])),
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
    const floor = summarize(runs.map((r) => r.floorSeconds));
    const ratios = summarize(runs.map((r) => r.convergeSeconds / r.floorSeconds));
    const met = ratios.median <= 1.5;
    const slowest = Object.entries(runs[runs.length - 1].stepSeconds).sort((a, b) => b[1] - a[1]).slice(0, 4);
    const notes = [
        `Each run: a fresh copy of the cached rootfs booted as the mail guest (boot not counted), converge first, then a second fresh guest for the floor; ${opts.runs} pairs. apt proxy cache warm for both (the lab guest had fetched every package before); package lists refreshed by the same rule in both (apt-get update when older than 60 min).`,
        `Floor = one \`apt-get install --no-install-recommends\` of ${floorPackages.length} packages: the union of the steps' \`packages\` and what the step scripts install themselves (postgresql-17, systemd-timesyncd, ...), with the steps' debconf answers preseeded.`,
        `Slowest steps of the last converge: ${slowest.map(([n, s]) => `${n} ${s} s`).join(", ")}.`,
        `The second apply right after each fresh converge: ${runs.map((r) => `${r.secondApply.filesWritten}/${r.secondApply.restarts}/${r.secondApply.packageOperations} in ${r.secondApply.seconds.toFixed(1)} s`).join("; ")} (files/restarts/package operations).`,
        restored
            ? `The lab's mail guest was stopped meanwhile and booted again; re-applying every step to it changed ${restored.changedSteps.length ? restored.changedSteps.join(", ") : "nothing"}.`
            : "The lab's mail guest was not restored (see the log).",
    ];
    if (!met) {
        notes.push(
            `Ratio ${ratios.median.toFixed(2)} > 1.5: the converge pays ${(converge.median - floor.median).toFixed(0)} s over the floor. What would close it: install every step's packages in one apt run at the start (base), so dpkg triggers (man-db, systemd reloads, ldconfig) run once instead of per step, and let the later steps find them installed.`,
        );
    }
    return {
        name: "converge",
        title: "Fresh converge of the whole server vs installing its packages alone",
        target: "converge / floor <= 1.5",
        met,
        headline: `converge ${converge.min.toFixed(1)} / ${converge.median.toFixed(1)} s, floor ${floor.min.toFixed(1)} / ${floor.median.toFixed(1)} s: ratio ${ratios.min.toFixed(2)} / ${ratios.median.toFixed(2)}`,
        notes,
        data: { converge, floor, ratio: ratios, runs, floorPackages, stepPackages, debconf, labRestore: restored },
    };
}
