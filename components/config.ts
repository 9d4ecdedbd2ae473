/**
 * The stack-config contract: one zod schema turns the raw `ispmail:*` keys of a stack into a typed,
 * frozen {@link Model}. Every other module reads the model, never `pulumi.Config`.
 *
 * All problems are collected and reported together, each naming the full key path
 * (`ispmail:users[2].address`) and what is allowed, before any resource is registered.
 */
import { isIP } from "node:net";
import * as ipaddr from "ipaddr.js";
import { z } from "zod";

export const CONFIG_NAMESPACE = "ispmail";

// ---------------------------------------------------------------------------------------------
// Primitive rules. Hostname rules follow RFC 1123 (letters, digits, hyphen; no leading/trailing
// hyphen; labels <= 63, name <= 253); local parts follow RFC 5321 (<= 64 octets, dot-atom only:
// quoted local parts are legal but no mailbox provider hands them out).
// ---------------------------------------------------------------------------------------------
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
const LOCAL_PART = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$/;
const SELECTOR = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const SSH_KEY = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( .*)?$/;
const SHA256 = /^[a-f0-9]{64}$/;

function isFqdn(name: string): boolean {
    const labels = name.split(".");
    return name.length <= 253 && labels.length >= 2 && labels.every((l) => LABEL.test(l)) && !/^[0-9]+$/.test(labels[labels.length - 1]);
}

const lower = (s: string) => s.trim().toLowerCase();

const fqdn = z
    .string()
    .transform(lower)
    .refine(isFqdn, { message: "must be a fully qualified domain name such as mx1.example.org (letters, digits and hyphens; no underscores or spaces)" });

const emailAddress = z
    .string()
    .transform(lower)
    .superRefine((s, ctx) => {
        const at = s.lastIndexOf("@");
        if (at < 0) return void ctx.addIssue({ code: "custom", message: "must be an e-mail address local@domain (no @ found)" });
        const local = s.slice(0, at);
        const domain = s.slice(at + 1);
        if (local.length === 0 || local.length > 64) ctx.addIssue({ code: "custom", message: `local part must be 1 to 64 characters (RFC 5321), got ${local.length}` });
        else if (!LOCAL_PART.test(local)) ctx.addIssue({ code: "custom", message: "local part may contain letters, digits and !#$%&'*+/=?^_`{|}~- separated by single dots" });
        if (!isFqdn(domain)) ctx.addIssue({ code: "custom", message: "domain part must be a fully qualified domain name" });
    });

/** An alias source: a full address, or a catch-all `@domain` as the tutorial shows. */
const aliasSource = z
    .string()
    .transform(lower)
    .superRefine((s, ctx) => {
        if (s.startsWith("@")) {
            if (!isFqdn(s.slice(1))) ctx.addIssue({ code: "custom", message: "a catch-all source must be @ followed by a managed domain" });
            return;
        }
        const r = emailAddress.safeParse(s);
        if (!r.success) for (const i of r.error.issues) ctx.addIssue({ code: "custom", message: i.message });
    });

const cidr = z.string().superRefine((s, ctx) => {
    const [addr, bits, extra] = s.split("/");
    const family = isIP(addr ?? "");
    const max = family === 4 ? 32 : 128;
    const n = Number(bits);
    if (extra !== undefined || family === 0 || bits === undefined || !/^[0-9]{1,3}$/.test(bits) || n > max) {
        ctx.addIssue({ code: "custom", message: "must be an IPv4 or IPv6 network in CIDR notation, e.g. 203.0.113.7/32 or 2001:db8::/64 (prefix <= 32 for IPv4, <= 128 for IPv6)" });
        return;
    }
    // Reject host bits set (e.g. 10.0.0.1/8): the firewall API refuses them, better say so here.
    const network = (family === 4 ? ipaddr.IPv4 : ipaddr.IPv6).networkAddressFromCIDR(s);
    if (network.toString() !== ipaddr.parse(addr).toString()) {
        ctx.addIssue({ code: "custom", message: `has host bits set; use ${network.toString()}/${n}` });
    }
});

