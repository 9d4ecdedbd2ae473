/**
 * The mail directory against a real PostgreSQL 17: a throwaway cluster started in the trixie
 * chroot (test/harness/trixie-chroot.ts), listening on a free loopback
 * port with this repo's pg_hba.conf. The real ispmail-db tool and migrations run against it, fed
 * with directory.json rendered from models, exactly as the `postgresql` and `directory` steps do.
 *
 * Needs root and a chroot with postgresql-17, python3-argon2, python3-psycopg2 and dovecot-core;
 * skipped (with the reason) where those are missing.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parseConfig, type Model } from "../../components/config";
import { DB_ROLES, userPasswordSecret } from "../../components/secrets";
import { DIRECTORY_DIGEST_KEY_SECRET, renderDesiredDirectory, renderPasswordInput } from "../../components/services/directory";
import { resolveSecrets } from "../../components/steps";
import { FILES_DIR, renderTemplate } from "../../components/templates";
import { validRawConfig } from "../fixtures/config";
import { TRIXIE_CHROOT } from "../harness/trixie-chroot";
import { chrootSkipReason } from "./mail-chroot";

const CHROOT = TRIXIE_CHROOT;
const PG_BIN = "/usr/lib/postgresql/17/bin";

interface Run {
    code: number;
    stdout: string;
    stderr: string;
}

function inChroot(args: readonly string[], input?: string, timeoutMs = 60_000): Run {
    const r = spawnSync("chroot", [CHROOT, ...args], { input, encoding: "utf8", timeout: timeoutMs });
    return { code: r.status ?? 124, stdout: r.stdout ?? "", stderr: (r.stderr ?? "") + (r.error ? String(r.error) : "") };
}

function whyUnavailable(): string | undefined {
    const missing = chrootSkipReason(`${PG_BIN.slice(1)}/initdb`) ?? chrootSkipReason("usr/bin/doveadm");
    if (missing) return missing;
    const py = inChroot(["python3", "-c", "import argon2, psycopg2"]);
    if (py.code !== 0) return `python3-argon2 and python3-psycopg2 are not installed in ${CHROOT}`;
    return undefined;
}

async function freePort(): Promise<number> {
    return new Promise((resolve, reject) => {
        const server = createServer();
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => {
            const address = server.address();
            server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))));
        });
    });
}

const randomPassword = () => randomBytes(24).toString("base64").replace(/[^A-Za-z0-9]/g, "").slice(0, 24);

/** A model from the fixture config with one change applied. */
function modelWith(change: (raw: Record<string, any>) => void): Model {
    const raw = validRawConfig();
    change(raw);
    return parseConfig(raw, { stack: "test" }).model;
}

const skip = whyUnavailable();

/** The file name of a migration numbered right after the shipped ones (files/postgresql/migrations). */
const nextMigration = (name: string): string =>
    `${String(readdirSync(join(FILES_DIR, "postgresql", "migrations")).filter((n) => n.endsWith(".sql")).length + 1).padStart(3, "0")}_${name}.sql`;

