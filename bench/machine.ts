/**
 * The machine a benchmark ran on, recorded in every result: numbers from a 2-core shared VM and
 * from a laptop are not comparable, and the reader must be able to tell which is which.
 */
import { cpus, release, totalmem } from "node:os";
import { readFileSync } from "node:fs";

export interface MachineInfo {
    readonly nproc: number;
    readonly cpuModel: string;
    readonly memoryGiB: number;
    readonly kernel: string;
    readonly os: string;
    readonly node: string;
}

function osName(): string {
    try {
        return /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync("/etc/os-release", "utf8"))?.[1] ?? "unknown";
    } catch {
        return "unknown";
    }
}

export function machineInfo(): MachineInfo {
    const list = cpus();
    return {
        nproc: list.length,
        cpuModel: list[0]?.model.trim() ?? "unknown",
        memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
        kernel: release(),
        os: osName(),
        node: process.version,
    };
}

export function describeMachine(m: MachineInfo): string {
    return `${m.nproc} × ${m.cpuModel}, ${m.memoryGiB} GiB, Linux ${m.kernel}, ${m.os}, Node ${m.node}`;
}
