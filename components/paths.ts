/**
 * Paths on the server that more than one service (or the apply script itself) relies on. A path
 * that only one service uses stays in that service's module.
 */

/** Everything stateful lives below this mountpoint: the data volume (mail, database, keys, backups). */
export const DATA_DIR = "/srv/ispmail";
/** Root-only files holding secrets, one per secret name (the apply script's `secret_file NAME`). */
export const SECRETS_DIR = "/etc/ispmail/secrets";
/** What the steps remember between runs (pending reloads, debconf stamps, applied shares). */
export const STATE_DIR = "/var/lib/ispmail";
/** certbot --webroot writes http-01 challenges below this directory; port 80 serves them. */
export const ACME_WEBROOT = "/var/www/acme";
/** Nextcloud's code: the web step points the groupware vhost here, the nextcloud step unpacks it. */
export const NEXTCLOUD_ROOT = "/var/www/nextcloud";

/** The file a secret is written to on the server. */
export const secretPath = (name: string) => `${SECRETS_DIR}/${name}`;
