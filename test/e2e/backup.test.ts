/**
 * The restore drill, in the lab: mail arrives, a backup runs, the mailboxes and the mail database
 * are destroyed, ispmail-restore brings them back, and the user reads the message over IMAP with the
 * same password as before.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { client, ensureLab, guest, LAB, labSecrets } from "../../lab/testkit";

const USER = "alice@example.org";
const MAILDIR = "/var/vmail/example.org/alice/Maildir";

/** IMAPS login and a SUBJECT search; prints {"login": bool, "found": n, "body": str | null, "error": str | null}. */
const IMAP_READ = String.raw`
import imaplib, json, ssl, sys
server, user, password, token = sys.argv[1:5]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
out = {"login": False, "found": 0, "body": None, "error": None}
try:
    c = imaplib.IMAP4_SSL(server, 993, ssl_context=ctx, timeout=20)
    try:
        c.login(user, password); out["login"] = True
        c.select("INBOX", readonly=True)
        typ, data = c.search(None, "SUBJECT", token)
        ids = data[0].split()
        out["found"] = len(ids)
        if ids:
            typ, msg = c.fetch(ids[-1], "(BODY.PEEK[TEXT])")
            out["body"] = msg[0][1].decode("utf-8", "replace")
        c.logout()
    except imaplib.IMAP4.error as e:
        out["error"] = "IMAP: " + str(e)
except Exception as e:
    out["error"] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
`;

interface ImapRead { login: boolean; found: number; body: string | null; error: string | null }

