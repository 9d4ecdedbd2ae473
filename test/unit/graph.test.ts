import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createPublicKey } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import * as pulumi from "@pulumi/pulumi";
import { parseConfig } from "../../components/config";
import { sshfpOf, tlsaOfKey, txtText } from "../../components/dns/records";
import { program, type ProgramOutputs } from "../../components/program";
import { COMPONENT_TYPES, componentType, type ComponentKind } from "../../components/component-types";
import { secretSpecs } from "../../components/services";
import { isSecret, mockState, ofType, one, runMocked, valueOf, type RegisteredResource } from "../harness/mocks";
import { loadStackFile } from "../harness/stack-file";
import { REPO_ROOT, validRawConfig } from "../fixtures/config";

const withNamespace = (raw: Record<string, unknown>) => Object.fromEntries(Object.entries(raw).map(([k, v]) => [`ispmail:${k}`, v]));

async function programRun(stack: string, raw: Record<string, unknown> = validRawConfig(), secretKeys: string[] = []) {
    return runMocked(program, { stack, config: withNamespace(raw), secretKeys });
}

const CLOUD_OR_DNS = (r: RegisteredResource) => r.type.startsWith("hcloud:") || r.type.startsWith("cloudflare:");
const byKey = (rs: readonly RegisteredResource[]) => new Map(rs.map((r) => [`${r.type} ${r.name}`, r]));
/** The file contents an apply script installs (each is sent as a base64 here-document). */
const filesIn = (script: string) => [...script.matchAll(/<<'ISPMAIL_B64'\n([A-Za-z0-9+/=\n]*?)\nISPMAIL_B64/g)].map((m) => Buffer.from(m[1].replace(/\n/g, ""), "base64").toString("utf8"));
const short = (r: RegisteredResource) => `${r.type.split(":").pop()}:${r.name}`;

/**
 * The server steps of each example stack, written out: both without Nextcloud (its hash is left to
 * fill in), staging without backups; first the packages step (every step's packages in one apt run).
 */
const STEPS_OF_STACK: Record<string, string[]> = {
    "Pulumi.prod.yaml": ["packages", "base", "resolver", "tls-policy", "postgresql", "directory", "tls", "rspamd", "dkim-signer", "postfix", "dovecot", "web", "certbot", "webmail", "fail2ban", "backup"],
    "Pulumi.staging.yaml": ["packages", "base", "resolver", "tls-policy", "postgresql", "directory", "tls", "rspamd", "dkim-signer", "postfix", "dovecot", "web", "certbot", "webmail", "fail2ban"],
};

