/**
 * One shape per service: everything about a service is derived from the list of services. A
 * throw-away service, added the way docs/ARCHITECTURE.md ("How to add a service") says, shows up
 * in the firewall, in `npm run check`'s port probes, in DNS (A/AAAA and SRV) and on the
 * certificate, gets its secret generated, and its step is applied after the one it names, by the
 * script Pulumi sends.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { runChecks } from "../../check/run";
import { MailServer } from "../../components/mail-server";
import { publicPorts, renderServerSteps, SERVICES, secretSpecs, settledFacts, STEP, webHosts, type Service } from "../../components/services";
import { parseStepResult, secretRef } from "../../components/steps";
import { ofType, one, runMocked } from "../harness/mocks";
import { fixtureModel, labRawConfig } from "../fixtures/config";
import { parseConfig } from "../../components/config";
import { needsRoot } from "../harness/needs";

const model = fixtureModel();
const SECRET = "throwaway.token";

/** A local port that is really open, so that `check` can find it reachable. */
let listener: Server;
let port: number;
let root: string;

/** The recipe's step 1: one Service value (its config file lives below a temp dir, not /etc). */
const throwaway = (): Service => ({
    name: "throwaway",
    after: [STEP.postfix],
    publicPorts: [{ port, name: "throwaway", description: "a throw-away service of the tests", daemon: "throwaway", srv: "_throwaway._tcp" }],
    webNames: (m) => [`throwaway.${m.domains[0]}`],
    secrets: () => [{ name: SECRET, kind: "password", description: "throw-away token", stateful: false }],
    render: () => ({
        description: "a throw-away service",
        files: [{ path: `${root}/etc/throwaway/token`, content: secretRef(SECRET), mode: "0600", secret: true }],
        script: [`ISPMAIL_STATE_DIR=${root}/state`, `reload_when_changed throwaway ${root}/etc/throwaway`].join("\n"),
    }),
});

before(async () => {
    root = mkdtempSync("/tmp/ispmail-services-test-");
    listener = createServer((socket) => socket.end());
    await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
    port = (listener.address() as { port: number }).port;
});
after(() => {
    listener.close();
    rmSync(root, { recursive: true, force: true });
});

