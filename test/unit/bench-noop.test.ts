/**
 * The no-op benchmark's CPU accounting (bench/noop.ts): where a schedule's CPU went, split into the
 * client side (this process and the children it reaped, the ssh clients in the benchmark) and the
 * rest of the machine. Checked with a real child that burns CPU.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { describe, test } from "node:test";
import { clientTicks, machineTicks, measuredCpu } from "../../bench/noop";

/** A child process that spins for about `ms` of CPU time, waited for (so its CPU counts as reaped). */
function burnInChild(ms: number): Promise<void> {
    const script = `const end = process.cpuUsage().user + ${ms * 1000}; while (process.cpuUsage().user < end) {}`;
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, ["-e", script], { stdio: "ignore" });
        child.on("error", reject);
        child.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`child exited ${code}`))));
    });
}

describe("no-op benchmark CPU accounting", () => {
    test("the machine's busy ticks grow and never exceed its total", () => {
        const a = machineTicks();
        for (let i = 0, x = 0; i < 2e7; i++) x += i; // some CPU in this process
        const b = machineTicks();
        assert.ok(b.total >= a.total && b.busy >= a.busy);
        assert.ok(b.busy - a.busy <= b.total - a.total);
    });

    test("a reaped child's CPU counts on the client side and in the machine's", async () => {
        const before = clientTicks();
        const { cpu } = await measuredCpu(() => burnInChild(400));
        // 400 ms of CPU in the child is 40 ticks; allow for tick granularity.
        assert.ok(clientTicks() - before >= 30, `client ticks grew by ${clientTicks() - before}`);
        assert.ok(cpu.clientCoreSeconds >= 0.3, `client side ${cpu.clientCoreSeconds} core-s`);
        assert.ok(cpu.coreSeconds >= cpu.clientCoreSeconds - 0.05, `machine ${cpu.coreSeconds} core-s < client ${cpu.clientCoreSeconds}`);
        assert.ok(cpu.busyCores > 0);
    });
});
