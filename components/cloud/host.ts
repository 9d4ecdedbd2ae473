/**
 * `ispmail:index:Host`: the Hetzner Cloud machine and everything that must outlive it.
 *
 * What survives a server replacement (new image, new type, a rebuilt machine) and why:
 * - the IPv4 and IPv6 **primary IPs** are resources of their own (`autoDelete: false`), attached
 *   to the server: the addresses, their PTR records (`Rdns` on the primary IP) and their sending
 *   reputation stay; DNS never changes;
 * - the **volume** holds mail, the database and backups; it is attached (not formatted by Hetzner:
 *   the `base` step formats it only when blkid finds no filesystem, so it is never reformatted);
 * - the deploy key and the SSH host key are generated in the graph and kept in the state.
 *
 * Protection: in a protected stack (`ispmail:protect`, by default every stack but lab, dev,
 * staging and the like: see isProtectedStack in components/config/) the primary IPs and the volume
 * are `protect`ed in Pulumi, have Hetzner's delete protection on and `retainOnDelete`, so neither
 * `pulumi destroy`, a click in the console nor a resource leaving the stack can lose them; the
 * disposable stacks can be torn down freely. The DKIM keys are protected the same way
 * (components/generated-secrets.ts).
 *
 * Replacing the server is delete-then-create: a primary IP can be assigned to one server only.
 * The server's `sshKeys` hold only what must be there at first boot: the stack's own generated
 * deploy key (one `hcloud.SshKey` per stack, named after it, so two stacks in one Hetzner project
 * never upload the same key). The admins' keys are not Hetzner SSH keys at all: the `ssh-access`
 * step writes them into root's authorized_keys. So removing an admin key can never break a later
 * rebuild (with `ignoreChanges: ["sshKeys"]` a replacement would reuse the key ids in state, and a
 * deleted key fails the create after the old server is gone), and two stacks may list the same
 * admin key. `userData` changes are ignored (it acts only at first boot; it holds only generated
 * keys that never change, so the value in state is the right one for a rebuild too).
 */
import type * as command from "@pulumi/command";
import * as hcloud from "@pulumi/hcloud";
import * as pulumi from "@pulumi/pulumi";
import * as tls from "@pulumi/tls";
import type { Model } from "../config";
import { stepCommand, waitForMachine, type ServerConnection } from "../remote";
import { stepSummary } from "../steps";
import type { Service } from "../services";
import { cloudInit, firewallRules, serverIpv6Address, sshAccessStep } from "./rules";
import { componentType } from "../component-types";

export interface HostArgs {
    readonly model: Model;
    /** The services whose public ports the firewall opens; the program's list when left out. */
    readonly services?: readonly Service[];
}

const PRIVATE_KEY_OUTPUTS = ["privateKeyPem", "privateKeyOpenssh", "privateKeyPemPkcs8"];

/** Hetzner resource names: letters, digits, dots and hyphens. */
const hetznerName = (s: string) => s.replace(/[^a-zA-Z0-9.-]/g, "-");

export class Host extends pulumi.ComponentResource {
    /** Public IPv4 address (the primary IP). */
    public readonly ipv4: pulumi.Output<string>;
    /** The server's IPv6 address (::1 of the primary IPv6 /64). */
    public readonly ipv6: pulumi.Output<string>;
    public readonly serverId: pulumi.Output<string>;
    /** SSH connection for the command resources (root, deploy key, pinned host key); secret. */
    public readonly connection: pulumi.Output<ServerConnection>;
    /** Completes when SSH answers and cloud-init is done; every step depends on it. */
    public readonly ready: command.remote.Command;
    /** The SSH host public key the program generated and cloud-init installs (OpenSSH line; published as SSHFP). */
    public readonly hostPublicKey: pulumi.Output<string>;

