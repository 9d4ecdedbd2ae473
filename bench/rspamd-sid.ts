/**
 * Rspamd from Debian sid (4.1.x) in place of Debian 13's 3.12.1 on the lab's mail guest, for the
 * throughput benchmark's diagnostic side: what issue 19's 1 MB milter target would take, measured end
 * to end through the same Postfix, milter configuration, Valkey and Dovecot, not only as Rspamd's own
 * CPU per message (bench/rspamd-versions.sh). Nothing of it is part of the product: Debian 13 ships
 * 3.12.1, and sid's build needs sid's libc6, libicu and glib.
 *
 * How:
 *  - a tree on the host: a copy of the lab's cached Debian 13 rootfs, `apt-get -t sid install rspamd`
 *    in it through the lab's apt proxy (sid's libraries land in that copy only);
 *  - copied into the mail guest as {@link GUEST_TREE}, `_rspamd` given the guest's uid and gid;
 *  - the guest's own rspamd.service runs it through a runtime drop-in ({@link DROP_IN}, gone on a
 *    reboot): RootDirectory= the tree, with the product's configuration bound read-only over sid's
 *    stock /etc/rspamd (local.d, override.d, lua.local.d), the DKIM keys and /etc/hosts, as an
 *    upgrade in place would have it, and the milter socket's directory (read-write: it makes the
 *    socket there, where Postfix looks for it). Its hyperscan cache and log stay in the tree; ports,
 *    Valkey and the resolver are the guest's, so Dovecot's learn scripts reach it as before.
 */
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { DKIM_DIR, MILTER_SOCKET_DIR } from "../components/services/rspamd";
import { APT_PROXY_HOST_URL } from "../lab/aptproxy";
import { guestRoot, LAB } from "../lab/lab";
import { runOk } from "../lab/proc";
import { rootfsDir } from "../lab/rootfs";
import { guest } from "../lab/testkit";
import type { Log } from "./lab-session";

const HOST_TREE = "/var/tmp/ispmail-bench-rspamd-sid";
const GUEST_TREE = "/opt/ispmail-bench-rspamd-sid";
const DROP_IN = "/run/systemd/system/rspamd.service.d/ispmail-bench-sid.conf";
/** Configuration the product writes, seen by sid's rspamd at the same paths. */
const BOUND_DIRECTORIES = ["/etc/rspamd/local.d", "/etc/rspamd/override.d", "/etc/rspamd/lua.local.d", DKIM_DIR];
const BOUND_READ_ONLY = [...BOUND_DIRECTORIES, "/etc/hosts"];
/** Where Rspamd makes the milter socket Postfix connects to. */
const BOUND_READ_WRITE = [MILTER_SOCKET_DIR];

export type RspamdBuild = "debian" | "sid";

/** Runs a command in a (not booted) container of `dir` on the host's network, at nice 19. */
async function inTree(dir: string, command: string): Promise<string> {
    const args = ["-n", "19", "env", "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1", "systemd-nspawn", "-q", "--register=no", "--keep-unit", "--resolv-conf=off", "--timezone=off", "--link-journal=no"];
    // Not "ispmail-*": the lab treats those nspawns as its own guests.
    args.push("--machine=bench-rspamd-sid-build", `--directory=${dir}`, "--pipe", "bash", "-c", command);
    return (await runOk("nice", args, { timeoutMs: 1_200_000 })).stdout;
}