describe("graph: the example stacks", () => {
    for (const [file, steps] of Object.entries(STEPS_OF_STACK)) {
        const stack = file.split(".")[1];
        it(`graph: ${file} runs under mocks and registers the whole graph`, async () => {
            const path = join(REPO_ROOT, file);
            assert.ok(existsSync(path), `the example stack ${file} is missing`);
            const { config, secretKeys } = loadStackFile(path);
            const run = await runMocked(program, { stack, config, secretKeys });
            assert.equal(run.error, undefined, String(run.error));
            const outputs = run.result as ProgramOutputs;
            const raw = Object.fromEntries(Object.entries(config).filter(([k]) => k.startsWith("ispmail:")).map(([k, v]) => [k.slice(8), v]));
            const { model } = parseConfig(raw, { stack, secretKeys });
            const rs = run.resources;

            assert.deepEqual(
                ofType(rs, "hcloud:index/server:Server").length + ofType(rs, "hcloud:index/volume:Volume").length + ofType(rs, "hcloud:index/firewall:Firewall").length,
                3,
            );
            assert.equal(ofType(rs, "hcloud:index/primaryIp:PrimaryIp").length, 2);
            assert.equal(ofType(rs, "hcloud:index/rdns:Rdns").length, 2);
            assert.equal(ofType(rs, "hcloud:index/sshKey:SshKey").length, 1, "the deploy key only; admin keys go through ssh-access");
            assert.equal(ofType(rs, "random:index/randomPassword:RandomPassword").length, secretSpecs(model).filter((s) => s.kind === "password").length);
            assert.equal(ofType(rs, "tls:index/privateKey:PrivateKey").length, model.dkimSelectors.length + model.tlsKeys.length + 2);
            // One command per server step, plus the two that prepare the machine.
            const commands = ofType(rs, "command:remote:Command").map((c) => c.name).sort();
            assert.deepEqual(commands, [...steps, "machine-ready", "ssh-access"].sort());
            // The packages step comes first: it waits only for the machine, every other step waits
            // for it (dependsOn), and it installs every package the other steps list, each once.
            const command = (name: string) => one(rs, "command:remote:Command", name);
            const install = command("packages");
            assert.ok(install.dependencies.includes(command("machine-ready").urn));
            assert.deepEqual(steps.filter((n) => install.dependencies.includes(command(n).urn)), [], "the packages step waits for no other step");
            for (const name of steps.filter((n) => n !== "packages")) assert.ok(command(name).dependencies.includes(install.urn), `${name} waits for the packages step`);
            const listed = (name: string) => ((command(name).inputs.triggers as string[]).find((l) => l.startsWith("packages "))?.split(" ").slice(1) ?? []);
            const everyPackage = [...new Set(steps.filter((n) => n !== "packages").flatMap(listed))];
            assert.deepEqual([...listed("packages")].sort(), everyPackage.sort());
            assert.ok(listed("packages").includes("postgresql-17") && listed("packages").includes("postfix"));

            // The Cloudflare records are exactly the pure record set (the lab serves the same data).
            const records = await valueOf(outputs.dnsRecords);
            const registered = ofType(rs, "cloudflare:index/dnsRecord:DnsRecord");
            assert.equal(registered.length, records.length);
            // Read each registered record back into presentation format (the inverse of the Cloudflare mapping).
            const presentation = (r: RegisteredResource) => {
                const i = r.inputs as { type: string; name: string; ttl: number; content?: string; priority?: number; data?: Record<string, unknown> };
                const d = i.data ?? {};
                const content = { MX: `${i.priority} ${i.content}`, CAA: `${d.flags} ${d.tag} "${d.value}"`, SRV: `${d.priority} ${d.weight} ${d.port} ${d.target}`, SSHFP: `${d.algorithm} ${d.type} ${d.fingerprint}`, TLSA: `${d.usage} ${d.selector} ${d.matchingType} ${d.certificate}` }[i.type] ?? i.content;
                return `${i.type} ${i.name} ${i.ttl} ${content}`;
            };
            assert.deepEqual(registered.map(presentation).sort(), records.map((r) => `${r.type} ${r.name} ${r.ttl} ${r.content}`).sort());
            for (const r of registered) assert.equal(r.inputs.proxied, false);
            // The server's SSH host key (the program's tls.PrivateKey) is published as SSHFP on mailHost.
            // The key is the one cloud-init installs (the server's user data).
            const server = one(rs, "hcloud:index/server:Server", "server");
            const hostPublic = /ed25519_public: (ssh-ed25519 \S+)/.exec(String(server.inputs.userData))?.[1];
            assert.ok(hostPublic, "the host key in the server's user data");
            const sshfp = records.filter((r) => r.type === "SSHFP");
            assert.deepEqual(sshfp.map((r) => `${r.name} ${r.content}`), [`${model.mailHost} ${sshfpOf(hostPublic)}`]);
            assert.match(sshfp[0].content, /^4 2 [0-9a-f]{64}$/);
            // DANE: the TLSA record is the hash of the key the tls step installs for the certificate.
            const tlsStep = one(rs, "command:remote:Command", "tls");
            const certKey = filesIn(String(tlsStep.inputs.stdin)).find((f) => f.includes("PRIVATE KEY"));
            assert.ok(certKey, "the tls step delivers the certificate's key");
            const tlsa = records.filter((r) => r.type === "TLSA");
            assert.deepEqual(tlsa.map((r) => `${r.name} ${r.content}`), [`_25._tcp.${model.mailHost} ${tlsaOfKey(certKey)}`]);
            assert.ok(tlsStep.secretInputs.includes("stdin"), "the key travels as a secret");
            // One zone lookup per zone, by name, unless an id is configured.
            const zoneNames = run.invokes.filter((i) => i.token === "cloudflare:index/getZone:getZone").map((i) => (i.inputs.filter as { name: string }).name);
            assert.deepEqual(zoneNames.sort(), [...new Set(records.map((r) => r.zone))].filter((z) => !model.dns.zoneIds[z]).sort());
        });
    }
});

