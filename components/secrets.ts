/**
 * Secrets as data: their kinds, names and the spec a service gives for each one it needs. The list
 * of a stack's secrets is derived from its services (components/services secretSpecs). Pulumi turns
 * each spec into a `random.RandomPassword` or a `tls.PrivateKey` (components/generated-secrets.ts);
 * the lab generates the same names locally and keeps them in its state directory. Steps reference
 * them with `secretRef(name)`; on the server each is a root-only file (components/paths.ts secretPath).
 */
import { createPublicKey } from "node:crypto";

export type SecretKind =
    /** 32 letters and digits: safe inside every config syntax we render (no quoting needed). */
    | "password"
    /** RSA 2048 private key, PEM (PKCS#1), for DKIM signing; the public half goes to DNS. */
    | "dkim-rsa2048"
    /** RSA 2048 private key, PEM, for the server's certificate; its hash goes to DNS as TLSA. */
    | "tls-rsa2048";

export interface SecretSpec {
    readonly name: string;
    readonly kind: SecretKind;
    readonly description: string;
    /** Losing it loses data or breaks mail (DKIM keys): protected in protected stacks, never replaced. */
    readonly stateful: boolean;
    /**
     * The name this secret had until a rename (a renamed mailbox's password): the same secret under
     * its new name, a resource alias in Pulumi, the stored value carried over in the lab.
     */
    readonly formerName?: string;
}

/** Role names in PostgreSQL; their passwords are secrets `db.<role>`. */
export const DB_ROLES = {
    /** SELECT on the views Postfix and Dovecot query, nothing else. */
    reader: "mailreader",
    /** Owns the directory rows; used by the sync. */
    admin: "mailadmin",
    /** Nextcloud's SQL user backend: SELECT on the login view only. */
    nextcloudAuth: "nextcloudauth",
    /** Nextcloud's own database. */
    nextcloud: "nextcloud",
    /** Roundcube's own database (the webmail step). */
    webmail: "roundcube",
    /** Roundcube's password plugin: may only run change_own_password() in the directory. */
    passwordChange: "mailpassword",
} as const;

/** Secret names: each service's `secrets` lists the ones it needs (components/services). */
export const RSPAMD_CONTROLLER_SECRET = "rspamd.controller";
export const NEXTCLOUD_ADMIN_SECRET = "nextcloud.admin";
export const BACKUP_PASSWORD_SECRET = "backup.restic";
export const WEBMAIL_DES_KEY_SECRET = "webmail.des-key";
export const userPasswordSecret = (address: string) => `user:${address}`;
/** The Spamhaus DQS key, given as secret config (ispmail:spamhausDqsKey). */
export const SPAMHAUS_DQS_SECRET = "spamhaus.dqs";
export const DKIM_SECRET_PREFIX = "dkim:";
export const dkimKeySecret = (selector: string) => `${DKIM_SECRET_PREFIX}${selector}`;
export const TLS_KEY_SECRET_PREFIX = "tls:";
export const tlsKeySecret = (name: string) => `${TLS_KEY_SECRET_PREFIX}${name}`;
export const dbPasswordSecret = (role: string) => `db.${role}`;
/**
 * The secrets an administrator logs in with (stack output `adminSecrets`): the database admin as
 * mailadmin, Rspamd's web interface, Nextcloud's admin, the backup repository. Only those the
 * stack has (Nextcloud's when enabled, restic's with backups).
 */
export const ADMIN_SECRETS: readonly string[] = [dbPasswordSecret(DB_ROLES.admin), RSPAMD_CONTROLLER_SECRET, NEXTCLOUD_ADMIN_SECRET, BACKUP_PASSWORD_SECRET];

/**
 * base64 of the DER SubjectPublicKeyInfo: the `p=` value of a DKIM record (RFC 6376 §3.6.1).
 * Takes the public key PEM (Pulumi's tls.PrivateKey output) or the private key PEM (the lab).
 */
export function dkimPublicKeyFromPem(pem: string): string {
    return createPublicKey(pem).export({ type: "spki", format: "der" }).toString("base64");
}
