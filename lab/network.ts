/**
 * The lab network: namespace `ispmail-lab` holding bridge `isplab0` with the host-side addresses.
 * Guests get their veth ends on this bridge from systemd-nspawn (`--network-bridge`). There is no
 * default route in the namespace: guests and host-side services reach only each other.
 */
import { existsSync, readdirSync } from "node:fs";
import { dirname } from "node:path";
import { LAB } from "./lab";
import { NETNS_PATH, quick, runOk } from "./proc";

const NETNS_DIR = dirname(NETNS_PATH);
const ip = (...args: string[]) => runOk("ip", args, { timeoutMs: 20_000 });
const ipn = (...args: string[]) => ip("-n", LAB.netns, ...args);

export function networkExists(): boolean {
    return existsSync(NETNS_PATH);
}

export async function ensureNetwork(): Promise<boolean> {
    if (!networkExists()) await ip("netns", "add", LAB.netns);
    const links = quick("ip", ["-n", LAB.netns, "-o", "link", "show"]);
    if (links.includes(` ${LAB.bridge}:`) && quick("ip", ["-n", LAB.netns, "-o", "addr", "show", "dev", LAB.bridge]).includes(`${LAB.host.ipv4}/`)) {
        return false;
    }
    await ipn("link", "set", "lo", "up");
    if (!links.includes(` ${LAB.bridge}:`)) await ipn("link", "add", LAB.bridge, "type", "bridge");
    await ipn("addr", "replace", `${LAB.host.ipv4}/${LAB.prefix.ipv4}`, "dev", LAB.bridge);
    // nodad: the address is usable at once (knot and pebble bind to it right after).
    await ipn("addr", "replace", `${LAB.host.ipv6}/${LAB.prefix.ipv6}`, "dev", LAB.bridge, "nodad");
    await ipn("link", "set", LAB.bridge, "up");
    return true;
}

/** Deleting the namespace removes the bridge and every veth end left in it. */
export async function destroyNetwork(): Promise<boolean> {
    if (!networkExists()) return false;
    await ip("netns", "delete", LAB.netns);
    // `ip netns add` bind-mounts /run/netns onto itself; undo that when no namespace is left in it.
    if (existsSync(NETNS_DIR) && readdirSync(NETNS_DIR).length === 0 && quick("findmnt", ["-rn", "-o", "TARGET", NETNS_DIR]).trim() === NETNS_DIR) {
        await runOk("umount", [NETNS_DIR], { timeoutMs: 20_000 });
    }
    return true;
}

/** Pids of every process still inside the lab namespace (all of them started by the lab). */
export function netnsPids(): number[] {
    if (!networkExists()) return [];
    return quick("ip", ["netns", "pids", LAB.netns])
        .split("\n")
        .filter(Boolean)
        .map(Number);
}
