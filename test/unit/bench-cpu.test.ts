/**
 * The benchmarks' CPU accounting (bench/cpu.ts; no-op and throughput): the machine's busy ticks
 * from /proc/stat's cpu line, and the client side (this process and the children it reaped, the
 * ssh clients in the no-op benchmark). Checked with a real child that burns CPU.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { describe, test } from "node:test";
import { busyCoresBetween, clientTicks, cpuLineTicks, machineTicks, measuredCpu } from "../../bench/cpu";

/** A child process that spins for about `ms` of CPU time, waited for (so its CPU counts as reaped). */
function burnInChild(ms: number): Promise<void> {
    const script = `const end = process.cpuUsage().user + ${ms * 1000}; while (process.cpuUsage().user < end) {}`;
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, ["-e", script], { stdio: "ignore" });
        child.on("error", reject);
        child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`child exited ${code}`))));
    });
}

describe("benchmark CPU accounting", () => {
    test("the cpu line: idle and iowait are not busy, guest time is not counted twice", () => {
        // user nice system idle iowait irq softirq steal guest guest_nice
        const ticks = cpuLineTicks("cpu  100 10 50 800 20 5 15 0 40 0");
        assert.deepEqual(ticks, { busy: 180, total: 1000 });
        assert.equal(busyCoresBetween({ busy: 0, total: 0 }, { busy: 500, total: 1000 }, 2), 1);
        assert.throws(() => cpuLineTicks("cpu0 1 2 3 4"), /not the cpu line/);
    });

    test("the machine's busy ticks grow and never exceed its total", () => {
        const a = machineTicks();
        for (let i = 0, x = 0; i < 2e7; i++) x += i; // some CPU in this process
        const b = machineTicks();
        assert.ok(b.total >= a.total && b.busy >= a.busy);
        assert.ok(b.busy - a.busy <= b.total - a.total);
    });

    test("a reaped child's CPU counts on the client side and in the machine's", async () => {
        const before = clientTicks();
        const { cpu, seconds } = await measuredCpu(() => burnInChild(400));
        assert.ok(seconds >= 0.3, `wall ${seconds} s for 400 ms of CPU`);
        // 400 ms of CPU in the child is 40 ticks; allow for tick granularity.
        assert.ok(clientTicks() - before >= 30, `client ticks grew by ${clientTicks() - before}`);
        assert.ok(cpu.clientCoreSeconds >= 0.3, `client side ${cpu.clientCoreSeconds} core-s`);
        assert.ok(cpu.coreSeconds >= cpu.clientCoreSeconds - 0.05, `machine ${cpu.coreSeconds} core-s < client ${cpu.clientCoreSeconds}`);
        assert.ok(cpu.busyCores > 0);
    });
});
