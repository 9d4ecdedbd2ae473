/**
 * The `directory` step: the mail directory in database `mailserver`.
 *
 * 1. Schema: files/postgresql/migrations/NNN_*.sql, applied as `ispmail-db migrate` does in one
 *    transaction, each once (table schema_migrations records version and checksum); the step runs
 *    `ispmail-db sync --migrate`, migrations and sync in one process.
 * 2. Declarative sync: the model's domains, mailboxes, aliases and shares, rendered as data in
 *    /etc/ispmail/directory.json (no passwords inside), applied by `ispmail-db sync` in one
 *    transaction through the SQL function directory_sync(). Only managed rows are touched; rows
 *    added by hand (managed = false) stay. A removed mailbox's Maildir is never deleted (logged).
 * 3. Passwords: the config's (or generated) password of each mailbox, secret `user:<address>`, is
 *    its *initial* password. It reaches `ispmail-db sync` on standard input (a step input, never a
 *    file), which stores it as {ARGON2ID}$argon2id$v=19$... together with a keyed digest of it
 *    (HMAC-SHA-256 with secret `directory.digest-key`). Later syncs compare digests only: the hash is
 *    written again only when the configured password itself changed (an admin reset), never because
 *    the user changed theirs.
 */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import type { Model } from "../config";
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
        /** The address it had until now: the sync renames that mailbox (row, Maildir, webmail settings) to this one. */
        readonly renamed_from?: string;
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

/** The key of the configured passwords' digests in the directory (losing it resets every password). */
export const DIRECTORY_DIGEST_KEY_SECRET = "directory.digest-key";

/**
 * The sync's password input, one line each, values base64 (a configured password may hold any
 * character): `digest-key <key>`, then `user <address> <password>` per mailbox.
 */
export function renderPasswordInput(model: Pick<Model, "users">): string {
    const users = [...model.users].sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
    return [`digest-key ${secretRef(DIRECTORY_DIGEST_KEY_SECRET, "base64")}`, ...users.map((u) => `user ${u.address} ${secretRef(userPasswordSecret(u.address), "base64")}`)].join("\n") + "\n";
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
                ...(u.renamedFrom ? { renamed_from: u.renamedFrom } : {}),
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
    return {
        description: `Mail directory: schema migrations, then ${desired.domains.length} domain(s), ${desired.users.length} mailbox(es), ${desired.aliases.length} alias(es), ${desired.shares.length} share(s) synced`,
        // argon2-cffi for the {ARGON2ID} hashes (python3-psycopg2 comes with the postgresql step).
        packages: ["python3-argon2"],
        files: [
            ...migrations,
            // Addresses only, but nobody else needs to read them.
            { path: DESIRED_DIRECTORY_FILE, content: JSON.stringify(desired, null, 2) + "\n", owner: "root", group: "root", mode: "0600" },
        ],
        inputs: [{ name: "passwords", content: renderPasswordInput(model) }],
        script: readStatic("directory/apply.sh"),
    };
}

/** A generated initial password for every mailbox whose password is not set in the stack config, and the digests' key. */
const secrets = (model: Model): SecretSpec[] => [
    { name: DIRECTORY_DIGEST_KEY_SECRET, kind: "password", description: "key of the configured passwords' digests in the directory", stateful: true },
    ...model.users
        .filter((u) => !u.passwordFromConfig)
        .map((u): SecretSpec => ({
            name: userPasswordSecret(u.address),
            kind: "password",
            description: `mailbox ${u.address}`,
            stateful: false,
            ...(u.renamedFrom ? { formerName: userPasswordSecret(u.renamedFrom) } : {}),
        })),
];

export const directory: Service = { name: STEP.directory, after: [STEP.postgresql], secrets, render };
