/**
 * The program as `pulumi up` runs it, against the lab (lab/engine.ts + lab/engine-lab.ts): a second
 * up executes nothing, previews against the lab's real state say what a reviewer expects, and a
 * rebuilt server boots from the program's own user data, keeps the data volume and converges with
 * the engine's concurrency (steps that only follow base run at the same time, package operations
 * included). Run with `npm run test:e2e`.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { before, describe, it } from "node:test";
import { changes, type PlanEntry } from "../../lab/engine";
import { SERVER_KEY } from "../../lab/engine-lab";
import { ensureLab, guest, labEngineRun, labSecrets } from "../../lab/testkit";
import { labRawConfig } from "../fixtures/config";
import { inMailbox, loginAccepted, sendThroughForeign, token } from "./clients";

before(ensureLab);

const overlapping = (a: PlanEntry, b: PlanEntry) => a.startedAt! < b.endedAt! && b.startedAt! < a.endedAt!;

describe("engine in the lab", () => {
    it("engine: a second pulumi up of the converged lab executes nothing", async () => {
        const r = await labEngineRun({ preview: false });
        assert.deepEqual(r.errors, []);
        assert.deepEqual(changes(r.plan), {});
        assert.ok(r.plan.every((e) => e.startedAt === undefined), "no provider operation ran");
    });

    it("engine: previews against the lab's state list what a reviewer expects (a user, a DKIM selector)", async () => {
        const user = await labEngineRun({ preview: true, overrides: { users: [{ address: "alice@example.org", displayName: "Alice" }, { address: "bob@example.org", displayName: "Bob", quotaMb: 1024 }, { address: "carol@example.com", displayName: "Carol" }, { address: "dave@example.org" }] } });
        assert.deepEqual(changes(user.plan), { "random.RandomPassword user:dave@example.org": "create", "Command directory": "replace" });
        const dkim = await labEngineRun({ preview: true, overrides: { dkimSelectors: ["lab2026", "lab2027"] } });
        assert.deepEqual(changes(dkim.plan), {
            "tls.PrivateKey dkim:lab2027": "create",
            "cloudflare.DnsRecord TXT:lab2027._domainkey.example.org": "create",
            "cloudflare.DnsRecord TXT:lab2027._domainkey.example.com": "create",
            "Command rspamd": "replace",
            // Decided from the new records' ages, known only during up (the up keeps lab2026).
            "Command dkim-signer": "replace",
        });
    });

    it("engine: a rebuilt server boots from the program's user data, keeps the volume, and converges in parallel", async () => {
        const marker = `rebuild-${randomUUID()}`;
        await guest("mail").execOk(`echo ${marker} > /srv/ispmail/.engine-rebuild-marker`);

        const r = await labEngineRun({ preview: false, replace: [SERVER_KEY] });
        assert.deepEqual(r.errors, [], r.errors.join("\n"));
        const c = changes(r.plan);
        assert.equal(c["hcloud.Server server"], "replace");
        assert.equal(c["hcloud.VolumeAttachment data"], "replace");
        const commands = r.plan.filter((e) => e.type === "command:remote:Command");
        for (const e of commands) assert.equal(e.op, "replace", `${e.name} re-runs on the new machine`);
        // The packages step runs first (every package in one apt run, where base also enables
        // unattended-upgrades); then the engine starts what only follows base at once.
        const byName = Object.fromEntries(commands.map((e) => [e.name, e]));
        const pairs = [["postgresql", "rspamd"], ["postgresql", "tls"], ["rspamd", "tls"]].filter(([a, b]) => overlapping(byName[a], byName[b]));
        assert.ok(pairs.length > 0, `postgresql, rspamd and tls ran one after another: ${JSON.stringify(commands.map((e) => [e.name, e.startedAt, e.endedAt]))}`);
        assert.ok(byName["base"].endedAt! <= byName["postgresql"].startedAt!, "a step starts only after the steps it follows");
        for (const e of commands.filter((c) => !["packages", "machine-ready", "ssh-access"].includes(c.name))) {
            assert.ok(byName["packages"].endedAt! <= e.startedAt!, `${e.name} starts after the packages step`);
        }

        // First boot was cloud-init's, from the program's user data: it finished, and root's keys are
        // the program's deploy key plus the admin keys (ssh-access). The host key is the pinned one
        // (the lab's SSH checks it strictly).
        const status = await guest("mail").exec("cloud-init status --long");
        assert.match(status.stdout, /status: done/, status.stdout + status.stderr);
        const keys = await guest("mail").execOk("grep -c '^ssh-ed25519 ' /root/.ssh/authorized_keys; ls /etc/ssh/ | grep '^ssh_host_'");
        assert.match(keys, /^2\n/, "deploy key + the lab's admin key");
        assert.deepEqual(keys.trim().split("\n").slice(1), ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]);
        assert.equal((await guest("mail").execOk("cat /srv/ispmail/.engine-rebuild-marker")).trim(), marker, "the data volume survives the rebuild");
        await guest("mail").execOk("rm -f /srv/ispmail/.engine-rebuild-marker");
        // Dovecot's sockets in Postfix's spool exist: they need the postfix user at Dovecot's reload.
        await guest("mail").execOk("test -S /var/spool/postfix/private/dovecot-lmtp && test -S /var/spool/postfix/private/auth");
        const lockErrors = await guest("mail").exec("grep -l 'Could not get lock' /var/log/ispmail/steps/*.log");
        assert.equal(lockErrors.stdout.trim(), "", "no step met a held apt lock");

        const again = await labEngineRun({ preview: false });
        assert.deepEqual(changes(again.plan), {}, "and the next up executes nothing");
        assert.equal((await guest("mail").execOk("systemctl is-active postfix dovecot rspamd postgresql")).trim().split("\n").join(" "), "active active active active");
    });
    it("engine: renaming a mailbox in the stack (renamedFrom) keeps its password, its mail, its share and its alias; renaming it back restores the lab", async () => {
        const mail = guest("mail");
        /** The lab stack with `from` renamed to `to` everywhere a mailbox is named. */
        const renamed = (from: string, to: string) => {
            const raw = labRawConfig() as Record<string, any>;
            for (const u of raw.users) if (u.address === "bob@example.org") Object.assign(u, { address: to, renamedFrom: from });
            for (const a of raw.aliases) if (a.destination === "bob@example.org") a.destination = to;
            for (const sh of raw.sharedMailboxes) if (sh.sharedTo === "bob@example.org") sh.sharedTo = to;
            return { users: raw.users, aliases: raw.aliases, sharedMailboxes: raw.sharedMailboxes };
        };
        const password = labSecrets()["user:bob@example.org"];
        const subject = token("before the rename");
        await sendThroughForeign("bob@example.org", subject);
        await inMailbox("bob@example.org", "INBOX", subject);

        const up = await labEngineRun({ preview: false, overrides: renamed("bob@example.org", "robert@example.org") });
        try {
            assert.deepEqual(up.errors, [], up.errors.join("\n"));
            assert.deepEqual(changes(up.plan), { "Command directory": "replace", "Command dovecot": "replace" });
            assert.equal(up.plan.find((e) => e.name === "user:robert@example.org")?.renamedFrom, "random:index/randomPassword:RandomPassword::user:bob@example.org");
            const directory = up.plan.find((e) => e.name === "directory")!;
            assert.match(directory.detail ?? "", /renamed mailbox bob@example\.org to robert@example\.org/);

            assert.ok(await loginAccepted("imap", "robert@example.org", password), "bob's password opens robert's mailbox");
            assert.equal(await loginAccepted("imap", "bob@example.org", password), false, "the old login is gone");
            await inMailbox("robert@example.org", "INBOX", subject);
            assert.equal((await mail.exec("test -d /var/vmail/example.org/robert/Maildir && ! test -e /var/vmail/example.org/bob")).code, 0, "the Maildir moved");
            assert.match(await mail.execOk("doveadm acl get -u alice@example.org INBOX"), /user=robert@example\.org/, "alice's share goes to the new name");
            const viaAlias = token("to the alias after the rename");
            await sendThroughForeign("sales@example.com", viaAlias);
            await inMailbox("robert@example.org", "INBOX", viaAlias);
        } finally {
            const back = await labEngineRun({ preview: false, overrides: renamed("robert@example.org", "bob@example.org") });
            assert.deepEqual(back.errors, [], back.errors.join("\n"));
        }
        await inMailbox("bob@example.org", "INBOX", subject);
        assert.ok(await loginAccepted("imap", "bob@example.org", password));
        const last = await labEngineRun({ preview: false });
        const { ["Command directory"]: directory, ...others } = changes(last.plan);
        assert.deepEqual(others, {}, "the lab's own stack again: only the directory step sees renamedFrom gone");
        assert.equal(directory, "replace");
        await mail.execOk("doveadm expunge -u bob@example.org mailbox INBOX subject 'rename'");
    });
});