    constructor(name: string, args: HostArgs, opts?: pulumi.ComponentResourceOptions) {
        const [type, options] = componentType("Host", opts);
        super(type, name, {}, options);
        const { model } = args;
        const { server: cfg } = model;
        const protect = model.protectState;
        const base = hetznerName(model.mailHost);

        const deployKey = new tls.PrivateKey("deploy-key", { algorithm: "ED25519" }, { parent: this, additionalSecretOutputs: PRIVATE_KEY_OUTPUTS });
        const hostKey = new tls.PrivateKey("ssh-host-key", { algorithm: "ED25519" }, { parent: this, additionalSecretOutputs: PRIVATE_KEY_OUTPUTS });
        this.hostPublicKey = hostKey.publicKeyOpenssh;

        const deploySshKey = new hcloud.SshKey("deploy", { name: `${base}-deploy-${model.stack}`, publicKey: deployKey.publicKeyOpenssh }, { parent: this });

        const primaryIp = (family: "ipv4" | "ipv6") =>
            new hcloud.PrimaryIp(
                family,
                { name: `${base}-${family}`, type: family, location: cfg.location, assigneeType: "server", autoDelete: false, deleteProtection: protect },
                // Protected stacks keep the address at Hetzner even if it leaves the stack (a
                // mistaken `pulumi state delete` or a refactor): its reputation and PTR are worth more.
                { parent: this, protect, retainOnDelete: protect },
            );
        const ipv4 = primaryIp("ipv4");
        const ipv6 = primaryIp("ipv6");

        const firewall = new hcloud.Firewall("firewall", { name: base, rules: firewallRules(model, args.services) }, { parent: this });

        const userData = pulumi.secret(
            pulumi.all([hostKey.privateKeyOpenssh, hostKey.publicKeyOpenssh, deployKey.publicKeyOpenssh]).apply(([hostPrivate, hostPublic, deployPublic]) =>
                // Only generated, never-changing keys here: the admins' keys come through `sshKeys` and ssh-access.
                cloudInit({ hostPrivateKeyOpenssh: hostPrivate, hostPublicKeyOpenssh: hostPublic, authorizedKeys: [deployPublic] }),
            ),
        );

        const server = new hcloud.Server(
            "server",
            {
                name: model.mailHost,
                serverType: cfg.type,
                image: cfg.image,
                location: cfg.location,
                sshKeys: [deploySshKey.id],
                publicNets: [{ ipv4Enabled: true, ipv4: ipv4.id.apply(Number), ipv6Enabled: true, ipv6: ipv6.id.apply(Number) }],
                firewallIds: [firewall.id.apply(Number)],
                userData,
                // Let postfix, dovecot and postgresql stop cleanly before the machine goes away.
                shutdownBeforeDeletion: true,
            },
            // Read only at first boot: a change must never replace a running mail server.
            { parent: this, deleteBeforeReplace: true, ignoreChanges: ["userData"] },
        );

        const volume = new hcloud.Volume(
            "data",
            // No `format`, no automount: the base step finds the blank volume, formats it once and mounts it by label.
            { name: `${base}-data`, size: cfg.volumeSizeGb, location: cfg.location, deleteProtection: protect },
            // Mail, database and backups: kept at Hetzner in protected stacks even when the stack lets go of it.
            { parent: this, protect, retainOnDelete: protect },
        );
        const attachment = new hcloud.VolumeAttachment("data", { serverId: server.id.apply(Number), volumeId: volume.id.apply(Number), automount: false }, { parent: this });

        this.ipv4 = ipv4.ipAddress;
        this.ipv6 = pulumi.all([ipv6.ipNetwork, ipv6.ipAddress]).apply(([network, address]) => serverIpv6Address(network || address));

        // PTR on the primary IPs themselves (not on the server): they stay when the server is replaced.
        new hcloud.Rdns("ipv4", { primaryIpId: ipv4.id.apply(Number), ipAddress: this.ipv4, dnsPtr: model.mailHost }, { parent: this });
        new hcloud.Rdns("ipv6", { primaryIpId: ipv6.id.apply(Number), ipAddress: this.ipv6, dnsPtr: model.mailHost }, { parent: this });

        this.serverId = server.id;
        this.connection = pulumi.secret(
            pulumi.all([this.ipv4, deployKey.privateKeyOpenssh, hostKey.publicKeyOpenssh]).apply(([host, privateKey, hostPublic]) => ({
                host,
                user: "root",
                privateKey,
                hostKey: hostPublic.trim(),
            })),
        );
        // The first step (base) formats and mounts the data volume: the machine is ready for it
        // only once the volume is attached, which the engine may do after the server is up.
        this.ready = waitForMachine("machine-ready", { connection: this.connection, serverId: this.serverId }, { parent: this, dependsOn: [server, attachment] });

        // root's authorized_keys follows the config (adding/removing an admin key needs no new server).
        const access = deployKey.publicKeyOpenssh.apply((k) => sshAccessStep(model, k));
        stepCommand(
            access,
            {
                name: "ssh-access",
                connection: this.connection,
                serverId: this.serverId,
                secrets: {},
                summary: access.apply(stepSummary),
            },
            { parent: this, dependsOn: [this.ready] },
        );

        this.registerOutputs({ ipv4: this.ipv4, ipv6: this.ipv6, serverId: this.serverId });
    }
}
