/**
 * DKIM rotation: the pure gate (components/dkim.ts) and the whole sequence under mocks, with a
 * simulated Cloudflare that stamps each record when it is first created, as the real API does.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseConfig, type Model } from "../../components/config";
import { dkimRecordName, planDkimSigning, selectorPublishedAt, type DkimSigningPlan } from "../../components/dkim";
import { MailServer } from "../../components/mail-server";
import { ofType, runMocked, valueOf, type RegisteredResource } from "../harness/mocks";
import { validRawConfig } from "../fixtures/config";

const T0 = new Date("2026-03-01T00:00:00Z");
const minutes = (n: number) => n * 60_000;
const at = (base: Date, ms: number) => new Date(base.getTime() + ms);

function model(selectors: string[], ttl = 3600): Model {
    return parseConfig({ ...validRawConfig(), dkimSelectors: selectors, dns: { ttl } }, { stack: "staging" }).model;
}

describe("dkim: who signs (planDkimSigning)", () => {
    it("dkim: a single selector whose record is old enough signs, settled", () => {
        const plan = planDkimSigning(model(["s2026"]), { s2026: T0 }, at(T0, minutes(61)));
        assert.deepEqual([plan.selector, plan.state, plan.readyAt], ["s2026", "settled", undefined]);
    });

    it("dkim: a selector added at the end is published but does not sign", () => {
        const plan = planDkimSigning(model(["s2026", "s2027"]), { s2026: T0, s2027: at(T0, minutes(119)) }, at(T0, minutes(120)));
        assert.deepEqual([plan.selector, plan.state], ["s2026", "settled"]);
    });

    it("dkim: moved first, the new selector waits until its record has been public for the TTL", () => {
        const m = model(["s2027", "s2026"]);
        const published = { s2026: T0, s2027: at(T0, minutes(100)) };
        const early = planDkimSigning(m, published, at(T0, minutes(110)));
        assert.deepEqual([early.selector, early.wanted, early.state], ["s2026", "s2027", "waiting"]);
        assert.equal(early.readyAt, at(T0, minutes(160)).toISOString(), "ready one TTL (3600 s) after publication");
        assert.match(early.reason, /s2026 keeps signing; s2027 .* after 2026-03-01T02:40:00\.000Z/);
        // One millisecond before the TTL has passed: still waiting; at the TTL: switched.
        assert.equal(planDkimSigning(m, published, at(T0, minutes(160) - 1)).selector, "s2026");
        const switched = planDkimSigning(m, published, at(T0, minutes(160)));
        assert.deepEqual([switched.selector, switched.state], ["s2027", "settled"]);
    });

    it("dkim: the gate follows the configured TTL", () => {
        const m = model(["s2027", "s2026"], 300);
        const published = { s2026: T0, s2027: at(T0, minutes(100)) };
        assert.equal(planDkimSigning(m, published, at(T0, minutes(104))).selector, "s2026");
        assert.equal(planDkimSigning(m, published, at(T0, minutes(105))).selector, "s2027");
    });

    it("dkim: a selector not yet published (e.g. in a preview) does not sign while another can", () => {
        const plan = planDkimSigning(model(["s2027", "s2026"]), { s2026: T0, s2027: undefined }, at(T0, minutes(500)));
        assert.deepEqual([plan.selector, plan.state, plan.readyAt], ["s2026", "waiting", undefined]);
        assert.match(plan.reason, /once its record is published, 3600 s after that/);
    });

    it("dkim: with no listed record old enough (new stack, or old selector removed with the new one added) the first signs at once", () => {
        const fresh = planDkimSigning(model(["s2026"]), { s2026: undefined }, T0);
        assert.deepEqual([fresh.selector, fresh.state], ["s2026", "immediate"]);
        const swapped = planDkimSigning(model(["s2027"]), { s2027: at(T0, minutes(1)) }, at(T0, minutes(2)));
        assert.deepEqual([swapped.selector, swapped.state], ["s2027", "immediate"]);
        assert.match(swapped.reason, /cached its absence/);
    });

    it("dkim: a selector counts as published only when every domain's record is, from the latest of them", () => {
        const m = model(["s2026", "s2027"]);
        const times: Record<string, Date> = {
            [dkimRecordName("s2026", "example.org")]: T0,
            [dkimRecordName("s2026", "example.com")]: at(T0, minutes(5)),
            [dkimRecordName("s2027", "example.org")]: T0,
        };
        const published = selectorPublishedAt(m, (name) => times[name]);
        assert.deepEqual(published, { s2026: at(T0, minutes(5)), s2027: undefined });
        assert.equal(dkimRecordName("s2026", "example.org"), "s2026._domainkey.example.org");
    });
});

// ---------------------------------------------------------------------------------------------
// The rotation as a sequence of deployments under mocks
// ---------------------------------------------------------------------------------------------

/** A Cloudflare that remembers when it created each record (by resource name), across deployments. */
class FakeCloudflare {
    private readonly created = new Map<string, string>();
    outputs(now: Date) {
        return (type: string, name: string): Record<string, unknown> | undefined => {
            if (type !== "cloudflare:index/dnsRecord:DnsRecord") return undefined;
            if (!this.created.has(name)) this.created.set(name, now.toISOString());
            const t = this.created.get(name)!;
            return { createdOn: t, modifiedOn: t };
        };
    }
    /** Records that are gone from the program are deleted (and would be created anew). */
    keepOnly(names: readonly string[]): void {
        for (const n of [...this.created.keys()]) if (!names.includes(n)) this.created.delete(n);
    }
}

