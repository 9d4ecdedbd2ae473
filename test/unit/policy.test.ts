/**
 * The policy pack (policy/policies.ts): each policy fed a violating and a conforming resource, and
 * every policy run over what the program registers for the example stacks under mocks (the program
 * must comply; a policy that reported nothing for everything would fail the violating cases).
 *
 * The arguments are built as the engine hands them to a policy (type, name, props, opts, config);
 * the pack itself runs only under the Pulumi CLI, which this machine does not have.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { PolicyResource, ResourceValidationArgs, ResourceValidationPolicy, StackValidationArgs, StackValidationPolicy } from "@pulumi/policy";
import { program } from "../../components/program";
import { caaPerZone, dmarcHasRua, dnsNotProxied, POLICIES, protectedResources, secretStepsLogNothing, sshNotWorldOpen } from "../../policy/policies";
import { REPO_ROOT } from "../fixtures/config";
import { runMocked, type RegisteredResource } from "../harness/mocks";
import { loadStackFile } from "../harness/stack-file";

interface FakeResource {
    readonly type: string;
    readonly name: string;
    readonly props: Record<string, unknown>;
    readonly protect?: boolean;
    readonly additionalSecretOutputs?: string[];
}

function policyResource(r: FakeResource): PolicyResource {
    return {
        type: r.type,
        name: r.name,
        urn: `urn:pulumi:test::ispmail::${r.type}::${r.name}`,
        props: r.props,
        opts: { protect: r.protect ?? false, ignoreChanges: [], aliases: [], customTimeouts: { createSeconds: 0, updateSeconds: 0, deleteSeconds: 0 }, additionalSecretOutputs: r.additionalSecretOutputs ?? [] },
        dependencies: [],
        propertyDependencies: {},
    } as unknown as PolicyResource;
}

/** The violations a resource policy reports for one resource (with this policy config). */
async function violations(policy: ResourceValidationPolicy, r: FakeResource, config: object = {}): Promise<string[]> {
    const found: string[] = [];
    const defaults = Object.fromEntries(Object.entries(policy.configSchema?.properties ?? {}).map(([k, v]) => [k, (v as { default?: unknown }).default]));
    const args = { ...policyResource(r), stackTags: new Map(), getConfig: () => ({ ...defaults, ...config }), notApplicable: () => undefined as never } as unknown as ResourceValidationArgs;
    const validations = Array.isArray(policy.validateResource) ? policy.validateResource : [policy.validateResource!];
    for (const v of validations) await v(args, (message) => found.push(message));
    return found;
}

async function stackViolations(policy: StackValidationPolicy, resources: readonly FakeResource[]): Promise<string[]> {
    const found: string[] = [];
    const args = { resources: resources.map(policyResource), stackTags: new Map(), getConfig: () => ({}), notApplicable: () => undefined as never } as unknown as StackValidationArgs;
    await policy.validateStack(args, (message) => found.push(message));
    return found;
}

const PRIMARY_IP = "hcloud:index/primaryIp:PrimaryIp";
const DNS = "cloudflare:index/dnsRecord:DnsRecord";
const COMMAND = "command:remote:Command";

