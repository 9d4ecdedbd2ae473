/**
 * The `nextcloud` step (only when `ispmail:nextcloud.enabled`): the release archive from a
 * configurable URL, pinned by sha256, installed with `occ maintenance:install` on PostgreSQL (its
 * own role and database), our settings in a rendered config file, APCu, cron as a systemd timer,
 * and mail users logging in with their mail address and password through the app
 * user_backend_sql_raw, which reads the directory's `nextcloud_users` view. Users change their own
 * password and display name there too (two columns of that view, migration 008). The bundled
 * password_policy app gets the webmail's minimum length ({@link MINIMUM_PASSWORD_LENGTH}), and our
 * own app {@link PASSWORD_RULES_APP} holds mail users' new passwords to it and refuses their current
 * one (the SQL-raw backend does not ask the policy itself).
 *
 * Without internet (the lab) the archive cannot be fetched: the step then says so and leaves a
 * placeholder page. The SQL-raw queries below are still exercised against the real directory by
 * the e2e tests (test/e2e/web.test.ts), with PHP's PDO and password_verify as the app uses them.
 */
import type { Model } from "../config";
import { NEXTCLOUD_ROOT, secretPath } from "../paths";
import { DB_ROLES, dbPasswordSecret, NEXTCLOUD_ADMIN_SECRET } from "../secrets";
import { shellAssignments } from "../shell";
import { secretRef, type StepFile } from "../steps";
import { readStatic, renderTemplate } from "../templates";
import { STEP } from "./names";
import type { Service, StepBody } from "./service";
import { MINIMUM_PASSWORD_LENGTH } from "./webmail";

/** Nextcloud's data directory: on the data volume with the other state (conventions). */
export const NEXTCLOUD_DATA = "/srv/ispmail/nextcloud";
/** Our settings, merged by Nextcloud over the installer's config.php. */
export const NEXTCLOUD_CONFIG_PATH = `${NEXTCLOUD_ROOT}/config/ispmail.config.php`;
/** Root-only file with the two passwords occ asks for at installation (database, then admin). */
export const NEXTCLOUD_INSTALL_SECRETS = secretPath("nextcloud.install");
export const NEXTCLOUD_ADMIN_USER = "admin";
/** The directory database and the view that role nextcloudauth may read (PostgreSQL contract). */
export const DIRECTORY_DATABASE = "mailserver";
export const LOGIN_VIEW = "nextcloud_users";
/** Nextcloud's own log (JSON lines): the fail2ban step's nextcloud jail reads its failed logins. */
export const NEXTCLOUD_LOG = `${NEXTCLOUD_DATA}/nextcloud.log`;
/**
 * Our own Nextcloud app (files/nextcloud/apps/ispmail_password_rules/): before a user of the SQL-raw
 * backend gets a new password, it asks password_policy about it (Nextcloud's own user database does
 * that itself, user_backend_sql_raw does not) and refuses the current password.
 */
export const PASSWORD_RULES_APP = "ispmail_password_rules";
/** Its files, relative to its directory; the step writes each into `${NEXTCLOUD_ROOT}/apps/`. */
export const PASSWORD_RULES_APP_FILES = ["appinfo/info.xml", "lib/AppInfo/Application.php", "lib/Listener/PasswordRulesListener.php"] as const;

/**
 * user_backend_sql_raw first, so mail users can log in; then the tutorial's groupware apps, the
 * bundled password_policy (enabled by default; named so that it is enabled again if it was not),
 * and our app, which asks that policy about mail users' new passwords.
 */
export const NEXTCLOUD_APPS = ["user_backend_sql_raw", "mail", "calendar", "contacts", "password_policy", PASSWORD_RULES_APP] as const;

