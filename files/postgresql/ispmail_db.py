#!/usr/bin/python3
"""ispmail-db: the PostgreSQL side of the ispmail mail directory, run as root by the apply scripts.

  ispmail-db roles   create the login roles and databases; set a role's password only when the
                     stored SCRAM verifier does not match the secret file (db.<role>)
  ispmail-db migrate apply the pending files/postgresql/migrations in ONE transaction, each once
  ispmail-db sync --passwords -
                     make the managed directory rows equal to /etc/ispmail/directory.json in ONE
                     transaction. The configured (initial) passwords come on standard input; a
                     mailbox's hash is written only when it is new or its configured password
                     changed (a keyed digest of the last one applied is kept), never because its
                     user changed the password; likewise its display name, only when it is new or
                     its configured display name changed (the last one applied is kept).
                     A mailbox with `renamed_from` takes over the old mailbox: its row (password,
                     shares, digests), its home directory (Maildir, Sieve scripts) and its webmail
                     settings move to the new address

Each command prints one line on stdout saying what it changed, or nothing when it changed nothing
(the apply script reports "changed" from that). Details go to stderr.

Secrets are read from root-only files (role passwords) or standard input (mailbox passwords, which
are never written to a file) and never appear in argv, the environment or a log line.
`roles` and `migrate` drop to the postgres user and use the Unix socket (peer authentication);
`sync` logs in as mailadmin over TCP to localhost (scram-sha-256), the same path the other
daemons use, with only the rights that role has.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import hmac
import json
import os
import pwd
import sys
from base64 import b64decode
from collections.abc import Callable
from pathlib import Path

# psycopg2, not psycopg 3: both are Debian's, and psycopg 3 imports asyncio, ssl and logging
# (`python3 -c 'import psycopg'` 0.23 s on the lab guest, psycopg2 0.08 s), paid twice by every
# apply (postgresql and directory steps), both on the engine's critical path.
import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

DEFAULT_SECRETS_DIR = "/etc/ispmail/secrets"
DEFAULT_MIGRATIONS_DIR = "/usr/local/share/ispmail/migrations"
DEFAULT_DESIRED = "/etc/ispmail/directory.json"
MAIL_DATABASE = "mailserver"
NEXTCLOUD_DATABASE = "nextcloud"
WEBMAIL_DATABASE = "roundcube"
# Role -> databases it may connect to. Must match components/secrets.ts DB_ROLES.
ROLES = {
    "mailreader": [MAIL_DATABASE],
    "mailadmin": [MAIL_DATABASE],
    "nextcloudauth": [MAIL_DATABASE],
    "nextcloud": [NEXTCLOUD_DATABASE],
    "roundcube": [WEBMAIL_DATABASE],
    "mailpassword": [MAIL_DATABASE],
}
# Database -> its owner.
DATABASES = {MAIL_DATABASE: "postgres", NEXTCLOUD_DATABASE: "nextcloud", WEBMAIL_DATABASE: "roundcube"}
# Dovecot's own defaults for ARGON2ID (what `doveadm pw -s ARGON2ID` produces): 64 MiB, 3 passes,
# 1 lane, 32-byte hash. Dovecot and PHP's password_verify() read the parameters from the hash.
ARGON2_PARAMS = dict(time_cost=3, memory_cost=65536, parallelism=1, hash_len=32, salt_len=16)
ARGON2_PREFIX = "{ARGON2ID}"


def log(message: str) -> None:
    print(f"[ispmail-db] {message}", file=sys.stderr)


def read_secret(secrets_dir: str, name: str) -> str:
    """A secret file's content, exactly (the step writes it without a trailing newline)."""
    return Path(secrets_dir, name).read_text(encoding="utf-8")


def become_postgres() -> None:
    """Drop root for the postgres user, so the Unix socket's peer authentication maps us to it."""
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam("postgres")
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


