/**
 * Helpers for the mail-core unit tests that check rendered config files with Debian 13's own tools
 * (postconf, doveconf, sievec, rspamadm) inside the team's trixie chroot. Each check works in a
 * fresh directory under the chroot's /tmp and removes it afterwards; the chroot is never changed.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { needsRoot } from "../harness/needs";
import { TRIXIE_CHROOT } from "../harness/trixie-chroot";
import type { Step } from "../../components/steps";

export const CHROOT = TRIXIE_CHROOT;

/** Why a test that runs `tool` (a path inside the chroot) must be skipped here (undefined: it can run). */
export function chrootSkipReason(tool: string): string | undefined {
    const root = needsRoot(`chroot into the trixie tools chroot to run ${tool}`);
    if (root) return root;
    if (!existsSync(join(CHROOT, tool))) return `no trixie chroot with ${tool} at ${CHROOT} (\`npm test\` builds it as root where mmdebstrap is installed: test/harness/build-trixie-chroot.sh)`;
    return undefined;
}

export interface ChrootRun {
    readonly code: number;
    readonly stdout: string;
    readonly stderr: string;
}

/** Runs a program inside the chroot (no shell), with a time limit. */
export function inChroot(args: readonly string[], timeoutMs = 60_000): ChrootRun {
    const r = spawnSync("chroot", [CHROOT, ...args], { encoding: "utf8", timeout: timeoutMs });
    if (r.error) throw r.error;
    return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Writes a step's files below a fresh scratch directory in the chroot (path `/etc/x` becomes
 * `<scratch>/etc/x`) and hands its path as seen inside the chroot to `body`.
 */
export function withStepFiles<T>(steps: readonly Step[], body: (insideRoot: string, hostRoot: string) => T): T {
    const host = mkdtempSync(join(CHROOT, "tmp", "mailcore-test-"));
    try {
        for (const step of steps) {
            for (const f of step.files) {
                const target = join(host, f.path);
                mkdirSync(dirname(target), { recursive: true });
                writeFileSync(target, f.content);
            }
        }
        return body(host.slice(CHROOT.length), host);
    } finally {
        rmSync(host, { recursive: true, force: true });
    }
}