// ---------------------------------------------------------------------------------------------
// The schema of each top-level key. Keys are separate stack-config entries (`ispmail:<key>`).
// ---------------------------------------------------------------------------------------------
const serverSchema = z.strictObject({
    /** Hetzner server type, e.g. cx22 or cax11. */
    type: z.string().regex(/^[a-z0-9-]+$/, "must be a Hetzner server type such as cx22"),
    /** Hetzner location, e.g. fsn1, nbg1, hel1, ash, hil, sin. */
    location: z.string().regex(/^[a-z]{3}[0-9]?$/, "must be a Hetzner location such as fsn1"),
    image: z.string().default("debian-13"),
    sshPublicKeys: z.array(z.string().trim().regex(SSH_KEY, "must be an OpenSSH public key line (ssh-ed25519 AAAA... comment)")).min(1, "at least one SSH public key is needed to log in"),
    adminCidrs: z.array(cidr).min(1, "at least one network must be allowed to reach SSH"),
    /** Size of the data volume (mail, database, backups) in GB; Hetzner's minimum is 10. */
    volumeSizeGb: z.number().int().min(10).max(10240).default(20),
});

const userSchema = z.strictObject({
    address: emailAddress,
    displayName: z.string().max(256).optional(),
    quotaMb: z.number().int().positive().max(1024 * 1024).optional(),
    password: z.string().min(12, "must be at least 12 characters").max(256).optional(),
});

const aliasSchema = z.strictObject({ source: aliasSource, destination: emailAddress });

/** IMAP ACL rights letters (RFC 4314): l r w s t e i p k x a (Dovecot's subset). */
const rightsSchema = z.string().regex(/^[lrwsteipkxa]+$/, "must be IMAP ACL rights letters from lrwsteipkxa (RFC 4314), e.g. lrws").default("lrwstipekxa");

const shareSchema = z.strictObject({ mailbox: emailAddress, sharedTo: emailAddress, rights: rightsSchema });

const nextcloudSchema = z
    .strictObject({
        enabled: z.boolean().default(false),
        version: z.string().regex(/^[0-9]+(\.[0-9]+){1,2}$/, "must be a Nextcloud release number such as 31.0.9").optional(),
        url: z.url({ protocol: /^https?$/, message: "must be an http(s) URL of the Nextcloud .tar.bz2 archive" }).optional(),
        sha256: z.string().transform(lower).refine((s) => SHA256.test(s), "must be 64 hex digits").optional(),
        /** The groupware host name (a vhost); defaults to mailHost as in the tutorial. */
        host: fqdn.optional(),
    })
    .superRefine((n, ctx) => {
        if (!n.enabled) return;
        if (!n.version) ctx.addIssue({ code: "custom", path: ["version"], message: "is required when nextcloud.enabled is true" });
        if (!n.sha256) ctx.addIssue({ code: "custom", path: ["sha256"], message: "is required when nextcloud.enabled is true (the archive is pinned by hash)" });
    });

const acmeSchema = z.strictObject({
    /** ACME directory. Let's Encrypt production by default; the lab points it at its pebble. */
    directoryUrl: z.url({ protocol: /^https$/ }).default("https://acme-v02.api.letsencrypt.org/directory"),
});

const mtaStsSchema = z.strictObject({
    mode: z.enum(["enforce", "testing", "none"]).default("enforce"),
    /** Seconds a sender caches the policy; RFC 8461 allows up to 31557600. */
    maxAge: z.number().int().min(86400).max(31557600).default(604800),
});

const dnsSchema = z.strictObject({
    ttl: z.number().int().min(60).max(86400).default(3600),
    /** Cloudflare zone id per zone name, when the lookup by name should be skipped. */
    zoneIds: z.record(fqdn, z.string().regex(/^[a-f0-9]{32}$/, "must be a Cloudflare zone id (32 hex digits)")).default({}),
});

const backupSchema = z.strictObject({
    /** restic repository: a local path in the lab, sftp:... or s3:... for real stacks. */
    repository: z.string().min(1),
    /** restic --keep-daily/weekly/monthly. */
    keepDaily: z.number().int().min(1).default(7),
    keepWeekly: z.number().int().min(0).default(4),
    keepMonthly: z.number().int().min(0).default(6),
});

const selectorList = z
    .array(z.string().transform(lower).refine((s) => SELECTOR.test(s), "must be a DKIM selector: letters, digits and hyphens, no dots (e.g. s2026)"))
    .min(1, "at least one DKIM selector is needed; the first one signs");

