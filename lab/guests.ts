/**
 * Guests: Debian 13 systems booted with real systemd by systemd-nspawn, each on an independent
 * copy of the cached rootfs, with its veth end on the lab bridge and a static address.
 *
 * What the lab writes into a new guest's root is the lab's stand-in for what Hetzner and
 * cloud-init do on a real server (network, resolver, host key, authorized deploy key) plus the
 * lab's own plumbing (apt proxy, lab CA). None of it is a step: the steps must work on top of it
 * exactly as on a fresh Hetzner machine.
 *
 * A guest can instead do its first boot through cloud-init itself (`createGuest(..., { userData })`):
 * the user data the program gives `hcloud.Server` goes into a NoCloud seed, and cloud-init installs
 * the host key and root's authorized_keys, as on Hetzner. Network, resolver, apt proxy and lab CA
 * stay the lab's either way (Hetzner's network and metadata service have no other stand-in here).
 */
import { randomBytes } from "node:crypto";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { guestRoot, LAB, PATHS, type GuestPlan } from "./lab";
import { LAB_CA_CERT } from "./pebble";
import { daemonPid, inLabNet, NETNS_PATH, parentPid, quick, run, runOk, startDaemon, stopDaemon, waitFor } from "./proc";
import { rootfsHash } from "./rootfs";
import { installHostKey, sshExec } from "./ssh";

export const guestDaemon = (g: GuestPlan) => `guest-${g.name}`;
const baseFile = (g: GuestPlan) => join(PATHS.guests, g.name, "rootfs-hash");

/**
 * Where a guest's files live and under which daemon name it runs. The lab's own guests use
 * {@link labPlace}; the benchmarks (bench/) boot throw-away guests of the same kind elsewhere.
 */
export interface GuestPlace {
    /** Holds root/ (the guest's file system) and rootfs-hash. */
    readonly dir: string;
    /** Bound to /srv/ispmail in the guest (the data volume), if it has one. */
    readonly dataDir?: string;
    readonly daemon: string;
}

export function labPlace(g: GuestPlan): GuestPlace {
    return { dir: dirname(guestRoot(g)), dataDir: g.name === "mail" ? PATHS.mailData : undefined, daemon: guestDaemon(g) };
}

export function guestExists(g: GuestPlan): boolean {
    return existsSync(join(guestRoot(g), "etc", "os-release"));
}

export function guestRunning(g: GuestPlan): boolean {
    return daemonPid(guestDaemon(g)) !== undefined;
}

/** The rootfs a guest was made from, when it is older than the current cached one. */
export function staleBase(g: GuestPlan): boolean {
    return existsSync(baseFile(g)) && readFileSync(baseFile(g), "utf8").trim() !== rootfsHash();
}

function put(root: string, path: string, content: string, mode = 0o644): void {
    const file = join(root, path);
    mkdirSync(dirname(file), { recursive: true });
    rmSync(file, { force: true }); // may be a dangling symlink (resolv.conf)
    writeFileSync(file, content, { mode });
    chmodSync(file, mode);
}

/** How a guest does its first boot. */
export interface CreateGuestOptions {
    /**
     * cloud-init user data (what `cloudInit()` renders for `hcloud.Server`): written as a NoCloud
     * seed, and cloud-init, not the lab, installs the host key and root's authorized_keys. The
     * caller pins the host key it put in there ({@link pinHostKeyLine}) and boots with
     * `waitFor: "port"` (the lab's deploy key is not authorized). Without it cloud-init is disabled
     * and the lab writes both itself.
     */
    readonly userData?: string;
    /** NoCloud `instance-id` (cloud-init runs its per-instance modules once per id); default random. */
    readonly instanceId?: string;
}

/**
 * Lab-wide cloud-init settings, written by createGuest rather than built into the rootfs: they are
 * the lab's stand-in for Hetzner (whose image reads its metadata service and configures the
 * network itself), not part of the image, and changing them must not rebuild the rootfs.
 * - NoCloud only: the seed directory is the lab's metadata service; no network datasource is probed.
 * - no network configuration: the lab's systemd-networkd file (static address on the bridge) is the
 *   stand-in for Hetzner's network, and cloud-init must not write a DHCP config over it.
 * ds-identify (the systemd generator that decides whether cloud-init runs) reads datasource_list
 * line by line, so it stays on one line.
 */
