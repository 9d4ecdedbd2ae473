/**
 * The program as the engine runs it (lab/engine.ts), with fake providers: what a second `up`
 * executes, and what `pulumi preview` shows a reviewer for the typical changes — with the outputs
 * of new resources unknown, as in a real preview. docs/OPERATIONS.md quotes these plans.
 */
import assert from "node:assert/strict";
import { describe, it, mock } from "node:test";
import { changes, emptyState, formatPlan, runEngine, summaryDiff, type EngineRun, type EngineState, type ProviderRequest } from "../../lab/engine";
import { validRawConfig } from "../fixtures/config";
import { mockCall, mockState } from "../harness/mocks";

const INDEX = require.resolve("../../index");

/** index.ts, loaded afresh (it runs the program when imported). */
function program(): Record<string, unknown> {
    delete require.cache[INDEX];
    return require(INDEX) as Record<string, unknown>;
}

const asConfig = (raw: Record<string, unknown>) => Object.fromEntries(Object.entries(raw).map(([k, v]) => [`ispmail:${k}`, v]));

interface Fake {
    readonly calls: ProviderRequest[];
}

async function run(raw: Record<string, unknown>, state: EngineState, preview: boolean, fake: Fake = { calls: [] }, onCheckpoint?: (s: EngineState) => void): Promise<EngineRun> {
    const r = await runEngine({
        onCheckpoint,
        program,
        project: "ispmail",
        stack: "staging",
        config: asConfig(raw),
        preview,
        state,
        providers: {
            async apply(req) {
                fake.calls.push(req);
                const { id, state: out } = mockState({ type: req.type, name: req.name, inputs: req.inputs, custom: true });
                const outputs = Object.fromEntries(Object.entries(out).filter(([k]) => !(k in req.inputs)));
                return { id: req.type === "hcloud:index/server:Server" ? `${id}${req.newId}` : id, outputs };
            },
            call: (token, inputs) => mockCall({ token, inputs }),
        },
    });
    assert.deepEqual(r.errors, [], r.errors.join("\n"));
    return r;
}

let applied: EngineState | undefined;
/** State after one `up` of the fixture config (shared: the program takes a few seconds). */
async function deployed(): Promise<EngineState> {
    applied ??= (await run(validRawConfig(), emptyState(), false)).state;
    return applied;
}

async function previewOf(change: (raw: Record<string, any>) => void): Promise<EngineRun> {
    const raw = validRawConfig();
    change(raw);
    return run(raw, await deployed(), true);
}

describe("engine: up and a second up", () => {
    it("engine: a fresh up creates every resource; a second up with no change executes nothing", async () => {
        const fake: Fake = { calls: [] };
        const checkpoints: EngineState[] = [];
        const first = await run(validRawConfig(), emptyState(), false, fake, (s) => checkpoints.push(structuredClone(s)));
        assert.ok(first.plan.length > 40, `${first.plan.length} resources`);
        assert.ok(first.plan.every((e) => e.op === "create"));
        assert.equal(fake.calls.length, first.plan.length);
        const steps = first.plan.filter((e) => e.type === "command:remote:Command").map((e) => e.name);
        for (const s of ["machine-ready", "ssh-access", "base", "postgresql", "directory", "dovecot", "postfix", "rspamd", "tls", "web", "certbot"]) assert.ok(steps.includes(s), s);

        assert.equal(checkpoints.length, first.plan.length, "a checkpoint after every operation");
        assert.deepEqual(checkpoints.at(-1), first.state);

        const again: Fake = { calls: [] };
        const second = await run(validRawConfig(), first.state, false, again);
        assert.deepEqual(changes(second.plan), {});
        assert.equal(again.calls.length, 0, "nothing runs when nothing changed");
    });

    it("engine: independent steps run at the same time; a step starts only after those it runs after", async () => {
        const active = new Set<string>();
        let overlap = false;
        const order: string[] = [];
        await runEngine({
            program,
            project: "ispmail",
            stack: "staging",
            config: asConfig(validRawConfig()),
            preview: false,
            state: emptyState(),
            providers: {
                async apply(req) {
                    if (req.type === "command:remote:Command") {
                        active.add(req.name);
                        order.push(`start ${req.name}`);
                        if (["postgresql", "rspamd", "tls"].filter((n) => active.has(n)).length > 1) overlap = true;
                        await new Promise((r) => setTimeout(r, 30));
                        active.delete(req.name);
                        order.push(`end ${req.name}`);
                    }
                    const { id, state: out } = mockState({ type: req.type, name: req.name, inputs: req.inputs, custom: true });
                    return { id, outputs: Object.fromEntries(Object.entries(out).filter(([k]) => !(k in req.inputs))) };
                },
                call: (token, inputs) => mockCall({ token, inputs }),
            },
        });
        assert.ok(overlap, `postgresql, rspamd and tls all follow base only: the engine starts them together\n${order.join("\n")}`);
        const at = (what: string) => order.indexOf(what);
        assert.ok(at("end base") < at("start postgresql") && at("end machine-ready") < at("start base"));
        assert.ok(at("end directory") < at("start postfix") && at("end directory") < at("start dovecot"));
        assert.ok(at("start dovecot") < at("end postfix") && at("start postfix") < at("end dovecot"), `postfix and dovecot run at the same time\n${order.join("\n")}`);
    });
});