interface Deployment {
    readonly plan: DkimSigningPlan;
    readonly resources: RegisteredResource[];
    /** Command name -> its triggers (the content hash decides whether the step runs). */
    readonly triggers: Map<string, string>;
    /** The dkim_signing.conf the dkim-signer step installs. */
    readonly signingConf: string;
    /** DKIM TXT record names and their content. */
    readonly dkimRecords: Map<string, string>;
}

const filesIn = (script: string) => [...script.matchAll(/<<'ISPMAIL_B64'\n([A-Za-z0-9+/=\n]*?)\nISPMAIL_B64/g)].map((m) => Buffer.from(m[1].replace(/\n/g, ""), "base64").toString("utf8"));

async function deploy(cloudflare: FakeCloudflare, selectors: string[], now: Date): Promise<Deployment> {
    const m = model(selectors);
    const run = await runMocked(() => new MailServer("ispmail", { model: m, configuredSecrets: new Map(), now: () => now }), { stack: "staging", outputs: cloudflare.outputs(now) });
    assert.equal(run.error, undefined, String(run.error));
    const records = ofType(run.resources, "cloudflare:index/dnsRecord:DnsRecord");
    cloudflare.keepOnly(records.map((r) => r.name));
    const commands = ofType(run.resources, "command:remote:Command");
    const signer = commands.find((c) => c.name === "dkim-signer");
    assert.ok(signer, "a dkim-signer command");
    const signingConf = filesIn(String(signer.inputs.stdin)).find((f) => f.includes("sign_authenticated"));
    assert.ok(signingConf, "the dkim-signer step installs dkim_signing.conf");
    const rspamd = commands.find((c) => c.name === "rspamd");
    assert.ok(rspamd && !filesIn(String(rspamd.inputs.stdin)).some((f) => f.includes("sign_authenticated")), "the rspamd step leaves the signer alone");
    return {
        plan: await valueOf(run.result!.dkimSigning),
        resources: run.resources,
        triggers: new Map(commands.map((c) => [c.name, JSON.stringify(c.inputs.triggers)])),
        signingConf,
        dkimRecords: new Map(records.filter((r) => String(r.inputs.name).includes("._domainkey.")).map((r) => [String(r.inputs.name), String(r.inputs.content)])),
    };
}

const signsWith = (conf: string) => [...conf.matchAll(/selector = "([^"]+)"/g)].map((x) => x[1]);
const changedCommands = (a: Deployment, b: Deployment) => [...b.triggers].filter(([name, t]) => a.triggers.get(name) !== t).map(([name]) => name);