const CLOUD_CFG_DROP_IN = [
    "# Written by the ispmail lab: the seed directory is the metadata service, networkd owns the network.",
    "datasource_list: [ NoCloud, None ]",
    "network: {config: disabled}",
    "",
].join("\n");

/** Creates a guest's root from the cached rootfs. */
export async function createGuest(g: GuestPlan, rootfs: string, deployPublicKey: string, place = labPlace(g), opts: CreateGuestOptions = {}): Promise<void> {
    const root = join(place.dir, "root");
    const staging = `${root}.new`;
    rmSync(staging, { recursive: true, force: true });
    mkdirSync(dirname(root), { recursive: true });
    await runOk("cp", ["-a", "--reflink=auto", rootfs, staging], { timeoutMs: 10 * 60_000 });

    const short = g.fqdn.split(".")[0];
    put(staging, "etc/hostname", `${short}\n`);
    put(staging, "etc/hosts", `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${g.ipv4}\t${g.fqdn} ${short}\n${g.ipv6}\t${g.fqdn} ${short}\n`);
    put(staging, "etc/machine-id", `${randomBytes(16).toString("hex")}\n`, 0o444);
    // Static addresses on nspawn's veth (host0); no gateway: the lab network is all there is.
    put(
        staging,
        "etc/systemd/network/10-ispmail-lab.network",
        [
            "# Written by the ispmail lab: the guest's static address on the lab bridge.",
            "[Match]",
            "Name=host0",
            "",
            "[Network]",
            `Address=${g.ipv4}/${LAB.prefix.ipv4}`,
            `Address=${g.ipv6}/${LAB.prefix.ipv6}`,
            "IPv6AcceptRA=no",
            "LinkLocalAddressing=ipv6",
            "",
        ].join("\n"),
    );
    symlinkSync("/usr/lib/systemd/system/systemd-networkd.service", join(staging, "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"));
    put(staging, "etc/resolv.conf", `# The lab DNS (knot on the lab bridge).\nnameserver ${LAB.dns}\n`);
    put(staging, "etc/apt/apt.conf.d/00ispmail-lab-proxy", `// Written by the ispmail lab: packages through the host's apt-cacher-ng.\nAcquire::http::Proxy "${LAB.aptProxy.url}";\n`);
    // Every SSH session as root would start root's systemd user manager (pam_systemd) and stop it
    // when the last session ends. Inside these containers that manager cannot spawn its executor,
    // so its stop hangs ("Processes still around after final SIGKILL"): the next login then waits
    // ~90 s and fails, and a shutdown waits just as long. The lab's root sessions need no user
    // manager: mask it (pam_systemd is optional in Debian's PAM stack; logins go on without it).
    symlinkSync("/dev/null", join(staging, "etc/systemd/system/user@0.service"));
    // The lab CA signs pebble's HTTPS endpoint: certbot must trust it as it trusts Let's Encrypt's.
    copyFileSync(LAB_CA_CERT, join(staging, "usr/local/share/ca-certificates/ispmail-lab-ca.crt"));
    await runOk("chroot", [staging, "update-ca-certificates"], { timeoutMs: 60_000 });
    put(staging, "etc/cloud/cloud.cfg.d/99-ispmail-lab.cfg", CLOUD_CFG_DROP_IN);
    if (opts.userData === undefined) {
        // The lab's own bootstrap: cloud-init must not run at all (no seed; it would otherwise
        // fall back to the None datasource, create the image's default user, and so on).
        put(staging, "etc/cloud/cloud-init.disabled", "# Written by the ispmail lab: this guest is bootstrapped by the lab, not by cloud-init.\n");
        mkdirSync(join(staging, "root/.ssh"), { recursive: true, mode: 0o700 });
        put(staging, "root/.ssh/authorized_keys", `${deployPublicKey}\n`, 0o600);
        await installHostKey(g, staging);
    } else {
        // First boot through cloud-init: the user data is all it gets, as from Hetzner's metadata
        // service. It holds the host's private key: root-only, as the metadata guard keeps it there.
        if (!existsSync(join(staging, "usr/bin/cloud-init"))) throw new Error(`createGuest(${g.name}): user data given, but ${rootfs} has no cloud-init (a rootfs older than lab/build-rootfs.sh?)`);
        const seed = "var/lib/cloud/seed/nocloud";
        mkdirSync(join(staging, dirname(seed)), { recursive: true });
        mkdirSync(join(staging, seed), { recursive: true, mode: 0o700 });
        chmodSync(join(staging, seed), 0o700);
        put(staging, `${seed}/user-data`, opts.userData, 0o600);
        const instanceId = opts.instanceId ?? `iid-ispmail-lab-${randomBytes(8).toString("hex")}`;
        put(staging, `${seed}/meta-data`, `instance-id: ${JSON.stringify(instanceId)}\nlocal-hostname: ${JSON.stringify(g.fqdn)}\n`, 0o600);
        // No host key and no authorized_keys from the lab: cloud-init installs both.
        const sshDir = join(staging, "etc/ssh");
        for (const f of readdirSync(sshDir)) if (f.startsWith("ssh_host_")) rmSync(join(sshDir, f), { force: true });
        rmSync(join(staging, "root/.ssh/authorized_keys"), { force: true });
        // cloud-init's network stage is ordered after systemd-networkd-wait-online, as on Hetzner
        // it runs after the image's network setup: enable that (as `systemctl enable
        // systemd-networkd` would; cloud-config.service pulls in network-online.target), so that
        // cloud-init finds host0 configured, not still down.
        mkdirSync(join(staging, "etc/systemd/system/network-online.target.wants"), { recursive: true });
        symlinkSync("/usr/lib/systemd/system/systemd-networkd-wait-online.service", join(staging, "etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service"));
    }

    rmSync(root, { recursive: true, force: true });
    renameSync(staging, root);
    writeFileSync(join(place.dir, "rootfs-hash"), `${rootfsHash()}\n`);
}

