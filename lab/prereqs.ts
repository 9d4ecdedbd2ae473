/**
 * The lab host's prerequisites: the Debian packages of lab/host-packages.list. On a fresh Debian
 * machine, as root, `npm run lab` installs the missing ones itself (one apt-get line, printed
 * first); anywhere else it prints that exact command and stops. `npm test` (test/run.mjs) and
 * `.ci/run` use the same list, so there is one place that says what the lab needs.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_DIR } from "./lab";

export interface HostPackage {
    readonly name: string;
    /** A command the package installs (for messages), or undefined. */
    readonly command?: string;
}

export const HOST_PACKAGES_FILE = join(REPO_DIR, "lab", "host-packages.list");

export function hostPackages(text = readFileSync(HOST_PACKAGES_FILE, "utf8")): HostPackage[] {
    return text
        .split("\n")
        .map((l) => l.replace(/#.*/, "").trim())
        .filter(Boolean)
        .map((l) => {
            const [name, command] = l.split(/\s+/);
            if (!/^[a-z0-9][a-z0-9+.-]*$/.test(name)) throw new Error(`${HOST_PACKAGES_FILE}: bad package name ${name}`);
            return { name, command: command && command !== "-" ? command : undefined };
        });
}

/** Packages of the list that dpkg does not report as installed. */
export function missingHostPackages(packages = hostPackages()): string[] {
    const r = spawnSync("dpkg-query", ["-W", "-f=${Package} ${db:Status-Status}\\n", ...packages.map((p) => p.name)], { encoding: "utf8" });
    if (r.error) return packages.map((p) => p.name); // no dpkg at all: not Debian
    const installed = new Set(
        r.stdout
            .split("\n")
            .filter((l) => l.endsWith(" installed"))
            .map((l) => l.split(" ")[0]),
    );
    return packages.map((p) => p.name).filter((n) => !installed.has(n));
}

export function installCommand(missing: readonly string[]): string {
    return `apt-get update && apt-get install -y --no-install-recommends ${missing.join(" ")}`;
}

/**
 * Installs the missing host packages when this is Debian and we are root; otherwise throws with the
 * command to run. Returns the packages it installed.
 */
export function ensureHostPackages(log: (line: string) => void): string[] {
    const missing = missingHostPackages();
    if (!missing.length) return [];
    const cmd = installCommand(missing);
    if (process.getuid?.() !== 0 || !existsSync("/etc/debian_version")) {
        throw new Error(`the lab needs these Debian packages on this machine: ${missing.join(" ")}\nrun as root: ${cmd}`);
    }
    log(`installing the lab's host packages: ${cmd}`);
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    for (const args of [["update", "-q"], ["install", "-y", "-q", "--no-install-recommends", ...missing]]) {
        const r = spawnSync("apt-get", args, { stdio: ["ignore", "inherit", "inherit"], env });
        if (r.status !== 0) throw new Error(`apt-get ${args[0]} failed (exit ${r.status ?? r.signal}); the command was: ${cmd}`);
    }
    const still = missingHostPackages();
    if (still.length) throw new Error(`still missing after apt-get install: ${still.join(" ")}`);
    return missing;
}
