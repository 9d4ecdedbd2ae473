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
import { SECRETS_DIR, secretPath } from "../paths";
import { dbPasswordSecret, DB_ROLES, type SecretSpec } from "../secrets";
import { shellAssignments } from "../shell";
import type { StepFile } from "../steps";
import { secretRef } from "../steps";
import { readStatic, renderTemplate } from "../templates";
import { STEP } from "./names";
import type { Service, StepBody } from "./service";

export const PG_MAJOR = 17;
export const PG_DATA_DIR = `/srv/ispmail/postgresql/${PG_MAJOR}/main`;
/** The directory database of the contract (Postfix, Dovecot, Nextcloud's user backend). */
export const MAIL_DATABASE = "mailserver";
export const NEXTCLOUD_DATABASE = "nextcloud";
export const WEBMAIL_DATABASE = "roundcube";
/** The helper that creates roles, runs migrations and syncs the directory: a launcher (files/postgresql/ispmail-db.mustache)... */
export const ISPMAIL_DB_TOOL = "/usr/local/sbin/ispmail-db";
/** ...of the program, a module (files/postgresql/ispmail_db.py) kept compiled in its directory. */
const ISPMAIL_DB_MODULE_DIR = "/usr/local/lib/ispmail/python";
export const ISPMAIL_DB_MODULE = `${ISPMAIL_DB_MODULE_DIR}/ispmail_db.py`;
export { SECRETS_DIR };

/** The secret file a role's password is written to. */
export function rolePasswordFile(role: string): string {
    return secretPath(dbPasswordSecret(role));
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

function render(_model: Model): StepBody {
    return {
        description: `PostgreSQL ${PG_MAJOR}: cluster on the data volume, localhost only, SCRAM, roles ${Object.values(DB_ROLES).join(", ")}, databases ${MAIL_DATABASE}, ${NEXTCLOUD_DATABASE} and ${WEBMAIL_DATABASE}`,
        // python3-psycopg2: ispmail-db talks to the server through it.
        packages: [`postgresql-${PG_MAJOR}`, `postgresql-client-${PG_MAJOR}`, "python3-psycopg2"],
        files: [
            // Before the packages: postgresql-common's postinst reads it (no cluster outside the
            // volume). The packages step installs it too, before its one apt run.
            { path: "/etc/postgresql-common/createcluster.d/ispmail.conf", content: readStatic("postgresql/createcluster.conf"), owner: "root", group: "root", mode: "0644", beforePackages: true },
            { path: "/etc/ispmail/postgresql/postgresql.conf", content: readStatic("postgresql/postgresql.conf"), owner: "root", group: "root", mode: "0644" },
            // No secrets inside; readable by postgres, which may not exist yet when it is written.
            { path: "/etc/ispmail/postgresql/pg_hba.conf", content: readStatic("postgresql/pg_hba.conf"), owner: "root", group: "root", mode: "0644" },
            { path: ISPMAIL_DB_MODULE, content: readStatic("postgresql/ispmail_db.py"), owner: "root", group: "root", mode: "0644" },
            { path: ISPMAIL_DB_TOOL, content: renderTemplate("postgresql/ispmail-db.mustache", { moduleDir: ISPMAIL_DB_MODULE_DIR }), owner: "root", group: "root", mode: "0755" },
            ...rolePasswordFiles(),
        ],
        script: [shellAssignments({ ISPMAIL_DB_MODULE }), readStatic("postgresql/apply.sh")].join("\n"),
    };
}

/** Every role of the directory contract has a generated password (the roles exist with or without Nextcloud). */
const secrets = (): SecretSpec[] => Object.values(DB_ROLES).map((role) => ({ name: dbPasswordSecret(role), kind: "password", description: `PostgreSQL role ${role}`, stateful: false }));

export const postgresql: Service = { name: STEP.postgresql, after: [STEP.base], secrets, render };