describe("graph: protection per stack", () => {
    const protectedOf = (rs: readonly RegisteredResource[]) => rs.filter((r) => r.protect).map(short).sort();

    it("graph: in prod the primary IPs, the volume, the DKIM keys, the backup password and the password digests' key are protected", async () => {
        const raw = validRawConfig();
        raw.backup = { repository: "sftp:backup@backup.example.net:/ispmail" };
        const run = await programRun("prod", raw);
        assert.equal(run.error, undefined, String(run.error));
        assert.deepEqual(protectedOf(run.resources), ["PrimaryIp:ipv4", "PrimaryIp:ipv6", "PrivateKey:dkim:s2026a", "PrivateKey:dkim:s2026b", "PrivateKey:tls:tls1", "RandomPassword:backup.restic", "RandomPassword:directory.digest-key", "Volume:data", "ZoneDnssec:dnssec:example.com", "ZoneDnssec:dnssec:example.org"]);
    });

    it("graph: in staging nothing is protected", async () => {
        const raw = validRawConfig();
        raw.backup = { repository: "sftp:backup@backup.example.net:/ispmail" };
        const run = await programRun("staging", raw);
        assert.deepEqual(protectedOf(run.resources), []);
    });

    it("graph: DKIM keys ignore changes of their generation parameters, so code changes never rotate them", async () => {
        const run = await programRun("staging");
        const key = one(run.resources, "tls:index/privateKey:PrivateKey", "dkim:s2026a");
        assert.deepEqual([...key.ignoreChanges].sort(), ["algorithm", "rsaBits"]);
        assert.deepEqual(key.inputs, { algorithm: "RSA", rsaBits: 2048 });
    });

    it("graph: every generated password ignores changes of its length and alphabet, so a code change never regenerates one (no mass reset of mailbox passwords)", async () => {
        const run = await programRun("staging");
        const passwords = ofType(run.resources, "random:index/randomPassword:RandomPassword");
        assert.ok(passwords.some((p) => p.name.startsWith("user:")), "mailbox passwords are among them");
        for (const p of passwords) assert.deepEqual([...p.ignoreChanges].sort(), ["length", "special"], p.name);
    });
});