describe("services: everything is derived from the list", () => {
    it("services: every step name, public port and secret is claimed by exactly one service", () => {
        const names = SERVICES.map((s) => s.name);
        assert.equal(new Set(names).size, names.length);
        assert.deepEqual(new Set(names), new Set(Object.values(STEP)), "each STEP constant names one service");
        // The public ports as the firewall opens them (written out: a changed list must be deliberate).
        assert.deepEqual(
            publicPorts(model).map((p) => [p.port, p.daemon]),
            [[25, "postfix"], [80, "apache2"], [443, "apache2"], [465, "postfix"], [587, "postfix"], [993, "dovecot"], [4190, "dovecot"]],
        );
        assert.throws(() => publicPorts(model, [...SERVICES, { ...throwaway(), publicPorts: [{ port: 25, name: "x", description: "x", daemon: "x" }] }]), /port 25 is opened by more than one service/);
        assert.throws(() => secretSpecs(model, [...SERVICES, { ...throwaway(), secrets: () => [{ name: "rspamd.controller", kind: "password", description: "x", stateful: false }] }]), /rspamd\.controller/);
    });

    /** The graph of the program with the throw-away service added (registered once, for both tests). */
    let graph: ReturnType<typeof runMocked> | undefined;
    const withThrowaway = () => (graph ??= runMocked(() => new MailServer("ispmail", { model, configuredSecrets: new Map(), services: [...SERVICES, throwaway()] }), { stack: "staging" }));

    it("services: a throw-away service added by the recipe gets its port, names, secret and ordered step", async () => {
        const services = [...SERVICES, throwaway()];
        const run = await withThrowaway();
        assert.equal(run.error, undefined, String(run.error));

        // The firewall opens its port to everyone.
        const firewall = one(run.resources, "hcloud:index/firewall:Firewall", "firewall");
        const rules = firewall.inputs.rules as Array<{ port?: string; sourceIps: string[]; description: string }>;
        assert.deepEqual(rules.find((r) => r.port === String(port)), { direction: "in", protocol: "tcp", port: String(port), sourceIps: ["0.0.0.0/0", "::/0"], description: "a throw-away service of the tests" });

        // DNS: A/AAAA for its web name and the SRV record of its port in every mail domain.
        const records = ofType(run.resources, "cloudflare:index/dnsRecord:DnsRecord").map((r) => `${String(r.inputs.type)} ${String(r.inputs.name)}`);
        for (const want of ["A throwaway.example.org", "AAAA throwaway.example.org", ...model.domains.map((d) => `SRV _throwaway._tcp.${d}`)]) assert.ok(records.includes(want), `${want} is published`);

        // The certificate asks for its web name (certbot's CERT_DOMAINS, from the web host list).
        assert.ok(webHosts(model, services).includes("throwaway.example.org"));
        const certbot = one(run.resources, "command:remote:Command", "certbot");
        const files = [...String(certbot.inputs.stdin).matchAll(/<<'ISPMAIL_B64'\n([A-Za-z0-9+/=\n]*?)\nISPMAIL_B64/g)].map((m) => Buffer.from(m[1].replace(/\n/g, ""), "base64").toString("utf8"));
        assert.ok(files.some((f) => /^CERT_DOMAINS='[^']*\bthrowaway\.example\.org\b/m.test(f)), "certificate.conf names it");

        // Its secret is generated (and only the step that uses it receives it).
        const password = one(run.resources, "random:index/randomPassword:RandomPassword", SECRET);
        assert.ok(password, "a RandomPassword for its secret");

        // Its step is a command after the one it names, and after nothing else of its own.
        const commands = ofType(run.resources, "command:remote:Command");
        const step = one(run.resources, "command:remote:Command", "throwaway");
        const postfix = commands.find((c) => c.name === "postfix")!;
        assert.ok(step.dependencies.includes(postfix.urn), "runs after postfix");
        assert.ok(step.secretInputs.includes("stdin"));
        const order = renderServerSteps(model, settledFacts(model), services).map((s) => s.name);
        assert.ok(order.indexOf("throwaway") > order.indexOf("postfix"));
    });

    it("services: the throw-away step's script, as Pulumi sends it, installs its secret root-only and reloads it once", { skip: needsRoot("the apply script installs the secret file as root:root (chown)") }, async () => {
        const run = await withThrowaway();
        assert.equal(run.error, undefined, String(run.error));
        const step = one(run.resources, "command:remote:Command", "throwaway");
        const bin = join(root, "bin");
        mkdirSync(bin, { recursive: true });
        writeFileSync(join(bin, "systemctl"), `#!/bin/bash\necho "$*" >> ${root}/systemctl.log\n`, { mode: 0o755 });
        const applied = spawnSync("bash", ["-s"], { input: String(step.inputs.stdin), encoding: "utf8", env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
        assert.equal(applied.status, 0, applied.stderr);
        assert.deepEqual(parseStepResult(applied.stdout)?.actions, ["reloaded throwaway"]);
        const token = `${root}/etc/throwaway/token`;
        assert.equal(statSync(token).mode & 0o777, 0o600);
        assert.match(readFileSync(token, "utf8"), /^[A-Za-z0-9]{8,}$/, "the generated secret, not its placeholder");
    });

    it("services: `npm run check` probes the ports of the services it is given", async () => {
        const services = [...SERVICES, throwaway()];
        const noRecords = { resolve: async () => [] };
        const findings = await runChecks(
            { stack: "test", lab: true, model, ipv4: "127.0.0.1", ipv6: "::1", records: [], dkimKnown: true, fixDns: "", fixPtr: "" },
            { lookup: noRecords, services },
        );
        const portFindings = findings.filter((f) => f.check === "port").map((f) => `${f.status} ${f.message}`);
        assert.ok(portFindings.some((f) => f.startsWith(`ok ${port} (throwaway) on 127.0.0.1 is reachable`)), portFindings.join("\n"));
        // Control: without the service, its port is not probed at all.
        const without = await runChecks({ stack: "test", lab: true, model, ipv4: "127.0.0.1", ipv6: "::1", records: [], dkimKnown: true, fixDns: "", fixPtr: "" }, { lookup: noRecords });
        assert.ok(!without.some((f) => f.check === "port" && f.message.startsWith(`${port} `)));
    });
});

describe("services: background steps", () => {
    it("services: the web, the certificate, webmail, Nextcloud, backups and the DKIM signer run at background priority, the mail path does not", () => {
        // The lab's stack (it has backups) with Nextcloud on.
        const raw = labRawConfig();
        raw.nextcloud = { enabled: true, version: "31.0.9", sha256: "cd".repeat(32) };
        const m = parseConfig(raw, { stack: "lab" }).model;
        const steps = renderServerSteps(m, settledFacts(m));
        assert.deepEqual(steps.filter((s) => s.background).map((s) => s.name).sort(), ["backup", "certbot", "dkim-signer", "nextcloud", "web", "webmail"]);
    });

    it("services: a step that is not background may not wait for one that is", () => {
        const late = (): Service => ({ ...throwaway(), name: "late", after: [STEP.certbot] });
        assert.throws(() => renderServerSteps(model, settledFacts(model), [...SERVICES, late()]), /step late runs after the background step\(s\) certbot: make it background too, or them not/);
        assert.doesNotThrow(() => renderServerSteps(model, settledFacts(model), [...SERVICES, { ...late(), background: true }]));
    });
});