def as_postgres_in_child(command: Callable[[argparse.Namespace], list[str]], args: argparse.Namespace) -> list[str]:
    """Runs `command(args)` in a forked child that drops root for postgres, and returns its actions;
    this process stays root for what follows (the sync reads root-only secrets). One process for
    migrate + sync saves a second Python start and psycopg import (~0.2 s per apply)."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code = 0
        try:
            actions = command(args)
            with os.fdopen(write_end, "w", encoding="utf-8") as out:
                json.dump(actions, out)
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
                code = 1
            else:
                code = e.code or 0
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "r", encoding="utf-8") as result:
        text = result.read()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(code)
    return json.loads(text)


Cursor = psycopg2.extensions.cursor


@contextlib.contextmanager
def connected(autocommit: bool = False, **params):
    """A connection closed at the end of the block. Without autocommit the block is one
    transaction: committed when it ends, rolled back when it raises."""
    conn = psycopg2.connect(**params)
    try:
        conn.autocommit = autocommit
        if autocommit:
            yield conn
        else:
            with conn:
                yield conn
    finally:
        conn.close()


def connect_as_postgres(args: argparse.Namespace, dbname: str, autocommit: bool = True):
    return connected(autocommit=autocommit, host=args.socket_dir, port=args.port, dbname=dbname, user="postgres")


def query_one(cur: Cursor, query, params=None):
    cur.execute(query, params)
    return cur.fetchone()


# ---------------------------------------------------------------------------------------------
# roles
# ---------------------------------------------------------------------------------------------
def scram_verifier_matches(verifier: str | None, password: str) -> bool:
    """Does a PostgreSQL SCRAM-SHA-256 verifier (RFC 5803 form) belong to this password?

    SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, where SaltedPassword =
    PBKDF2-HMAC-SHA-256(password, salt, iterations), StoredKey = SHA-256(HMAC(SaltedPassword,
    "Client Key")) and ServerKey = HMAC(SaltedPassword, "Server Key") (RFC 5802 section 3).
    PostgreSQL applies SASLprep first, which leaves ASCII passwords unchanged; ours are generated
    letters and digits.
    """
    if not verifier or not verifier.startswith("SCRAM-SHA-256$"):
        return False
    try:
        iterations_salt, keys = verifier[len("SCRAM-SHA-256$"):].split("$", 1)
        iterations, salt = iterations_salt.split(":", 1)
        stored_key, server_key = keys.split(":", 1)
        salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), b64decode(salt), int(iterations))
    except ValueError:
        return False
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    expected_stored = hashlib.sha256(client_key).digest()
    expected_server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hmac.compare_digest(expected_stored, b64decode(stored_key)) and hmac.compare_digest(expected_server, b64decode(server_key))


def has_connect(cur: Cursor, role: str, dbname: str) -> bool:
    row = query_one(cur, "SELECT has_database_privilege(%s, %s, 'CONNECT')", (role, dbname))
    return bool(row and row[0])


def public_can_connect(cur: Cursor, dbname: str) -> bool:
    row = query_one(
        cur,
        "SELECT EXISTS (SELECT 1 FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a"
        " WHERE d.datname = %s AND a.grantee = 0)",
        (dbname,),
    )
    return bool(row and row[0])


def cmd_roles(args: argparse.Namespace) -> list[str]:
    passwords = {role: read_secret(args.secrets_dir, f"db.{role}") for role in ROLES}
    become_postgres()
    actions: list[str] = []
    # Autocommit: CREATE DATABASE cannot run inside a transaction.
    with connect_as_postgres(args, "postgres") as conn, conn.cursor() as cur:
        for role, password in passwords.items():
            row = query_one(cur, "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,))
            if row is None:
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
                actions.append(f"created role {role}")
                verifier = None
            else:
                verifier = row[0]
            if not scram_verifier_matches(verifier, password):
                # Hash on this side: the server only ever sees the SCRAM verifier, not the password.
                new_verifier = psycopg2.extensions.encrypt_password(password, role, conn, "scram-sha-256")
                cur.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(new_verifier)))
                actions.append(f"set password of role {role}")
        for dbname, owner in DATABASES.items():
            if query_one(cur, "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)) is None:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' LOCALE 'C.UTF-8' TEMPLATE template0").format(
                        sql.Identifier(dbname), sql.Identifier(owner)
                    )
                )
                actions.append(f"created database {dbname}")
            # Only the roles listed in ROLES may connect (PUBLIC may by default).
            if public_can_connect(cur, dbname):
                cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname)))
                actions.append(f"revoked PUBLIC access to database {dbname}")
        for role, databases in ROLES.items():
            for dbname in databases:
                if not has_connect(cur, role, dbname):
                    cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname), sql.Identifier(role)))
                    actions.append(f"granted {role} CONNECT on {dbname}")
    return actions


# ---------------------------------------------------------------------------------------------
# migrate
# ---------------------------------------------------------------------------------------------
def migration_files(directory: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) of NNN_name.sql files, in order; refuses gaps and duplicate numbers."""
    found = []
    for path in sorted(Path(directory).glob("*.sql")):
        number, _, rest = path.name.partition("_")
        if not number.isdigit() or not rest:
            raise SystemExit(f"ispmail-db: {path} is not named NNN_description.sql")
        found.append((int(number), path.stem, path.read_text(encoding="utf-8")))
    versions = [v for v, _, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise SystemExit(f"ispmail-db: migrations must be numbered 1..n without gaps, found {versions}")
    return found


def migration_digest(text: str) -> str:
    """What schema_migrations.sha256 records for a migration's text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def migrations_applied(conn, migrations: list[tuple[int, str, str]]) -> bool:
    """Are exactly these migrations applied, unchanged? Asked over the sync's own connection
    (mailadmin may read schema_migrations from migration 010 on); no (or the table cannot be read
    yet: a new server, or one from before 010) means the migrator runs, and it says what is wrong if
    anything is. The transaction ends here, so the migrator's lock on the table never waits for it."""
    wanted = {version: migration_digest(text) for version, _, text in migrations}
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version, sha256 FROM schema_migrations")
            applied = dict(cur.fetchall())
    except (psycopg2.errors.UndefinedTable, psycopg2.errors.InsufficientPrivilege):
        applied = None
    conn.rollback()
    return applied == wanted


def cmd_migrate(args: argparse.Namespace) -> list[str]:
    migrations = migration_files(args.migrations)
    become_postgres()
    applied_now: list[str] = []
    # One transaction for all of them.
    with connect_as_postgres(args, MAIL_DATABASE, autocommit=False) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, sha256 text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # One migrator at a time; the second one then sees what the first applied.
        cur.execute("LOCK TABLE schema_migrations IN ACCESS EXCLUSIVE MODE")
        cur.execute("SELECT version, name, sha256 FROM schema_migrations")
        applied = {v: (name, digest) for v, name, digest in cur}
        for version, name, text in migrations:
            digest = migration_digest(text)
            if version in applied:
                if applied[version][1] != digest:
                    raise SystemExit(
                        f"ispmail-db: migration {name} was changed after it was applied"
                        " (add a new migration instead of editing an applied one)"
                    )
                continue
            log(f"applying migration {name}")
            cur.execute(text)  # no parameters: sent as it is (no % interpolation), several statements allowed
            cur.execute("INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)", (version, name, digest))
            applied_now.append(name)
        unknown = sorted(set(applied) - {v for v, _, _ in migrations})
        if unknown:
            raise SystemExit(f"ispmail-db: the database has migrations {unknown} that this program does not know (a newer version applied them?)")
    return [f"applied migrations {', '.join(applied_now)}"] if applied_now else []


# ---------------------------------------------------------------------------------------------
# sync
# ---------------------------------------------------------------------------------------------
def read_password_input(stream) -> tuple[bytes, dict[str, str]]:
    """The sync's input (components/services/directory.ts renderPasswordInput): the digest key and
    each mailbox's configured password, base64."""
    key, passwords = None, {}
    for number, line in enumerate(stream.read().splitlines(), 1):
        fields = line.split(" ")
        if fields[0] == "digest-key" and len(fields) == 2:
            key = b64decode(fields[1], validate=True)
        elif fields[0] == "user" and len(fields) == 3:
            passwords[fields[1]] = b64decode(fields[2], validate=True).decode("utf-8")
        elif line:
            raise SystemExit(f"ispmail-db: password input line {number}: expected 'digest-key B64' or 'user ADDRESS B64'")
    if not key:
        raise SystemExit("ispmail-db: password input without a digest-key line")
    return key, passwords


def password_digest(key: bytes, address: str, password: str) -> str:
    return hmac.new(key, f"{address}\0{password}".encode("utf-8"), hashlib.sha256).hexdigest()


@functools.cache
def argon2_hasher():
    """argon2-cffi's hasher with Dovecot's parameters, imported on first use: a sync with no
    password to hash or verify (every no-op apply) does without the import (~15 ms here)."""
    from argon2 import PasswordHasher

    return PasswordHasher(**ARGON2_PARAMS)


def verifies(stored: str | None, password: str) -> bool:
    # InvalidHash: the name argon2-cffi 21.1 (Debian 13) has; later versions keep it as an alias.
    from argon2.exceptions import InvalidHash, VerificationError

    if not stored or not stored.startswith(ARGON2_PREFIX):
        return False
    try:
        return argon2_hasher().verify(stored[len(ARGON2_PREFIX):], password)
    except (VerificationError, InvalidHash):
        return False


def keeps_stored_hash(stored: str | None, stored_digest: str | None, digest: str) -> bool:
    """The configured password is the one applied last (same digest): the stored hash stays, with
    no argon2 work to decide it."""
    return stored is not None and stored_digest == digest


def new_password_hash(stored: str | None, stored_digest: str | None, digest: str, password: str) -> str | None:
    """The hash to store for a mailbox, or None to keep the stored one.

    - a new mailbox: the configured password;
    - the configured password is the one applied last (same digest): keep, whatever the user set;
    - it changed (an admin reset): the configured password;
    - no digest yet (a directory from before digests, or a row adopted from the hand-made ones):
      keep the stored hash if it verifies the configured password, else the configured password,
      as the sync did before the user could change it.
    """
    if keeps_stored_hash(stored, stored_digest, digest):
        return None
    if stored is None:
        return ARGON2_PREFIX + argon2_hasher().hash(password)
    if stored_digest is None and verifies(stored, password):
        return None
    return ARGON2_PREFIX + argon2_hasher().hash(password)


def in_parallel(fn, items: list) -> list:
    """fn over items on one thread per core this process may use, results in order. For the argon2
    hashes of a sync (64 MiB, 3 passes: ~0.45 s each on the lab's cores; the first converge hashes
    every mailbox): argon2-cffi releases the GIL while it hashes, so two cores take about half."""
    if len(items) < 2:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(items), len(os.sched_getaffinity(0)))) as pool:
        return list(pool.map(fn, items))


