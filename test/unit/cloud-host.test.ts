import assert from "node:assert/strict";
import { describe, it } from "node:test";
import YAML from "yaml";
import { Host } from "../../components/cloud/host";
import { cloudInit, firewallRules, serverIpv6Address, sshAccessStep } from "../../components/cloud/rules";
import { parseConfig } from "../../components/config";
import { renderApplyScript } from "../../components/steps";
import { one, ofType, runMocked, valueOf, type RegisteredResource } from "../harness/mocks";
import { validRawConfig } from "../fixtures/config";

const model = (stack = "staging", change: (raw: Record<string, any>) => void = () => {}) => {
    const raw = validRawConfig();
    change(raw);
    return parseConfig(raw, { stack }).model;
};

const HCLOUD = (t: string) => `hcloud:index/${t[0].toLowerCase()}${t.slice(1)}:${t}`;

async function hostRun(stack = "staging", change?: (raw: Record<string, any>) => void) {
    const m = model(stack, change);
    const run = await runMocked(() => new Host("host", { model: m }), { stack });
    assert.equal(run.error, undefined, String(run.error));
    return { ...run, model: m, host: run.result! };
}

describe("cloud: firewall", () => {
    it("cloud: SSH only from the admin networks; mail and web ports from anywhere over IPv4 and IPv6; ICMP", () => {
        const rules = firewallRules(model());
        const ssh = rules.filter((r) => r.port === "22");
        assert.deepEqual(ssh.map((r) => r.sourceIps), [["203.0.113.0/24", "2001:db8:1234::/48"]]);
        const open = rules.filter((r) => r.protocol === "tcp" && r.port !== "22");
        assert.deepEqual(open.map((r) => r.port).sort((a, b) => Number(a) - Number(b)), ["25", "80", "443", "465", "587", "993", "4190"]);
        for (const r of open) assert.deepEqual(r.sourceIps, ["0.0.0.0/0", "::/0"], `port ${r.port}`);
        assert.deepEqual(rules.filter((r) => r.protocol === "icmp").map((r) => r.sourceIps), [["0.0.0.0/0", "::/0"]]);
        assert.ok(rules.every((r) => r.direction === "in"));
        // Nothing else: no POP3, no plain IMAP, no database port.
        assert.equal(rules.length, 9);
    });

    it("cloud: the registered firewall carries exactly these rules and the server uses it", async () => {
        const { resources, model: m } = await hostRun();
        const fw = one(resources, HCLOUD("Firewall"), "firewall");
        assert.deepEqual(fw.inputs.rules, JSON.parse(JSON.stringify(firewallRules(m))));
        const server = one(resources, HCLOUD("Server"), "server");
        assert.equal((server.inputs.firewallIds as number[]).length, 1);
    });
});

describe("cloud: addresses and reverse DNS", () => {
    it("cloud: the server's IPv6 address is ::1 of its /64", () => {
        assert.equal(serverIpv6Address("2001:db8:1:2::/64"), "2001:db8:1:2::1");
        assert.equal(serverIpv6Address("2a01:4f8:c012:abcd::"), "2a01:4f8:c012:abcd::1");
    });

    it("cloud: primary IPs are their own resources, not auto-deleted, attached to the server", async () => {
        const { resources } = await hostRun();
        const ips = ofType(resources, HCLOUD("PrimaryIp"));
        assert.deepEqual(ips.map((r) => r.inputs.type).sort(), ["ipv4", "ipv6"]);
        for (const ip of ips) {
            assert.equal(ip.inputs.autoDelete, false);
            assert.equal(ip.inputs.assigneeType, "server");
            assert.equal(ip.inputs.location, "fsn1");
        }
        const server = one(resources, HCLOUD("Server"), "server");
        const [net] = server.inputs.publicNets as Array<Record<string, unknown>>;
        assert.equal(typeof net.ipv4, "number");
        assert.equal(typeof net.ipv6, "number");
        assert.equal(net.ipv4Enabled, true);
        assert.equal(net.ipv6Enabled, true);
    });

    it("cloud: rDNS of both primary IPs points to mailHost, at the addresses the host exports", async () => {
        const { resources, host, model: m } = await hostRun();
        const ipv4 = await valueOf(host.ipv4);
        const ipv6 = await valueOf(host.ipv6);
        const rdns = ofType(resources, HCLOUD("Rdns"));
        assert.deepEqual(
            rdns.map((r) => [r.inputs.ipAddress, r.inputs.dnsPtr]).sort(),
            [[ipv4, m.mailHost], [ipv6, m.mailHost]].sort(),
        );
        // Numeric ids (PULUMI-NOTES): the provider rejects the string id.
        for (const r of rdns) assert.equal(typeof r.inputs.primaryIpId, "number");
        assert.match(ipv6, /::1$/);
    });
});

