import assert from "node:assert/strict";
import { describe, it } from "node:test";
import * as command from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";
import { ServerConfig, type ServerConnection } from "../../components/remote";
import { remoteApplyCommand, RUN_SCRIPT_FROM_STDIN, secretRef, stepSummary, type Step } from "../../components/steps";
import { one, ofType, runMocked, type RegisteredResource } from "../harness/mocks";

const CONNECTION: ServerConnection = { host: "203.0.113.10", user: "root", privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n", hostKey: "ssh-ed25519 AAAAhost" };
const SECRETS = { "db.mailreader": "Reader0123456789Reader0123456789", "rspamd.controller": "Rspamd0123456789Rspamd0123456789" };

const step = (name: string, after: string[], extra: Partial<Step> = {}): Step => ({
    name,
    description: `${name} step`,
    files: [{ path: `/etc/ispmail/${name}.conf`, content: `# ${name}\n` }],
    script: `log "${name} done"`,
    after,
    ...extra,
});

const STEPS: Step[] = [
    step("base", []),
    step("postgresql", ["base"], {
        files: [{ path: "/etc/ispmail/secrets/db.mailreader", content: secretRef("db.mailreader"), secret: true }],
    }),
    step("tls", ["base"]),
    step("certbot", ["tls"], { background: true }),
];

async function configRun(steps: readonly Step[] = STEPS, secretNames = Object.keys(SECRETS)) {
    return runMocked(() => {
        const ready = new command.remote.Command("machine-ready", { connection: CONNECTION, create: "true" });
        const dnsRecord = new command.remote.Command("dns-stand-in", { connection: CONNECTION, create: "true" });
        return new ServerConfig("config", {
            steps,
            secrets: Object.fromEntries(secretNames.map((n) => [n, pulumi.secret(SECRETS[n as keyof typeof SECRETS])])),
            connection: pulumi.secret(CONNECTION),
            serverId: "4711",
            machineReady: ready,
            extraDependsOn: { certbot: [dnsRecord] },
        });
    });
}

const commandsOf = (rs: readonly RegisteredResource[]) => ofType(rs, "command:remote:Command").filter((r) => r.parent.endsWith("::config"));

describe("remote: steps as commands", () => {
    it("remote: each step becomes one command that pipes its apply script into bash and checks its result line", async () => {
        const { resources, error } = await configRun();
        assert.equal(error, undefined);
        const commands = commandsOf(resources);
        assert.deepEqual(commands.map((c) => c.name).sort(), ["base", "certbot", "postgresql", "tls"]);
        for (const c of commands) {
            assert.equal(c.inputs.create, remoteApplyCommand({ name: c.name, background: c.name === "certbot" }, { holdsSecrets: c.name === "postgresql" }));
            // A background step's script runs at a lower CPU priority (Step.background).
            assert.ok(String(c.inputs.create).includes(`"$lock" ${c.name === "certbot" ? "nice -n 10 " : ""}${RUN_SCRIPT_FROM_STDIN} >"$out"`), `${c.name}: ${c.inputs.create}`);
            // The provider would send the previous stdout as an SSH environment variable (sshd refuses it).
            assert.equal(c.inputs.addPreviousOutputInEnv, false, `${c.name}: addPreviousOutputInEnv`);
        }
    });

    it("remote: stdin is secret and carries the script with the secrets resolved; the create string holds none", async () => {
        const { resources } = await configRun();
        for (const c of commandsOf(resources)) assert.ok(c.secretInputs.includes("stdin"), `${c.name}: stdin must be secret`);
        const pg = one(resources, "command:remote:Command", "postgresql");
        const stdin = String(pg.inputs.stdin);
        assert.ok(stdin.startsWith("#!/bin/bash\nset -euo pipefail"));
        const b64 = Buffer.from(SECRETS["db.mailreader"]).toString("base64");
        assert.ok(stdin.includes(b64.slice(0, 40)), "the resolved secret travels (base64) in the script");
        assert.ok(!stdin.includes("@@secret:"), "no unresolved placeholder");
        for (const c of commandsOf(resources)) assert.ok(!JSON.stringify(c.inputs.create).includes(SECRETS["db.mailreader"]));
    });

    it("remote: triggers are the server id and the step's summary lines", async () => {
        const { resources } = await configRun();
        for (const s of STEPS) assert.deepEqual(one(resources, "command:remote:Command", s.name).inputs.triggers, ["server 4711", ...stepSummary(s)]);
        // Summarised with placeholders: the triggers never contain a secret.
        for (const c of commandsOf(resources)) assert.ok(!JSON.stringify(c.inputs.triggers).includes(SECRETS["db.mailreader"]), c.name);
    });

    it("remote: a step that holds secrets logs nothing and keeps its output secret; others log", async () => {
        const { resources } = await configRun();
        const pg = one(resources, "command:remote:Command", "postgresql");
        assert.equal(pg.inputs.logging, "none");
        assert.ok(pg.additionalSecretOutputs.includes("stdout") && pg.additionalSecretOutputs.includes("stderr"));
        const base = one(resources, "command:remote:Command", "base");
        assert.equal(base.inputs.logging, undefined);
        assert.ok(!base.additionalSecretOutputs.includes("stdout"), "a plain step's output stays readable for debugging");
    });

    it("remote: a step waits for the machine, for the steps in its `after`, and for its extra dependencies", async () => {
        const { resources } = await configRun();
        const urn = (name: string) => resources.find((r) => r.name === name && r.type === "command:remote:Command")!.urn;
        const deps = (name: string) => one(resources, "command:remote:Command", name).dependencies;
        assert.ok(deps("base").includes(urn("machine-ready")));
        assert.ok(!deps("base").includes(urn("postgresql")));
        assert.ok(deps("postgresql").includes(urn("base")));
        assert.ok(deps("certbot").includes(urn("tls")));
        assert.ok(deps("certbot").includes(urn("dns-stand-in")));
        assert.ok(!deps("tls").includes(urn("dns-stand-in")));
    });

    it("remote: a step referencing an unknown secret fails the program before any command is registered", async () => {
        const bad = [step("base", [], { files: [{ path: "/etc/ispmail/secrets/x", content: secretRef("db.unknown"), secret: true }] })];
        const { resources, error } = await configRun(bad);
        assert.match(String(error), /unknown secrets: db\.unknown/);
        assert.equal(commandsOf(resources).length, 0);
    });

    it("remote: a step whose `after` names a later or missing step is refused", async () => {
        const { error } = await configRun([step("postfix", ["dovecot"]), step("dovecot", [])]);
        assert.match(String(error), /postfix runs after "dovecot", which is not an earlier step/);
    });
});

describe("remote: steps decided during the deployment (deferred)", () => {
    const deferredRun = (candidates: Step[], chosen: Step) =>
        runMocked(() => {
            const ready = new command.remote.Command("machine-ready", { connection: CONNECTION, create: "true" });
            return new ServerConfig("config", {
                steps: STEPS,
                secrets: Object.fromEntries(Object.entries(SECRETS).map(([n, v]) => [n, pulumi.secret(v)])),
                connection: pulumi.secret(CONNECTION),
                serverId: "4711",
                machineReady: ready,
                deferred: { tls: { candidates, chosen: pulumi.output(chosen) } },
            });
        });
    const tlsA = step("tls", ["base"], { script: 'log "signer a"' });
    const tlsB = step("tls", ["base"], { script: 'log "signer b"' });

    it("remote: the chosen candidate becomes the step's content and its summary the triggers; other steps stay plain", async () => {
        const { resources, error } = await deferredRun([tlsA, tlsB], tlsB);
        assert.equal(error, undefined, String(error));
        const tls = one(resources, "command:remote:Command", "tls");
        assert.deepEqual(tls.inputs.triggers, ["server 4711", ...stepSummary(tlsB)]);
        assert.match(String(tls.inputs.stdin), /signer b/);
        assert.deepEqual(one(resources, "command:remote:Command", "base").inputs.triggers, ["server 4711", ...stepSummary(STEPS[0])]);
    });

    it("remote: a candidate that differs in secrets or order is refused up front, before any command exists", async () => {
        const withSecret = step("tls", ["base"], { files: [{ path: "/etc/ispmail/secrets/x", content: secretRef("db.mailreader"), secret: true }] });
        const reordered = step("tls", ["postgresql"]);
        for (const bad of [withSecret, reordered]) {
            const { error, resources } = await deferredRun([tlsA, bad], tlsA);
            assert.match(String(error), /deferred variant differs in name, secrets or order/);
            assert.equal(commandsOf(resources).length, 0);
        }
    });
});
