/**
 * The pure parts of the memory and latency benchmarks (bench/pss.ts, bench/stats.ts percentile):
 * reading the guest's PSS samples, adding them up per systemd unit and daemon, peaks, and the
 * nearest-rank percentile. The sampler's shell command runs for real over a cgroup tree made of
 * plain files, with this very process in it.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { daemonOf, parseSamples, peaks, pssByDaemon, pssByUnit, sampleCommand, topOf, totalPss, unitOf } from "../../bench/pss";
import { percentile } from "../../bench/stats";

const TEXT = [
    "@ 1764400000.25",
    "init.scope 1 9000",
    "system.slice/dovecot.service 120 4000",
    "system.slice/dovecot.service 121 2500",
    "system.slice/system-postgresql.slice/postgresql@17-main.service 300 30000",
    "system.slice/system-postgresql.slice/postgresql@17-main.service 301 -1",
    "system.slice/postfix@-.service 400 3000",
    "system.slice/rspamd.service 500 60000",
    "system.slice/valkey-server.service 510 5000",
    "system.slice/ispmail-bench-memory.service 600 1500",
    "user.slice/user-0.slice/session-4.scope 700 2000",
    "system.slice/apache2.service/sub 800 7000",
    "@ 1764400000.75",
    "init.scope 1 9100",
    "system.slice/dovecot.service 120 4000",
    "system.slice/system-postgresql.slice/postgresql@17-main.service 300 35000",
    "system.slice/rspamd.service 500 50000",
    "",
].join("\n");

const bench = (cg: string) => topOf(cg) === "user.slice" || unitOf(cg) === "ispmail-bench-memory.service";

describe("bench: PSS samples", () => {
    test("bench: samples parse into processes per sample; an exited process (-1) is left out", () => {
        const s = parseSamples(TEXT);
        assert.equal(s.length, 2);
        assert.equal(s[0].at, 1764400000.25);
        assert.equal(s[0].processes.length, 10);
        assert.deepEqual(s[1].processes[2], { cgroup: "system.slice/system-postgresql.slice/postgresql@17-main.service", pid: 300, pssKiB: 35000 });
    });

    test("bench: a process listed twice in one sample (moved between cgroups while read) counts once", () => {
        const [sample] = parseSamples("@ 1\nsystem.slice/a.service 5 100\nsystem.slice/b.service 5 100\nsystem.slice/b.service 6 50\n");
        assert.deepEqual(sample.processes.map((p) => p.pid), [5, 6]);
        assert.equal(totalPss(sample), 150);
    });

    test("bench: a malformed line is an error, not memory quietly lost", () => {
        assert.throws(() => parseSamples("@ 1\nsystem.slice/x.service 12"), /line 2/);
        assert.throws(() => parseSamples("system.slice/x.service 12 5"), /before the first sample/);
        assert.throws(() => parseSamples("@ soon"), /bad sample time/);
    });

    test("bench: a cgroup belongs to its deepest service or scope; slices and the root otherwise", () => {
        assert.equal(unitOf("system.slice/system-postgresql.slice/postgresql@17-main.service"), "postgresql@17-main.service");
        assert.equal(unitOf("system.slice/apache2.service/sub"), "apache2.service");
        assert.equal(unitOf("user.slice/user-0.slice/session-4.scope"), "session-4.scope");
        assert.equal(unitOf("system.slice"), "system.slice");
        assert.equal(unitOf("/"), "/");
        assert.equal(topOf("user.slice/user-0.slice/session-4.scope"), "user.slice");
    });

    test("bench: PSS adds up per unit (sub-cgroups included) and per daemon, without the excluded cgroups", () => {
        const [first] = parseSamples(TEXT);
        const units = pssByUnit(first, bench);
        assert.deepEqual(
            units.map((u) => [u.unit, u.pssKiB, u.processes]),
            [
                ["rspamd.service", 60000, 1],
                ["postgresql@17-main.service", 30000, 1],
                ["init.scope", 9000, 1],
                ["apache2.service", 7000, 1],
                ["dovecot.service", 6500, 2],
                ["valkey-server.service", 5000, 1],
                ["postfix@-.service", 3000, 1],
            ],
        );
        assert.equal(totalPss(first, bench), 120500);
        assert.equal(totalPss(first), 124000);
        const daemons = pssByDaemon(units);
        assert.deepEqual(daemons.slice(0, 2), [
            { daemon: "Rspamd", mib: 58.6, processes: 1 },
            { daemon: "PostgreSQL", mib: 29.3, processes: 1 },
        ]);
        assert.equal(daemonOf("php8.4-fpm.service"), "PHP-FPM");
        assert.equal(daemonOf("postfix.service"), "Postfix");
        assert.equal(daemonOf("systemd-journald.service"), "systemd-journald.service");
    });

    test("bench: the peak total is the highest sample's total, each unit's peak its own highest", () => {
        const p = peaks(parseSamples(TEXT), bench);
        assert.equal(p.peakTotalKiB, 120500);
        assert.equal(p.peakAt, 1764400000.25);
        const of = (u: string) => p.perUnit.find((x) => x.unit === u)?.pssKiB;
        assert.equal(of("postgresql@17-main.service"), 35000);
        assert.equal(of("rspamd.service"), 60000);
        assert.equal(of("init.scope"), 9100);
    });

    test("bench: the sampler's command reads every cgroup.procs below the root and each process's smaps_rollup", () => {
        // A cgroup tree of plain files (this machine may have no cgroup v2): this process in a
        // nested service, a pid that does not exist, and an empty root.
        const root = mkdtempSync(join(tmpdir(), "ispmail-cgroup-"));
        try {
            const cg = join(root, "system.slice", "system-x.slice", "x@1.service");
            mkdirSync(cg, { recursive: true });
            writeFileSync(join(root, "cgroup.procs"), "");
            writeFileSync(join(cg, "cgroup.procs"), `${process.pid}\n999999999\n`);
            const r = spawnSync("bash", ["-c", sampleCommand(root)], { encoding: "utf8" });
            assert.equal(r.status, 0, r.stderr);
            const [sample, ...more] = parseSamples(r.stdout);
            assert.equal(more.length, 0);
            assert.ok(Math.abs(sample.at - Date.now() / 1000) < 60, `sample time ${sample.at}`);
            assert.equal(sample.processes.length, 1, r.stdout);
            const [me] = sample.processes;
            assert.equal(me.cgroup, "system.slice/system-x.slice/x@1.service");
            assert.equal(me.pid, process.pid);
            assert.ok(me.pssKiB > 1024, `PSS of a node process: ${me.pssKiB} KiB`);
        } finally {
            rmSync(root, { recursive: true, force: true });
        }
    });
});

describe("bench: percentiles", () => {
    test("bench: nearest rank: p50 and p99 of 1..1000 are the 500th and 990th values", () => {
        const xs = Array.from({ length: 1000 }, (_, i) => 1000 - i); // unsorted on purpose
        assert.equal(percentile(xs, 50), 500);
        assert.equal(percentile(xs, 99), 990);
        assert.equal(percentile(xs, 100), 1000);
    });

    test("bench: a percentile is always one of the samples; none is an error", () => {
        assert.equal(percentile([0.3], 99), 0.3);
        assert.equal(percentile([1, 2, 3], 50), 2);
        assert.equal(percentile([1, 2], 50), 1);
        assert.throws(() => percentile([], 50), /no samples/);
        assert.throws(() => percentile([1], 0), /not in/);
    });
});