describe("cloud: server and volume", () => {
    it("cloud: the volume is attached but left unformatted; its size comes from the config", async () => {
        const { resources } = await hostRun("staging", (raw) => (raw.server.volumeSizeGb = 40));
        const volume = one(resources, HCLOUD("Volume"), "data");
        assert.equal(volume.inputs.size, 40);
        assert.equal(volume.inputs.format, undefined);
        assert.equal(volume.inputs.serverId, undefined, "attached through VolumeAttachment, so a new server does not touch the volume");
        const attachment = one(resources, HCLOUD("VolumeAttachment"), "data");
        assert.equal(attachment.inputs.automount, false);
        assert.equal(typeof attachment.inputs.volumeId, "number");
    });

    it("cloud: the server is replaced delete-first (its primary IPs must be free) and ignores only its user data", async () => {
        const { resources } = await hostRun();
        const server = one(resources, HCLOUD("Server"), "server");
        assert.equal(server.deleteBeforeReplace, true);
        // Not sshKeys: a replacement would reuse the key ids in state, and a deleted key fails it.
        assert.deepEqual([...server.ignoreChanges].sort(), ["userData"]);
        assert.equal(server.inputs.image, "debian-13");
        assert.deepEqual(server.secretInputs, ["userData"]);
    });

    it("cloud: only the stack's own deploy key is a Hetzner SSH key; admin keys never are (a removed one cannot break a rebuild)", async () => {
        const { resources } = await hostRun("staging", (raw) => raw.server.sshPublicKeys.push("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKb9zUXqHK3B8t2wB1e3mE3bX3p5ZbqR9N6m1zq2w3xY second-admin"));
        const server = one(resources, HCLOUD("Server"), "server");
        const keys = ofType(resources, HCLOUD("SshKey"));
        assert.deepEqual(keys.map((k) => k.name), ["deploy"]);
        assert.equal((server.inputs.sshKeys as string[]).length, 1);
        assert.ok(server.dependencies.includes(keys[0].urn), "the server boots with the deploy key");
        // The deploy key is generated per stack and named after it: two stacks in one Hetzner
        // project never upload the same key (Hetzner refuses a duplicate fingerprint).
        const names = await Promise.all(["staging", "prod"].map(async (stack) => one((await hostRun(stack)).resources, HCLOUD("SshKey"), "deploy").inputs.name));
        assert.notEqual(names[0], names[1]);
    });

    it("cloud: the machine is ready for the first step only once the data volume is attached", async () => {
        const { resources } = await hostRun();
        const ready = one(resources, "command:remote:Command", "machine-ready");
        const attachment = one(resources, HCLOUD("VolumeAttachment"), "data");
        assert.ok(ready.dependencies.includes(attachment.urn), "machine-ready must wait for the volume attachment (base formats and mounts the volume)");
    });

    it("cloud: cloud-init only installs the pinned host key and the authorized keys", () => {
        const text = cloudInit({ hostPrivateKeyOpenssh: "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n", hostPublicKeyOpenssh: "ssh-ed25519 AAAAhost\n", authorizedKeys: ["ssh-ed25519 AAAAdeploy\n", "ssh-ed25519 AAAAadmin admin"] });
        assert.ok(text.startsWith("#cloud-config\n"));
        const doc = YAML.parse(text);
        assert.deepEqual(Object.keys(doc).sort(), ["disable_root", "ssh_authorized_keys", "ssh_deletekeys", "ssh_keys", "ssh_pwauth", "users"]);
        assert.deepEqual(doc.users, [], "no default user besides root");
        assert.equal(doc.ssh_keys.ed25519_public, "ssh-ed25519 AAAAhost");
        assert.equal(doc.ssh_keys.ed25519_private, "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n");
        assert.deepEqual(doc.ssh_authorized_keys, ["ssh-ed25519 AAAAdeploy", "ssh-ed25519 AAAAadmin admin"]);
    });

    it("cloud: the connection pins the generated host key, logs in as root with the deploy key, and is secret", async () => {
        const { host, resources } = await hostRun();
        const c = await valueOf(host.connection);
        assert.equal(c.user, "root");
        assert.equal(c.host, await valueOf(host.ipv4));
        assert.match(c.hostKey, /^ssh-ed25519 [A-Za-z0-9+/=]+$/);
        assert.match(c.privateKey, /OPENSSH PRIVATE KEY/);
        assert.equal(await (host.connection as any).isSecret, true);
        const wait = one(resources, "command:remote:Command", "machine-ready");
        const conn = wait.inputs.connection as Record<string, unknown>;
        assert.equal(conn.hostKey, c.hostKey);
        assert.ok((conn.dialErrorLimit as number) > 10, "the first command waits longer for the machine than the default 10 dials");
        assert.match(String(wait.inputs.create), /cloud-init status --wait/);
    });

    it("cloud: root's authorized_keys follows the config through the ssh-access step", async () => {
        const m = model();
        const step = sshAccessStep(m, "ssh-ed25519 AAAAdeploy deploy\n");
        assert.equal(step.files[0].path, "/root/.ssh/authorized_keys");
        assert.equal(step.files[0].mode, "0600");
        assert.deepEqual(step.files[0].content.split("\n").filter((l) => l && !l.startsWith("#")), ["ssh-ed25519 AAAAdeploy deploy", ...m.server.sshPublicKeys]);
        assert.doesNotThrow(() => renderApplyScript(step));
        const { resources } = await hostRun();
        const access = one(resources, "command:remote:Command", "ssh-access");
        assert.deepEqual([...access.secretInputs].sort(), ["connection", "stdin"]);
    });
});

