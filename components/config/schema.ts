/**
 * The zod schema of every `ispmail:*` key: what each setting may hold, its default, and a
 * `.describe()` text saying what is allowed (messages.ts builds the error messages from it).
 */
import { isIP } from "node:net";
import * as ipaddr from "ipaddr.js";
import { z } from "zod";

/** The namespace of this program's stack-config keys: `ispmail:mailHost`, `ispmail:users`, ... */
export const CONFIG_NAMESPACE = "ispmail";

// ---------------------------------------------------------------------------------------------
// Primitive rules. Hostname rules follow RFC 1123 (letters, digits, hyphen; no leading/trailing
// hyphen; labels <= 63, name <= 253); local parts follow RFC 5321 (<= 64 octets, dot-atom only:
// quoted local parts are legal but no mailbox provider hands them out).
// ---------------------------------------------------------------------------------------------
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const LOCAL_PART = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;
const SELECTOR = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const SSH_KEY = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) AAAA[A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$/;
const SHA256 = /^[a-f0-9]{64}$/;
/** Dovecot's ACL rights letters (RFC 4314 subset, https://doc.dovecot.org/latest/core/plugins/acl.html). */
const RIGHTS = /^[lrwsteipkxa]+$/;

const FQDN_ALLOWED = "a fully qualified domain name such as mx1.example.org: dot-separated labels of letters, digits and inner hyphens (<= 63 characters each), no underscores, spaces or trailing dot; IDNs in xn-- form";

function isFqdn(name: string): boolean {
    const labels = name.split(".");
    return name.length <= 253 && labels.length >= 2 && labels.every((l) => LABEL.test(l)) && !/^[0-9]+$/.test(labels[labels.length - 1]);
}

const lower = (s: string) => s.trim().toLowerCase();

const fqdn = z
    .string()
    .transform(lower)
    .superRefine((s, ctx) => {
        if (!isFqdn(s)) ctx.addIssue({ code: "custom", message: `"${s}" is not allowed; must be ${FQDN_ALLOWED}` });
    })
    .describe(FQDN_ALLOWED);

/** Problems of an address as messages that say what is allowed; empty when it is fine. */
function addressProblems(s: string): string[] {
    const at = s.lastIndexOf("@");
    if (at < 0) return [`"${s}" has no @; must be an e-mail address local@domain such as alice@example.org`];
    const local = s.slice(0, at);
    const domain = s.slice(at + 1);
    const problems: string[] = [];
    if (local.length === 0 || local.length > 64) problems.push(`local part (before @) must be 1 to 64 characters (RFC 5321), got ${local.length}`);
    else if (!LOCAL_PART.test(local)) problems.push("local part (before @) may contain only letters, digits and !#$%&'*+/=?^_`{|}~- in dot-separated words (no spaces, no leading, trailing or double dots)");
    if (!isFqdn(domain)) problems.push(`domain part "${domain}" must be ${FQDN_ALLOWED}`);
    return problems;
}

export const emailAddress = z
    .string()
    .transform(lower)
    .superRefine((s, ctx) => {
        for (const message of addressProblems(s)) ctx.addIssue({ code: "custom", message });
    })
    .describe("an e-mail address such as alice@example.org");

/** An alias source: a full address, or a catch-all `@domain` as the tutorial shows. */
const aliasSource = z
    .string()
    .transform(lower)
    .superRefine((s, ctx) => {
        if (s.startsWith("@")) {
            if (!isFqdn(s.slice(1))) ctx.addIssue({ code: "custom", message: `a catch-all source must be @ followed by a managed mail domain, such as @example.org` });
            return;
        }
        for (const message of addressProblems(s)) ctx.addIssue({ code: "custom", message });
    })
    .describe("an e-mail address such as sales@example.org, or @example.org for a catch-all");

const CIDR_ALLOWED = "an IPv4 or IPv6 network in CIDR notation such as 203.0.113.7/32 or 2001:db8::/64 (prefix 0-32 for IPv4, 0-128 for IPv6)";
const cidr = z
    .string()
    .superRefine((s, ctx) => {
        const [addr, bits, extra] = s.split("/");
        const family = isIP(addr ?? "");
        const max = family === 4 ? 32 : 128;
        const n = Number(bits);
        if (extra !== undefined || family === 0 || bits === undefined || !/^[0-9]{1,3}$/.test(bits) || n > max) {
            ctx.addIssue({ code: "custom", message: `"${s}" must be ${CIDR_ALLOWED}` });
            return;
        }
        // Reject host bits set (e.g. 10.0.0.1/8): the firewall API refuses them, better say so here.
        const network = (family === 4 ? ipaddr.IPv4 : ipaddr.IPv6).networkAddressFromCIDR(s);
        if (network.toString() !== ipaddr.parse(addr).toString()) {
            ctx.addIssue({ code: "custom", message: `"${s}" has host bits set; the network address must end the prefix, use ${network.toString()}/${n}` });
        }
    })
    .describe(CIDR_ALLOWED);

// ---------------------------------------------------------------------------------------------
// The schema of each top-level key. Keys are separate stack-config entries (`ispmail:<key>`).
// ---------------------------------------------------------------------------------------------
const serverSchema = z
    .strictObject({
        /** Hetzner server type (`hcloud server-type list`), e.g. cx22 or cax11. */
        type: z.string().regex(/^[a-z0-9-]+$/).describe("a Hetzner server type such as cx22, cx32 or cax11 (lowercase letters, digits, hyphens)"),
        /** Hetzner location; the primary IPs and the volume live there too. */
        location: z.string().regex(/^[a-z]{3}[0-9]?$/).describe("a Hetzner location such as fsn1, nbg1, hel1, ash, hil or sin"),
        image: z.string().regex(/^[a-z0-9][a-z0-9.-]*$/).default("debian-13").describe("a Hetzner image name; this program is written for debian-13 (the default)"),
        sshPublicKeys: z
            .array(z.string().trim().regex(SSH_KEY).describe("an OpenSSH public key line such as 'ssh-ed25519 AAAAC3... you@laptop' (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521 or sk-*), not a PEM or PuTTY key"))
            .min(1)
            .describe("a list of at least one OpenSSH public key line (admins who may log in as root)"),
        adminCidrs: z.array(cidr).min(1).describe(`a list of at least one network allowed to reach SSH, each ${CIDR_ALLOWED}`),
        /** Size of the data volume (mail, database, backups) in GB; Hetzner's minimum is 10. */
        volumeSizeGb: z.number().int().min(10).max(10240).default(20).describe("a whole number of GB from 10 to 10240 (default 20)"),
    })
    .describe("a mapping {type, location, sshPublicKeys, adminCidrs, image?, volumeSizeGb?}");

/**
 * A rename is said once, on the new name, and may stay in the file afterwards: what it asks (keep
 * the password, the Maildir, the settings) is done by the first `up` that sees it and is a no-op
 * once the old name is gone (docs/OPERATIONS.md, "Renaming a mailbox or a domain").
 */
const RENAMED_FROM = "the address this mailbox had until now, such as alice@example.org: its password, Maildir, filters and webmail settings move to the new address";
const RENAMED_DOMAIN_FROM = `the name this domain had until now, ${FQDN_ALLOWED}: its mailboxes move to the same local parts in the new name`;

/** A mail domain: its name, or {name, renamedFrom} for one that had another name until now. */
const domainEntry = z
    .union([
        fqdn.describe(`a mail domain, ${FQDN_ALLOWED}`),
        z
            .strictObject({ name: fqdn.describe(`a mail domain, ${FQDN_ALLOWED}`), renamedFrom: fqdn.describe(RENAMED_DOMAIN_FROM) })
            .describe("a mapping {name, renamedFrom}: a mail domain that had another name until now"),
    ])
    .transform((d): { name: string; renamedFrom?: string } => (typeof d === "string" ? { name: d } : d))
    .describe(`a mail domain, ${FQDN_ALLOWED}, or a mapping {name, renamedFrom} for one renamed`);

const userSchema = z
    .strictObject({
        address: emailAddress,
        displayName: z
            .string()
            .max(256)
            .regex(/^[^\p{Cc}]*$/u)
            .optional()
            .describe("a display name of at most 256 characters without control characters (newlines, tabs)"),
        quotaMb: z.number().int().min(1).max(1024 * 1024).optional().describe("a whole number of MB from 1 to 1048576 (default: ispmail:defaultQuotaMb)"),
        password: z
            .string()
            .min(12)
            .max(256)
            .optional()
            .describe("a secret string of 12 to 256 characters set with `pulumi config set --secret --path 'ispmail:users[N].password'`, or nothing for a generated password"),
        renamedFrom: emailAddress.optional().describe(RENAMED_FROM),
    })
    .describe("a mapping {address, displayName?, quotaMb?, password?, renamedFrom?}");

const aliasSchema = z
    .strictObject({
        source: aliasSource,
        destination: emailAddress.describe("an e-mail address: a mailbox in ispmail:users or an address in a domain not managed here"),
    })
    .describe("a mapping {source, destination}");

const rightsSchema = z
    .string()
    .regex(RIGHTS)
    .default("lrwstipekxa")
    .describe("IMAP ACL rights letters from 'lrwsteipkxa' (RFC 4314), such as lrws for read-only with flags (default lrwstipekxa: everything)");

const shareSchema = z
    .strictObject({
        mailbox: emailAddress.describe("the address of a mailbox in ispmail:users whose folders are shared"),
        sharedTo: emailAddress.describe("the address of another mailbox in ispmail:users that gets access"),
        rights: rightsSchema,
    })
    .describe("a mapping {mailbox, sharedTo, rights?}");

const nextcloudSchema = z
    .strictObject({
        enabled: z.boolean().default(false).describe("true or false (default false)"),
        version: z.string().regex(/^[0-9]+(\.[0-9]+){1,2}$/).optional().describe("a Nextcloud release number such as 31.0.9"),
        url: z.url({ protocol: /^https?$/ }).optional().describe("an http(s) URL of the Nextcloud .tar.bz2 archive (default: download.nextcloud.com for version)"),
        sha256: z
            .string()
            .transform(lower)
            .refine((s) => SHA256.test(s), { message: "must be the archive's SHA-256 as 64 hex digits (from the .sha256 file next to the archive)" })
            .optional()
            .describe("the archive's SHA-256 as 64 hex digits"),
        /** The groupware host name (a vhost); defaults to mailHost as in the tutorial. */
        host: fqdn.optional().describe(`the Nextcloud host name, ${FQDN_ALLOWED} (default: mailHost)`),
    })
    .superRefine((n, ctx) => {
        if (!n.enabled) return;
        if (!n.version) ctx.addIssue({ code: "custom", path: ["version"], message: "is required when nextcloud.enabled is true: a Nextcloud release number such as 31.0.9" });
        if (!n.sha256) ctx.addIssue({ code: "custom", path: ["sha256"], message: "is required when nextcloud.enabled is true (the archive is pinned by hash): 64 hex digits" });
        // One digit 64 times is a placeholder, never a real archive's hash: refused here, before any
        // resource exists, instead of in the middle of `pulumi up` when the download does not match.
        else if (/^(.)\1{63}$/.test(n.sha256)) {
            ctx.addIssue({ code: "custom", path: ["sha256"], message: "is a placeholder (one digit 64 times): copy the real SHA-256 from the .sha256 file next to the archive" });
        }
    })
    .describe("a mapping {enabled, version?, url?, sha256?, host?}");

const webmailSchema = z
    .strictObject({
        enabled: z.boolean().default(true).describe("true or false (default true)"),
        /** Roundcube's own vhost name. */
        host: fqdn.optional().describe(`the webmail host name, ${FQDN_ALLOWED} (default: webmail.<first of ispmail:domains>)`),
    })
    .describe("a mapping {enabled?, host?}");

/** The database admins the web step can serve on its loopback-only vhost (first: the default, the tutorial's). */
export const DB_ADMINS = ["phppgadmin", "adminer", "none"] as const;
export type DbAdmin = (typeof DB_ADMINS)[number];

const acmeSchema = z
    .strictObject({
        /** ACME directory. Let's Encrypt production by default; the lab points it at its pebble. */
        directoryUrl: z
            .url({ protocol: /^https$/ })
            .default("https://acme-v02.api.letsencrypt.org/directory")
            .describe("an https URL of an ACME directory (default Let's Encrypt production https://acme-v02.api.letsencrypt.org/directory)"),
        /**
         * The ACME account that alone may have certificates issued (CAA accounturi, RFC 8657). Known
         * only after the first certificate: certbot registers the account on the server.
         */
        accountUri: z
            .url({ protocol: /^https$/ })
            .optional()
            .describe("the https URL of the server's ACME account (RFC 8657 accounturi), as `certbot show_account` prints it, such as https://acme-v02.api.letsencrypt.org/acme/acct/123456789"),
    })
    .describe("a mapping {directoryUrl?, accountUri?}");

const mtaStsSchema = z
    .strictObject({
        mode: z.enum(["enforce", "testing", "none"]).default("enforce").describe('one of "enforce", "testing", "none" (RFC 8461; default enforce)'),
        /** Seconds a sender caches the policy; RFC 8461 allows up to 31557600. */
        maxAge: z.number().int().min(86400).max(31557600).default(604800).describe("a whole number of seconds from 86400 to 31557600 (RFC 8461; default 604800)"),
    })
    .describe("a mapping {mode?, maxAge?}");

const dnsSchema = z
    .strictObject({
        ttl: z.number().int().min(60).max(86400).default(3600).describe("a whole number of seconds from 60 to 86400 (default 3600)"),
        /** Cloudflare zone id per zone name, when the lookup by name should be skipped. */
        zoneIds: z
            .record(fqdn.describe("a zone name such as example.org"), z.string().regex(/^[a-f0-9]{32}$/).describe("a Cloudflare zone id (32 lowercase hex digits)"))
            .default({})
            .describe("a mapping of zone name (such as example.org) to Cloudflare zone id (32 hex digits)"),
        /**
         * Cloudflare signs each zone (DNSSEC); the DS record for the registrar is the stack output
         * `dnssecDs`. Off only for zones signed some other way.
         */
        dnssec: z.boolean().default(true).describe("true or false (default true): Cloudflare signs every zone; give the DS records of the stack output dnssecDs to the registrar"),
    })
    .describe("a mapping {ttl?, zoneIds?, dnssec?}");

const backupSchema = z
    .strictObject({
        /** restic repository: a local path in the lab, sftp:... or s3:... for real stacks. */
        repository: z.string().min(1).describe("a restic repository such as sftp:backup@host:/ispmail, s3:https://... or a local path"),
        /** restic --keep-daily/weekly/monthly. */
        keepDaily: z.number().int().min(1).default(7).describe("a whole number >= 1 (default 7)"),
        keepWeekly: z.number().int().min(0).default(4).describe("a whole number >= 0 (default 4)"),
        keepMonthly: z.number().int().min(0).default(6).describe("a whole number >= 0 (default 6)"),
    })
    .describe("a mapping {repository, keepDaily?, keepWeekly?, keepMonthly?}");

const mailPolicySchema = z
    .strictObject({
        /** Inbound mail failing DMARC is refused (p=reject) or filed as spam (p=quarantine). */
        enforceDmarc: z.boolean().default(true).describe("true or false (default true): refuse mail that fails DMARC of a p=reject domain (ours included), file p=quarantine failures as spam"),
        /** What one authenticated login may send (Rspamd ratelimit), against a stolen password. */
        sendLimit: z
            .strictObject({
                perHour: z.number().int().min(1).max(100000).default(200).describe("a whole number of messages from 1 to 100000 (default 200)"),
                perDay: z.number().int().min(1).max(1000000).default(1000).describe("a whole number of messages from 1 to 1000000 (default 1000)"),
            })
            .default({ perHour: 200, perDay: 1000 })
            .describe("a mapping {perHour?, perDay?}: messages one login may send"),
    })
    .describe("a mapping {enforceDmarc?, sendLimit?}");

const IP_ALLOWED = "an IPv4 or IPv6 address such as 192.0.2.53 or 2001:db8::53";
const TRUST_ANCHOR_ALLOWED = 'a DNSSEC trust anchor in zone-file form, "<zone>. DNSKEY <flags> 3 <algorithm> <base64 key>" or "<zone>. DS <key tag> <algorithm> <digest type> <hex digest>"';
const TRUST_ANCHOR = /^(?:[a-z0-9-]+\.)+ (?:DNSKEY [0-9]+ 3 [0-9]+ [A-Za-z0-9+/=]+|DS [0-9]+ [0-9]+ [0-9]+ [0-9A-Fa-f]+)$/;
const resolverSchema = z
    .strictObject({
        /**
         * Where the server's own resolver sends its questions. Empty (the default): full recursion
         * from the root, which DNS blocklists need (they refuse the big shared resolvers).
         */
        forwardTo: z
            .array(z.string().refine((s) => isIP(s) !== 0, { message: `must be ${IP_ALLOWED}` }).describe(IP_ALLOWED))
            .default([])
            .describe(`a list of resolver addresses (default empty: full recursion from the root), each ${IP_ALLOWED}`),
        /** Extra trust anchors beside the root's (a private or lab DNS tree whose zones are signed). */
        trustAnchors: z
            .array(z.string().regex(TRUST_ANCHOR, { message: `must be ${TRUST_ANCHOR_ALLOWED}` }).describe(TRUST_ANCHOR_ALLOWED))
            .default([])
            .describe(`a list of extra trust anchors (default none: the root's), each ${TRUST_ANCHOR_ALLOWED}`),
    })
    .describe("a mapping {forwardTo?, trustAnchors?}: the server's own validating resolver (unbound)");

/** A list of key names (DKIM selectors, TLS keys): lowercase letters, digits and inner hyphens, at least one. */
function keyNameList(allowed: string) {
    return z
        .array(
            z
                .string()
                .transform(lower)
                .superRefine((s, ctx) => {
                    if (!SELECTOR.test(s)) ctx.addIssue({ code: "custom", message: `"${s}" is not allowed; must be ${allowed}` });
                })
                .describe(allowed),
        )
        .min(1);
}

const selectorList = keyNameList("a DKIM selector: lowercase letters, digits and inner hyphens, no dots or underscores, such as s2026").describe(
    "a list of at least one DKIM selector such as [s2026]; the first one signs once its record has been public for dns.ttl seconds, the others stay published for rotation",
);

/** The certificate's keys by name: each is published as TLSA, the first one is in the certificate. */
const tlsKeyList = keyNameList("a TLS key name: lowercase letters, digits and inner hyphens, such as tls2026")
    .default(["tls1"])
    .describe(
        "a list of at least one TLS key name (default [tls1]); every listed key's TLSA record is published on _25._tcp.<mailHost>, the first key is the certificate's; add, move first, then drop to roll the key over",
    );

/** The shape of every `ispmail:*` key; keys without a default must be present in the stack file. */
export const configSchema = z.strictObject({
    mailHost: fqdn.describe(`the server's host name, ${FQDN_ALLOWED}`),
    domains: z
        .array(domainEntry)
        .min(1)
        .describe("a list of at least one mail domain such as [example.org]; a renamed domain as a mapping {name, renamedFrom}"),
    adminEmail: emailAddress.describe("the administrator's e-mail address such as hostmaster@example.org (ACME account, CAA iodef, DMARC and TLS reports)"),
    /** Protection of the stateful resources; unset: by the stack's name (isProtectedStack). */
    protect: z
        .boolean()
        .optional()
        .describe("true or false (default: true, unless the stack's name is lab, dev, test, staging, ci, preview, sandbox or demo, alone or followed by -something)"),
    server: serverSchema,
    users: z.array(userSchema).default([]).describe("a list of mailboxes, each a mapping {address, displayName?, quotaMb?, password?, renamedFrom?}"),
    aliases: z.array(aliasSchema).default([]).describe("a list of aliases, each a mapping {source, destination}"),
    sharedMailboxes: z.array(shareSchema).default([]).describe("a list of shares, each a mapping {mailbox, sharedTo, rights?}"),
    dkimSelectors: selectorList,
    tlsKeys: tlsKeyList,
    defaultQuotaMb: z.number().int().min(1).max(1024 * 1024).default(2048).describe("a whole number of MB from 1 to 1048576 (default 2048)"),
    nextcloud: nextcloudSchema.default({ enabled: false }),
    webmail: webmailSchema.default({ enabled: true }),
    /**
     * The web-based database admin, served only on the server's loopback interface (reached through
     * an SSH tunnel): phpPgAdmin as in the tutorial, Adminer, or none.
     */
    dbAdmin: z
        .enum(DB_ADMINS)
        .default("phppgadmin")
        .describe('one of "phppgadmin" (the default, as in the tutorial), "adminer" or "none": the database admin served on the loopback interface only (port 8080, reached through an SSH tunnel)'),
    acme: acmeSchema.default({ directoryUrl: "https://acme-v02.api.letsencrypt.org/directory" }),
    mtaSts: mtaStsSchema.default({ mode: "enforce", maxAge: 604800 }),
    dns: dnsSchema.default({ ttl: 3600, zoneIds: {}, dnssec: true }),
    backup: backupSchema.optional(),
    mailPolicy: mailPolicySchema.default({ enforceDmarc: true, sendLimit: { perHour: 200, perDay: 1000 } }),
    resolver: resolverSchema.default({ forwardTo: [], trustAnchors: [] }),
    /**
     * Spamhaus's free lists answer only non-public resolvers within the free-use limits, and not at
     * all from some networks; a (free) Data Query Service key lifts that. Secret config.
     */
    spamhausDqsKey: z
        .string()
        .regex(/^[a-z0-9]{26}$/, { message: "must be a Spamhaus DQS key: 26 lowercase letters and digits" })
        .optional()
        .describe("a Spamhaus DQS key (26 lowercase letters and digits), set with `pulumi config set --secret ispmail:spamhausDqsKey <key>`; without it Rspamd asks the public mirrors"),
});

export type RawConfig = z.input<typeof configSchema>;
/** What the schema makes of a valid config: names lowercased, defaults filled in. */
export type Parsed = z.output<typeof configSchema>;

/** "alice@example.org" -> local "alice", domain "example.org" (split at the last @). */
export function splitAddress(a: string): { local: string; domain: string } {
    const at = a.lastIndexOf("@");
    return { local: a.slice(0, at), domain: a.slice(at + 1) };
}
