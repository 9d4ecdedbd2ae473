/**
 * The database admin (`ispmail:dbAdmin`): phpPgAdmin as in the tutorial (the default), Adminer, or
 * none, from Debian 13, served on a vhost of its own that listens on the loopback interface only
 * (127.0.0.1 and ::1, port {@link DB_ADMIN_PORT}). From anywhere else it is reached through an SSH
 * tunnel, as the tutorial does it:
 *
 *   ssh -L 8080:127.0.0.1:8080 root@<mailHost>     then open  http://127.0.0.1:8080/phppgadmin/
 *
 * and one logs in as a database role with its password (mailadmin: db.mailadmin in the stack
 * output adminSecrets). The superuser postgres has no password and may not log in over TCP (pg_hba.conf);
 * phpPgAdmin's extra_login_security refuses it and empty passwords before even trying.
 *
 * Not a step of its own: Apache belongs to the web step, which renders this vhost with the others,
 * enables and removes sites and reloads once. Debian's phppgadmin and adminer packages enable their
 * Apache conf for every vhost (/phppgadmin and /adminer on every public name); the web step disables
 * both whatever the choice, and includes only the chosen one in the loopback vhost, so a switch
 * leaves nothing of the previous admin reachable, and `none` removes the vhost (nothing listens on
 * the port). Packages are never removed: a switch stays reversible, and an admin that is not chosen
 * serves nothing; `apt purge phppgadmin` (or adminer) on the server removes one for good.
 *
 * Config files: files/dbadmin/ (phpPgAdmin's config.inc.php); the vhost is
 * files/apache/sites/ispmail-90-dbadmin.conf.mustache.
 */
import type { DbAdmin, Model } from "../config";
import type { StepFile } from "../steps";
import { readStatic, renderTemplate } from "../templates";

/** Port of the loopback-only database admin vhost (127.0.0.1 and ::1). */
export const DB_ADMIN_PORT = 8080;
/** The loopback vhost's own document root: a page that links to the admin. */
export const DB_ADMIN_ROOT = "/var/www/localhost";
/** The Apache site of the loopback vhost (sites-available/<name>.conf). */
export const DB_ADMIN_SITE = "ispmail-90-dbadmin";
/** phpPgAdmin's configuration (a conffile of the package; ours replaces it, apt keeps ours on upgrades). */
export const PHPPGADMIN_CONFIG = "/etc/phppgadmin/config.inc.php";

/** Where each admin is served on the loopback vhost, and how it is called. */
export const DB_ADMIN_APPS: Readonly<Record<Exclude<DbAdmin, "none">, { readonly path: string; readonly title: string; readonly package: string }>> = {
    phppgadmin: { path: "/phppgadmin/", title: "phpPgAdmin", package: "phppgadmin" },
    adminer: { path: "/adminer/", title: "Adminer", package: "adminer" },
};

/**
 * The Debian packages' Apache confs that would serve an admin on every vhost: the web step
 * disables all of them, whatever the choice (files/apache/apply.sh).
 */
export const DB_ADMIN_GLOBAL_CONFS = ["phppgadmin", "adminer"] as const;

/** The chosen admin's package (none for `none`). List it after php8.4-fpm: see the web step. */
export function dbAdminPackages(model: Pick<Model, "dbAdmin">): string[] {
    return model.dbAdmin === "none" ? [] : [DB_ADMIN_APPS[model.dbAdmin].package];
}

/** The loopback vhost, or none when no admin is chosen. */
export function renderDbAdminSite(model: Pick<Model, "dbAdmin">): { name: string; content: string } | undefined {
    if (model.dbAdmin === "none") return undefined;
    return {
        name: DB_ADMIN_SITE,
        content: renderTemplate("apache/sites/ispmail-90-dbadmin.conf.mustache", {
            port: DB_ADMIN_PORT,
            docroot: DB_ADMIN_ROOT,
            title: DB_ADMIN_APPS[model.dbAdmin].title,
            path: DB_ADMIN_APPS[model.dbAdmin].path,
            conf: model.dbAdmin,
        }),
    };
}

/** The chosen admin's files: the loopback vhost's start page, and phpPgAdmin's configuration. */
export function dbAdminFiles(model: Pick<Model, "dbAdmin">): StepFile[] {
    if (model.dbAdmin === "none") return [];
    const app = DB_ADMIN_APPS[model.dbAdmin];
    const file = (path: string, content: string): StepFile => ({ path, content, owner: "root", group: "root", mode: "0644" });
    return [
        file(`${DB_ADMIN_ROOT}/index.html`, `<!DOCTYPE html><title>localhost</title><a href="${app.path}">${app.title}</a>\n`),
        // No secret in it: one logs in with a database role's own password.
        ...(model.dbAdmin === "phppgadmin" ? [file(PHPPGADMIN_CONFIG, readStatic("dbadmin/phppgadmin.config.inc.php"))] : []),
    ];
}