/**
 * The queries of user_backend_sql_raw (its README: named parameters, at most one column; the query
 * names and parameter names are the app's, lib/Config.php and lib/UserBackend.php). The view holds
 * `username` (the full, lowercase address), `password_hash` (already without Dovecot's `{ARGON2ID}`
 * prefix, so PHP's password_verify accepts it) and `display_name`. The app appends
 * `LIMIT :limit OFFSET :offset` to get_users and binds `:search` as `%term%`.
 *
 * Two writes, and only these: a user's own password (`:new_password_hash`, PHP's argon2id hash,
 * see `hash_algorithm_for_new_passwords` in the config file) and display name. Role nextcloudauth
 * may update exactly these two columns of the view (migration 008), whose trigger stores the hash in
 * Dovecot's form and refuses any other scheme. Creating, renaming and deleting users stay with the
 * stack config (no create_user/delete_user query, so Nextcloud does not offer them). The directory
 * sync keeps what a user set: the configured password or display name replaces it only when that
 * configured value itself changes (ispmail-db sync).
 */
export const SQL_RAW_QUERIES = {
    get_password_hash_for_user: `SELECT password_hash FROM ${LOGIN_VIEW} WHERE username = :username`,
    user_exists: `SELECT EXISTS(SELECT 1 FROM ${LOGIN_VIEW} WHERE username = :username)`,
    get_users: `SELECT username FROM ${LOGIN_VIEW} WHERE username ILIKE :search OR display_name ILIKE :search ORDER BY username`,
    get_display_name: `SELECT COALESCE(display_name, username) FROM ${LOGIN_VIEW} WHERE username = :username`,
    get_email_address: `SELECT username FROM ${LOGIN_VIEW} WHERE username = :username`,
    count_users: `SELECT COUNT(*) FROM ${LOGIN_VIEW}`,
    set_password_hash_for_user: `UPDATE ${LOGIN_VIEW} SET password_hash = :new_password_hash WHERE username = :username`,
    set_display_name: `UPDATE ${LOGIN_VIEW} SET display_name = :new_display_name WHERE username = :username`,
} as const;

export type SqlRawQueryName = keyof typeof SQL_RAW_QUERIES;

/** The release archive: the configured URL, or the release of that version on Nextcloud's server. */
export function nextcloudArchiveUrl(nextcloud: Model["nextcloud"]): string {
    return nextcloud.url ?? `https://download.nextcloud.com/server/releases/nextcloud-${nextcloud.version}.tar.bz2`;
}

