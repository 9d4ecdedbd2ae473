/**
 * CPU accounting the benchmarks share: the machine's busy time from /proc/stat (the lab's guests
 * share this machine's kernel and its cores, so the harness, the SSH clients and every guest are
 * in it), and the client side's own share (this process and the children it reaped).
 */
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { timed } from "./stats";

/** /proc's clock ticks (USER_HZ: 100 on every Linux architecture this runs on). */
export const TICKS_PER_SECOND = 100;

/** Busy and total ticks of the machine, from the `cpu` line of /proc/stat (read here or on a guest). */
export interface MachineTicks {
    readonly busy: number;
    readonly total: number;
}

export function cpuLineTicks(line: string): MachineTicks {
    const fields = line.trim().split(/\s+/);
    if (fields[0] !== "cpu") throw new Error(`not the cpu line of /proc/stat: ${line}`);
    // user nice system idle iowait irq softirq steal; guest and guest_nice (fields 9-10) are
    // already counted in user and nice.
    const v = fields.slice(1, 9).map(Number);
    const total = v.reduce((a, b) => a + b, 0);
    return { busy: total - v[3] - v[4], total }; // idle and iowait are not busy
}

export function machineTicks(): MachineTicks {
    return cpuLineTicks(readFileSync("/proc/stat", "utf8").split("\n")[0]);
}

/** How many of `cores` cores were busy on average between two readings (2 = both saturated). */
export function busyCoresBetween(before: MachineTicks, after: MachineTicks, cores: number): number {
    return ((after.busy - before.busy) / Math.max(1, after.total - before.total)) * cores;
}

/**
 * CPU ticks of the client side: this process (the harness standing in for the engine) and the
 * children it has reaped, which are the ssh clients (nsenter execs ssh in place). On a real
 * `pulumi up` these run on the operator's machine, not on the server.
 */
export function clientTicks(): number {
    const stat = readFileSync("/proc/self/stat", "utf8");
    // Fields after the command name; utime, stime, cutime, cstime are fields 14-17 of the line.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields.slice(11, 15).reduce((sum, f) => sum + Number(f), 0);
}

/** Where the CPU of one measured stretch went: core-seconds of the machine, and of the client side. */
export interface CpuSplit {
    readonly busyCores: number;
    readonly coreSeconds: number;
    readonly clientCoreSeconds: number;
}

/** Runs `fn` and returns its result with its wall time and where the CPU went meanwhile. */
export async function measuredCpu<T>(fn: () => Promise<T>): Promise<{ value: T; seconds: number; cpu: CpuSplit }> {
    const machine0 = machineTicks();
    const client0 = clientTicks();
    const { value, seconds } = await timed(fn);
    const client1 = clientTicks();
    const machine1 = machineTicks();
    return {
        value,
        seconds,
        cpu: {
            busyCores: busyCoresBetween(machine0, machine1, cpus().length),
            coreSeconds: (machine1.busy - machine0.busy) / TICKS_PER_SECOND,
            clientCoreSeconds: (client1 - client0) / TICKS_PER_SECOND,
        },
    };
}
