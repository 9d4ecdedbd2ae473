/**
 * The secrets a stack needs, as data. Pulumi turns each spec into a `random.RandomPassword` or a
 * `tls.PrivateKey` (components/generated-secrets.ts); the lab generates the same names locally and keeps them in
 * its state directory. Steps reference them with `secretRef(name)`.
 */
import { createPublicKey } from "node:crypto";
import type { Model } from "./config";

export type SecretKind =
    /** 32 letters and digits: safe inside every config syntax we render (no quoting needed). */
    | "password"
    /** RSA 2048 private key, PEM (PKCS#1), for DKIM signing; the public half goes to DNS. */
    | "dkim-rsa2048";

export interface SecretSpec {
    readonly name: string;
    readonly kind: SecretKind;
    readonly description: string;
    /** Losing it loses data or breaks mail (DKIM keys): protected in protected stacks, never replaced. */
    readonly stateful: boolean;
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
} as const;

export const userPasswordSecret = (address: string) => `user:${address}`;
export const dkimKeySecret = (selector: string) => `dkim:${selector}`;
export const dbPasswordSecret = (role: string) => `db.${role}`;

export function secretSpecs(model: Model): SecretSpec[] {
    const specs: SecretSpec[] = [];
    for (const role of Object.values(DB_ROLES)) {
        specs.push({ name: dbPasswordSecret(role), kind: "password", description: `PostgreSQL role ${role}`, stateful: false });
    }
    specs.push({ name: "rspamd.controller", kind: "password", description: "Rspamd controller (web UI) password", stateful: false });
    if (model.nextcloud.enabled) specs.push({ name: "nextcloud.admin", kind: "password", description: "Nextcloud admin user", stateful: false });
    if (model.backup) specs.push({ name: "backup.restic", kind: "password", description: "restic repository password", stateful: true });
    for (const u of model.users) {
        // Users with a password in stack config get it from there (a secret), not generated.
        if (!u.passwordFromConfig) specs.push({ name: userPasswordSecret(u.address), kind: "password", description: `mailbox ${u.address}`, stateful: false });
    }
    for (const s of model.dkimSelectors) {
        specs.push({ name: dkimKeySecret(s), kind: "dkim-rsa2048", description: `DKIM key for selector ${s}`, stateful: true });
    }
    return specs;
}

/**
 * base64 of the DER SubjectPublicKeyInfo: the `p=` value of a DKIM record (RFC 6376 §3.6.1).
 * Takes the public key PEM (Pulumi's tls.PrivateKey output) or the private key PEM (the lab).
 */
export function dkimPublicKeyFromPem(pem: string): string {
    return createPublicKey(pem).export({ type: "spki", format: "der" }).toString("base64");
}
