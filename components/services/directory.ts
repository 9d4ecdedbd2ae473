/**
 * The `directory` step: the mail directory in database `mailserver`.
 *
 * 1. Schema: files/postgresql/migrations/NNN_*.sql, applied by `ispmail-db migrate` in one
 *    transaction, each once (table schema_migrations records version and checksum).
 * 2. Declarative sync: the model's domains, mailboxes, aliases and shares, rendered as data in
 *    /etc/ispmail/directory.json (no passwords inside), applied by `ispmail-db sync` in one
 *    transaction through the SQL function directory_sync(). Only managed rows are touched; rows
 *    added by hand (managed = false) stay. A removed mailbox's Maildir is never deleted (logged).
 * 3. Passwords: secret `user:<address>` in a root-only file per mailbox; stored as
 *    {ARGON2ID}$argon2id$v=19$... and re-hashed only when the stored hash does not verify it.
 */
import { createHash } from "node:crypto";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import type { Model } from "../config";
import { SECRETS_DIR } from "../paths";
import { userPasswordSecret, type SecretSpec } from "../secrets";
import type { StepFile } from "../steps";
import { secretRef } from "../steps";
import { FILES_DIR, readStatic } from "../templates";
import { STEP } from "./names";
import type { Service, StepBody } from "./service";

export const DESIRED_DIRECTORY_FILE = "/etc/ispmail/directory.json";
export const MIGRATIONS_DIR = "/usr/local/share/ispmail/migrations";
const MIGRATION_NAME = /^[0-9]{3}_[a-z0-9_]+\.sql$/;

/** The desired directory, as directory_sync() and ispmail-db read it (snake_case: SQL's side). */
export interface DesiredDirectory {
    readonly domains: readonly string[];
    readonly users: ReadonlyArray<{
        readonly address: string;
        readonly local: string;
        readonly domain: string;
        readonly display_name: string | null;
        readonly quota_mb: number;
        /** Relative to the secrets directory; holds the password (secret user:<address>). */
        readonly password_file: string;
    }>;
    readonly aliases: ReadonlyArray<{ readonly source_local: string; readonly source_domain: string; readonly destination: string }>;
    readonly shares: ReadonlyArray<{
        readonly shared_mailbox_local: string;
        readonly shared_mailbox_domain: string;
        readonly shared_to_local: string;
        readonly shared_to_domain: string;
        readonly rights: string;
    }>;
}

/**
 * The file (below the secrets directory) holding a mailbox's password. The address itself where
 * it is made of path-safe characters; otherwise (a local part with ' or & ...) a hash of it, so
 * the name is stable and never needs quoting.
 */
export function userPasswordFile(address: string): string {
    if (/^[a-z0-9][a-z0-9_.@+-]*$/.test(address)) return `user/${address}`;
    return `user/sha256-${createHash("sha256").update(address).digest("hex").slice(0, 32)}`;
}

function splitAddress(address: string): { local: string; domain: string } {
    const at = address.lastIndexOf("@");
    return { local: address.slice(0, at), domain: address.slice(at + 1) };
}

/** The model's directory as data. Sorted, so the file only changes when the directory does. */
export function renderDesiredDirectory(model: Model): DesiredDirectory {
    const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
    return {
        domains: [...model.domains].sort(byText),
        users: [...model.users]
            .sort((a, b) => byText(a.address, b.address))
            .map((u) => ({
                address: u.address,
                local: u.local,
                domain: u.domain,
                display_name: u.displayName ?? null,
                quota_mb: u.quotaMb,
                password_file: userPasswordFile(u.address),
            })),
        aliases: [...model.aliases]
            .sort((a, b) => byText(`${a.source} ${a.destination}`, `${b.source} ${b.destination}`))
            .map((a) => ({ source_local: a.sourceLocal, source_domain: a.sourceDomain, destination: a.destination })),
        shares: [...model.sharedMailboxes]
            .sort((a, b) => byText(`${a.mailbox} ${a.sharedTo}`, `${b.mailbox} ${b.sharedTo}`))
            .map((s) => {
                const owner = splitAddress(s.mailbox);
                const grantee = splitAddress(s.sharedTo);
                return { shared_mailbox_local: owner.local, shared_mailbox_domain: owner.domain, shared_to_local: grantee.local, shared_to_domain: grantee.domain, rights: s.rights };
            }),
    };
}

/** The migration files in order (name, SQL). Names are NNN_lowercase_words.sql. */
export function migrationFiles(): Array<{ name: string; sql: string }> {
    const names = readdirSync(join(FILES_DIR, "postgresql", "migrations")).filter((n) => n.endsWith(".sql")).sort();
    for (const n of names) if (!MIGRATION_NAME.test(n)) throw new Error(`files/postgresql/migrations/${n}: migrations are named NNN_lowercase_words.sql`);
    return names.map((name) => ({ name, sql: readStatic(`postgresql/migrations/${name}`) }));
}

function render(model: Model): StepBody {
    const desired = renderDesiredDirectory(model);
    const migrations: StepFile[] = migrationFiles().map((m) => ({ path: `${MIGRATIONS_DIR}/${m.name}`, content: m.sql, owner: "root", group: "root", mode: "0644" }));
    const passwords: StepFile[] = desired.users.map((u) => ({
        path: `${SECRETS_DIR}/${u.password_file}`,
        // Exactly the password, no newline: ispmail-db reads the whole file as the password.
        content: secretRef(userPasswordSecret(u.address)),
        owner: "root",
        group: "root",
        mode: "0600",
        secret: true,
    }));
    return {
        description: `Mail directory: schema migrations, then ${desired.domains.length} domain(s), ${desired.users.length} mailbox(es), ${desired.aliases.length} alias(es), ${desired.shares.length} share(s) synced`,
        // argon2-cffi for the {ARGON2ID} hashes (python3-psycopg comes with the postgresql step).
        packages: ["python3-argon2"],
        files: [
            ...migrations,
            // Addresses only, but nobody else needs to read them.
            { path: DESIRED_DIRECTORY_FILE, content: JSON.stringify(desired, null, 2) + "\n", owner: "root", group: "root", mode: "0600" },
            ...passwords,
        ],
        script: readStatic("directory/apply.sh"),
    };
}

/** A generated password for every mailbox whose password is not set in the stack config. */
const secrets = (model: Model): SecretSpec[] =>
    model.users.filter((u) => !u.passwordFromConfig).map((u) => ({ name: userPasswordSecret(u.address), kind: "password", description: `mailbox ${u.address}`, stateful: false }));

export const directory: Service = { name: STEP.directory, after: [STEP.postgresql], secrets, render };