export interface BootGuestOptions {
    /**
     * What "booted" means: "ssh" (default) waits until SSH with the lab's deploy key works; "port"
     * only until TCP port 22 on the guest's IPv4 accepts connections (a cloud-init guest authorizes
     * the keys of its user data, not necessarily the lab's). On a cloud-init guest sshd starts after
     * cloud-init's network stage (host key in place) and is restarted once more by its config stage
     * (`ssh_pwauth` writes sshd_config.d/50-cloud-init.conf), so the first connection after "port"
     * may be reset or refused: retry it, as Pulumi's waitForMachine retries its dial.
     */
    readonly waitFor?: "ssh" | "port";
}

/** True when TCP port 22 on the guest accepts a connection (tried from inside the lab namespace). */
async function sshPortOpen(g: GuestPlan): Promise<boolean> {
    const [cmd, args] = inLabNet("bash", ["-c", 'exec 3<>"/dev/tcp/$1/22"', "port-check", g.ipv4]);
    return (await run(cmd, args, { timeoutMs: 5_000 })).code === 0;
}

/**
 * Boots a guest (detached) and waits until SSH answers (or, with `waitFor: "port"`, until port 22
 * accepts connections); returns the seconds from start to then.
 */
export async function bootGuest(g: GuestPlan, place = labPlace(g), opts: BootGuestOptions = {}): Promise<number> {
    const waitForWhat = opts.waitFor ?? "ssh";
    const args = [
        "--register=no", // no systemd-machined on this host
        "--keep-unit", // no transient scope unit either: stay in our own cgroup
        "--boot",
        `--directory=${join(place.dir, "root")}`,
        `--machine=${g.machine}`,
        `--network-bridge=${LAB.bridge}`,
        "--resolv-conf=off", // the guest's resolv.conf names the lab DNS; keep it
        "--timezone=off",
        "--link-journal=no",
        "--console=read-only",
    ];
    if (place.dataDir) {
        mkdirSync(place.dataDir, { recursive: true, mode: 0o755 });
        // The data volume: a real mountpoint in the guest, as the Hetzner volume is.
        args.push(`--bind=${place.dataDir}:/srv/ispmail`);
    }
    const [cmd, nsArgs] = inLabNet("systemd-nspawn", args);
    const start = Date.now();
    // The host mounts cgroup v1 + v2 (hybrid); trixie's systemd needs the unified hierarchy.
    startDaemon(place.daemon, cmd, nsArgs, { ...process.env, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY: "1" });
    await waitFor(
        waitForWhat === "ssh" ? `SSH on the ${g.name} guest (${g.ipv4})` : `port 22 on the ${g.name} guest (${g.ipv4})`,
        async () => {
            if (daemonPid(place.daemon) === undefined) throw new Error(`the ${g.name} guest stopped while booting; see .lab/logs/${place.daemon}.log`);
            if (waitForWhat === "port") return sshPortOpen(g);
            return (await sshExec(g, "true", { timeoutMs: 8_000 })).code === 0;
        },
        { tries: 240, intervalMs: 250, timeoutMs: 120_000 },
    );
    return (Date.now() - start) / 1000;
}

