/**
 * The cached guest root file system: built once by lab/build-rootfs.sh (mmdebstrap) into
 * .lab/rootfs/<hash>, where the hash covers the build script (which holds the package list) and the
 * mirror. A changed script builds a new one; older ones are removed.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { PATHS } from "./lab";
import { runOk } from "./proc";

/** The mirror the host's apt uses; the apt proxy's Debian backend names the same one. */
export const DEBIAN_MIRROR = "http://deb.debian.org/debian";

export function rootfsHash(): string {
    return createHash("sha256").update(readFileSync(PATHS.rootfsScript)).update(`\0${DEBIAN_MIRROR}`).digest("hex").slice(0, 16);
}

export function rootfsDir(): string {
    return join(PATHS.rootfsCache, rootfsHash());
}

/** Returns the cached rootfs directory, building it first when missing. */
export async function ensureRootfs(log: (line: string) => void): Promise<{ dir: string; builtSeconds?: number }> {
    const dir = rootfsDir();
    if (existsSync(join(dir, "etc", "os-release"))) return { dir };
    mkdirSync(PATHS.rootfsCache, { recursive: true });
    const tmp = `${dir}.building`;
    rmSync(tmp, { recursive: true, force: true });
    log(`building the Debian 13 rootfs with mmdebstrap (${rootfsHash()})...`);
    const start = Date.now();
    await runOk("bash", [PATHS.rootfsScript, tmp, DEBIAN_MIRROR], { timeoutMs: 20 * 60_000 });
    renameSync(tmp, dir);
    for (const old of readdirSync(PATHS.rootfsCache)) {
        if (join(PATHS.rootfsCache, old) !== dir) rmSync(join(PATHS.rootfsCache, old), { recursive: true, force: true });
    }
    return { dir, builtSeconds: (Date.now() - start) / 1000 };
}