async function readOverImap(password: string, token: string): Promise<ImapRead> {
    const r = await client("python3", ["-c", IMAP_READ, LAB.mail.ipv4, USER, password, token], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, `imap client: ${r.stderr}`);
    return JSON.parse(r.stdout.trim()) as ImapRead;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("backup and restore", { timeout: 900_000 }, () => {
    let password: string;
    const token = `drill-${randomBytes(6).toString("hex")}`;
    const suiteStart = Date.now();
    const mail = guest("mail");

    before(async () => {
        await ensureLab();
        password = labSecrets()[`user:${USER}`];
        assert.ok(password, `no password for ${USER} in the lab secrets`);
    });

    // Whatever happened, leave the daemons running for the other suites (the restore would have
    // started them; a failure half way would not).
    after(async () => {
        await mail.exec("systemctl start postgresql dovecot postfix", { timeoutMs: 120_000 });
    });

    test("backup: the daily timer is active", async () => {
        const r = await mail.exec("systemctl is-enabled ispmail-backup.timer && systemctl is-active ispmail-backup.timer");
        assert.equal(r.code, 0, r.stdout + r.stderr);
    });

    test("backup: restore drill — mail and password survive the loss of mailboxes and database", async () => {
        // 1. A message from the foreign MTA, delivered to alice through the whole stack.
        const sent = await guest("foreign").exec(`/usr/sbin/sendmail -f drill@example.net ${USER}`, {
            input: `From: drill@example.net\nTo: ${USER}\nSubject: ${token}\n\nrestore drill body ${token}\n`,
        });
        assert.equal(sent.code, 0, sent.stderr);
        // Bounded wait (120 s); the foreign queue is flushed now and then in case of a deferral.
        let delivered = false;
        for (let i = 0; i < 120 && !delivered; i++) {
            delivered = (await mail.exec(`grep -rlq -- ${token} ${MAILDIR}/new ${MAILDIR}/cur`)).code === 0;
            if (!delivered) {
                if (i % 20 === 19) await guest("foreign").exec("postqueue -f");
                await sleep(1000);
            }
        }
        assert.ok(delivered, `message ${token} not delivered to ${MAILDIR} within 120 s`);
        const beforeLoss = await readOverImap(password, token);
        assert.deepEqual([beforeLoss.login, beforeLoss.found, beforeLoss.error], [true, 1, null]);

        // 2. A backup, as the timer would run it (systemctl start waits for the oneshot).
        const t0 = Date.now();
        const backup = await mail.exec("systemctl start ispmail-backup.service", { timeoutMs: 600_000 });
        assert.equal(backup.code, 0, (await mail.exec("journalctl -u ispmail-backup.service -n 50 --no-pager")).stdout);
        const backupSeconds = (Date.now() - t0) / 1000;
        // Every database with users' data: the directory and the webmail's (settings, address books).
        for (const db of ["mailserver", "roundcube"]) assert.equal((await mail.exec(`test -s /srv/ispmail/backup/dumps/${db}.dump`)).code, 0, `${db} is dumped`);

        // 3. Disaster: every mailbox and the mail database are gone.
        const destroy = await mail.exec(
            "set -e; systemctl stop postfix dovecot; find /srv/ispmail/vmail -mindepth 1 -delete; " +
                "runuser -u postgres -- dropdb --force mailserver; systemctl start dovecot postfix",
            { timeoutMs: 180_000 },
        );
        assert.equal(destroy.code, 0, destroy.stderr);
        const afterLoss = await readOverImap(password, token);
        assert.equal(afterLoss.login, false, "the login must fail while the directory is gone");
        // Refused by authentication (Dovecot answered LOGIN with NO), not a Dovecot that is down.
        assert.match(afterLoss.error ?? "", /^IMAP: .*\[(AUTHENTICATIONFAILED|UNAVAILABLE)\]/, JSON.stringify(afterLoss));

        // 4. Restore the latest snapshot.
        const t1 = Date.now();
        const restore = await mail.exec("ispmail-restore --yes", { timeoutMs: 600_000 });
        assert.equal(restore.code, 0, restore.stderr);
        const restoreSeconds = (Date.now() - t1) / 1000;

        // 5. The same password opens the mailbox, and the message is there.
        const restored = await readOverImap(password, token);
        assert.equal(restored.error, null);
        assert.equal(restored.login, true);
        assert.equal(restored.found, 1);
        assert.match(restored.body ?? "", new RegExp(`restore drill body ${token}`));
        const owner = await mail.execOk(`stat -c %U:%G ${MAILDIR}`);
        assert.equal(owner.trim(), "vmail:vmail");
        console.log(`# restore drill: backup ${backupSeconds.toFixed(1)} s, restore ${restoreSeconds.toFixed(1)} s`);

        // The set-aside copy of the (empty) destroyed state is not needed.
        await mail.exec("rm -rf /srv/ispmail/backup/pre-restore-*");
    });

    test("backup: the drill's snapshot carries the mail host name and holds the dumps and the drill message", async () => {
        const r = await mail.exec("set -a; . /etc/ispmail/backup.env; restic snapshots --tag ispmail --json");
        assert.equal(r.code, 0, r.stderr);
        const snapshots = JSON.parse(r.stdout) as Array<{ id: string; time: string; hostname: string; paths: string[] }>;
        assert.ok(snapshots.every((s) => s.hostname === "mx1.example.org"));
        // The repository lives on the lab's persistent volume: only a snapshot made by this run counts.
        const fresh = snapshots.filter((s) => new Date(s.time).getTime() >= suiteStart - 60_000);
        assert.equal(fresh.length, 1, `expected the drill's one snapshot since ${new Date(suiteStart).toISOString()}, got ${fresh.map((s) => s.time).join(", ") || "none"}`);
        const [drill] = fresh;
        for (const p of ["/srv/ispmail/backup/dumps", "/srv/ispmail/vmail"]) assert.ok(drill.paths.includes(p), `snapshot paths ${drill.paths.join(", ")} lack ${p}`);
        // The drill message is in it (the snapshot holds the volume's path; /var/vmail links there).
        // restic dump of a directory is an uncompressed tar: the message text is in it as it is.
        const inbox = MAILDIR.replace("/var/vmail", "/srv/ispmail/vmail");
        const found = await mail.exec(`set -a; . /etc/ispmail/backup.env; restic dump ${drill.id} ${inbox} | grep -a -c -- ${token}`, { timeoutMs: 300_000 });
        assert.ok(Number(found.stdout.trim()) >= 1, `snapshot ${drill.id} does not hold the drill message ${token}: ${found.stdout}${found.stderr}`);
    });
});