describe("directory in PostgreSQL 17", { skip }, () => {
    let hostDir = ""; // the test's directory as the host sees it
    let dir = ""; // the same directory inside the chroot
    let port = 0;
    const userPasswords = new Map<string, string>();
    const digestKey = randomPassword();
    let desiredModel: Model | undefined;

    /** The sync's standard input as the directory step renders it, with this test's passwords. */
    const passwordInput = (): string => {
        const model = desiredModel!;
        const values = { [DIRECTORY_DIGEST_KEY_SECRET]: digestKey, ...Object.fromEntries(model.users.map((u) => [userPasswordSecret(u.address), userPasswords.get(u.address)!])) };
        const step = { name: "t", description: "", files: [], inputs: [{ name: "passwords", content: renderPasswordInput(model) }], script: "", after: [] };
        return resolveSecrets(step, values).inputs![0].content;
    };

    const db = (command: string, ...extra: string[]): Run =>
        inChroot(
            [
                "python3", `${dir}/sbin/ispmail-db`,
                "--socket-dir", `${dir}/sock`, "--port", String(port), "--tcp-host", "127.0.0.1", "--secrets-dir", `${dir}/secrets`,
                command,
                ...(command === "migrate" ? ["--migrations", `${dir}/migrations`] : []),
                ...(command === "sync" ? ["--desired", `${dir}/directory.json`, "--passwords", "-"] : []),
                ...extra,
            ],
            command === "sync" ? passwordInput() : undefined,
        );
    const dbOk = (command: string, ...extra: string[]): string[] => {
        const r = db(command, ...extra);
        assert.equal(r.code, 0, `ispmail-db ${command} failed:\n${r.stderr}`);
        return r.stdout.split("\n").filter((l) => l !== "");
    };

    /** psql as postgres over the socket (peer), or as a role over TCP with its password. */
    const psql = (sql: string, opts: { role?: string; database?: string } = {}): Run => {
        const database = opts.database ?? "mailserver";
        if (!opts.role) {
            return inChroot(["runuser", "-u", "postgres", "--", `${PG_BIN}/psql`, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", `${dir}/sock`, "-p", String(port), "-d", database], sql);
        }
        // The password goes through a pgpass file, never the command line.
        const password = readFileSync(join(hostDir, "secrets", `db.${opts.role}`), "utf8");
        writeFileSync(join(hostDir, "pgpass"), `127.0.0.1:${port}:*:${opts.role}:${password}\n`, { mode: 0o600 });
        return inChroot(["env", `PGPASSFILE=${dir}/pgpass`, `${PG_BIN}/psql`, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(port), "-U", opts.role, "-d", database], sql);
    };
    const query = (sql: string, opts: { role?: string; database?: string } = {}): string => {
        const r = psql(sql, opts);
        assert.equal(r.code, 0, `psql failed: ${r.stderr}`);
        return r.stdout.trim();
    };

    /** Writes directory.json as the directory step would; the passwords go to the next sync's stdin. */
    const writeDesired = (model: Model) => {
        const desired = renderDesiredDirectory(model);
        writeFileSync(join(hostDir, "directory.json"), JSON.stringify(desired));
        for (const u of desired.users) if (!userPasswords.has(u.address)) userPasswords.set(u.address, randomPassword());
        desiredModel = model;
    };
    const hashOf = (address: string) => query(`SELECT password_hash FROM users WHERE local || '@' || domain = '${address}'`);
    const verifiesHash = (hash: string, password: string) => inChroot(["doveadm", "pw", "-t", hash], `${password}\n`).code === 0;
    /** A password hash as a user's own change (webmail) would store it. */
    const usersOwnHash = (password: string) => {
        const r = inChroot(["doveadm", "pw", "-s", "ARGON2ID"], `${password}\n${password}\n`);
        assert.equal(r.code, 0, r.stderr);
        return r.stdout.trim();
    };

    const rowVersions = (table: string, key: string): Map<string, string> =>
        new Map(
            query(`SELECT ${key}, xmin::text FROM ${table}`)
                .split("\n")
                .filter(Boolean)
                .map((l) => l.split("|") as [string, string]),
        );

    before(async () => {
        hostDir = mkdtempSync(join(CHROOT, "tmp", "ispmail-dirtest-"));
        dir = hostDir.slice(CHROOT.length);
        port = await freePort();
        for (const sub of ["data", "sock"]) mkdirSync(join(hostDir, sub));
        mkdirSync(join(hostDir, "secrets"), { mode: 0o700 });
        chmodSync(hostDir, 0o755);
        assert.equal(inChroot(["chown", "postgres:postgres", `${dir}/data`, `${dir}/sock`]).code, 0);
        const init = inChroot(["runuser", "-u", "postgres", "--", `${PG_BIN}/initdb`, "-D", `${dir}/data`, "-U", "postgres", "--auth-local=peer", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8"]);
        assert.equal(init.code, 0, init.stderr);
        // The cluster uses the repository's pg_hba.conf, as the postgresql step installs it.
        cpSync(join(FILES_DIR, "postgresql", "pg_hba.conf"), join(hostDir, "data", "pg_hba.conf"));
        const start = inChroot(
            ["runuser", "-u", "postgres", "--", `${PG_BIN}/pg_ctl`, "-D", `${dir}/data`, "-l", `${dir}/sock/postgresql.log`, "-w", "-t", "60", "-o", `-k ${dir}/sock -p ${port} -c listen_addresses=127.0.0.1 -c password_encryption=scram-sha-256`, "start"],
            undefined,
            90_000,
        );
        assert.equal(start.code, 0, start.stderr + start.stdout);
        // The program as the postgresql step installs it: the module, and in another directory the
        // launcher that runs it (so that it finds the module by its own path, not beside itself).
        mkdirSync(join(hostDir, "lib"));
        mkdirSync(join(hostDir, "sbin"));
        cpSync(join(FILES_DIR, "postgresql", "ispmail_db.py"), join(hostDir, "lib", "ispmail_db.py"));
        writeFileSync(join(hostDir, "sbin", "ispmail-db"), renderTemplate("postgresql/ispmail-db.mustache", { moduleDir: `${dir}/lib` }));
        cpSync(join(FILES_DIR, "postgresql", "migrations"), join(hostDir, "migrations"), { recursive: true });
        for (const role of Object.values(DB_ROLES)) writeFileSync(join(hostDir, "secrets", `db.${role}`), randomPassword(), { mode: 0o600 });
    });

    after(() => {
        if (!hostDir) return;
        inChroot(["runuser", "-u", "postgres", "--", `${PG_BIN}/pg_ctl`, "-D", `${dir}/data`, "-m", "immediate", "-w", "-t", "30", "stop"]);
        rmSync(hostDir, { recursive: true, force: true });
    });

    it("postgresql: creates the roles and databases once; a second run changes nothing", () => {
        const first = dbOk("roles");
        for (const role of Object.values(DB_ROLES)) assert.ok(first.includes(`created role ${role}`), first.join("\n"));
        for (const db of ["mailserver", "nextcloud", "roundcube"]) assert.ok(first.includes(`created database ${db}`), first.join("\n"));
        assert.deepEqual(dbOk("roles"), []);
        // Only SCRAM verifiers are stored.
        const roles = Object.values(DB_ROLES).map((r) => `'${r}'`).join(",");
        assert.equal(query(`SELECT count(*) FROM pg_authid WHERE rolname IN (${roles}) AND rolpassword LIKE 'SCRAM-SHA-256$%'`, { database: "postgres" }), String(Object.values(DB_ROLES).length));
    });

    it("postgresql: a role's password is set again only when its secret changes", () => {
        writeFileSync(join(hostDir, "secrets", "db.mailreader"), randomPassword(), { mode: 0o600 });
        assert.deepEqual(dbOk("roles"), ["set password of role mailreader"]);
        assert.equal(query("SELECT 1", { role: "mailreader" }), "1", "mailreader logs in over TCP with the new password");
        assert.deepEqual(dbOk("roles"), []);
    });

    it("postgresql: PUBLIC cannot connect; each role only to its database", () => {
        assert.match(psql("SELECT 1", { role: "mailreader", database: "nextcloud" }).stderr, /permission denied for database "nextcloud"/);
        assert.match(psql("SELECT 1", { role: "nextcloud", database: "mailserver" }).stderr, /permission denied for database "mailserver"/);
        assert.equal(query("SELECT 1", { role: "nextcloud", database: "nextcloud" }), "1");
    });

    it("migrations: apply from empty in one run, then re-applying is a no-op", () => {
        const first = dbOk("migrate");
        assert.equal(first.length, 1);
        assert.match(first[0], /^applied migrations 001_directory_tables, 002_address_ownership_triggers, 003_views_and_grants, 004_directory_sync_function, 005_login_guards, 006_configured_password_digest, 007_own_password_change, 008_nextcloud_writes, 009_renames_cascade_to_shares, 010_applied_migrations_readable$/);
        assert.equal(query("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"), "1,2,3,4,5,6,7,8,9,10");
        assert.deepEqual(dbOk("migrate"), []);
    });

    it("migrations: a failing migration leaves nothing behind (one transaction)", () => {
        const broken = join(hostDir, "migrations-broken");
        cpSync(join(hostDir, "migrations"), broken, { recursive: true });
        writeFileSync(join(broken, nextMigration("broken")), "CREATE TABLE should_vanish (x integer);\nSELECT 1 / 0;\n");
        const applied = query("SELECT count(*) FROM schema_migrations");
        const r = db("migrate", "--migrations", `${dir}/migrations-broken`);
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /division by zero/);
        assert.equal(query("SELECT to_regclass('should_vanish') IS NULL"), "t");
        assert.equal(query("SELECT count(*) FROM schema_migrations"), applied);
    });

    it("migrations: an applied migration that was edited is refused", () => {
        const edited = join(hostDir, "migrations-edited");
        cpSync(join(hostDir, "migrations"), edited, { recursive: true });
        writeFileSync(join(edited, "001_directory_tables.sql"), readFileSync(join(edited, "001_directory_tables.sql"), "utf8") + "\n-- edited\n");
        const r = db("migrate", "--migrations", `${dir}/migrations-edited`);
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /001_directory_tables was changed after it was applied/);
    });

    it("sync: an empty directory gets exactly the configured domains, mailboxes, aliases and shares", () => {
        writeDesired(modelWith(() => {}));
        assert.deepEqual(dbOk("sync"), ["synced directory: domains +2 ~0 -0, users +3 ~0 -0, aliases +4 ~0 -0, shares +1 ~0 -0"]);
        assert.equal(query("SELECT string_agg(domain, ',' ORDER BY domain) FROM virtual_domains"), "example.com,example.org");
        assert.equal(
            query("SELECT string_agg(address || ':' || quota_bytes || ':' || coalesce(display_name, '-'), ',' ORDER BY address) FROM virtual_mailboxes"),
            "alice@example.org:2147483648:Alice,bob@example.org:1073741824:-,carol@example.com:2147483648:-",
        );
        assert.equal(
            query("SELECT string_agg(source || '>' || destination, ',' ORDER BY source) FROM virtual_aliases"),
            "@example.com>carol@example.com,info@example.org>alice@example.net,postmaster@example.org>alice@example.org,sales@example.com>bob@example.org",
        );
        // Own address + aliases that deliver to the login; the outside forward gives no sender right.
        assert.equal(query("SELECT string_agg(sender, ',' ORDER BY sender) FROM sender_logins WHERE login = 'bob@example.org'"), "bob@example.org,sales@example.com");
        assert.equal(query("SELECT count(*) FROM sender_logins WHERE sender = 'info@example.org'"), "0");
        assert.equal(query("SELECT shared_mailbox || '>' || shared_to || ':' || dummy || ':' || rights FROM shared_mailboxes_view"), "alice@example.org>bob@example.org:1:lrws");
        assert.equal(query("SELECT count(*) FROM public_mailboxes_view"), "0");
        assert.equal(query("SELECT count(*) FROM users WHERE NOT managed"), "0");
    });

    it("sync: stores {ARGON2ID} hashes that doveadm pw -t verifies (password on stdin)", () => {
        const rows = query("SELECT address || ' ' || password_hash FROM virtual_mailboxes").split("\n");
        assert.equal(rows.length, 3);
        for (const row of rows) {
            const [address, hash] = row.split(" ");
            assert.match(hash, /^\{ARGON2ID\}\$argon2id\$v=19\$m=65536,t=3,p=1\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/);
            const ok = inChroot(["doveadm", "pw", "-t", hash], `${userPasswords.get(address)}\n`);
            assert.equal(ok.code, 0, `${address}: ${ok.stderr}`);
            const wrong = inChroot(["doveadm", "pw", "-t", hash], "not-the-password\n");
            assert.notEqual(wrong.code, 0);
        }
        // Nextcloud's view has the bare PHP-verifiable hash.
        assert.equal(query("SELECT count(*) FROM nextcloud_users WHERE password_hash LIKE '$argon2id$%'"), "3");
    });

    it("sync: a second run with the same config writes nothing", () => {
        const before = rowVersions("users", "local || '@' || domain");
        const r = db("sync");
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, "");
        assert.deepEqual(rowVersions("users", "local || '@' || domain"), before, "no row was rewritten (same xmin)");
    });

    it("sync --migrate (the directory step's one call): the migrations run first in the same process; a failing one stops it before any row changes", () => {
        const broken = join(hostDir, "migrations-before-sync");
        cpSync(join(hostDir, "migrations"), broken, { recursive: true });
        writeFileSync(join(broken, nextMigration("broken")), "SELECT 1 / 0;\n");
        writeDesired(modelWith((raw) => {
            raw.users[0].displayName = "Not Yet";
        }));
        const rows = () => query("SELECT md5(string_agg(u::text, ',' ORDER BY local, domain)) FROM users u");
        const before = rows();
        const r = db("sync", "--migrate", "--migrations", `${dir}/migrations-before-sync`);
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /division by zero/);
        assert.equal(r.stdout, "", "no sync after the failed migration");
        assert.equal(rows(), before);
        // With the shipped migrations (all applied): the sync's own report, nothing from migrate.
        const actions = dbOk("sync", "--migrate", "--migrations", `${dir}/migrations`);
        assert.deepEqual(actions, ["synced directory: users +0 ~1 -0"]);
        writeDesired(modelWith(() => {}));
        assert.equal(dbOk("sync").length, 1, "the display name back");
    });

    it("sync --migrate: with every migration applied the migrator does not run (no connection as postgres); with one pending it does", () => {
        // The migrator logs in as postgres over the Unix socket, the sync as mailadmin over TCP: a
        // socket directory that does not exist fails the migrator alone.
        const syncWithoutSocket = (migrations: string) =>
            inChroot(
                ["python3", `${dir}/sbin/ispmail-db`, "--socket-dir", `${dir}/no-socket-here`, "--port", String(port), "--tcp-host", "127.0.0.1", "--secrets-dir", `${dir}/secrets`,
                    "sync", "--migrate", "--migrations", migrations, "--desired", `${dir}/directory.json`, "--passwords", "-"],
                passwordInput(),
            );
        writeDesired(modelWith(() => {}));
        const applied = syncWithoutSocket(`${dir}/migrations`);
        assert.equal(applied.code, 0, applied.stderr);
        assert.equal(applied.stdout, "");
        const pending = join(hostDir, "migrations-pending");
        cpSync(join(hostDir, "migrations"), pending, { recursive: true });
        writeFileSync(join(pending, nextMigration("pending")), "SELECT 1;\n");
        const r = syncWithoutSocket(`${dir}/migrations-pending`);
        assert.notEqual(r.code, 0, "the pending migration made it start the migrator, which cannot connect");
        assert.match(r.stderr, /no-socket-here/);
    });

    it("sync: changing one user's display name changes only that row", () => {
        writeDesired(modelWith((raw) => (raw.users[1].displayName = "Bob Builder")));
        const before = rowVersions("users", "local || '@' || domain");
        assert.deepEqual(dbOk("sync"), ["synced directory: users +0 ~1 -0"]);
        const afterSync = rowVersions("users", "local || '@' || domain");
        assert.notEqual(afterSync.get("bob@example.org"), before.get("bob@example.org"));
        assert.equal(afterSync.get("alice@example.org"), before.get("alice@example.org"));
        assert.equal(afterSync.get("carol@example.com"), before.get("carol@example.com"));
        assert.equal(query("SELECT display_name FROM virtual_mailboxes WHERE address = 'bob@example.org'"), "Bob Builder");
    });

    it("sync: each mailbox records the keyed digest of its configured password (HMAC-SHA-256 of address NUL password)", () => {
        for (const [address, password] of userPasswords) {
            const digest = createHmac("sha256", digestKey).update(`${address}\0${password}`).digest("hex");
            assert.equal(query(`SELECT config_password_digest FROM users WHERE local || '@' || domain = '${address}'`), digest, address);
        }
        assert.equal(existsSync(join(hostDir, "secrets", "user")), false, "no password file");
    });

    it("sync: a password the user changed survives every later sync with the same configured password", () => {
        const own = usersOwnHash("alice's own choice 2026");
        query(`UPDATE users SET password_hash = '${own}' WHERE local = 'alice'`);
        assert.deepEqual(dbOk("sync"), []);
        writeDesired(modelWith((raw) => ((raw.users[1].displayName = "Bob Builder"), (raw.users[2].displayName = "Carol")))); // an unrelated change
        assert.deepEqual(dbOk("sync"), ["synced directory: users +0 ~1 -0"]);
        assert.equal(hashOf("alice@example.org"), own);
        assert.ok(verifiesHash(own, "alice's own choice 2026"));
    });

    it("sync: a changed configured password (an admin reset) replaces the user's own, and only that mailbox's", () => {
        const before = rowVersions("users", "local || '@' || domain || ':' || password_hash");
        userPasswords.set("alice@example.org", randomPassword());
        assert.deepEqual(dbOk("sync"), ["synced directory: users +0 ~1 -0", "set the configured password of alice@example.org"]);
        assert.ok(verifiesHash(hashOf("alice@example.org"), userPasswords.get("alice@example.org")!));
        assert.ok(!verifiesHash(hashOf("alice@example.org"), "alice's own choice 2026"));
        const afterSync = rowVersions("users", "local || '@' || domain || ':' || password_hash");
        assert.deepEqual([...afterSync.keys()].filter((k) => !before.has(k)).map((k) => k.split(":")[0]), ["alice@example.org"]);
        assert.deepEqual(dbOk("sync"), []);
    });

    it("sync: a directory from before the digests keeps each hash that verifies its configured password and replaces the others", () => {
        query("UPDATE users SET config_password_digest = NULL WHERE managed");
        const alice = hashOf("alice@example.org");
        query(`UPDATE users SET password_hash = '${usersOwnHash("not the configured one")}' WHERE local = 'bob'`);
        assert.deepEqual(dbOk("sync"), ["synced directory: users +0 ~1 -0", "set the configured password of bob@example.org"]);
        assert.equal(hashOf("alice@example.org"), alice, "a verifying hash is kept");
        assert.ok(verifiesHash(hashOf("bob@example.org"), userPasswords.get("bob@example.org")!));
        assert.equal(query("SELECT count(*) FROM users WHERE managed AND config_password_digest IS NULL"), "0");
        // Plaintext password files of older versions are deleted.
        mkdirSync(join(hostDir, "secrets", "user"), { mode: 0o700 });
        writeFileSync(join(hostDir, "secrets", "user", "alice@example.org"), userPasswords.get("alice@example.org")!, { mode: 0o600 });
        assert.deepEqual(dbOk("sync"), ["removed the plaintext password files of 1 mailbox(es)"]);
        assert.equal(existsSync(join(hostDir, "secrets", "user")), false);
        assert.deepEqual(dbOk("sync"), []);
    });

    it("sync: a changed password re-hashes only that mailbox", () => {
        const before = rowVersions("users", "local || '@' || domain || ':' || password_hash");
        userPasswords.set("carol@example.com", randomPassword());
        assert.deepEqual(dbOk("sync"), ["synced directory: users +0 ~1 -0", "set the configured password of carol@example.com"]);
        const afterSync = rowVersions("users", "local || '@' || domain || ':' || password_hash");
        const changedKeys = [...afterSync.keys()].filter((k) => !before.has(k));
        assert.equal(changedKeys.length, 1);
        assert.match(changedKeys[0], /^carol@example\.com:/);
        const hash = changedKeys[0].slice("carol@example.com:".length);
        assert.equal(inChroot(["doveadm", "pw", "-t", hash], `${userPasswords.get("carol@example.com")}\n`).code, 0);
    });

    it("own password: role mailpassword can set an Argon2id hash of a mailbox through change_own_password(), and nothing else", () => {
        const own = usersOwnHash("carol's own choice 2026");
        assert.equal(query(`SELECT change_own_password('Carol@example.com', '${own}')`, { role: "mailpassword" }), "t");
        assert.equal(hashOf("carol@example.com"), own);
        // The sync keeps it: the configured password did not change.
        assert.deepEqual(dbOk("sync"), []);
        assert.equal(hashOf("carol@example.com"), own);
        // Only a hash in Dovecot's Argon2id form, only of an existing mailbox.
        assert.match(psql("SELECT change_own_password('carol@example.com', 'plaintext')", { role: "mailpassword" }).stderr, /not an \{ARGON2ID\} hash/);
        assert.match(psql("SELECT change_own_password('carol@example.com', '{PLAIN}secret')", { role: "mailpassword" }).stderr, /not an \{ARGON2ID\} hash/);
        assert.match(psql(`SELECT change_own_password('nobody@example.com', '${own}')`, { role: "mailpassword" }).stderr, /no mailbox nobody@example\.com/);
        // No table or view, no other function.
        assert.match(psql("SELECT * FROM users", { role: "mailpassword" }).stderr, /permission denied for table users/);
        assert.match(psql("SELECT * FROM virtual_mailboxes", { role: "mailpassword" }).stderr, /permission denied for view virtual_mailboxes/);
        assert.match(psql("UPDATE users SET quota_mb = 1", { role: "mailpassword" }).stderr, /permission denied for table users/);
        assert.match(psql("SELECT directory_sync('{}'::jsonb)", { role: "mailpassword" }).stderr, /permission denied for function directory_sync/);
        assert.match(psql("SELECT 1", { role: "mailpassword", database: "roundcube" }).stderr, /permission denied for database "roundcube"/);
        // Back to the configured password, as the next test expects: an admin reset.
        userPasswords.set("carol@example.com", randomPassword());
        assert.deepEqual(dbOk("sync"), ["synced directory: users +0 ~1 -0", "set the configured password of carol@example.com"]);
    });

    it("sync: rows added by hand survive, and the sync never touches them", () => {
        query(
            "INSERT INTO domains (domain) VALUES ('example.net');" +
                "INSERT INTO users (local, domain, password_hash, display_name) VALUES ('zed', 'example.org', '{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuv', 'Zed by hand');" +
                "INSERT INTO aliases (source_local, source_domain, destination) VALUES ('hand', 'example.org', 'zed@example.org');",
        );
        assert.equal(db("sync").stdout, "");
        assert.equal(query("SELECT count(*) FROM users WHERE local = 'zed' AND NOT managed"), "1");
        assert.equal(query("SELECT count(*) FROM aliases WHERE source_local = 'hand' AND NOT managed"), "1");
        assert.equal(query("SELECT count(*) FROM domains WHERE domain = 'example.net' AND NOT managed"), "1");
        // A hand-added row in another scheme stays out of Nextcloud only if it cannot verify there; bcrypt can.
        assert.equal(query("SELECT password_hash FROM nextcloud_users WHERE username = 'zed@example.org'"), "$2y$05$abcdefghijklmnopqrstuv");
    });

    it("sync: adds, changes and removes exactly what the config diff says; a removed mailbox's Maildir is kept", () => {
        writeDesired(
            modelWith((raw) => {
                raw.users[1].displayName = "Bob Builder";
                raw.users = raw.users.filter((u: { address: string }) => u.address !== "carol@example.com"); // -1 user
                raw.users.push({ address: "dave@example.org", displayName: "Dave" }); // +1 user
                raw.users[0].quotaMb = 4096; // alice changes
                raw.aliases = raw.aliases.filter((a: { source: string }) => a.source !== "@example.com" && a.source !== "info@example.org"); // -2 aliases
                raw.aliases.push({ source: "abuse@example.org", destination: "dave@example.org" }); // +1 alias
                raw.sharedMailboxes[0].rights = "lr"; // share changes
                raw.sharedMailboxes.push({ mailbox: "dave@example.org", sharedTo: "alice@example.org", rights: "lrws" }); // +1 share
            }),
        );
        const r = db("sync");
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.trim(), "synced directory: users +1 ~1 -1, aliases +1 ~0 -2, shares +1 ~1 -0");
        assert.match(r.stderr, /mailbox carol@example\.com was removed from the directory; its Maildir \/var\/vmail\/example\.com\/carol is kept/);
        assert.equal(query("SELECT string_agg(address || ':' || quota_bytes, ',' ORDER BY address) FROM virtual_mailboxes WHERE address <> 'zed@example.org'"),
            "alice@example.org:4294967296,bob@example.org:1073741824,dave@example.org:2147483648");
        assert.equal(query("SELECT string_agg(source, ',' ORDER BY source) FROM virtual_aliases"), "abuse@example.org,hand@example.org,postmaster@example.org,sales@example.com");
        assert.equal(query("SELECT string_agg(shared_mailbox || '>' || shared_to || ':' || rights, ',' ORDER BY shared_mailbox) FROM shared_mailboxes_view"),
            "alice@example.org>bob@example.org:lr,dave@example.org>alice@example.org:lrws");
        assert.equal(query("SELECT count(*) FROM users WHERE local = 'zed'"), "1", "the hand-added mailbox is still there");
    });

    /** The config from here on: sales@example.com a mailbox (no display name), dave@example.org "Dave". */
    const movedConfig = (raw: Record<string, any>) => {
        raw.users[1].displayName = "Bob Builder";
        raw.users = raw.users.filter((u: { address: string }) => u.address !== "carol@example.com");
        raw.users.push({ address: "dave@example.org", displayName: "Dave" }, { address: "sales@example.com" });
        raw.users[0].quotaMb = 4096;
        raw.aliases = raw.aliases.filter((a: { source: string }) => !["@example.com", "info@example.org", "sales@example.com"].includes(a.source));
        raw.aliases.push({ source: "abuse@example.org", destination: "dave@example.org" });
        raw.sharedMailboxes[0].rights = "lr";
        raw.sharedMailboxes.push({ mailbox: "dave@example.org", sharedTo: "alice@example.org", rights: "lrws" });
    };

    it("sync: an address moves from alias to mailbox in one run", () => {
        writeDesired(modelWith(movedConfig));
        assert.deepEqual(dbOk("sync"), ["synced directory: users +1 ~0 -0, aliases +0 ~0 -1"]);
        assert.equal(query("SELECT count(*) FROM virtual_mailboxes WHERE address = 'sales@example.com'"), "1");
    });

    it("constraints: an alias source may not be a mailbox, nor a mailbox an alias source", () => {
        assert.match(psql("INSERT INTO aliases (source_local, source_domain, destination) VALUES ('alice', 'example.org', 'bob@example.org')").stderr, /alias source alice@example\.org is already a mailbox/);
        assert.match(psql("INSERT INTO users (local, domain, password_hash) VALUES ('postmaster', 'example.org', '{ARGON2ID}x')").stderr, /mailbox postmaster@example\.org is already an alias source/);
        // The same through the admin role the sync uses.
        assert.match(psql("UPDATE aliases SET source_local = 'bob' WHERE source_local = 'abuse'", { role: "mailadmin" }).stderr, /alias source bob@example\.org is already a mailbox/);
    });

    it("constraints: a domain with mailboxes cannot be deleted", () => {
        assert.match(psql("DELETE FROM domains WHERE domain = 'example.org'", { role: "mailadmin" }).stderr, /domain example\.org still has 4 mailbox\(es\) and 3 alias\(es\)/);
        assert.equal(query("SELECT count(*) FROM domains WHERE domain = 'example.org'"), "1");
    });

    it("constraints: uppercase, malformed and self-referencing rows are refused", () => {
        assert.match(psql("INSERT INTO domains (domain) VALUES ('Example.NET')").stderr, /violates check constraint/);
        assert.match(psql("INSERT INTO domains (domain) VALUES ('no_underscores.example')").stderr, /violates check constraint/);
        assert.match(psql("INSERT INTO users (local, domain, password_hash) VALUES ('Eve', 'example.org', '{ARGON2ID}x')").stderr, /violates check constraint/);
        assert.match(psql("INSERT INTO users (local, domain, password_hash) VALUES ('eve', 'example.org', 'plaintext')").stderr, /violates check constraint/);
        assert.match(psql("INSERT INTO users (local, domain, password_hash) VALUES ('eve', 'unknown.example', '{ARGON2ID}x')").stderr, /violates foreign key constraint/);
        assert.match(psql("INSERT INTO aliases (source_local, source_domain, destination) VALUES ('loop', 'example.org', 'loop@example.org')").stderr, /violates check constraint/);
        assert.match(psql("INSERT INTO shared_mailboxes (shared_mailbox_local, shared_mailbox_domain, shared_to_local, shared_to_domain) VALUES ('alice', 'example.org', 'alice', 'example.org')").stderr, /violates check constraint/);
    });

    it("grants: mailreader reads the contract views and nothing else", () => {
        for (const view of ["virtual_domains", "virtual_mailboxes", "virtual_aliases", "sender_logins", "shared_mailboxes_view", "public_mailboxes_view", "passdb_logins"]) {
            assert.equal(psql(`SELECT count(*) FROM ${view}`, { role: "mailreader" }).code, 0, view);
        }
        for (const table of ["users", "domains", "aliases", "shared_mailboxes", "schema_migrations", "nextcloud_users", "login_guards"]) {
            assert.match(psql(`SELECT count(*) FROM ${table}`, { role: "mailreader" }).stderr, /permission denied for (table|view)/, table);
        }
        assert.match(psql("DELETE FROM virtual_domains", { role: "mailreader" }).stderr, /permission denied/);
        assert.match(psql("SELECT directory_sync('{}')", { role: "mailreader" }).stderr, /permission denied for function directory_sync/);
        assert.match(psql("CREATE TABLE mine (x integer)", { role: "mailreader" }).stderr, /permission denied for schema public/);
    });

    it("login guards: passdb_logins gives Dovecot allow_nets only for a guarded account", () => {
        const nets = () => query("SELECT coalesce(allow_nets, 'NULL') FROM passdb_logins ORDER BY address LIMIT 1", { role: "mailreader" });
        const first = query("SELECT address FROM passdb_logins ORDER BY address LIMIT 1", { role: "mailreader" });
        assert.ok(first, "the directory has a mailbox");
        assert.equal(nets(), "NULL");
        query(`INSERT INTO login_guards (address, allow_nets) VALUES ('${first}', '192.0.2.7,127.0.0.1,::1')`, { database: "mailserver" });
        assert.equal(nets(), "192.0.2.7,127.0.0.1,::1");
        assert.equal(query("SELECT count(*) FROM passdb_logins", { role: "mailreader" }), query("SELECT count(*) FROM virtual_mailboxes", { role: "mailreader" }), "one row per mailbox, guarded or not");
        query(`DELETE FROM login_guards WHERE address = '${first}'`, { database: "mailserver" });
        assert.equal(nets(), "NULL");
    });

    it("grants: nextcloudauth reads only its login view", () => {
        assert.equal(query("SELECT count(*) > 0 FROM nextcloud_users", { role: "nextcloudauth" }), "t");
        assert.match(psql("SELECT count(*) FROM virtual_mailboxes", { role: "nextcloudauth" }).stderr, /permission denied for view virtual_mailboxes/);
        assert.match(psql("SELECT count(*) FROM users", { role: "nextcloudauth" }).stderr, /permission denied for table users/);
    });

    /** psql as a role with the SQLSTATE in its error messages ("ERROR:  42501: ..."). */
    const refused = (sql: string, role: string): { sqlstate: string; message: string } => {
        const r = psql(`\\set VERBOSITY verbose\n${sql}`, { role });
        assert.notEqual(r.code, 0, `${sql} was not refused`);
        const m = /ERROR:\s+([0-9A-Z]{5}): (.*)/.exec(r.stderr);
        assert.ok(m, r.stderr);
        return { sqlstate: m[1], message: m[2] };
    };
    /** A hash as PHP's password_hash(..., PASSWORD_ARGON2ID) makes it: Dovecot's without the prefix. */
    const phpArgon2id = (password: string) => usersOwnHash(password).replace(/^\{ARGON2ID\}/, "");
    const displayNameOf = (address: string) => query(`SELECT coalesce(display_name, 'NULL') || '|' || coalesce(config_display_name, 'NULL') FROM users WHERE local || '@' || domain = '${address}'`);

    it("nextcloud writes: nextcloudauth sets a mailbox's password (argon2id, stored in Dovecot's form) and display name through its view", () => {
        const bare = phpArgon2id("dave's nextcloud choice 2026");
        assert.match(bare, /^\$argon2id\$v=19\$/);
        // The app's set_password_hash_for_user and set_display_name, as nextcloudauth.
        query(`UPDATE nextcloud_users SET password_hash = '${bare}' WHERE username = 'dave@example.org'`, { role: "nextcloudauth" });
        assert.equal(hashOf("dave@example.org"), `{ARGON2ID}${bare}`);
        assert.ok(verifiesHash(hashOf("dave@example.org"), "dave's nextcloud choice 2026"), "Dovecot's doveadm verifies what Nextcloud stored");
        assert.equal(query("SELECT password_hash FROM nextcloud_users WHERE username = 'dave@example.org'", { role: "nextcloudauth" }), bare, "and Nextcloud reads it back");
        query("UPDATE nextcloud_users SET display_name = 'Dave D.' WHERE username = 'dave@example.org'", { role: "nextcloudauth" });
        assert.equal(displayNameOf("dave@example.org"), "Dave D.|Dave");
        // Only that row changed.
        assert.equal(displayNameOf("alice@example.org"), "Alice|Alice");
        assert.equal(query("SELECT count(*) FROM users WHERE display_name = 'Dave D.'"), "1");
    });

    it("nextcloud writes: nextcloudauth cannot change a username, touch or read the users table, nor store anything but an argon2id hash", () => {
        const before = hashOf("dave@example.org");
        assert.deepEqual(refused("UPDATE nextcloud_users SET username = 'eve@example.org' WHERE username = 'dave@example.org'", "nextcloudauth"), {
            sqlstate: "42501",
            message: "permission denied for view nextcloud_users",
        });
        assert.deepEqual(refused("UPDATE users SET display_name = 'x' WHERE local = 'dave'", "nextcloudauth"), { sqlstate: "42501", message: "permission denied for table users" });
        assert.deepEqual(refused("UPDATE users SET password_hash = '{PLAIN}x'", "nextcloudauth"), { sqlstate: "42501", message: "permission denied for table users" });
        assert.deepEqual(refused("SELECT password_hash FROM users", "nextcloudauth"), { sqlstate: "42501", message: "permission denied for table users" });
        assert.deepEqual(refused("DELETE FROM nextcloud_users WHERE username = 'dave@example.org'", "nextcloudauth"), { sqlstate: "42501", message: "permission denied for view nextcloud_users" });
        assert.deepEqual(refused("INSERT INTO nextcloud_users (display_name) VALUES ('Eve')", "nextcloudauth"), { sqlstate: "42501", message: "permission denied for view nextcloud_users" });
        for (const hash of [
            "$2y$10$abcdefghijklmnopqrstuuPKm1C2BBSYBdaZI7OrEoWW8HC0nFmbi", // bcrypt, PHP's default
            `{ARGON2ID}${phpArgon2id("x")}`, // already in Dovecot's form
            "$argon2i$v=19$m=65536,t=4,p=1$c2FsdHNhbHQ$aGFzaGhhc2g", // argon2i
            "a plaintext password",
            "",
        ]) {
            assert.deepEqual(refused(`UPDATE nextcloud_users SET password_hash = '${hash}' WHERE username = 'dave@example.org'`, "nextcloudauth"), { sqlstate: "23514", message: "nextcloud_users: not an argon2id hash" }, hash);
        }
        assert.equal(hashOf("dave@example.org"), before, "nothing was stored");
        // The view's other readers and writers gain nothing.
        assert.deepEqual(refused("UPDATE nextcloud_users SET display_name = 'x'", "mailadmin"), { sqlstate: "42501", message: "permission denied for view nextcloud_users" });
        assert.deepEqual(refused("UPDATE nextcloud_users SET display_name = 'x'", "mailpassword"), { sqlstate: "42501", message: "permission denied for view nextcloud_users" });
        // A display name is bounded by the column's domain.
        assert.equal(refused(`UPDATE nextcloud_users SET display_name = '${"x".repeat(257)}' WHERE username = 'dave@example.org'`, "nextcloudauth").sqlstate, "23514");
    });

    it("sync: a display name the user set in Nextcloud survives a sync with the same configured name; a changed configured name replaces it", () => {
        const own = hashOf("dave@example.org");
        writeDesired(modelWith(movedConfig));
        assert.deepEqual(dbOk("sync"), [], "nothing to do: the user's name and password are theirs");
        assert.equal(displayNameOf("dave@example.org"), "Dave D.|Dave");
        assert.equal(hashOf("dave@example.org"), own);
        // A mailbox without a configured name: the user's own is kept too.
        query("UPDATE nextcloud_users SET display_name = 'Sales Team' WHERE username = 'sales@example.com'", { role: "nextcloudauth" });
        assert.deepEqual(dbOk("sync"), []);
        assert.equal(displayNameOf("sales@example.com"), "Sales Team|NULL");
        // The admin changes the configured name: it replaces the user's (the password stays theirs).
        writeDesired(modelWith((raw) => (movedConfig(raw), (raw.users.find((u: { address: string }) => u.address === "dave@example.org").displayName = "David"))));
        assert.deepEqual(dbOk("sync"), ["synced directory: users +0 ~1 -0"]);
        assert.equal(displayNameOf("dave@example.org"), "David|David");
        assert.equal(hashOf("dave@example.org"), own);
        assert.deepEqual(dbOk("sync"), [], "and a second run is a no-op");
        // The configured name changes to the one the user already has: only recorded.
        query("UPDATE nextcloud_users SET display_name = 'Dave D.' WHERE username = 'dave@example.org'", { role: "nextcloudauth" });
        writeDesired(modelWith((raw) => (movedConfig(raw), (raw.users.find((u: { address: string }) => u.address === "dave@example.org").displayName = "Dave D."))));
        assert.deepEqual(dbOk("sync"), ["recorded the configured display name of 1 mailbox(es)"]);
        assert.equal(displayNameOf("dave@example.org"), "Dave D.|Dave D.");
        assert.deepEqual(dbOk("sync"), []);
    });

    /** movedConfig as the display-name test left it, then alice renamed to alice.smith (her old address an alias). */
    const aliceRenamed = (raw: Record<string, any>) => {
        movedConfig(raw);
        raw.users.find((u: { address: string }) => u.address === "dave@example.org").displayName = "Dave D.";
        const alice = raw.users.find((u: { address: string }) => u.address === "alice@example.org");
        Object.assign(alice, { address: "alice.smith@example.org", renamedFrom: "alice@example.org" });
        for (const a of raw.aliases) if (a.destination === "alice@example.org") a.destination = "alice.smith@example.org";
        raw.aliases.push({ source: "alice@example.org", destination: "alice.smith@example.org" });
        for (const sh of raw.sharedMailboxes) for (const k of ["mailbox", "sharedTo"]) if (sh[k] === "alice@example.org") sh[k] = "alice.smith@example.org";
    };
    const vmail = () => join(hostDir, "vmail");
    const putMessage = (home: string, name: string) => {
        mkdirSync(join(vmail(), home, "Maildir", "cur"), { recursive: true });
        writeFileSync(join(vmail(), home, "Maildir", "cur", name), `Subject: ${name}\r\n\r\nkept\r\n`);
    };

    it("sync: a renamed mailbox keeps its row, its user's own password, its shares, its home and its webmail settings", () => {
        const own = usersOwnHash("alice's rename-proof choice");
        query(`UPDATE users SET password_hash = '${own}' WHERE local = 'alice' AND domain = 'example.org'`);
        putMessage("example.org/alice", "1.M1.lab:2,S");
        query("CREATE TABLE users (user_id serial PRIMARY KEY, username text NOT NULL, mail_host text NOT NULL, UNIQUE (username, mail_host))", { role: "roundcube", database: "roundcube" });
        query("INSERT INTO users (username, mail_host) VALUES ('alice@example.org', 'localhost')", { role: "roundcube", database: "roundcube" });
        userPasswords.set("alice.smith@example.org", userPasswords.get("alice@example.org")!);
        writeDesired(modelWith(aliceRenamed));
        const r = db("sync", "--vmail", `${dir}/vmail`);
        assert.equal(r.code, 0, r.stderr);
        const lines = r.stdout.trim().split("\n");
        assert.equal(lines[0], "renamed mailbox alice@example.org to alice.smith@example.org");
        // The renamed row needs no change; the aliases to her are re-pointed, her old address added.
        assert.equal(lines[1], "synced directory: aliases +2 ~0 -1");
        assert.equal(lines.length, 2, r.stdout);
        assert.equal(query("SELECT count(*) FROM users WHERE local = 'alice' AND domain = 'example.org'"), "0");
        assert.equal(hashOf("alice.smith@example.org"), own, "the password she set herself stays");
        const digest = createHmac("sha256", digestKey).update(`alice.smith@example.org\0${userPasswords.get("alice.smith@example.org")}`).digest("hex");
        assert.equal(query("SELECT config_password_digest FROM users WHERE local = 'alice.smith'"), digest, "the digest is recorded under the new address");
        assert.equal(query("SELECT display_name FROM virtual_mailboxes WHERE address = 'alice.smith@example.org'"), "Alice");
        assert.equal(
            query("SELECT string_agg(shared_mailbox || '>' || shared_to || ':' || rights, ',' ORDER BY shared_mailbox) FROM shared_mailboxes_view"),
            "alice.smith@example.org>bob@example.org:lr,dave@example.org>alice.smith@example.org:lrws",
        );
        assert.equal(query("SELECT destination FROM virtual_aliases WHERE source = 'alice@example.org'"), "alice.smith@example.org");
        assert.ok(existsSync(join(vmail(), "example.org", "alice.smith", "Maildir", "cur", "1.M1.lab:2,S")), "the Maildir moved with its message");
        assert.equal(existsSync(join(vmail(), "example.org", "alice")), false, "nothing is left at the old home");
        assert.equal(query("SELECT string_agg(username, ',') FROM users", { role: "roundcube", database: "roundcube" }), "alice.smith@example.org");
        assert.match(r.stderr, /webmail settings of alice@example\.org now belong to alice\.smith@example\.org/);
        // renamedFrom may stay in the stack file: the next sync has nothing to do.
        assert.deepEqual(dbOk("sync", "--vmail", `${dir}/vmail`), []);
    });

    it("sync: a renamed domain moves its mailboxes; a rename onto a home that already holds mail is refused and changes nothing", () => {
        const domainRenamed = (raw: Record<string, any>) => {
            aliceRenamed(raw);
            raw.domains = ["example.org", { name: "example.net", renamedFrom: "example.com" }];
            raw.users.find((u: { address: string }) => u.address === "sales@example.com").address = "sales@example.net";
        };
        const salesHash = hashOf("sales@example.com");
        const domainsBefore = query("SELECT string_agg(domain, ',' ORDER BY domain) FROM domains");
        putMessage("example.com/sales", "2.M2.lab:2,");
        putMessage("example.net/sales", "left.from.an.earlier.sales");
        userPasswords.set("sales@example.net", userPasswords.get("sales@example.com")!);
        writeDesired(modelWith(domainRenamed));
        const refused = db("sync", "--vmail", `${dir}/vmail`);
        assert.notEqual(refused.code, 0);
        assert.match(refused.stderr, /cannot rename mailbox sales@example\.com to sales@example\.net: both .*\/vmail\/example\.com\/sales and .*\/vmail\/example\.net\/sales exist and hold files.*Nothing was changed/s);
        assert.equal(query("SELECT string_agg(domain, ',' ORDER BY domain) FROM domains"), domainsBefore, "the transaction rolled back");
        assert.ok(existsSync(join(vmail(), "example.com", "sales", "Maildir", "cur", "2.M2.lab:2,")));

        rmSync(join(vmail(), "example.net"), { recursive: true });
        const r = db("sync", "--vmail", `${dir}/vmail`);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.trim().split("\n")[0], "renamed mailbox sales@example.com to sales@example.net");
        assert.equal(query("SELECT string_agg(domain, ',' ORDER BY domain) FROM domains"), "example.net,example.org", "the emptied old domain is gone");
        assert.equal(hashOf("sales@example.net"), salesHash, "the password stays");
        assert.ok(existsSync(join(vmail(), "example.net", "sales", "Maildir", "cur", "2.M2.lab:2,")));
        assert.equal(existsSync(join(vmail(), "example.com", "sales")), false);
        assert.deepEqual(dbOk("sync", "--vmail", `${dir}/vmail`), []);
    });

    it("pg_hba: the superuser cannot log in over TCP", () => {
        writeFileSync(join(hostDir, "pgpass"), `127.0.0.1:${port}:*:postgres:anything\n`, { mode: 0o600 });
        const r = inChroot(["env", `PGPASSFILE=${dir}/pgpass`, `${PG_BIN}/psql`, "-X", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "postgres", "-c", "SELECT 1"]);
        assert.match(r.stderr, /pg_hba\.conf rejects connection/);
    });
});