/** The shape of every `ispmail:*` key; `required` keys must be present in the stack file. */
export const configSchema = z.strictObject({
    mailHost: fqdn,
    domains: z.array(fqdn).min(1, "at least one mail domain is needed"),
    adminEmail: emailAddress,
    server: serverSchema,
    users: z.array(userSchema).default([]),
    aliases: z.array(aliasSchema).default([]),
    sharedMailboxes: z.array(shareSchema).default([]),
    dkimSelectors: selectorList,
    defaultQuotaMb: z.number().int().positive().default(2048),
    nextcloud: nextcloudSchema.default({ enabled: false }),
    acme: acmeSchema.default({ directoryUrl: "https://acme-v02.api.letsencrypt.org/directory" }),
    mtaSts: mtaStsSchema.default({ mode: "enforce", maxAge: 604800 }),
    dns: dnsSchema.default({ ttl: 3600, zoneIds: {} }),
    backup: backupSchema.optional(),
});

export type RawConfig = z.input<typeof configSchema>;
type Parsed = z.output<typeof configSchema>;

// ---------------------------------------------------------------------------------------------
// The model: what the rest of the program reads.
// ---------------------------------------------------------------------------------------------
export interface MailUser {
    readonly address: string;
    readonly local: string;
    readonly domain: string;
    readonly displayName?: string;
    readonly quotaMb: number;
    /** True when the stack config sets the password; otherwise a random one is generated. */
    readonly passwordFromConfig: boolean;
}
export interface MailAlias {
    readonly source: string;
    /** "" for a catch-all `@domain`. */
    readonly sourceLocal: string;
    readonly sourceDomain: string;
    readonly destination: string;
    /** True when the destination is a mailbox of this server. */
    readonly destinationIsLocal: boolean;
}
export interface SharedMailbox {
    readonly mailbox: string;
    readonly sharedTo: string;
    readonly rights: string;
}

export interface Model {
    /** The Pulumi stack name (prod, staging, lab, ...). */
    readonly stack: string;
    /** Stateful resources (primary IPs, volume, DKIM keys) are protected in this stack. */
    readonly protectState: boolean;
    readonly mailHost: string;
    readonly domains: readonly string[];
    readonly adminEmail: string;
    readonly server: Readonly<Parsed["server"]> & { readonly sshPublicKeys: readonly string[]; readonly adminCidrs: readonly string[] };
    readonly users: readonly MailUser[];
    readonly aliases: readonly MailAlias[];
    readonly sharedMailboxes: readonly SharedMailbox[];
    readonly dkimSelectors: readonly string[];
    /** The selector that signs (the first in the list). */
    readonly activeDkimSelector: string;
    readonly defaultQuotaMb: number;
    /** Postfix message_size_limit; Dovecot and quota follow it. */
    readonly messageSizeLimitMb: number;
    readonly nextcloud: Readonly<Parsed["nextcloud"]> & { readonly host: string };
    readonly acme: Readonly<Parsed["acme"]>;
    readonly mtaSts: Readonly<Parsed["mtaSts"]>;
    readonly dns: Readonly<Parsed["dns"]>;
    readonly backup?: Readonly<NonNullable<Parsed["backup"]>>;
    /** Every host name the web server answers for (certificate SANs, A/AAAA records). */
    readonly webHosts: readonly string[];
}

/** Passwords given in stack config (secret values), by address. Kept out of the model on purpose. */
export type ConfiguredPasswords = ReadonlyMap<string, string>;

export class ConfigError extends Error {
    constructor(readonly problems: readonly string[]) {
        super(`Invalid stack configuration (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n  - ${problems.join("\n  - ")}`);
        this.name = "ConfigError";
    }
}

/** Stacks whose stateful resources are protected. Every stack except lab/dev/test/staging-like names. */
export function isProtectedStack(stack: string): boolean {
    return stack === "prod" || stack.startsWith("prod-") || stack === "production";
}

function keyPath(path: readonly PropertyKey[]): string {
    let out = CONFIG_NAMESPACE + ":";
    path.forEach((p, i) => {
        if (typeof p === "number") out += `[${p}]`;
        else out += i === 0 ? String(p) : `.${String(p)}`;
    });
    return out;
}

/**
 * Parses raw stack config. `raw` maps keys without namespace (mailHost, users, ...) to their values:
 * JSON strings as Pulumi stores structured config, or already-parsed values. `secretKeys` lists the
 * keys (with or without namespace) that the stack marks as secret.
 */
