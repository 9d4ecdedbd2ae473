/**
 * The `postgresql` step: PostgreSQL 17 from Debian with its cluster on the data volume
 * (/srv/ispmail/postgresql/17/main), listening on localhost only, SCRAM passwords for every role
 * but the superuser (peer), the roles of the directory contract and the databases `mailserver`
 * and `nextcloud`.
 *
 * Role passwords travel as secret files (/etc/ispmail/secrets/db.<role>, root 0600); the helper
 * `ispmail-db roles` compares each with the role's stored SCRAM verifier and sets a new verifier
 * (hashed on the client side) only when they differ, so a no-op apply writes nothing.
 */
import type { Model } from "../config";
import { dbPasswordSecret, DB_ROLES } from "../secrets";
import type { Step, StepFile } from "../steps";
import { secretRef } from "../steps";
import { readStatic } from "../templates";
import { BASE_STEP } from "./base";

export const POSTGRESQL_STEP = "postgresql";
export const PG_MAJOR = 17;
export const PG_DATA_DIR = `/srv/ispmail/postgresql/${PG_MAJOR}/main`;
/** The directory database of the contract (Postfix, Dovecot, Nextcloud's user backend). */
export const MAIL_DATABASE = "mailserver";
export const NEXTCLOUD_DATABASE = "nextcloud";
/** The helper that creates roles, runs migrations and syncs the directory (files/postgresql/ispmail-db.py). */
export const ISPMAIL_DB_TOOL = "/usr/local/sbin/ispmail-db";
export const SECRETS_DIR = "/etc/ispmail/secrets";

/** The secret file a role's password is written to. */
export function rolePasswordFile(role: string): string {
    return `${SECRETS_DIR}/${dbPasswordSecret(role)}`;
}

function rolePasswordFiles(): StepFile[] {
    // Exactly the secret, no newline: the helper reads the file as the password.
    return Object.values(DB_ROLES).map((role) => ({
        path: rolePasswordFile(role),
        content: secretRef(dbPasswordSecret(role)),
        owner: "root",
        group: "root",
        mode: "0600",
        secret: true,
    }));
}

export function renderPostgresqlSteps(_model: Model): Step[] {
    return [
        {
            name: POSTGRESQL_STEP,
            description: `PostgreSQL ${PG_MAJOR}: cluster on the data volume, localhost only, SCRAM, roles ${Object.values(DB_ROLES).join(", ")}, databases ${MAIL_DATABASE} and ${NEXTCLOUD_DATABASE}`,
            // No `packages`: they are installed by the script, after the createcluster drop-in
            // below is in place (a package list is installed before the step's files).
            files: [
                { path: "/etc/postgresql-common/createcluster.d/ispmail.conf", content: readStatic("postgresql/createcluster.conf"), owner: "root", group: "root", mode: "0644" },
                { path: "/etc/ispmail/postgresql/postgresql.conf", content: readStatic("postgresql/postgresql.conf"), owner: "root", group: "root", mode: "0644" },
                // No secrets inside; readable by postgres, which may not exist yet when it is written.
                { path: "/etc/ispmail/postgresql/pg_hba.conf", content: readStatic("postgresql/pg_hba.conf"), owner: "root", group: "root", mode: "0644" },
                { path: ISPMAIL_DB_TOOL, content: readStatic("postgresql/ispmail-db.py"), owner: "root", group: "root", mode: "0755" },
                ...rolePasswordFiles(),
            ],
            script: readStatic("postgresql/postgresql-step.sh"),
            after: [BASE_STEP],
        },
    ];
}