/** Builds the sid tree on the host and installs it into the mail guest; returns sid's rspamd version. */
export async function installSidRspamd(log: Log): Promise<string> {
    rmSync(HOST_TREE, { recursive: true, force: true });
    await runOk("cp", ["-a", "--reflink=auto", rootfsDir(), HOST_TREE], { timeoutMs: 600_000 });
    await runOk("bash", [
        "-c",
        // The mirror's snapshot is older than sid's Valid-Until allows on this clock; apt checks signatures all the same.
        `printf '%s\\n' 'Acquire::Check-Valid-Until "false";' 'Acquire::http::Proxy "${APT_PROXY_HOST_URL}";' > ${HOST_TREE}/etc/apt/apt.conf.d/99ispmail-bench && ` +
            `echo 'deb http://deb.debian.org/debian sid main' > ${HOST_TREE}/etc/apt/sources.list.d/sid.list`,
    ]);
    log("rspamd-sid: installing rspamd from Debian sid into a copy of the lab's rootfs (nice 19)");
    const version = (
        await inTree(HOST_TREE, "export DEBIAN_FRONTEND=noninteractive; apt-get -q update >/dev/null && apt-get -q -y --no-install-recommends install -t sid rspamd >/dev/null && dpkg-query -W -f='${Version}' rspamd")
    ).trim();
    const root = guestRoot(LAB.mail);
    const tree = join(root, GUEST_TREE);
    rmSync(tree, { recursive: true, force: true });
    await runOk("cp", ["-a", "--reflink=auto", HOST_TREE, tree], { timeoutMs: 600_000 });
    rmSync(HOST_TREE, { recursive: true, force: true });
    // The service's User=_rspamd is the guest's; the tree's files must carry the same ids.
    await runOk("bash", [
        "-c",
        `set -euo pipefail
        read -r uid gid < <(awk -F: '$1 == "_rspamd" { print $3, $4 }' ${root}/etc/passwd)
        read -r old_uid old_gid < <(awk -F: '$1 == "_rspamd" { print $3, $4 }' ${tree}/etc/passwd)
        find ${tree} -xdev \\( -uid "$old_uid" -o -gid "$old_gid" \\) -exec chown -h "$uid:$gid" {} +
        sed -i "s/^_rspamd:x:$old_uid:$old_gid:/_rspamd:x:$uid:$gid:/" ${tree}/etc/passwd
        sed -i "s/^_rspamd:x:$old_gid:/_rspamd:x:$gid:/" ${tree}/etc/group
        mkdir -p ${[...BOUND_DIRECTORIES, ...BOUND_READ_WRITE].map((p) => join(tree, p)).join(" ")}`,
    ], { timeoutMs: 600_000 });
    log(`rspamd-sid: rspamd ${version} installed in the mail guest at ${GUEST_TREE}`);
    return version;
}

/**
 * Restarts the guest's rspamd.service as `build` and waits until it scans and is idle (a first
 * start of a build compiles its hyperscan database; the idle wait covers it).
 */
export async function useRspamd(build: RspamdBuild): Promise<void> {
    const dropIn = ["[Service]", `RootDirectory=${GUEST_TREE}`, "MountAPIVFS=yes", `BindReadOnlyPaths=${BOUND_READ_ONLY.join(" ")}`, `BindPaths=${BOUND_READ_WRITE.join(" ")}`].join("\n");
    await guest("mail").execOk(
        (build === "sid" ? `install -d ${dirname(DROP_IN)} && printf '%s\\n' '${dropIn}' > ${DROP_IN}` : `rm -f ${DROP_IN}`) +
            ` && systemctl daemon-reload && systemctl restart rspamd || exit 1; ` +
            // Scans (the normal worker answers a message), then 3 seconds in a row under 30 ms of CPU.
            `ok=0; for i in $(seq 1 600); do if printf 'Subject: ready\\n\\nready\\n' | rspamc -h localhost:11333 >/dev/null 2>&1; then ok=1; break; fi; sleep 0.2; done; ` +
            `[ $ok = 1 ] || { echo "rspamd (${build}) does not answer after a restart" >&2; exit 1; }; ` +
            `cg=/sys/fs/cgroup/system.slice/rspamd.service/cpu.stat; quiet=0; prev=$(awk '$1 == "usage_usec" { print $2 }' $cg); ` +
            `for i in $(seq 1 300); do sleep 1; now=$(awk '$1 == "usage_usec" { print $2 }' $cg); ` +
            `if [ $((now - prev)) -le 30000 ]; then quiet=$((quiet + 1)); else quiet=0; fi; prev=$now; [ $quiet -ge 3 ] && break; done && [ $quiet -ge 3 ]`,
        { timeoutMs: 600_000 },
    );
}

/** Debian's rspamd again, and the tree gone from the guest. */
export async function removeSidRspamd(): Promise<void> {
    await useRspamd("debian");
    rmSync(join(guestRoot(LAB.mail), GUEST_TREE), { recursive: true, force: true });
}