describe("cloud: protection per stack", () => {
    const protectedNames = (rs: readonly RegisteredResource[]) => rs.filter((r) => r.protect).map((r) => `${r.type.split(":").pop()}:${r.name}`).sort();

    it("cloud: in prod the primary IPs and the volume are protected, in Pulumi and at Hetzner", async () => {
        const { resources } = await hostRun("prod");
        assert.deepEqual(protectedNames(resources), ["PrimaryIp:ipv4", "PrimaryIp:ipv6", "Volume:data"]);
        for (const r of resources.filter((x) => x.protect)) assert.equal(r.inputs.deleteProtection, true);
        // And kept at Hetzner if they ever leave the stack.
        assert.deepEqual(resources.filter((r) => r.retainOnDelete).map((r) => `${r.type.split(":").pop()}:${r.name}`).sort(), ["PrimaryIp:ipv4", "PrimaryIp:ipv6", "Volume:data"]);
    });

    it("cloud: in staging nothing is protected", async () => {
        const { resources } = await hostRun("staging");
        assert.deepEqual(protectedNames(resources), []);
        for (const r of ofType(resources, HCLOUD("PrimaryIp"))) assert.equal(r.inputs.deleteProtection, false);
        assert.deepEqual(resources.filter((r) => r.retainOnDelete), []);
    });
});
