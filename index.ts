// The Pulumi entry point: read the stack config, build the mail server, export what a user needs.
import { program } from "./components/program";

const outputs = program();

export const ipv4 = outputs.ipv4;
export const ipv6 = outputs.ipv6;
export const mailHost = outputs.mailHost;
export const clientSettings = outputs.clientSettings;
export const dnsRecords = outputs.dnsRecords;
/** Each zone's DS record (DNSSEC): give it to the zone's registrar. */
export const dnssecDs = outputs.dnssecDs;
/** Passwords of the mailboxes whose password was generated (secret). */
export const userPasswords = outputs.userPasswords;
/** What an administrator logs in with: db.mailadmin, rspamd.controller, nextcloud.admin, backup.restic (secret). */
export const adminSecrets = outputs.adminSecrets;
/** Which DKIM selector signs; during a rotation, when the next `pulumi up` will switch it. */
export const dkimSigning = outputs.dkimSigning;
export const beforeFirstUse = outputs.beforeFirstUse;