describe("graph: changes that must not touch the cloud or DNS", () => {
    it("graph: adding a user and an alias registers no new cloud/DNS resource and changes no cloud/DNS input", async () => {
        const before = await programRun("staging");
        const raw = validRawConfig();
        raw.users.push({ address: "dave@example.com" });
        raw.aliases.push({ source: "team@example.org", destination: "dave@example.com" });
        const after = await programRun("staging", raw);
        assert.equal(after.error, undefined, String(after.error));
        const a = byKey(before.resources.filter(CLOUD_OR_DNS));
        const b = byKey(after.resources.filter(CLOUD_OR_DNS));
        assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
        for (const [key, r] of a) assert.deepEqual(b.get(key)!.inputs, r.inputs, key);
        // What did change: one new generated password, nothing else new.
        const newNames = after.resources.filter((r) => !byKey(before.resources).has(`${r.type} ${r.name}`)).map(short);
        assert.deepEqual(newNames, ["RandomPassword:user:dave@example.com"]);
    });

    it("graph: a new server image replaces only the server; IPs, volume, rDNS, firewall and DNS keep names and inputs", async () => {
        const before = await programRun("prod");
        const raw = validRawConfig();
        raw.server.image = "debian-13-arm64";
        const after = await programRun("prod", raw);
        const a = byKey(before.resources.filter(CLOUD_OR_DNS));
        const b = byKey(after.resources.filter(CLOUD_OR_DNS));
        assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
        const changed = [...a].filter(([key, r]) => JSON.stringify(b.get(key)!.inputs) !== JSON.stringify(r.inputs)).map(([key]) => key);
        assert.deepEqual(changed, ["hcloud:index/server:Server server"]);
        assert.equal(one(after.resources, "hcloud:index/server:Server", "server").inputs.image, "debian-13-arm64");
        // DANE survives the replacement: the new server gets the same certificate key, so the
        // published TLSA record (unchanged above) matches it from its first certificate on.
        const certKey = (run: typeof before) => filesIn(String(one(run.resources, "command:remote:Command", "tls").inputs.stdin)).find((f) => f.includes("PRIVATE KEY"));
        assert.ok(certKey(before));
        assert.equal(certKey(after), certKey(before));
        assert.equal(one(after.resources, "tls:index/privateKey:PrivateKey", "tls:tls1").protect, true);
    });

    it("graph: a new admin SSH key changes no cloud resource and reaches the running server through ssh-access", async () => {
        const before = await programRun("staging");
        const raw = validRawConfig();
        const newKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINE3lxGeg1IENb7bQ3zxFIGi/oJHpqMcyOZ/tRyHvAA3 ops@example.org";
        raw.server.sshPublicKeys.push(newKey);
        const after = await programRun("staging", raw);
        const a = byKey(before.resources.filter(CLOUD_OR_DNS));
        const b = byKey(after.resources.filter(CLOUD_OR_DNS));
        assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort(), "no Hetzner key per admin: the server boots with the deploy key only");
        for (const [key, r] of b) assert.deepEqual(r.inputs, a.get(key)!.inputs, `${key} is unchanged`);
        const access = one(after.resources, "command:remote:Command", "ssh-access");
        assert.ok(filesIn(String(access.inputs.stdin)).some((content) => content.split("\n").includes(newKey)), "authorized_keys on the server gets the new key");
    });
});

describe("graph: DNSSEC", () => {
    it("graph: Cloudflare signs every zone, the DS records are a stack output and in beforeFirstUse, and signing is never switched off by the stack", async () => {
        const run = await programRun("staging");
        const outputs = run.result as ProgramOutputs;
        const signed = ofType(run.resources, "cloudflare:index/zoneDnssec:ZoneDnssec");
        assert.deepEqual(signed.map((r) => r.name).sort(), ["dnssec:example.com", "dnssec:example.org"]);
        for (const r of signed) {
            assert.equal(r.inputs.status, "active");
            // Deleting it would leave the registrar's DS pointing at an unsigned zone: every lookup fails.
            assert.equal(r.retainOnDelete, true, r.name);
        }
        const ds = await valueOf(outputs.dnssecDs);
        assert.deepEqual(Object.keys(ds).sort(), ["example.com", "example.org"]);
        assert.match(ds["example.org"], /^example\.org\. \d+ IN DS \d+ 13 2 [0-9A-F]{64}$/);
        assert.match(outputs.beforeFirstUse, /DS record \(pulumi stack output dnssecDs\)/);

        const raw = validRawConfig();
        raw.dns = { dnssec: false };
        const off = await programRun("staging", raw);
        assert.deepEqual(ofType(off.resources, "cloudflare:index/zoneDnssec:ZoneDnssec"), []);
        assert.deepEqual(await valueOf((off.result as ProgramOutputs).dnssecDs), {});
        assert.doesNotMatch((off.result as ProgramOutputs).beforeFirstUse, /DNSSEC/);
    });
});

