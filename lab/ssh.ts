/**
 * SSH into the guests as root with the lab's deploy key (the stand-in for the Pulumi
 * `tls.PrivateKey` deploy key), checking host keys against the known_hosts file the lab writes when
 * it creates a guest (as Pulumi pins a host key generated in the graph).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import type { GuestPlan } from "./lab";
import { PATHS } from "./lab";
import { inLabNet, run, runOk, type RunOptions, type RunResult } from "./proc";

/** Generates the deploy key pair once. Returns the public key line. */
export async function ensureDeployKey(): Promise<string> {
    if (!existsSync(PATHS.deployKey)) {
        mkdirSync(PATHS.sshDir, { recursive: true, mode: 0o700 });
        await runOk("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "ispmail-lab-deploy", "-f", PATHS.deployKey]);
    }
    return readFileSync(`${PATHS.deployKey}.pub`, "utf8").trim();
}

/** Generates a guest's SSH host key into its root and pins it in the lab's known_hosts. */
export async function installHostKey(guest: GuestPlan, root: string): Promise<void> {
    const keyFile = `${root}/etc/ssh/ssh_host_ed25519_key`;
    await runOk("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `root@${guest.fqdn}`, "-f", keyFile]);
    pinHostKey(guest, root);
}

/** Pins the host key found in a guest's root in the lab's known_hosts (replacing that guest's line). */
export function pinHostKey(guest: GuestPlan, root: string): void {
    pinHostKeyLine(guest, readFileSync(`${root}/etc/ssh/ssh_host_ed25519_key.pub`, "utf8"));
}

/**
 * Pins a host public key ("ssh-ed25519 AAAA... [comment]") for a guest in the lab's known_hosts,
 * replacing that guest's line: e.g. the key a cloud-init guest gets from its user data, known
 * before it boots (as Pulumi pins the `tls.PrivateKey` host key).
 */
export function pinHostKeyLine(guest: GuestPlan, publicKeyLine: string): void {
    const fields = publicKeyLine.trim().split(/\s+/);
    if (fields.length < 2 || !/^[a-z0-9@.-]+$/.test(fields[0]) || !/^AAAA[A-Za-z0-9+/]+=*$/.test(fields[1])) {
        throw new Error(`pinHostKeyLine(${guest.name}): not an OpenSSH public key line: ${publicKeyLine.trim().slice(0, 40)}`);
    }
    const pub = fields.slice(0, 2).join(" ");
    const names = [guest.ipv4, guest.ipv6, guest.fqdn];
    mkdirSync(PATHS.sshDir, { recursive: true, mode: 0o700 });
    const others = existsSync(PATHS.knownHosts)
        ? readFileSync(PATHS.knownHosts, "utf8")
              .split("\n")
              .filter((l) => l && !names.includes(l.split(" ")[0].split(",")[0]))
        : [];
    writeFileSync(PATHS.knownHosts, [...others, `${names.join(",")} ${pub}`].join("\n") + "\n", { mode: 0o600 });
}

/** The host public key ("ssh-ed25519 AAAA...") pinned for a guest by {@link pinHostKeyLine}, if any. */
export function pinnedHostKey(guest: GuestPlan): string | undefined {
    if (!existsSync(PATHS.knownHosts)) return undefined;
    const line = readFileSync(PATHS.knownHosts, "utf8")
        .split("\n")
        .find((l) => l.split(" ")[0].split(",").includes(guest.fqdn));
    return line?.split(" ").slice(1).join(" ");
}

/** Who to reach and with what: the lab's own sessions and the engine's command resources. */
export interface SshTarget {
    readonly user: string;
    readonly host: string;
    readonly keyFile: string;
    readonly knownHosts: string;
    /** false: the host key is not checked (a command resource without `hostKey`). */
    readonly checkHostKey: boolean;
    readonly connectTimeoutSeconds: number;
}

/** ssh arguments for a non-interactive session (no user ssh config is read), command to follow. */
export function sshClientArgs(t: SshTarget, opts: { tty?: boolean } = {}): string[] {
    return [
        "-F", "/dev/null",
        "-i", t.keyFile,
        "-o", "IdentitiesOnly=yes",
        "-o", `UserKnownHostsFile=${t.knownHosts}`,
        "-o", `StrictHostKeyChecking=${t.checkHostKey ? "yes" : "no"}`,
        "-o", opts.tty ? "BatchMode=no" : "BatchMode=yes",
        "-o", `ConnectTimeout=${t.connectTimeoutSeconds}`,
        // The key exchange Pulumi's command.remote negotiates (Go's x/crypto/ssh has no sntrup761):
        // the host's OpenSSH would otherwise pick sntrup761x25519, ~70 ms more per session here.
        "-o", "KexAlgorithms=curve25519-sha256,curve25519-sha256@libssh.org",
        "-o", "ServerAliveInterval=15",
        "-o", "LogLevel=ERROR",
        ...(opts.tty ? ["-t"] : []),
        `${t.user}@${t.host}`,
    ];
}

/** ssh arguments for a non-interactive root session on a guest with the lab's deploy key. */
export function sshArgs(guest: GuestPlan, opts: { tty?: boolean } = {}): string[] {
    return sshClientArgs({ user: "root", host: guest.ipv4, keyFile: PATHS.deployKey, knownHosts: PATHS.knownHosts, checkHostKey: true, connectTimeoutSeconds: 5 }, opts);
}

/** Runs a command on a guest over SSH (inside the lab namespace); `input` goes to its stdin. */
export function sshExec(guest: GuestPlan, command: string, opts: RunOptions = {}): Promise<RunResult> {
    const [cmd, args] = inLabNet("ssh", [...sshArgs(guest), command]);
    return run(cmd, args, opts);
}
