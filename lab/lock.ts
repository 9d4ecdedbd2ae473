/**
 * One lab operation at a time on this machine: an exclusive flock(2) on /run/ispmail-lab.lock, the
 * same lock that `flock /run/ispmail-lab.lock ...` takes for manual container work.
 *
 * Node has no flock(), so a small `flock` child holds the lock for us and releases it when its
 * stdin closes — which also happens when we die, so a crashed run never leaves the lock held. The
 * daemons the lab starts are spawned by node, not by that child, so none of them inherits the lock.
 */
import { spawn } from "node:child_process";
import { LAB } from "./lab";

/** Set for the children of a lock holder (the e2e test run), so they do not wait for themselves. */
export const LOCK_HELD_ENV = "ISPMAIL_LAB_LOCK_HELD";

export interface LabLock {
    release(): void;
}

export async function acquireLabLock(waitSeconds = 1800): Promise<LabLock> {
    if (process.env[LOCK_HELD_ENV] === "1") return { release: () => undefined };
    const holder = spawn("flock", ["--exclusive", "--wait", String(waitSeconds), LAB.lockFile, "-c", "echo locked; exec cat >/dev/null"], {
        stdio: ["pipe", "pipe", "inherit"],
    });
    const notice = setTimeout(() => console.error(`[lab] waiting for ${LAB.lockFile} (another lab operation runs)...`), 2000);
    try {
        await new Promise<void>((resolve, reject) => {
            holder.stdout.once("data", () => resolve());
            holder.once("error", reject);
            holder.once("exit", (code) => reject(new Error(`could not lock ${LAB.lockFile} within ${waitSeconds} s (flock exit ${code})`)));
        });
    } finally {
        clearTimeout(notice);
    }
    holder.removeAllListeners("exit");
    process.env[LOCK_HELD_ENV] = "1";
    return {
        release() {
            delete process.env[LOCK_HELD_ENV];
            holder.stdin.end();
        },
    };
}