describe("graph: secrets", () => {
    it("graph: the DKIM TXT record publishes the public half of the generated key", async () => {
        const run = await programRun("staging");
        const outputs = run.result as ProgramOutputs;
        const records = await valueOf(outputs.dnsRecords);
        const dkim = records.find((r) => r.name === "s2026a._domainkey.example.org")!;
        const p = /p=([A-Za-z0-9+/=]+)$/.exec(txtText(dkim.content))![1];
        const key = createPublicKey({ key: Buffer.from(p, "base64"), format: "der", type: "spki" });
        assert.equal(key.asymmetricKeyType, "rsa");
        assert.equal(key.asymmetricKeyDetails?.modulusLength, 2048);
        const registered = one(run.resources, "cloudflare:index/dnsRecord:DnsRecord", "TXT:s2026a._domainkey.example.org");
        assert.equal(registered.inputs.content, dkim.content);
    });

    it("graph: a password set in config is used as is, gets no generated twin, and is not among the exported passwords", async () => {
        const raw = validRawConfig();
        raw.users[0].password = "configured-password-for-alice";
        const run = await programRun("staging", raw, ["ispmail:users"]);
        assert.equal(run.error, undefined, String(run.error));
        const names = ofType(run.resources, "random:index/randomPassword:RandomPassword").map((r) => r.name);
        assert.ok(!names.includes("user:alice@example.org"));
        assert.ok(names.includes("user:bob@example.org"));
        const outputs = run.result as ProgramOutputs;
        const exported = await valueOf(outputs.userPasswords);
        assert.deepEqual(Object.keys(exported).sort(), ["bob@example.org", "carol@example.com"]);
        assert.match(exported["bob@example.org"], /^[A-Za-z0-9]{32}$/);
        assert.equal(await isSecret(outputs.userPasswords), true);
    });

    it("graph: the admins' secrets are one secret output, holding exactly the ones the stack has, with the values the server gets", async () => {
        const raw = validRawConfig();
        const run = await programRun("staging", raw);
        assert.equal(run.error, undefined, String(run.error));
        const outputs = run.result as ProgramOutputs;
        assert.equal(await isSecret(outputs.adminSecrets), true);
        const admin = await valueOf(outputs.adminSecrets);
        // No Nextcloud and no backups in the fixture: the database admin and Rspamd's only.
        assert.deepEqual(Object.keys(admin).sort(), ["db.mailadmin", "rspamd.controller"]);
        for (const [name, value] of Object.entries(admin)) {
            const generated = one(run.resources, "random:index/randomPassword:RandomPassword", name);
            assert.equal(value, mockState({ ...generated, custom: true }).state.result, name);
        }

        const withAll = validRawConfig();
        withAll.nextcloud = { enabled: true, version: "31.0.9", sha256: "ab".repeat(32) };
        withAll.backup = { repository: "sftp:backup@backup.example.net:/srv/restic/mx1" };
        const all = await programRun("staging", withAll);
        assert.equal(all.error, undefined, String(all.error));
        assert.deepEqual(Object.keys(await valueOf((all.result as ProgramOutputs).adminSecrets)).sort(), ["backup.restic", "db.mailadmin", "nextcloud.admin", "rspamd.controller"]);
    });
});

describe("graph: component type tokens", () => {
    it("graph: every component is ispmail:index:<Type>, and each keeps an alias to the token it had, so existing stacks keep their resources", async () => {
        const run = await programRun("staging", validRawConfig());
        assert.equal(run.error, undefined, String(run.error));
        const components = run.resources.filter((r) => !r.custom && r.type.startsWith("ispmail:"));
        assert.deepEqual([...new Set(components.map((r) => r.type))].sort(), Object.values(COMPONENT_TYPES).map((t) => t.type).sort());
        for (const r of components) assert.match(r.type, /^ispmail:index:[A-Z][A-Za-z]+$/, r.name);
        for (const kind of Object.keys(COMPONENT_TYPES) as ComponentKind[]) {
            const [type, options] = componentType(kind, { aliases: [{ name: "earlier-name" }] });
            assert.equal(type, COMPONENT_TYPES[kind].type);
            assert.deepEqual(options.aliases, [{ name: "earlier-name" }, { type: COMPONENT_TYPES[kind].formerly }], kind);
            assert.notEqual(COMPONENT_TYPES[kind].formerly, type);
        }
    });
});

