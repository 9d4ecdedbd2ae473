/**
 * The base system and the mail directory on the lab's mail guest, as `npm run lab` left them:
 * the volume layout, SSH and journal settings, PostgreSQL on the volume and on localhost only, the
 * views and grants of the directory contract, hashes Dovecot verifies, and re-applies that change
 * exactly what the config diff says and restart nothing; who owns a mailbox's password (the config
 * sets the initial one and may reset it, the user may change it) and that none is on the disk.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Model } from "../../components/config";
import { SERVICE, stepsOf } from "../../components/services";
import { migrationFiles } from "../../components/services/directory";
import { guestRoot } from "../../lab/lab";
import { run } from "../../lab/proc";
import { applyOnGuest, guest, LAB, labSession, PATHS } from "../../lab/testkit";
import { loginAccepted } from "./clients";

const mail = guest("mail");
const PGPASS = "/root/.ispmail-e2e-pgpass";

/** SQL as postgres over the socket (peer). */
async function sql(query: string, database = "mailserver"): Promise<string> {
    return (await mail.execOk(`runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -d ${database}`, { input: query })).trim();
}

/** SQL as a role over TCP with its password (from a root-only pgpass file, never the command line). */
function sqlAs(role: string, query: string, database = "mailserver") {
    return mail.exec(`PGPASSFILE=${PGPASS} psql -X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U ${role} -d ${database}`, { input: query });
}

/** Main PIDs of the daemons a directory change must not restart. */
async function daemonPids(): Promise<string> {
    return (await mail.execOk("for s in postgresql@17-main postfix dovecot; do systemctl show -p MainPID --value $s 2>/dev/null || echo -; done")).trim();
}

/** Row versions of the users table: a rewritten row gets a new xmin. */
async function userRowVersions(): Promise<Map<string, string>> {
    const rows = await sql("SELECT local || '@' || domain, xmin::text FROM users ORDER BY 1");
    return new Map(rows.split("\n").filter(Boolean).map((l) => l.split("|") as [string, string]));
}

function withDisplayName(model: Model, address: string, displayName: string): Model {
    return { ...model, users: model.users.map((u) => (u.address === address ? { ...u, displayName } : u)) };
}