def display_name_to_store(exists: bool, stored: str | None, stored_config: str | None, configured: str | None) -> str | None:
    """The display name to store for a mailbox: the user's own (Nextcloud) stays while the configured
    one is the one applied last; a new mailbox, or a changed configured one, gets the configured one."""
    if exists and stored_config == configured:
        return stored
    return configured


def home_of(vmail: str, address: str) -> Path:
    """A mailbox's home: /var/vmail/<domain>/<local> (conf.d/auth-sql.conf.ext's `home`)."""
    local, domain = address.rsplit("@", 1)
    return Path(vmail, domain, local)


def has_content(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def check_home_move(vmail: str, old: str, new: str) -> None:
    """Refuse a rename whose two homes both hold mail (say which), before anything changes."""
    old_home, new_home = home_of(vmail, old), home_of(vmail, new)
    if has_content(old_home) and has_content(new_home):
        raise SystemExit(
            f"ispmail-db: cannot rename mailbox {old} to {new}: both {old_home} and {new_home} exist and hold files "
            f"(a Maildir kept from an earlier mailbox {new}?). Nothing was changed. Move or delete {new_home} by hand, then apply again."
        )


def move_home(vmail: str, old: str, new: str) -> bool:
    """Moves the old mailbox's home to the new address's (one rename(2): /var/vmail is one file
    system, so a reader sees it whole at one place or the other). False when there is nothing to move."""
    old_home, new_home = home_of(vmail, old), home_of(vmail, new)
    if not old_home.is_dir():
        return False
    if new_home.is_dir():
        new_home.rmdir()  # empty (check_home_move); Dovecot may have made it for a lookup
    parent = new_home.parent
    if not parent.is_dir():
        like = os.stat(old_home.parent)
        parent.mkdir(mode=0o700)
        os.chown(parent, like.st_uid, like.st_gid)
        os.chmod(parent, like.st_mode & 0o7777)
    # Open IMAP sessions of the old login would go on writing below the old path. (Imported here:
    # only a rename needs them, and every apply would pay ~15 ms for the imports.)
    import shutil
    import subprocess

    if shutil.which("doveadm"):
        subprocess.run(["doveadm", "kick", old], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    os.rename(old_home, new_home)
    return True


def rename_mailboxes(cur: Cursor, renames: dict[str, str], stored: dict[str, tuple], vmail: str) -> list[tuple[str, str]]:
    """Renames each old mailbox row that still exists and whose new address is free; returns the
    (old, new) pairs renamed. Runs before directory_sync(), which would otherwise delete the old
    row and add an empty new one. Shares follow by ON UPDATE CASCADE (migration 009); aliases
    added by hand that point at the old address are pointed at the new one."""
    done = []
    for new, old in sorted(renames.items()):
        if old not in stored or new in stored:
            continue
        check_home_move(vmail, old, new)
        old_local, old_domain = old.rsplit("@", 1)
        new_local, new_domain = new.rsplit("@", 1)
        cur.execute("INSERT INTO domains (domain, managed) VALUES (%s, true) ON CONFLICT (domain) DO NOTHING", (new_domain,))
        # A managed alias with the new address as its source is about to go (the new address is a
        # mailbox in the desired state); directory_sync() would delete it, but only after this.
        cur.execute("DELETE FROM aliases WHERE managed AND source_local = %s AND source_domain = %s", (new_local, new_domain))
        cur.execute("UPDATE users SET local = %s, domain = %s WHERE local = %s AND domain = %s", (new_local, new_domain, old_local, old_domain))
        cur.execute("UPDATE aliases SET destination = %s WHERE NOT managed AND destination = %s", (new, old))
        stored[new] = stored.pop(old)
        done.append((old, new))
    return done


def rename_webmail_user(args: argparse.Namespace, old: str, new: str) -> bool:
    """Roundcube keys a user's identities, contacts and settings by login: follow the rename."""
    if not Path(args.secrets_dir, "db.roundcube").is_file():
        return False
    password = read_secret(args.secrets_dir, "db.roundcube")
    with connected(autocommit=True, host=args.tcp_host, port=args.port, dbname=WEBMAIL_DATABASE, user="roundcube", password=password) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE users SET username = %s WHERE username = %s AND NOT EXISTS (SELECT 1 FROM users WHERE username = %s)",
            (new, old, new),
        )
        return cur.rowcount > 0


def sync_rows(cur: Cursor, desired: dict, renames: dict[str, str], key: bytes, passwords: dict[str, str], vmail: str):
    """The sync's database part, in the caller's transaction: renames, then directory_sync() with
    each mailbox's hash decided, then the digests and configured display names recorded."""
    # Concurrent syncs would each hash and write; let them queue instead.
    cur.execute("SELECT lock_address('ispmail-directory-sync')")
    # FOR UPDATE: a password a user changes meanwhile waits for this transaction and then wins,
    # instead of being overwritten with the hash read here. The same for display names a user
    # changes (Nextcloud) meanwhile.
    cur.execute("SELECT local || '@' || domain, password_hash, config_password_digest, display_name, config_display_name FROM users FOR UPDATE")
    stored = {r[0]: r[1:] for r in cur}
    renamed = rename_mailboxes(cur, renames, stored, vmail)
    decisions = []
    for u in desired["users"]:
        address = u["address"]
        stored_hash, stored_digest = (stored.get(address) or (None, None))[:2]
        digest = password_digest(key, address, passwords[address])
        # A digest is of (address, password): after a rename, the one recorded under the old
        # address with the same configured password means "unchanged", and what its user set stays.
        same = stored_digest == digest or (address in renames and stored_digest == password_digest(key, renames[address], passwords[address]))
        decisions.append((stored_hash, digest if same else stored_digest, digest, passwords[address]))
    # Only the mailboxes that need argon2 work go to the threads: a no-op sync has none, and
    # starts no thread pool.
    pending = iter(in_parallel(lambda d: new_password_hash(*d), [d for d in decisions if not keeps_stored_hash(*d[:3])]))
    new_hashes = [None if keeps_stored_hash(*d[:3]) else next(pending) for d in decisions]
    reset, digests, names = [], [], []
    users = []
    for u, (_, _, digest, _), new_hash in zip(desired["users"], decisions, new_hashes):
        address = u["address"]
        row = stored.get(address)
        stored_hash, stored_digest, stored_name, stored_config_name = row or (None, None, None, None)
        if new_hash is not None and stored_hash is not None:
            reset.append(address)
        if stored_digest != digest:
            digests.append((digest, u["local"], u["domain"]))
        if stored_config_name != u["display_name"]:
            names.append((u["display_name"], u["local"], u["domain"]))
        display_name = display_name_to_store(row is not None, stored_name, stored_config_name, u["display_name"])
        users.append({k: u[k] for k in ("local", "domain", "quota_mb")} | {"display_name": display_name, "password_hash": new_hash or stored_hash})
    state = {"domains": desired["domains"], "users": users, "aliases": desired["aliases"], "shares": desired["shares"]}
    # psycopg2 decodes the jsonb result into a dict.
    report = query_one(cur, "SELECT directory_sync(%s::jsonb)", (json.dumps(state),))[0]
    cur.executemany("UPDATE users SET config_password_digest = %s WHERE local = %s AND domain = %s", digests)
    cur.executemany("UPDATE users SET config_display_name = %s WHERE local = %s AND domain = %s", names)
    return report, renamed, reset, digests, names


def cmd_sync(args: argparse.Namespace) -> list[str]:
    desired = json.loads(Path(args.desired).read_text(encoding="utf-8"))
    if args.passwords != "-":
        raise SystemExit("ispmail-db: passwords come on standard input only (--passwords -)")
    key, passwords = read_password_input(sys.stdin)
    missing = [u["address"] for u in desired["users"] if u["address"] not in passwords]
    if missing:
        raise SystemExit(f"ispmail-db: no configured password for {', '.join(missing)}")
    admin_password = read_secret(args.secrets_dir, "db.mailadmin")
    renames = {u["address"]: u["renamed_from"] for u in desired["users"] if u.get("renamed_from")}
    actions: list[str] = []
    moved: list[tuple[str, str]] = []
    try:
        # One transaction, committed when the block ends (after the homes moved).
        with connected(host=args.tcp_host, port=args.port, dbname=MAIL_DATABASE, user="mailadmin", password=admin_password) as conn:
            if args.migrate and not migrations_applied(conn, migration_files(args.migrations)):
                actions += as_postgres_in_child(cmd_migrate, args)
            with conn.cursor() as cur:
                report, renamed, reset, digests, names = sync_rows(cur, desired, renames, key, passwords, args.vmail)
                # Last, just before the commit: until then Dovecot and Postfix see the old rows,
                # and a failure above leaves every home where its row says it is. Should the
                # commit fail, the homes move back below. (A sync that finds a home moved and its
                # row not, after a crash in between, renames the row and has nothing to move.)
                for old, new in renamed:
                    if move_home(args.vmail, old, new):
                        moved.append((old, new))
    except BaseException:
        for old, new in reversed(moved):
            os.rename(home_of(args.vmail, new), home_of(args.vmail, old))
        raise
    for old, new in renamed:
        actions.append(f"renamed mailbox {old} to {new}")
        if home_of(args.vmail, old).exists():
            # Delivered in the moment between the move and the commit: kept, and said.
            log(f"mail for {old} arrived during its rename and is in {home_of(args.vmail, old)}; move it into {new} with doveadm import")
        if rename_webmail_user(args, old, new):
            log(f"webmail settings of {old} now belong to {new}")
        if Path(args.secrets_dir, "db.nextcloud").is_file():
            log(f"Nextcloud cannot rename an account: the files of {old} stay with that account (occ files:transfer-ownership moves them)")
    for address in report["removed_mailboxes"]:
        log(f"mailbox {address} was removed from the directory; its Maildir {home_of(args.vmail, address)} is kept (delete it by hand when no longer needed)")
    for domain in report["kept_domains"]:
        log(f"domain {domain} is no longer configured but still has hand-added mailboxes or aliases; it stays until they are gone")
    counts = []
    for table in ("domains", "users", "aliases", "shares"):
        c = report[table]
        if c["inserted"] or c["updated"] or c["deleted"]:
            counts.append(f"{table} +{c['inserted']} ~{c['updated']} -{c['deleted']}")
    if counts:
        actions.append("synced directory: " + ", ".join(counts))
        log(f"directory report: {json.dumps(report, sort_keys=True)}")
    if reset:
        actions.append(f"set the configured password of {', '.join(reset)}")
    if digests and not counts and not reset and not renamed:
        actions.append(f"recorded the configured password's digest of {len(digests)} mailbox(es)")
    if names and not counts:
        # The configured display name changed to the one the user already has.
        actions.append(f"recorded the configured display name of {len(names)} mailbox(es)")
    actions.extend(remove_password_files(args))
    return actions


def remove_password_files(args: argparse.Namespace) -> list[str]:
    """Mailbox password files that versions before the digests wrote (plaintext): delete them."""
    directory = Path(args.secrets_dir, "user")
    if not directory.is_dir():
        return []
    removed = sorted(path.name for path in directory.iterdir() if path.is_file())
    for name in removed:
        Path(directory, name).unlink()
    directory.rmdir()
    return [f"removed the plaintext password files of {len(removed)} mailbox(es)"] if removed else ["removed the empty password directory"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="ispmail-db", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket-dir", default="/var/run/postgresql", help="PostgreSQL Unix socket directory (peer auth as postgres)")
    parser.add_argument("--tcp-host", default="localhost", help="host for the mailadmin login (scram-sha-256)")
    parser.add_argument("--port", type=int, default=5432)
    parser.add_argument("--secrets-dir", default=DEFAULT_SECRETS_DIR)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("roles")
    p = sub.add_parser("migrate")
    p.add_argument("--migrations", default=DEFAULT_MIGRATIONS_DIR)
    p = sub.add_parser("sync")
    p.add_argument("--migrate", action="store_true", help="apply the pending schema migrations first (as `migrate` does), in the same run")
    p.add_argument("--migrations", default=DEFAULT_MIGRATIONS_DIR)
    p.add_argument("--desired", default=DEFAULT_DESIRED)
    p.add_argument("--passwords", required=True, help="'-': the configured passwords on standard input")
    p.add_argument("--vmail", default="/var/vmail", help="where Maildirs live (only for the log line)")
    args = parser.parse_args()
    actions = {"roles": cmd_roles, "migrate": cmd_migrate, "sync": cmd_sync}[args.command](args)
    for action in actions:
        print(action)


if __name__ == "__main__":
    main()