describe("graph: a bad config", () => {
    it("graph: a bad config fails at start with every problem and its key path, and registers no resource", async () => {
        const raw = validRawConfig();
        raw.mailHost = "mx_1.example.org";
        raw.users.push({ address: "eve@unmanaged.example" });
        const run = await programRun("prod", raw);
        assert.ok(pulumi.RunError.isInstance(run.error), `expected a RunError, got ${String(run.error)}`);
        const message = (run.error as Error).message;
        assert.match(message, /ispmail:mailHost/);
        assert.match(message, /ispmail:users\[3\]\.address/);
        assert.deepEqual(run.resources, []);
    });
});

describe("graph: index.ts, the real entry point", () => {
    const runIndex = (config: Record<string, unknown>, stack: string, secretKeys: string[] = []) => {
        const env = { ...process.env, PULUMI_CONFIG: JSON.stringify(Object.fromEntries(Object.entries(config).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]))), PULUMI_CONFIG_SECRET_KEYS: JSON.stringify(secretKeys), ISPMAIL_MOCK_STACK: stack };
        const p = spawnSync(process.execPath, ["--import", "tsx", join(REPO_ROOT, "test", "harness", "run-index.ts")], { env, encoding: "utf8", timeout: 120_000 });
        assert.equal(p.status, 0, p.stderr);
        // The engine's log lines (info/warn) come first under mocks; the JSON line is the last one.
        const last = p.stdout.trim().split("\n").pop() ?? "";
        return JSON.parse(last) as { resources: RegisteredResource[]; outputs: Record<string, any>; error: null | { message: string; runError: boolean } };
    };

    it("graph: index.ts reads PULUMI_CONFIG and PULUMI_CONFIG_SECRET_KEYS and exports what a user needs", () => {
        const raw = validRawConfig();
        raw.users[1].password = "configured-password-for-bob";
        const out = runIndex(withNamespace(raw), "staging", ["ispmail:users"]);
        assert.equal(out.error, null);
        assert.deepEqual(Object.keys(out.outputs).sort(), ["adminSecrets", "beforeFirstUse", "clientSettings", "dkimSigning", "dnsRecords", "dnssecDs", "ipv4", "ipv6", "mailHost", "userPasswords"]);
        assert.equal(out.outputs.mailHost, "mx1.example.org");
        // The mocked records are long published: the first listed selector signs.
        assert.deepEqual([out.outputs.dkimSigning.selector, out.outputs.dkimSigning.state], [raw.dkimSelectors[0], "settled"]);
        assert.deepEqual(out.outputs.clientSettings.imap, { host: "mx1.example.org", port: 993, security: "TLS" });
        assert.deepEqual(out.outputs.clientSettings.smtp, { host: "mx1.example.org", port: 465, security: "TLS" });
        assert.match(out.outputs.beforeFirstUse, /port 25/);
        assert.deepEqual(Object.keys(out.outputs.userPasswords).sort(), ["alice@example.org", "carol@example.com"]);
        assert.ok(out.resources.length > 50);
    });

    it("graph: index.ts refuses a password given as plain config, before registering anything", () => {
        const raw = validRawConfig();
        raw.users[1].password = "configured-password-for-bob";
        const out = runIndex(withNamespace(raw), "staging", []);
        assert.equal(out.error?.runError, true);
        assert.match(out.error!.message, /ispmail:users\[1\]\.password/);
        assert.deepEqual(out.resources, []);
    });
});