/** config/ispmail.config.php with the directory password as a secret placeholder. */
export function renderNextcloudConfig(model: Model): string {
    const queries = Object.entries(SQL_RAW_QUERIES).map(([name, sql]) => {
        // Inserted between PHP single quotes: keep them free of quotes and backslashes.
        if (/['\\]/.test(sql)) throw new Error(`SQL-raw query ${name} must not contain ' or \\`);
        return { name, sql };
    });
    return renderTemplate("nextcloud/ispmail.config.php.mustache", {
        trustedDomains: [...new Set([model.nextcloud.host, "localhost"])],
        host: model.nextcloud.host,
        dataDirectory: NEXTCLOUD_DATA,
        mailDomain: model.domains[0],
        directoryDatabase: DIRECTORY_DATABASE,
        directoryRole: DB_ROLES.nextcloudAuth,
        // A generated password: 32 letters and digits (components/secrets.ts), safe between quotes.
        directoryPassword: secretRef(dbPasswordSecret(DB_ROLES.nextcloudAuth)),
        queries,
    });
}

function render(model: Model): StepBody {
    // The config schema requires both when Nextcloud is enabled.
    if (!model.nextcloud.version || !model.nextcloud.sha256) throw new Error("ispmail:nextcloud.version and sha256 are required when Nextcloud is enabled");
    const placeholder = renderTemplate("apache/placeholder.html.mustache", {
        host: model.nextcloud.host,
        domainList: model.domains.join(", "),
        reason: "Nextcloud is being set up here; until then use your mail client (IMAP and SMTP on this host).",
    });
    const placeholderPath = "/var/lib/ispmail/nextcloud-placeholder.html";
    const phpIni = readStatic("nextcloud/php-nextcloud.ini");
    const files: StepFile[] = [
        { path: NEXTCLOUD_CONFIG_PATH, content: renderNextcloudConfig(model), owner: "www-data", group: "www-data", mode: "0640", secret: true },
        {
            path: NEXTCLOUD_INSTALL_SECRETS,
            content: `${secretRef(dbPasswordSecret(DB_ROLES.nextcloud))}\n${secretRef(NEXTCLOUD_ADMIN_SECRET)}\n`,
            owner: "root",
            group: "root",
            mode: "0600",
            secret: true,
        },
        { path: "/etc/php/8.4/fpm/conf.d/90-ispmail-nextcloud.ini", content: phpIni, owner: "root", group: "root", mode: "0644" },
        { path: "/etc/php/8.4/cli/conf.d/90-ispmail-nextcloud.ini", content: phpIni, owner: "root", group: "root", mode: "0644" },
        { path: "/etc/systemd/system/nextcloud-cron.service", content: readStatic("nextcloud/nextcloud-cron.service"), owner: "root", group: "root", mode: "0644" },
        { path: "/etc/systemd/system/nextcloud-cron.timer", content: readStatic("nextcloud/nextcloud-cron.timer"), owner: "root", group: "root", mode: "0644" },
        { path: placeholderPath, content: placeholder, owner: "root", group: "root", mode: "0644" },
        // Nextcloud's default apps directory (ispmail.config.php sets no apps_paths), owned like the
        // rest of Nextcloud's code after unpacking (www-data, nothing for others).
        ...PASSWORD_RULES_APP_FILES.map((rel): StepFile => ({
            path: `${NEXTCLOUD_ROOT}/apps/${PASSWORD_RULES_APP}/${rel}`,
            content: readStatic(`nextcloud/apps/${PASSWORD_RULES_APP}/${rel}`),
            owner: "www-data",
            group: "www-data",
            mode: "0640",
        })),
    ];
    const script = [
        shellAssignments({
            NC_VERSION: model.nextcloud.version,
            NC_URL: nextcloudArchiveUrl(model.nextcloud),
            NC_SHA256: model.nextcloud.sha256,
            NC_ROOT: NEXTCLOUD_ROOT,
            NC_DATA: NEXTCLOUD_DATA,
            NC_CONFIG: NEXTCLOUD_CONFIG_PATH,
            NC_DB_NAME: "nextcloud",
            NC_DB_USER: DB_ROLES.nextcloud,
            NC_ADMIN_USER: NEXTCLOUD_ADMIN_USER,
            NC_INSTALL_SECRETS: NEXTCLOUD_INSTALL_SECRETS,
            NC_APPS: NEXTCLOUD_APPS.join(" "),
            NC_RULES_APP: PASSWORD_RULES_APP,
            NC_PASSWORD_MIN_LENGTH: String(MINIMUM_PASSWORD_LENGTH),
            PLACEHOLDER_HTML: placeholderPath,
        }),
        readStatic("nextcloud/apply.sh"),
    ].join("\n");
    return {
        description: `Nextcloud ${model.nextcloud.version} on https://${model.nextcloud.host}/ with mail-directory logins (skipped while the archive is unreachable)`,
        // Nextcloud's required and recommended PHP modules (admin manual, "System requirements").
        packages: [
            "php8.4-apcu",
            "php8.4-bcmath",
            "php8.4-curl",
            "php8.4-gd",
            "php8.4-gmp",
            "php8.4-intl",
            "php8.4-mbstring",
            "php8.4-pgsql",
            "php8.4-xml",
            "php8.4-zip",
            "bzip2",
            "curl",
        ],
        files,
        script,
    };
}

export const nextcloud: Service = {
    name: STEP.nextcloud,
    after: [STEP.web, STEP.directory],
    background: true,
    enabled: (model) => model.nextcloud.enabled,
    secrets: () => [{ name: NEXTCLOUD_ADMIN_SECRET, kind: "password", description: "Nextcloud admin user", stateful: false }],
    render,
};