describe("engine: what a preview shows for typical changes", () => {
    it("engine: adding a user creates its password and re-runs only the directory step", async () => {
        const r = await previewOf((raw) => raw.users.push({ address: "dave@example.org" }));
        assert.deepEqual(changes(r.plan), {
            "random.RandomPassword user:dave@example.org": "create",
            "Command directory": "replace",
        });
        console.log(formatPlan(r.plan));
    });

    it("engine: adding an alias re-runs only the directory step", async () => {
        const r = await previewOf((raw) => raw.aliases.push({ source: "info@example.com", destination: "carol@example.com" }));
        assert.deepEqual(changes(r.plan), { "Command directory": "replace" });
    });

    /** bob@example.org becomes robert@example.org; what pointed at bob points at robert. */
    const renameBob = (raw: Record<string, any>) => {
        Object.assign(raw.users.find((u: { address: string }) => u.address === "bob@example.org"), { address: "robert@example.org", renamedFrom: "bob@example.org" });
        for (const a of raw.aliases) if (a.destination === "bob@example.org") a.destination = "robert@example.org";
        for (const sh of raw.sharedMailboxes) if (sh.sharedTo === "bob@example.org") sh.sharedTo = "robert@example.org";
    };
    const PASSWORD = "random:index/randomPassword:RandomPassword";

    it("engine: renaming a mailbox keeps its generated password (an alias of its old name): no secret is made or deleted; only the directory and Dovecot (the share) re-run", async () => {
        const r = await previewOf(renameBob);
        assert.deepEqual(changes(r.plan), { "Command directory": "replace", "Command dovecot": "replace" });
        const password = r.plan.find((e) => e.name === "user:robert@example.org")!;
        assert.equal(password.op, "same");
        assert.equal(password.renamedFrom, `${PASSWORD}::user:bob@example.org`);
        assert.match(formatPlan(r.plan), /RandomPassword user:robert@example\.org +\(renamed from user:bob@example\.org\)/);
        // The up: the new name has the old value; the old name is gone from the state.
        const state = await deployed();
        const raw = validRawConfig();
        renameBob(raw);
        const up = await run(raw, state, false);
        assert.equal((up.outputs.userPasswords as Record<string, string>)["robert@example.org"], state.resources[`${PASSWORD}::user:bob@example.org`].outputs.result);
        assert.equal(up.state.resources[`${PASSWORD}::user:bob@example.org`], undefined);
    });

    it("engine: renaming a domain keeps its mailboxes' passwords and every key; its records move to the new zone", async () => {
        const r = await previewOf((raw) => {
            raw.domains[1] = { name: "example.edu", renamedFrom: "example.com" };
            raw.users.find((u: { address: string }) => u.address === "carol@example.com").address = "carol@example.edu";
            for (const a of raw.aliases) {
                a.source = a.source.replace(/example\.com$/, "example.edu");
                a.destination = a.destination.replace(/example\.com$/, "example.edu");
            }
        });
        const secrets = r.plan.filter((e) => e.type === PASSWORD || e.type === "tls:index/privateKey:PrivateKey");
        assert.deepEqual(secrets.filter((e) => e.op !== "same").map((e) => `${e.op} ${e.name}`), [], "no secret or key is made, replaced or deleted");
        assert.equal(secrets.find((e) => e.name === "user:carol@example.edu")?.renamedFrom, `${PASSWORD}::user:carol@example.com`);
        const records = Object.entries(changes(r.plan)).filter(([k]) => k.startsWith("cloudflare.DnsRecord"));
        assert.ok(records.some(([k, op]) => /example\.edu/.test(k) && op === "create"), "the new zone's records are made");
        assert.ok(records.some(([k, op]) => /example\.com/.test(k) && op === "delete"), "the old zone's records go");
        assert.equal(changes(r.plan)["Command directory"], "replace");
        // Only the old zone's own things go (its DNSSEC, protected in protected stacks, included).
        const deleted = Object.entries(changes(r.plan)).filter(([, op]) => op === "delete").map(([k]) => k);
        assert.deepEqual(deleted.filter((k) => !/example\.com/.test(k)), []);
    });

    it("engine: changing one Postfix setting re-runs only the postfix step", async () => {
        await deployed();
        // A developer edits one setting in files/postfix/main.cf.mustache (read at render time).
        const fs = require("node:fs") as typeof import("node:fs");
        const real = fs.readFileSync;
        const m = mock.method(fs, "readFileSync", (...args: Parameters<typeof real>) => {
            const text = real(...args);
            return String(args[0]).endsWith("files/postfix/main.cf.mustache") ? `${String(text)}\nsmtpd_helo_required = yes\n` : text;
        });
        try {
            const r = await run(validRawConfig(), await deployed(), true);
            assert.deepEqual(changes(r.plan), { "Command postfix": "replace" });
            // What a reviewer reads in the plan (pulumi preview --diff shows the same triggers): the
            // one file that changed, not a hash of the whole step.
            const postfix = r.plan.find((e) => e.name === "postfix")!;
            assert.deepEqual(postfix.triggerDiff, ["~ file /etc/postfix/main.cf"]);
            assert.match(formatPlan(r.plan), /\+- replace Command postfix .*\n {8}~ file \/etc\/postfix\/main\.cf\n/);
        } finally {
            m.mock.restore();
        }
    });

    it("engine: adding a DKIM selector creates its key and records; rspamd installs the key, the signer waits for the records; no other record changes", async () => {
        const r = await previewOf((raw) => raw.dkimSelectors.push("s2027"));
        assert.deepEqual(changes(r.plan), {
            "tls.PrivateKey dkim:s2027": "create",
            "cloudflare.DnsRecord TXT:s2027._domainkey.example.org": "create",
            "cloudflare.DnsRecord TXT:s2027._domainkey.example.com": "create",
            "Command rspamd": "replace",
            // With two selectors the signer is decided from the records' ages, which a new record
            // has only during up: the preview can only say "may change" (the up keeps s2026: dkim.test.ts).
            "Command dkim-signer": "replace",
        });
        const rspamd = r.plan.find((e) => e.name === "rspamd")!;
        assert.ok(rspamd.changed.includes("stdin (unknown)"), "its key is known only during up");
        const signer = r.plan.find((e) => e.name === "dkim-signer")!;
        assert.ok(signer.changed.includes("stdin (unknown)"), "the signer is decided during up");
    });

    it("engine: the certificate key rollover, stage 1: the next key and its TLSA record are created, nothing on the server changes", async () => {
        const r = await previewOf((raw) => (raw.tlsKeys = ["tls1", "tls2"]));
        // The record of the key in use is untouched: TLSA records are named by key (a rename
        // would delete and re-create it, and a DANE sender could meet a moment without it).
        assert.deepEqual(changes(r.plan), {
            "tls.PrivateKey tls:tls2": "create",
            "cloudflare.DnsRecord TLSA:_25._tcp.mx1.example.org:tls2": "create",
        });
    });

    it("engine: the certificate key rollover, stages 3 and 4: moving the next key first re-runs only the tls and certbot steps; dropping the old one deletes only its key and TLSA record", async () => {
        const state = await deployed();
        const published = await run({ ...validRawConfig(), tlsKeys: ["tls1", "tls2"] }, state, false);
        const switched = await run({ ...validRawConfig(), tlsKeys: ["tls2", "tls1"] }, published.state, true);
        assert.deepEqual(changes(switched.plan), { "Command tls": "replace", "Command certbot": "replace" });
        const retired = await run({ ...validRawConfig(), tlsKeys: ["tls2"] }, (await run({ ...validRawConfig(), tlsKeys: ["tls2", "tls1"] }, published.state, false)).state, true);
        assert.deepEqual(changes(retired.plan), {
            "tls.PrivateKey tls:tls1": "delete",
            "cloudflare.DnsRecord TLSA:_25._tcp.mx1.example.org:tls1": "delete",
        });
    });

    it("engine: a new image replaces the server, re-attaches the volume and re-runs every step; addresses, DNS, keys stay", async () => {
        const r = await previewOf((raw) => (raw.server.image = "debian-13-next"));
        const c = changes(r.plan);
        assert.equal(c["hcloud.Server server"], "replace");
        assert.equal(c["hcloud.VolumeAttachment data"], "replace");
        const commands = r.plan.filter((e) => e.type === "command:remote:Command");
        for (const e of commands) assert.equal(e.op, "replace", `${e.name} re-runs on the new machine`);
        const others = Object.keys(c).filter((k) => !k.startsWith("Command ") && !["hcloud.Server server", "hcloud.VolumeAttachment data"].includes(k));
        assert.deepEqual(others, [], "primary IPs, rDNS, volume, DNS records and secrets are untouched");
    });

    it("engine: removing an admin key updates only root's authorized_keys (no Hetzner key to delete)", async () => {
        const r = await previewOf((raw) => (raw.server.sshPublicKeys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKb9zUXqHK3B8t2wB1e3mE3bX3p5ZbqR9N6m1zq2w3xY other@example.org"]));
        assert.deepEqual(changes(r.plan), { "Command ssh-access": "replace" });
    });
});

describe("engine: the summary diff under a step", () => {
    it("engine: changed, added and removed parts, one line each; packages show both lists; none when a side is unknown", () => {
        const before = ["server 1", "packages a b", "file /etc/x root:root 0644 111111111111", "file /etc/y root:root 0644 222222222222", "script 333333333333"];
        const after = ["server 1", "packages a b c", "file /etc/x root:root 0644 999999999999", "file /etc/z root:root 0644 444444444444", "script 333333333333"];
        assert.deepEqual(summaryDiff(before, after), ["~ packages a b -> a b c", "~ file /etc/x", "+ file /etc/z", "- file /etc/y"]);
        assert.deepEqual(summaryDiff(before, before), []);
        assert.deepEqual(summaryDiff(before, undefined), []);
    });
});