describe("base system and mail directory (lab)", { timeout: 900_000 }, () => {
    let model: Model;
    let secrets: Record<string, string>;

    before(async () => {
        ({ model, secrets } = await labSession());
        const lines = ["mailreader", "mailadmin", "nextcloudauth"].map((r) => `127.0.0.1:5432:*:${r}:${secrets[`db.${r}`]}`).join("\n");
        await mail.execOk(`umask 077; cat > ${PGPASS}`, { input: lines + "\n" });
    });

    after(async () => {
        await mail.exec(`rm -f ${PGPASS}`);
    });

    test("base: host name, UTC and the vmail user", async () => {
        assert.equal((await mail.execOk("hostname")).trim(), model.mailHost);
        assert.equal((await mail.execOk("readlink /etc/localtime")).trim(), "/usr/share/zoneinfo/Etc/UTC");
        assert.equal((await mail.execOk("id -u vmail; id -g vmail")).trim(), "5000\n5000");
        assert.equal((await mail.execOk("readlink /var/vmail")).trim(), "/srv/ispmail/vmail");
        assert.equal((await mail.execOk("stat -c '%U:%G %a' /srv/ispmail/vmail")).trim(), "vmail:vmail 770");
        assert.equal((await mail.exec("mountpoint -q /srv/ispmail")).code, 0, "/srv/ispmail is the data volume");
        assert.match(await mail.execOk("debconf-show postfix"), /postfix\/mailname: mx1\.example\.org/);
    });

    test("base: sshd accepts keys only", async () => {
        const effective = await mail.execOk("sshd -T 2>/dev/null | grep -Ei '^(passwordauthentication|kbdinteractiveauthentication|permitrootlogin) '");
        assert.match(effective, /^passwordauthentication no$/m);
        assert.match(effective, /^kbdinteractiveauthentication no$/m);
        // sshd -T may print prohibit-password under its older name without-password.
        assert.match(effective, /^permitrootlogin (prohibit-password|without-password)$/m);
    });

    test("base: only root reaches the cloud metadata service (its user data holds the SSH host key)", async () => {
        // A stand-in metadata service on the guest's own loopback, for this test only: the lab has
        // no cloud, and locally generated packets pass the output hook whatever their destination.
        const META = "169.254.169.254";
        const fetch = (asUser: string) =>
            mail.exec(
                `${asUser === "root" ? "" : `setpriv --reuid=${asUser} --regid=nogroup --clear-groups `}python3 -c "import urllib.request; print(urllib.request.urlopen('http://${META}:8169/', timeout=5).read().decode())"`,
            );
        await mail.execOk(`ip addr replace ${META}/32 dev lo && setsid -f timeout 60 python3 -m http.server --directory /usr/share/doc/nftables --bind ${META} 8169 </dev/null >/dev/null 2>&1 && sleep 1`);
        try {
            assert.equal((await mail.execOk("systemctl is-active ispmail-metadata-guard")).trim(), "active");
            const root = await fetch("root");
            assert.equal(root.code, 0, `root must reach the metadata service: ${root.stderr}`);
            for (const user of ["nobody", "www-data", "vmail"]) {
                const r = await fetch(user);
                assert.notEqual(r.code, 0, `${user} reached the metadata service`);
                assert.match(r.stderr, /not permitted|unreachable|no route to host|refused|prohibited/i, r.stderr);
            }
        } finally {
            await mail.exec(`pkill -f 'http.server --bind ${META}' ; ip addr del ${META}/32 dev lo`);
        }
    });

    test("base: the journal is persistent and unattended-upgrades takes security updates only", async () => {
        assert.equal((await mail.exec("test -d /var/log/journal")).code, 0);
        const origins = await mail.execOk("unattended-upgrade --dry-run -d 2>&1 | grep -i 'allowed origins' || true");
        assert.match(origins, /Allowed origins are: origin=Debian,codename=trixie-security,label=Debian-Security\s*$/);
    });

    test("postgresql: the cluster lives on the volume and listens on localhost only", async () => {
        assert.equal(await sql("SHOW data_directory", "postgres"), "/srv/ispmail/postgresql/17/main");
        assert.equal(await sql("SHOW password_encryption", "postgres"), "scram-sha-256");
        const listening = await mail.execOk("ss -Hltn 'sport = :5432' | awk '{print $4}' | sort");
        assert.deepEqual(listening.trim().split("\n").sort(), ["127.0.0.1:5432", "[::1]:5432"]);
    });

    test("directory: every migration in files/postgresql/migrations is applied, each once", async () => {
        const shipped = migrationFiles().map((m) => m.name.replace(/\.sql$/, ""));
        assert.ok(shipped.length >= 5, shipped.join(","));
        assert.equal(await sql("SELECT string_agg(name, ',' ORDER BY version) FROM schema_migrations"), shipped.join(","));
    });

    test("directory: the views hold exactly the lab stack's mailboxes, aliases and shares", async () => {
        const mailboxes = await sqlAs("mailreader", "SELECT string_agg(address || ':' || coalesce(display_name, '-') || ':' || quota_bytes, ',' ORDER BY address) FROM virtual_mailboxes");
        assert.equal(mailboxes.code, 0, mailboxes.stderr);
        const expected = [...model.users].sort((a, b) => (a.address < b.address ? -1 : 1)).map((u) => `${u.address}:${u.displayName ?? "-"}:${u.quotaMb * 1024 * 1024}`).join(",");
        assert.equal(mailboxes.stdout.trim(), expected);
        const aliases = await sqlAs("mailreader", "SELECT string_agg(source || '>' || destination, ',' ORDER BY source, destination) FROM virtual_aliases");
        assert.equal(aliases.stdout.trim(), [...model.aliases].map((a) => `${a.source}>${a.destination}`).sort().join(","));
        const logins = await sqlAs("mailreader", "SELECT string_agg(sender, ',' ORDER BY sender) FROM sender_logins WHERE login = 'bob@example.org'");
        assert.equal(logins.stdout.trim(), "bob@example.org,sales@example.com");
        const shares = await sqlAs("mailreader", "SELECT string_agg(shared_mailbox || '>' || shared_to, ',') FROM shared_mailboxes_view");
        assert.equal(shares.stdout.trim(), model.sharedMailboxes.map((s) => `${s.mailbox}>${s.sharedTo}`).join(","));
    });

    test("directory: doveadm pw -t verifies every stored hash with the user's password (on stdin)", async () => {
        const rows = (await sql("SELECT address || ' ' || password_hash FROM virtual_mailboxes ORDER BY 1")).split("\n");
        assert.equal(rows.length, model.users.length);
        for (const row of rows) {
            const [address, hash] = row.split(" ");
            assert.match(hash, /^\{ARGON2ID\}\$argon2id\$v=19\$/);
            // The hash is no secret; the password goes on stdin. Quoted for the remote shell.
            const ok = await mail.exec(`doveadm pw -t '${hash}'`, { input: `${secrets[`user:${address}`]}\n` });
            assert.equal(ok.code, 0, `${address}: ${ok.stderr}`);
            const wrong = await mail.exec(`doveadm pw -t '${hash}'`, { input: "wrong password\n" });
            assert.notEqual(wrong.code, 0);
        }
    });

    test("directory: mailreader can read the views and nothing else", async () => {
        for (const view of ["virtual_domains", "virtual_mailboxes", "virtual_aliases", "sender_logins", "shared_mailboxes_view", "public_mailboxes_view"]) {
            const r = await sqlAs("mailreader", `SELECT count(*) FROM ${view}`);
            assert.equal(r.code, 0, `${view}: ${r.stderr}`);
        }
        const users = await sqlAs("mailreader", "SELECT * FROM users");
        assert.notEqual(users.code, 0);
        assert.match(users.stderr, /permission denied for table users/);
        assert.match((await sqlAs("mailreader", "SELECT * FROM nextcloud_users")).stderr, /permission denied for view nextcloud_users/);
        assert.match((await sqlAs("nextcloudauth", "SELECT * FROM virtual_mailboxes")).stderr, /permission denied for view virtual_mailboxes/);
        assert.match((await sqlAs("mailreader", "SELECT 1", "nextcloud")).stderr, /permission denied for database "nextcloud"/);
    });

    test("directory: a second apply of base, postgresql and directory reports unchanged and restarts nothing", async () => {
        const pids = await daemonPids();
        const steps = [...stepsOf(SERVICE.base, model), ...stepsOf(SERVICE.postgresql, model), ...stepsOf(SERVICE.directory, model)];
        const applied = await applyOnGuest("mail", steps, secrets);
        for (const a of applied) {
            assert.equal(a.result, "unchanged", `${a.name}: ${a.actions.join("; ")} ${a.changedFiles.join(" ")}`);
            assert.deepEqual(a.actions, []);
        }
        assert.equal(await daemonPids(), pids);
    });

    test("directory: changing one user's display name changes only that row and restarts nothing", async () => {
        const pids = await daemonPids();
        const before = await userRowVersions();
        const changed = withDisplayName(model, "bob@example.org", "Bob (e2e)");
        try {
            const [applied] = await applyOnGuest("mail", stepsOf(SERVICE.directory, changed), secrets);
            assert.equal(applied.result, "changed");
            assert.deepEqual(applied.actions, ["synced directory: users +0 ~1 -0"]);
            assert.deepEqual(applied.changedFiles, ["/etc/ispmail/directory.json"]);
            const afterChange = await userRowVersions();
            for (const [address, version] of before) {
                if (address === "bob@example.org") assert.notEqual(afterChange.get(address), version, "bob's row was rewritten");
                else assert.equal(afterChange.get(address), version, `${address} untouched`);
            }
            assert.equal(await sql("SELECT display_name FROM users WHERE local = 'bob' AND domain = 'example.org'"), "Bob (e2e)");
            assert.equal(await daemonPids(), pids, "no daemon restarted");
        } finally {
            const [restored] = await applyOnGuest("mail", stepsOf(SERVICE.directory, model), secrets);
            assert.deepEqual(restored.actions, ["synced directory: users +0 ~1 -0"]);
        }
        const [again] = await applyOnGuest("mail", stepsOf(SERVICE.directory, model), secrets);
        assert.equal(again.result, "unchanged");
    });

    test("directory: rows added by hand survive a sync", async () => {
        await sql("INSERT INTO aliases (source_local, source_domain, destination) VALUES ('e2e-hand', 'example.org', 'alice@example.org')");
        try {
            const [applied] = await applyOnGuest("mail", stepsOf(SERVICE.directory, model), secrets);
            assert.equal(applied.result, "unchanged");
            assert.equal(await sql("SELECT count(*) FROM aliases WHERE source_local = 'e2e-hand' AND NOT managed"), "1");
        } finally {
            await sql("DELETE FROM aliases WHERE source_local = 'e2e-hand'");
        }
    });

    test("directory: the triggers refuse an alias on a mailbox and deleting a domain in use", async () => {
        const alias = await mail.exec("runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d mailserver", {
            input: "INSERT INTO aliases (source_local, source_domain, destination) VALUES ('alice', 'example.org', 'bob@example.org');",
        });
        assert.match(alias.stderr, /alias source alice@example\.org is already a mailbox/);
        const domain = await sqlAs("mailadmin", "DELETE FROM domains WHERE domain = 'example.org'");
        assert.match(domain.stderr, /domain example\.org still has \d+ mailbox\(es\)/);
    });

    test("passwords: one a user set survives the next apply; a changed configured password (admin reset) replaces it", async () => {
        const alice = "alice@example.org";
        const own = `alice's own ${randomBytes(4).toString("hex")}`;
        // What a user's own change (webmail, Nextcloud) stores: an ARGON2ID hash, password on stdin.
        const hash = (await mail.execOk("doveadm pw -s ARGON2ID", { input: `${own}\n${own}\n` })).trim();
        await sql(`UPDATE users SET password_hash = '${hash}' WHERE local = 'alice' AND domain = 'example.org'`);
        const reset = { ...secrets, [`user:${alice}`]: `reset-${randomBytes(12).toString("hex")}` };
        try {
            const [same] = await applyOnGuest("mail", stepsOf(SERVICE.directory, model), secrets);
            assert.equal(same.result, "unchanged", same.actions.join("; "));
            assert.equal(await sql("SELECT password_hash FROM users WHERE local = 'alice' AND domain = 'example.org'"), hash);
            assert.equal(await loginAccepted("imap", alice, own), true, "her own password opens IMAP");
            assert.equal(await loginAccepted("smtp", alice, own), true, "and SMTP AUTH");
            assert.equal(await loginAccepted("imap", alice, secrets[`user:${alice}`]), false, "the configured one no longer does");

            const [applied] = await applyOnGuest("mail", stepsOf(SERVICE.directory, model), reset);
            assert.deepEqual(applied.actions, ["synced directory: users +0 ~1 -0", `set the configured password of ${alice}`]);
            assert.equal(await loginAccepted("imap", alice, reset[`user:${alice}`]), true);
            assert.equal(await loginAccepted("smtp", alice, reset[`user:${alice}`]), true);
            assert.equal(await loginAccepted("imap", alice, own), false);
            assert.equal(await loginAccepted("smtp", alice, own), false);
        } finally {
            // Back to the lab's configured password (a reset as well: its digest changes back).
            await applyOnGuest("mail", stepsOf(SERVICE.directory, model), secrets);
        }
        assert.equal(await loginAccepted("imap", alice, secrets[`user:${alice}`]), true);
    });

    test("passwords: no mailbox password is anywhere on the server's disks; the same search finds a secret that lives there", async () => {
        const dir = mkdtempSync(join(tmpdir(), "ispmail-pwgrep-"));
        const search = async (values: readonly string[]) => {
            writeFileSync(join(dir, "patterns"), values.join("\n") + "\n", { mode: 0o600 });
            // The guest's root file system and its data volume, as files on the lab host.
            const r = await run("grep", ["-rlaF", "-f", join(dir, "patterns"), guestRoot(LAB.mail), PATHS.mailData], { timeoutMs: 300_000 });
            assert.ok(r.code === 0 || r.code === 1, r.stderr);
            return r.stdout.split("\n").filter(Boolean).map((f) => f.replace(guestRoot(LAB.mail), ""));
        };
        try {
            // Every mailbox password the lab ever generated (removed test users' too).
            const passwords = Object.entries(secrets).filter(([name]) => name.startsWith("user:")).map(([, value]) => value);
            for (const u of model.users) assert.ok(passwords.includes(secrets[`user:${u.address}`]), u.address);
            assert.deepEqual(await search(passwords), []);
            assert.ok((await search([secrets["db.mailadmin"]])).includes("/etc/ispmail/secrets/db.mailadmin"), "the search finds what is there");
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });
});
