/**
 * The `webmail` step (only when `ispmail:webmail.enabled`, the default): Roundcube from Debian 13
 * on its own vhost (`ispmail:webmail.host`, default webmail.<first domain>; the web step serves it),
 * with its own PostgreSQL database and role, IMAP and SMTP on this server with the user's own
 * login, and three plugins:
 *  - password: users change their own password, through role mailpassword, which may only run
 *    change_own_password() (migration 007); the directory sync keeps what they set;
 *  - managesieve: filters and vacation replies (Dovecot's ManageSieve on loopback);
 *  - markasjunk: "Spam" moves a message to Junk, which trains Rspamd (Dovecot's imapsieve).
 *
 * Config files: files/webmail (config.inc.php and the plugins' settings, apply.sh).
 */
import type { Model } from "../config";
import { DB_ROLES, dbPasswordSecret, WEBMAIL_DES_KEY_SECRET } from "../secrets";
import { secretRef, type StepFile } from "../steps";
import { readStatic, renderTemplate } from "../templates";
import { STEP } from "./names";
import type { Service, StepBody } from "./service";

/** The document root of Roundcube's vhost (Debian's layout: only public_html is served). */
export const WEBMAIL_ROOT = "/var/lib/roundcube/public_html";
/** The shortest password a user may choose. */
export const MINIMUM_PASSWORD_LENGTH = 12;

function render(model: Model): StepBody {
    // Holding a password: readable by PHP-FPM (www-data), by nobody else.
    const phpSecret = (path: string, content: string): StepFile => ({ path, content, owner: "root", group: "www-data", mode: "0640", secret: true });
    return {
        description: `Webmail: Roundcube on https://${model.webmail.host}/ (password, managesieve, markasjunk)`,
        // dbconfig-common must not make a database of its own, and the package must not touch Apache.
        debconf: [
            "roundcube-core roundcube/dbconfig-install boolean false",
            "roundcube-core roundcube/reconfigure-webserver multiselect",
            "roundcube-core roundcube/restart-webserver boolean false",
        ],
        packages: ["roundcube-core", "roundcube-pgsql", "roundcube-plugins", "php8.4-intl", "php8.4-pgsql"],
        files: [
            phpSecret(
                "/etc/roundcube/config.inc.php",
                renderTemplate("webmail/config.inc.php.mustache", {
                    // Generated passwords: letters and digits only, safe between PHP's single quotes.
                    dbPassword: secretRef(dbPasswordSecret(DB_ROLES.webmail)),
                    desKey: secretRef(WEBMAIL_DES_KEY_SECRET),
                    firstDomain: model.domains[0],
                }),
            ),
            phpSecret(
                "/etc/roundcube/plugins/password/config.inc.php",
                renderTemplate("webmail/password.config.inc.php.mustache", { dbPassword: secretRef(dbPasswordSecret(DB_ROLES.passwordChange)), minimumLength: MINIMUM_PASSWORD_LENGTH }),
            ),
            { path: "/etc/roundcube/plugins/managesieve/config.inc.php", content: readStatic("webmail/managesieve.config.inc.php"), owner: "root", group: "www-data", mode: "0640" },
        ],
        script: readStatic("webmail/apply.sh"),
    };
}

export const webmail: Service = {
    name: STEP.webmail,
    after: [STEP.web, STEP.directory],
    background: true,
    enabled: (model) => model.webmail.enabled,
    webNames: (model) => [model.webmail.host],
    secrets: () => [{ name: WEBMAIL_DES_KEY_SECRET, kind: "password", description: "Roundcube's session encryption key (des_key)", stateful: false }],
    render,
};