describe("policy: each rule with a violating and a conforming resource", () => {
    it("policy: protected stacks: an unprotected primary IP, or one without Hetzner's delete protection, is refused; a DKIM key must be protected; staging (protected: false) is exempt", async () => {
        const ip = { type: PRIMARY_IP, name: "ipv4", props: { deleteProtection: true }, protect: true };
        assert.deepEqual(await violations(protectedResources, ip), []);
        assert.equal((await violations(protectedResources, { ...ip, protect: false })).length, 1);
        assert.match((await violations(protectedResources, { ...ip, props: { deleteProtection: false } }))[0], /delete protection/);
        assert.equal((await violations(protectedResources, { type: "tls:index/privateKey:PrivateKey", name: "dkim:s2026", props: {} })).length, 1);
        assert.deepEqual(await violations(protectedResources, { type: "tls:index/privateKey:PrivateKey", name: "deploy-key", props: {} }), [], "only DKIM keys");
        assert.deepEqual(await violations(protectedResources, { ...ip, protect: false, props: {} }, { protected: false }), []);
    });

    it("policy: port 22 open to 0.0.0.0/0 or ::/0 (alone, in a range, or as any) is refused; open to admin networks it passes, and port 25 to all passes", async () => {
        const fw = (rules: object[]) => ({ type: "hcloud:index/firewall:Firewall", name: "firewall", props: { rules } });
        const rule = (port: string, sourceIps: string[]) => ({ direction: "in", protocol: "tcp", port, sourceIps });
        assert.deepEqual(await violations(sshNotWorldOpen, fw([rule("22", ["203.0.113.0/24"]), rule("25", ["0.0.0.0/0", "::/0"])])), []);
        assert.match((await violations(sshNotWorldOpen, fw([rule("22", ["0.0.0.0/0"])])))[0], /port 22 is open to 0\.0\.0\.0\/0/);
        assert.equal((await violations(sshNotWorldOpen, fw([rule("20-30", ["::/0"])]))).length, 1);
        assert.equal((await violations(sshNotWorldOpen, fw([rule("any", ["0.0.0.0/0"])]))).length, 1);
    });

    it("policy: a proxied DNS record is refused, an unproxied one passes", async () => {
        const a = { type: DNS, name: "A:mx1.example.org", props: { type: "A", name: "mx1.example.org", content: "203.0.113.5", proxied: false } };
        assert.deepEqual(await violations(dnsNotProxied, a), []);
        assert.equal((await violations(dnsNotProxied, { ...a, props: { ...a.props, proxied: true } })).length, 1);
    });

    it("policy: a step command that installs secrets must log nothing and keep stdout/stderr secret; one without secrets may log", async () => {
        const triggers = ["server 1", "packages postfix", "secrets db.mailreader", "file /etc/postfix/main.cf root:root 0644 0123456789ab", "script 0123456789ab"];
        const good = { type: COMMAND, name: "postfix", props: { triggers, logging: "none" }, additionalSecretOutputs: ["stdout", "stderr"] };
        assert.deepEqual(await violations(secretStepsLogNothing, good), []);
        assert.match((await violations(secretStepsLogNothing, { ...good, props: { triggers } }))[0], /must not log/);
        assert.equal((await violations(secretStepsLogNothing, { ...good, additionalSecretOutputs: ["stdout"] })).length, 1);
        assert.deepEqual(await violations(secretStepsLogNothing, { type: COMMAND, name: "base", props: { triggers: triggers.filter((t) => !t.startsWith("secrets ")) } }), []);
    });

    it("policy: a DMARC record without rua=mailto: is refused; with one it passes; other TXT records are not DMARC's business", async () => {
        const dmarc = (content: string) => ({ type: DNS, name: "TXT:_dmarc.example.org", props: { type: "TXT", name: "_dmarc.example.org", content } });
        assert.deepEqual(await violations(dmarcHasRua, dmarc('"v=DMARC1; p=reject; rua=mailto:postmaster@example.org"')), []);
        assert.equal((await violations(dmarcHasRua, dmarc('"v=DMARC1; p=reject"'))).length, 1);
        assert.deepEqual(await violations(dmarcHasRua, { type: DNS, name: "TXT:example.org", props: { type: "TXT", name: "example.org", content: '"v=spf1 mx -all"' } }), []);
    });

    it("policy: a zone with records but no CAA is refused; every zone with one passes", async () => {
        const rec = (type: string, zoneId: string) => ({ type: DNS, name: `${type}:${zoneId}`, props: { type, zoneId } });
        assert.deepEqual(await stackViolations(caaPerZone, [rec("A", "z1"), rec("CAA", "z1"), rec("MX", "z2"), rec("CAA", "z2")]), []);
        const missing = await stackViolations(caaPerZone, [rec("A", "z1"), rec("CAA", "z1"), rec("MX", "z2")]);
        assert.deepEqual(missing, ["zone z2 has records of this stack but no CAA record."]);
    });
});

describe("policy: the program complies", () => {
    const asFake = (r: RegisteredResource): FakeResource => ({ type: r.type, name: r.name, props: r.inputs, protect: r.protect, additionalSecretOutputs: [...r.additionalSecretOutputs] });

    for (const [file, stack, protectedStack] of [["Pulumi.prod.yaml", "prod", true], ["Pulumi.staging.yaml", "staging", false]] as const) {
        it(`policy: every policy passes for what ${file} registers`, async () => {
            const { config, secretKeys } = loadStackFile(join(REPO_ROOT, file));
            const run = await runMocked(program, { stack, config, secretKeys });
            assert.equal(run.error, undefined, String(run.error));
            const resources = run.resources.filter((r) => r.custom).map(asFake);
            assert.ok(resources.some((r) => r.type === COMMAND && (r.props.triggers as string[]).some((t) => t.startsWith("secrets "))), "some step installs secrets (the secret-steps rule is exercised)");
            const found: string[] = [];
            for (const policy of POLICIES) {
                if ("validateStack" in policy) found.push(...(await stackViolations(policy, resources)));
                else for (const r of resources) found.push(...(await violations(policy as ResourceValidationPolicy, r, { protected: protectedStack })));
            }
            assert.deepEqual(found, []);
        });
    }
});
