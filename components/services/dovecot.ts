/**
 * The `dovecot` step: Dovecot 2.4 from Debian 13 — IMAPS (993 only), LMTP for Postfix, SASL for
 * Postfix, passdb/userdb from the directory's PostgreSQL views (argon2id), Maildir under
 * /var/vmail/<domain>/<local>, quota, Sieve (global spam-to-Junk, IMAPSieve learning, ManageSieve
 * on 4190) and shared mailboxes with ACLs.
 *
 * Config files: files/dovecot (dovecot.conf, conf.d/, sieve/, quota-warning.sh, apply.sh). Only the
 * SQL connection (it holds the mailreader password) and the quota numbers are rendered here.
 */
import type { Model, SharedMailbox } from "../config";
import { DB_ROLES, dbPasswordSecret } from "../secrets";
import type { StepFile } from "../steps";
import { secretRef } from "../steps";
import { readStatic, renderTemplate } from "../templates";
import { STEP } from "./names";
import type { PublicPort, Service, StepBody } from "./service";

/** The ports Dovecot serves to the internet (the firewall, `check` and the SRV records are made from them). */
const DOVECOT_PORTS: readonly PublicPort[] = [
    { port: 993, name: "IMAPS", description: "IMAP over implicit TLS", daemon: "dovecot", implicitTls: true, srv: "_imaps._tcp" },
    { port: 4190, name: "ManageSieve", description: "ManageSieve (filter rules)", daemon: "dovecot" },
];

export const DOVECOT_SQL_CONF = "/etc/dovecot/ispmail-sql.conf.ext";
export const SHARES_FILE = "/etc/ispmail/dovecot/shares";
/** Mails the user a quota warning (conf.d/90-quota.conf: service quota-warning runs it as vmail). */
export const QUOTA_WARNING_SCRIPT = "/etc/dovecot/quota-warning.sh";

/** conf.d files copied as they are (they replace Debian's files of the same name). */
const CONF_D = [
    "10-auth.conf",
    "10-mail.conf",
    "10-master.conf",
    "10-ssl.conf",
    "15-mailboxes.conf",
    "20-imap.conf",
    "20-lmtp.conf",
    "20-managesieve.conf",
    "90-acl.conf",
    "90-sieve.conf",
    "auth-sql.conf.ext",
] as const;

const SIEVE = ["before/spam-to-junk.sieve", "imapsieve/report-spam.sieve", "imapsieve/report-ham.sieve"] as const;
const PIPE_PROGRAMS = ["learn-spam", "learn-ham"] as const;

/**
 * IMAP ACL letters (RFC 4314, as the config schema accepts them) -> the right names `doveadm acl
 * set` takes. https://doc.dovecot.org/latest/core/plugins/acl.html
 */
const RIGHT_NAMES: Readonly<Record<string, string>> = {
    l: "lookup",
    r: "read",
    w: "write",
    s: "write-seen",
    t: "write-deleted",
    e: "expunge",
    i: "insert",
    p: "post",
    k: "create",
    x: "delete",
    a: "admin",
};

export function aclRightNames(letters: string): string[] {
    return [...new Set(letters)].map((l) => {
        const name = RIGHT_NAMES[l];
        if (!name) throw new Error(`unknown IMAP ACL right "${l}"`);
        return name;
    });
}

/** One "owner grantee right..." line per share, sorted, for the step script's ACL sync. */
export function renderSharesFile(shares: readonly SharedMailbox[]): string {
    const lines = shares.map((s) => `${s.mailbox} ${s.sharedTo} ${aclRightNames(s.rights).join(" ")}`).sort();
    return lines.length ? lines.join("\n") + "\n" : "";
}

export function renderDovecotSqlConf(): string {
    return renderTemplate("dovecot/ispmail-sql.conf.ext.mustache", { password: secretRef(dbPasswordSecret(DB_ROLES.reader)) });
}

export function renderQuotaConf(model: Model): string {
    return renderTemplate("dovecot/conf.d/90-quota.conf.mustache", {
        defaultQuotaMb: model.defaultQuotaMb,
        messageSizeLimitMb: model.messageSizeLimitMb,
        quotaMailSizeMb: model.messageSizeLimitMb + 1,
    });
}

function render(model: Model): StepBody {
    const files: StepFile[] = [
        { path: "/etc/dovecot/dovecot.conf", content: readStatic("dovecot/dovecot.conf"), mode: "0644" },
        ...CONF_D.map((name) => ({ path: `/etc/dovecot/conf.d/${name}`, content: readStatic(`dovecot/conf.d/${name}`), mode: "0644" })),
        { path: "/etc/dovecot/conf.d/90-quota.conf", content: renderQuotaConf(model), mode: "0644" },
        // Read by Dovecot's config process (root); the dovecot group keeps doveconf usable for it.
        { path: DOVECOT_SQL_CONF, content: renderDovecotSqlConf(), owner: "root", group: "dovecot", mode: "0640", secret: true },
        ...SIEVE.map((rel) => ({ path: `/etc/dovecot/sieve/${rel}`, content: readStatic(`dovecot/sieve/${rel}`), mode: "0644" })),
        ...PIPE_PROGRAMS.map((name) => ({ path: `/etc/dovecot/sieve/pipe/${name}`, content: readStatic(`dovecot/sieve/pipe/${name}`), mode: "0755" })),
        { path: QUOTA_WARNING_SCRIPT, content: readStatic("dovecot/quota-warning.sh"), mode: "0755" },
        { path: SHARES_FILE, content: renderSharesFile(model.sharedMailboxes), mode: "0644" },
    ];
    return {
        description: "Dovecot 2.4: IMAPS, LMTP, SASL for Postfix, SQL users, quota, Sieve/ManageSieve, shared mailboxes",
        packages: ["dovecot-core", "dovecot-imapd", "dovecot-lmtpd", "dovecot-pgsql", "dovecot-sieve", "dovecot-managesieved"],
        files,
        script: readStatic("dovecot/apply.sh"),
    };
}

// Not after postfix: Dovecot's LMTP and SASL sockets live in Postfix's spool and belong to the
// postfix user, which the packages step's postfix package creates before any other step runs; the
// step makes the spool's private/ directory itself when Postfix has not started yet
// (files/dovecot/apply.sh), and Postfix starts without the sockets. So the engine runs the two
// steps at the same time. (Before the packages step, Dovecot's reload failed on the missing user
// while systemctl reported success: the step still refuses to reload without it.)
export const dovecot: Service = { name: STEP.dovecot, after: [STEP.directory, STEP.tls], publicPorts: DOVECOT_PORTS, render };
