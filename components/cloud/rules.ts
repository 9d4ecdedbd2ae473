/**
 * Pure pieces of the Hetzner host: firewall rules, cloud-init, the server's IPv6 address and the
 * step that keeps root's authorized_keys in line with the stack config.
 */
import * as ipaddr from "ipaddr.js";
import YAML from "yaml";
import type { Model } from "../config";
import { publicPorts, type Service } from "../services";
import type { Step } from "../steps";

export interface FirewallRule {
    readonly direction: "in";
    readonly protocol: "tcp" | "icmp";
    readonly port?: string;
    readonly sourceIps: string[];
    readonly description: string;
}

const ANYWHERE = ["0.0.0.0/0", "::/0"];

/**
 * Inbound rules of the one firewall; everything else is dropped by Hetzner's firewall. SSH from the
 * admin networks, and the public ports of the stack's services (components/services publicPorts).
 */
export function firewallRules(model: Model, services?: readonly Service[]): FirewallRule[] {
    return [
        { direction: "in", protocol: "tcp", port: "22", sourceIps: [...model.server.adminCidrs], description: "SSH from admin networks only" },
        ...publicPorts(model, services).map(({ port, description }) => ({ direction: "in" as const, protocol: "tcp" as const, port: String(port), sourceIps: [...ANYWHERE], description })),
        // Path MTU discovery and IPv6 neighbour handling need ICMP; ping helps diagnose.
        { direction: "in", protocol: "icmp", sourceIps: [...ANYWHERE], description: "ICMP (path MTU discovery, ping)" },
    ];
}

/**
 * The server's own IPv6 address: Hetzner routes a /64 to the server and configures ::1 of it on the
 * primary interface. `network` is the primary IP's network ("2001:db8:1:2::/64") or its address.
 */
export function serverIpv6Address(network: string): string {
    const cidr = network.includes("/") ? network : `${network}/64`;
    const bytes = ipaddr.IPv6.networkAddressFromCIDR(cidr).toByteArray();
    bytes[15] = 1;
    return ipaddr.fromByteArray(bytes).toString();
}

export interface CloudInitArgs {
    /** OpenSSH private key of the server's ED25519 host key (generated in the graph, so it is known before boot). */
    readonly hostPrivateKeyOpenssh: string;
    readonly hostPublicKeyOpenssh: string;
    /** Keys allowed to log in as root: the deploy key and the admins' keys. */
    readonly authorizedKeys: readonly string[];
}

/**
 * Minimal cloud-init: only what SSH needs. The host key is installed from the graph so that every
 * command connection can pin it (`hostKey`); no other host key types are generated, so the client
 * cannot be offered a key it does not know. All further configuration is done by the steps.
 */
export function cloudInit(args: CloudInitArgs): string {
    const config = {
        // Remove the image's keys; with ssh_keys given cloud-init generates none (ssh_genkeytypes
        // applies only without ssh_keys, and an empty list fails cloud-init's schema: status 2).
        ssh_deletekeys: true,
        ssh_keys: { ed25519_private: args.hostPrivateKeyOpenssh.trim() + "\n", ed25519_public: args.hostPublicKeyOpenssh.trim() },
        // Root logs in with keys (the deploy key drives the steps); cloud-init must not lock it.
        disable_root: false,
        ssh_pwauth: false,
        // No default user (Debian's cloud-init config would add `debian` with passwordless sudo
        // and the same keys): root is the only login, and its keys are the steps' business.
        users: [] as string[],
        ssh_authorized_keys: args.authorizedKeys.map((k) => k.trim()),
    };
    return `#cloud-config\n${YAML.stringify(config, { lineWidth: 0 })}`;
}

/**
 * Root's authorized_keys as a step, so that adding or removing an admin key in the stack config
 * takes effect on the running server (Hetzner applies `sshKeys` only when a server is created).
 */
export function sshAccessStep(model: Pick<Model, "server">, deployPublicKey: string): Step {
    const keys = [deployPublicKey.trim(), ...model.server.sshPublicKeys.map((k) => k.trim())];
    return {
        name: "ssh-access",
        description: "root's authorized_keys: the deploy key and the admins' keys from the stack config",
        files: [
            {
                path: "/root/.ssh/authorized_keys",
                content: `# Managed by ispmail (Pulumi): the deploy key, then ispmail:server.sshPublicKeys.\n${keys.join("\n")}\n`,
                owner: "root",
                group: "root",
                mode: "0600",
            },
        ],
        script: "chmod 0700 /root/.ssh",
        after: [],
    };
}