export function parseConfig(
    raw: Readonly<Record<string, unknown>>,
    opts: { stack: string; secretKeys?: readonly string[] },
): { model: Model; passwords: ConfiguredPasswords } {
    const problems: string[] = [];
    const values: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(raw)) {
        if (typeof value === "string" && /^\s*[[{]/.test(value)) {
            try {
                values[key] = JSON.parse(value);
            } catch {
                problems.push(`${keyPath([key])}: is not valid JSON/YAML structured config`);
            }
        } else {
            values[key] = value;
        }
    }
    const result = configSchema.safeParse(values);
    if (!result.success) {
        for (const issue of result.error.issues) problems.push(describeIssue(issue));
        throw new ConfigError(problems);
    }
    if (problems.length) throw new ConfigError(problems);
    const c = result.data;
    const secret = new Set((opts.secretKeys ?? []).map((k) => (k.includes(":") ? k : `${CONFIG_NAMESPACE}:${k}`)));
    checkRelations(c, secret, problems);
    if (problems.length) throw new ConfigError(problems);
    return buildModel(c, opts.stack);
}

function describeIssue(issue: z.core.$ZodIssue): string {
    const where = keyPath(issue.path);
    switch (issue.code) {
        case "invalid_type":
            if (issue.input === undefined) return `${where}: is required (expected ${issue.expected})`;
            return `${where}: must be ${article(issue.expected)}`;
        case "unrecognized_keys":
            return `${where}: unknown setting${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((k) => `"${k}"`).join(", ")}`;
        case "invalid_value":
            return `${where}: must be one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
        case "too_small":
            return `${where}: ${issue.message.startsWith("Too small") ? `must be at least ${issue.minimum}` : issue.message}`;
        case "too_big":
            return `${where}: ${issue.message.startsWith("Too big") ? `must be at most ${issue.maximum}` : issue.message}`;
        default:
            return `${where}: ${issue.message}`;
    }
}

function article(t: string): string {
    return { array: "a list", object: "a mapping", string: "a string", number: "a number", boolean: "true or false" }[t] ?? t;
}

function splitAddress(a: string): { local: string; domain: string } {
    const at = a.lastIndexOf("@");
    return { local: a.slice(0, at), domain: a.slice(at + 1) };
}

/** Cross-field rules: what no single field can know. */
function checkRelations(c: Parsed, secretKeys: ReadonlySet<string>, problems: string[]): void {
    const managed = new Set<string>();
    c.domains.forEach((d, i) => {
        if (managed.has(d)) problems.push(`${keyPath(["domains", i])}: "${d}" is listed twice (domains are compared ignoring case)`);
        managed.add(d);
    });
    const mailboxes = new Set<string>();
    c.users.forEach((u, i) => {
        const { domain } = splitAddress(u.address);
        if (!managed.has(domain)) problems.push(`${keyPath(["users", i, "address"])}: domain "${domain}" is not in ispmail:domains (${[...managed].join(", ")})`);
        if (mailboxes.has(u.address)) problems.push(`${keyPath(["users", i, "address"])}: "${u.address}" is listed twice (addresses are compared ignoring case)`);
        mailboxes.add(u.address);
    });
    if (c.users.some((u) => u.password !== undefined) && !secretKeys.has(`${CONFIG_NAMESPACE}:users`)) {
        const i = c.users.findIndex((u) => u.password !== undefined);
        problems.push(`${keyPath(["users", i, "password"])}: passwords must be secret config; set it with: pulumi config set --secret --path 'ispmail:users[${i}].password' <password> (or omit it to get a generated one)`);
    }
    const aliasSources = new Set<string>();
    c.aliases.forEach((a, i) => {
        const src = a.source.startsWith("@") ? { local: "", domain: a.source.slice(1) } : splitAddress(a.source);
        if (!managed.has(src.domain)) problems.push(`${keyPath(["aliases", i, "source"])}: domain "${src.domain}" is not in ispmail:domains`);
        if (mailboxes.has(a.source)) problems.push(`${keyPath(["aliases", i, "source"])}: "${a.source}" is a mailbox in ispmail:users; an address is either a mailbox or an alias`);
        const dst = splitAddress(a.destination);
        if (managed.has(dst.domain) && !mailboxes.has(a.destination)) problems.push(`${keyPath(["aliases", i, "destination"])}: "${a.destination}" is in a managed domain but is not a mailbox in ispmail:users`);
        if (a.destination === a.source) problems.push(`${keyPath(["aliases", i, "destination"])}: an alias cannot point to itself`);
        const key = `${a.source}>${a.destination}`;
        if (aliasSources.has(key)) problems.push(`${keyPath(["aliases", i])}: this alias is listed twice`);
        aliasSources.add(key);
    });
    const shares = new Set<string>();
    c.sharedMailboxes.forEach((s, i) => {
        if (!mailboxes.has(s.mailbox)) problems.push(`${keyPath(["sharedMailboxes", i, "mailbox"])}: "${s.mailbox}" is not a mailbox in ispmail:users`);
        if (!mailboxes.has(s.sharedTo)) problems.push(`${keyPath(["sharedMailboxes", i, "sharedTo"])}: "${s.sharedTo}" is not a mailbox in ispmail:users`);
        if (s.mailbox === s.sharedTo) problems.push(`${keyPath(["sharedMailboxes", i, "sharedTo"])}: a mailbox cannot be shared to itself`);
        const key = `${s.mailbox}>${s.sharedTo}`;
        if (shares.has(key)) problems.push(`${keyPath(["sharedMailboxes", i])}: this share is listed twice`);
        shares.add(key);
    });
    const selectors = new Set<string>();
    c.dkimSelectors.forEach((s, i) => {
        if (selectors.has(s)) problems.push(`${keyPath(["dkimSelectors", i])}: selector "${s}" is listed twice`);
        selectors.add(s);
    });
    if (c.nextcloud.host && c.nextcloud.host !== c.mailHost && !c.domains.some((d) => c.nextcloud.host!.endsWith(`.${d}`) || c.nextcloud.host === d)) {
        problems.push(`${keyPath(["nextcloud", "host"])}: "${c.nextcloud.host}" must be mailHost or a name under one of ispmail:domains (its DNS is managed here)`);
    }
}

function deepFreeze<T>(o: T): T {
    if (o && typeof o === "object" && !Object.isFrozen(o)) {
        Object.freeze(o);
        for (const v of Object.values(o as object)) deepFreeze(v);
    }
    return o;
}

function buildModel(c: Parsed, stack: string): { model: Model; passwords: ConfiguredPasswords } {
    const mailboxes = new Set(c.users.map((u) => u.address));
    const passwords = new Map<string, string>();
    const users: MailUser[] = c.users.map((u) => {
        if (u.password !== undefined) passwords.set(u.address, u.password);
        return {
            address: u.address,
            ...splitAddress(u.address),
            ...(u.displayName !== undefined ? { displayName: u.displayName } : {}),
            quotaMb: u.quotaMb ?? c.defaultQuotaMb,
            passwordFromConfig: u.password !== undefined,
        };
    });
    const aliases: MailAlias[] = c.aliases.map((a) => {
        const src = a.source.startsWith("@") ? { local: "", domain: a.source.slice(1) } : splitAddress(a.source);
        return { source: a.source, sourceLocal: src.local, sourceDomain: src.domain, destination: a.destination, destinationIsLocal: mailboxes.has(a.destination) };
    });
    const nextcloudHost = c.nextcloud.host ?? c.mailHost;
    const webHosts = [...new Set([c.mailHost, nextcloudHost, ...c.domains.flatMap((d) => [`mta-sts.${d}`, `autoconfig.${d}`])])];
    const model: Model = {
        stack,
        protectState: isProtectedStack(stack),
        mailHost: c.mailHost,
        domains: c.domains,
        adminEmail: c.adminEmail,
        server: c.server,
        users,
        aliases,
        sharedMailboxes: c.sharedMailboxes,
        dkimSelectors: c.dkimSelectors,
        activeDkimSelector: c.dkimSelectors[0],
        defaultQuotaMb: c.defaultQuotaMb,
        messageSizeLimitMb: 50,
        nextcloud: { ...c.nextcloud, host: nextcloudHost },
        acme: c.acme,
        mtaSts: c.mtaSts,
        dns: c.dns,
        ...(c.backup ? { backup: c.backup } : {}),
        webHosts,
    };
    return { model: deepFreeze(model), passwords };
}