/** Powers a guest off (nspawn turns SIGTERM into a clean shutdown), bounded; then kills it. */
export async function stopGuest(g: GuestPlan, place = labPlace(g)): Promise<boolean> {
    return stopDaemon(place.daemon, 30_000);
}

/**
 * Containers still attached to the lab bridge whose systemd-nspawn is gone (killed without its
 * container): their init is a child of PID 1, and their `host0` is the peer of a port of the lab
 * bridge. They hold the guest's veth name, so a new guest of that name cannot start. Returns the
 * pids of their init processes.
 */
export async function orphanContainers(): Promise<number[]> {
    const ports = new Set(
        quick("ip", ["-n", LAB.netns, "-o", "link", "show", "master", LAB.bridge])
            .split("\n")
            .map((l) => Number(l.split(":")[0]))
            .filter((n) => n > 0),
    );
    if (!ports.size) return [];
    const labNet = statSync(NETNS_PATH).ino;
    const ownNet = statSync("/proc/self/ns/net").ino;
    const orphans: number[] = [];
    const adoptedByInit = readdirSync("/proc")
        .filter((d) => /^\d+$/.test(d))
        .map(Number)
        .filter((pid) => parentPid(pid) === 1);
    for (const pid of adoptedByInit) {
        let net: number;
        try {
            net = statSync(`/proc/${pid}/ns/net`).ino;
        } catch {
            continue;
        }
        if (net === labNet || net === ownNet) continue;
        // host0@ifN: N is the index of its peer, a port of the lab bridge if it is one of ours.
        const r = await run("nsenter", [`--target=${pid}`, "--net", "--", "ip", "-o", "link", "show", "host0"], { timeoutMs: 10_000 });
        const peer = /^\d+: host0@if(\d+):/.exec(r.stdout)?.[1];
        if (r.code === 0 && peer && ports.has(Number(peer))) orphans.push(pid);
    }
    return orphans;
}

/** Kills orphaned lab containers (SIGKILL to a container's init ends it all); returns their pids. */
export async function removeOrphanContainers(): Promise<number[]> {
    const orphans = await orphanContainers();
    for (const pid of orphans) process.kill(pid, "SIGKILL");
    if (orphans.length) {
        await waitFor("orphaned lab containers to end", async () => (await orphanContainers()).length === 0, { tries: 50, intervalMs: 200, timeoutMs: 10_000 });
    }
    return orphans;
}

/** Removes a stopped guest's root (never while anything is mounted below it). */
export function removeGuest(g: GuestPlan, place = labPlace(g)): boolean {
    const dir = place.dir;
    if (!existsSync(dir)) return false;
    const mounts = quick("findmnt", ["-rn", "-o", "TARGET"])
        .split("\n")
        .filter((t) => t === dir || t.startsWith(`${dir}/`));
    if (mounts.length) throw new Error(`refusing to remove ${dir}: still mounted: ${mounts.join(", ")}`);
    rmSync(dir, { recursive: true, force: true });
    return true;
}