describe("dkim: rotation as a sequence of config changes (mocks)", () => {
    it("dkim: add s2027 -> publish; move it first -> switch only after its TTL; remove s2026 -> only its record goes", async () => {
        const cf = new FakeCloudflare();
        const day0 = await deploy(cf, ["s2026"], T0);
        assert.deepEqual([day0.plan.selector, day0.plan.state], ["s2026", "immediate"], "a new stack signs at once");
        assert.deepEqual(signsWith(day0.signingConf), ["s2026", "s2026"], "both domains sign with s2026");

        // 1. Add s2027 at the end, 30 days later: its records appear; s2026 keeps signing.
        const t1 = at(T0, minutes(30 * 24 * 60));
        const added = await deploy(cf, ["s2026", "s2027"], t1);
        assert.deepEqual([added.plan.selector, added.plan.state], ["s2026", "settled"]);
        assert.deepEqual([...added.dkimRecords.keys()].sort(), ["s2026._domainkey.example.com", "s2026._domainkey.example.org", "s2027._domainkey.example.com", "s2027._domainkey.example.org"]);
        for (const [name, content] of added.dkimRecords) if (name.startsWith("s2026")) assert.equal(content, day0.dkimRecords.get(name), `${name} is unchanged`);
        assert.deepEqual(signsWith(added.signingConf), ["s2026", "s2026"]);
        assert.deepEqual(changedCommands(day0, added), ["rspamd"], "only rspamd changes: it installs the new key, still signing with s2026");

        // 2. Move s2027 first 10 minutes later: not public for its TTL (3600 s) yet, so nothing on
        //    the server changes and the plan says when to deploy again.
        const early = await deploy(cf, ["s2027", "s2026"], at(t1, minutes(10)));
        assert.deepEqual([early.plan.selector, early.plan.wanted, early.plan.state], ["s2026", "s2027", "waiting"]);
        assert.equal(early.plan.readyAt, at(t1, minutes(60)).toISOString());
        assert.deepEqual(changedCommands(added, early), [], "the server is left as it is");
        assert.deepEqual(early.dkimRecords, added.dkimRecords, "the records are left as they are");

        // 3. The same config deployed again after the TTL: only the dkim-signer step changes, to s2027.
        const later = await deploy(cf, ["s2027", "s2026"], at(t1, minutes(61)));
        assert.deepEqual([later.plan.selector, later.plan.state], ["s2027", "settled"]);
        assert.deepEqual(signsWith(later.signingConf), ["s2027", "s2027"]);
        assert.deepEqual(changedCommands(early, later), ["dkim-signer"]);
        assert.deepEqual(later.dkimRecords, added.dkimRecords, "the old record stays published");
        const again = await deploy(cf, ["s2027", "s2026"], at(t1, minutes(62)));
        assert.deepEqual(changedCommands(later, again), [], "settled: a further deployment changes nothing");

        // 4. Remove s2026: its records (and key) leave the program; s2027 goes on signing.
        const removed = await deploy(cf, ["s2027"], at(t1, minutes(7 * 24 * 60)));
        assert.deepEqual([removed.plan.selector, removed.plan.state], ["s2027", "settled"]);
        assert.deepEqual([...removed.dkimRecords.keys()].sort(), ["s2027._domainkey.example.com", "s2027._domainkey.example.org"]);
        for (const [name, content] of removed.dkimRecords) assert.equal(content, added.dkimRecords.get(name), `${name} is unchanged`);
        assert.deepEqual(signsWith(removed.signingConf), ["s2027", "s2027"]);
        const keys = ofType(removed.resources, "tls:index/privateKey:PrivateKey").map((r) => r.name);
        assert.ok(keys.includes("dkim:s2027") && !keys.includes("dkim:s2026"), keys.join(", "));
    });

    it("dkim: with one selector no step waits for DNS; with several only the dkim-signer step does", async () => {
        const depsOf = async (selectors: string[]) => {
            const run = await runMocked(() => new MailServer("ispmail", { model: model(selectors), configuredSecrets: new Map(), now: () => T0 }), { stack: "staging" });
            const byUrn = new Map(run.resources.map((r) => [r.urn, r]));
            const waitsForDkim = (c: RegisteredResource) => c.dependencies.some((u) => String(byUrn.get(u)?.inputs.name ?? "").includes("._domainkey."));
            return ofType(run.resources, "command:remote:Command").filter(waitsForDkim).map((c) => c.name);
        };
        assert.deepEqual(await depsOf(["s2026"]), []);
        assert.deepEqual(await depsOf(["s2027", "s2026"]), ["dkim-signer"]);
    });
});
