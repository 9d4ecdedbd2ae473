/**
 * The stack-config contract: one zod schema turns the raw `ispmail:*` keys of a stack into a typed,
 * frozen {@link Model}. Every other module reads the model, never `pulumi.Config`.
 *
 * All problems are collected and reported together, each naming the full key path
 * (`ispmail:users[2].address`) and what is allowed, before any resource is registered.
 *
 * How messages are made: every schema carries a `.describe()` text that says what is allowed
 * ("a whole number of MB from 1 to 1048576"). zod's own issues (wrong type, too small, bad format,
 * unknown key) are turned into "must be <description>" by {@link describeIssue}; rules zod cannot
 * express are `custom` issues whose message already says what is wrong and what is allowed.
 */
import { isIP } from "node:net";
import * as ipaddr from "ipaddr.js";
import { parse as parseYaml } from "yaml";
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

const emailAddress = z
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
    })
    .describe("a mapping {address, displayName?, quotaMb?, password?}");

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
    })
    .describe("a mapping {enabled, version?, url?, sha256?, host?}");

const acmeSchema = z
    .strictObject({
        /** ACME directory. Let's Encrypt production by default; the lab points it at its pebble. */
        directoryUrl: z
            .url({ protocol: /^https$/ })
            .default("https://acme-v02.api.letsencrypt.org/directory")
            .describe("an https URL of an ACME directory (default Let's Encrypt production https://acme-v02.api.letsencrypt.org/directory)"),
    })
    .describe("a mapping {directoryUrl?}");

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
    })
    .describe("a mapping {ttl?, zoneIds?}");

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

const SELECTOR_ALLOWED = "a DKIM selector: lowercase letters, digits and inner hyphens, no dots or underscores, such as s2026";
const selectorList = z
    .array(
        z
            .string()
            .transform(lower)
            .superRefine((s, ctx) => {
                if (!SELECTOR.test(s)) ctx.addIssue({ code: "custom", message: `"${s}" is not allowed; must be ${SELECTOR_ALLOWED}` });
            })
            .describe(SELECTOR_ALLOWED),
    )
    .min(1)
    .describe("a list of at least one DKIM selector such as [s2026]; the first one signs once its record has been public for dns.ttl seconds, the others stay published for rotation");

/** The shape of every `ispmail:*` key; keys without a default must be present in the stack file. */
export const configSchema = z.strictObject({
    mailHost: fqdn.describe(`the server's host name, ${FQDN_ALLOWED}`),
    domains: z.array(fqdn.describe(`a mail domain, ${FQDN_ALLOWED}`)).min(1).describe("a list of at least one mail domain such as [example.org]"),
    adminEmail: emailAddress.describe("the administrator's e-mail address such as hostmaster@example.org (ACME account, CAA iodef, DMARC and TLS reports)"),
    server: serverSchema,
    users: z.array(userSchema).default([]).describe("a list of mailboxes, each a mapping {address, displayName?, quotaMb?, password?}"),
    aliases: z.array(aliasSchema).default([]).describe("a list of aliases, each a mapping {source, destination}"),
    sharedMailboxes: z.array(shareSchema).default([]).describe("a list of shares, each a mapping {mailbox, sharedTo, rights?}"),
    dkimSelectors: selectorList,
    defaultQuotaMb: z.number().int().min(1).max(1024 * 1024).default(2048).describe("a whole number of MB from 1 to 1048576 (default 2048)"),
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
    /**
     * Every selector is published and installed; the first is the one wanted for signing, which
     * signs once its record has been public for dns.ttl (components/dkim.ts).
     */
    readonly dkimSelectors: readonly string[];
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
    /** One line per problem: `ispmail:<key path>: <what is wrong and what is allowed>`. */
    constructor(readonly problems: readonly string[]) {
        super(`Invalid stack configuration (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n  - ${problems.join("\n  - ")}`);
        this.name = "ConfigError";
    }
}

/**
 * Stacks whose stateful resources (primary IPs, volume, DKIM keys, backup password) are protected
 * against deletion: prod, production and prod-*. Staging, lab and dev stacks can be torn down.
 */
export function isProtectedStack(stack: string): boolean {
    return stack === "prod" || stack.startsWith("prod-") || stack === "production";
}

/** `ispmail:users[2].address` from ["users", 2, "address"]. */
export function keyPath(path: readonly PropertyKey[]): string {
    let out = CONFIG_NAMESPACE + ":";
    path.forEach((p, i) => {
        if (typeof p === "number") out += `[${p}]`;
        else out += i === 0 ? String(p) : `.${String(p)}`;
    });
    return out;
}

/**
 * Reads the `config:` map of a Pulumi stack file (Pulumi.<stack>.yaml, lab/stack.yaml) into the
 * `raw` argument of {@link parseConfig}. Keys of other namespaces (hcloud:, cloudflare:) are left
 * out. Encrypted values (`secure: v1:...`) can only be decrypted by the Pulumi CLI: they are refused.
 */
export function stackFileConfig(yamlText: string): { raw: Record<string, unknown>; otherKeys: string[] } {
    const doc = (parseYaml(yamlText) ?? {}) as { config?: Record<string, unknown> };
    const raw: Record<string, unknown> = {};
    const otherKeys: string[] = [];
    for (const [key, value] of Object.entries(doc.config ?? {})) {
        const [ns, ...rest] = key.split(":");
        if (ns !== CONFIG_NAMESPACE || rest.length !== 1) {
            otherKeys.push(key);
            continue;
        }
        if (JSON.stringify(value ?? null).includes('"secure":')) {
            throw new Error(`${key} holds an encrypted (secure:) value; only the Pulumi CLI can decrypt it`);
        }
        raw[rest[0]] = value;
    }
    return { raw, otherKeys };
}

/**
 * Parses raw stack config. `raw` maps keys without namespace (mailHost, users, ...) to their values:
 * JSON strings as Pulumi stores structured config (and plain strings for numbers), or already-parsed
 * values. `secretKeys` lists the keys (with or without namespace) that the stack marks as secret
 * (Pulumi passes them in PULUMI_CONFIG_SECRET_KEYS). Throws a {@link ConfigError} listing every
 * problem found.
 */
export function parseConfig(
    raw: Readonly<Record<string, unknown>>,
    opts: { stack: string; secretKeys?: readonly string[] },
): { model: Model; passwords: ConfiguredPasswords } {
    const problems: string[] = [];
    const values: Record<string, unknown> = {};
    /** Keys whose text could not be decoded: unknown to the relation checks (not "empty"). */
    const undecodable = new Set<string>();
    for (const [key, value] of Object.entries(raw)) {
        const decoded = decodeRawValue(key, value);
        if ("error" in decoded) {
            problems.push(decoded.error);
            undecodable.add(key);
        } else values[key] = decoded.value;
    }
    const result = configSchema.safeParse(values, { reportInput: true });
    if (!result.success) for (const issue of result.error.issues) problems.push(...describeIssue(issue));
    const secret = new Set((opts.secretKeys ?? []).map((k) => (k.includes(":") ? k : `${CONFIG_NAMESPACE}:${k}`)));
    // Relations are checked on whatever parsed, so that one typo does not hide the other mistakes.
    checkRelations(result.success && undecodable.size === 0 ? fromComplete(result.data) : partialParse(values, undecodable), secret, problems);
    if (problems.length || !result.success) throw new ConfigError(problems);
    return buildModel(result.data, opts.stack);
}

/**
 * Pulumi hands every top-level value to the program as a string: structured values as JSON and
 * scalars as their text ("2048", "true"). Decode both, guided by the schema of the key.
 */
function decodeRawValue(key: string, value: unknown): { value: unknown } | { error: string } {
    if (typeof value !== "string") return { value };
    if (/^\s*[[{]/.test(value)) {
        try {
            return { value: JSON.parse(value) };
        } catch {
            return { error: `${keyPath([key])}: is not valid structured config (a YAML list or mapping, passed as JSON by Pulumi)` };
        }
    }
    const schema = Object.prototype.hasOwnProperty.call(configSchema.shape, key) ? unwrap(configSchema.shape[key as keyof typeof configSchema.shape]) : undefined;
    if (schema instanceof z.ZodNumber && /^-?[0-9]+(\.[0-9]+)?$/.test(value.trim())) return { value: Number(value) };
    if (schema instanceof z.ZodBoolean && /^(true|false)$/.test(value.trim())) return { value: value.trim() === "true" };
    return { value };
}

// ---------------------------------------------------------------------------------------------
// Turning zod issues into messages that name the key path and what is allowed
// ---------------------------------------------------------------------------------------------
type AnySchema = z.core.$ZodType;

/** Strips optional/default/pipe/... wrappers, keeping the schema that holds the shape or type. */
function unwrap(schema: AnySchema): AnySchema {
    let s = schema;
    for (let i = 0; i < 10; i++) {
        const def = s._zod.def as unknown as { type: string; innerType?: AnySchema; in?: AnySchema };
        if ((def.type === "optional" || def.type === "default" || def.type === "prefault" || def.type === "nullable" || def.type === "readonly") && def.innerType) s = def.innerType;
        else if (def.type === "pipe" && def.in) s = def.in;
        else break;
    }
    return s;
}

function descriptionOf(schema: AnySchema): string | undefined {
    let s = schema;
    for (let i = 0; i < 10; i++) {
        const d = z.globalRegistry.get(s)?.description;
        if (d) return d;
        const next = unwrapOnce(s);
        if (!next) return undefined;
        s = next;
    }
    return undefined;
}

function unwrapOnce(s: AnySchema): AnySchema | undefined {
    const def = s._zod.def as unknown as { type: string; innerType?: AnySchema; in?: AnySchema };
    if (def.innerType) return def.innerType;
    if (def.type === "pipe") return def.in;
    return undefined;
}

/** The schema at a key path (e.g. ["users", 2, "address"]), or undefined when the path is not in the schema. */
function schemaAt(path: readonly PropertyKey[]): AnySchema | undefined {
    let s: AnySchema | undefined = configSchema;
    for (const p of path) {
        if (!s) return undefined;
        const u = unwrap(s);
        const def = u._zod.def as unknown as { type: string; shape?: Record<string, AnySchema>; element?: AnySchema; valueType?: AnySchema };
        if (def.type === "object" && typeof p === "string") s = def.shape?.[p];
        else if (def.type === "array" && typeof p === "number") s = def.element;
        else if (def.type === "record") s = def.valueType;
        else return undefined;
    }
    return s;
}

/** The keys allowed in the mapping at `path`. */
function allowedKeys(path: readonly PropertyKey[]): string[] {
    const s = schemaAt(path);
    if (!s) return [];
    const def = unwrap(s)._zod.def as unknown as { type: string; shape?: Record<string, AnySchema> };
    return def.type === "object" && def.shape ? Object.keys(def.shape) : [];
}

/** Edit distance, to suggest the key a typo meant (small strings only). */
function editDistance(a: string, b: string): number {
    const row = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
        let diag = row[0];
        row[0] = i;
        for (let j = 1; j <= b.length; j++) {
            const up = row[j];
            row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
            diag = up;
        }
    }
    return row[b.length];
}

function suggestKey(typo: string, allowed: readonly string[]): string | undefined {
    const t = typo.toLowerCase();
    let best: { key: string; d: number } | undefined;
    for (const k of allowed) {
        const d = editDistance(t, k.toLowerCase());
        if (d <= Math.max(2, Math.floor(k.length / 3)) && (!best || d < best.d)) best = { key: k, d };
    }
    return best?.key;
}

/** A short, non-secret rendering of what was given. */
function shown(input: unknown, path: readonly PropertyKey[]): string {
    if (path.some((p) => typeof p === "string" && /password|secret|token/i.test(p))) return "a value";
    if (input === null) return "null";
    if (Array.isArray(input)) return input.length ? "a list" : "an empty list";
    if (typeof input === "object") return "a mapping";
    const text = JSON.stringify(input) ?? String(input);
    return text.length > 60 ? `${text.slice(0, 57)}..."` : text;
}

function describeIssue(issue: z.core.$ZodIssue): string[] {
    const path = issue.path;
    const where = keyPath(path);
    const allowed = descriptionOf(schemaAt(path) ?? configSchema) ?? issue.message;
    switch (issue.code) {
        case "custom":
            return [`${where}: ${issue.message}`];
        case "unrecognized_keys": {
            const keys = allowedKeys(path);
            return issue.keys.map((k) => {
                const hint = suggestKey(k, keys);
                return `${keyPath([...path, k])}: unknown setting${hint ? ` (did you mean ${keyPath([...path, hint])}?)` : ""}; allowed here: ${keys.join(", ")}`;
            });
        }
        case "invalid_key":
            // A record key (e.g. a zone name in dns.zoneIds) failed its own schema.
            return [`${where}: the key is not allowed; keys here must be ${descriptionOf(recordKeySchema(path.slice(0, -1)) ?? configSchema) ?? "valid names"}`];
        case "invalid_type":
            if (issue.input === undefined) return [`${where}: is required; must be ${allowed}`];
            return [`${where}: must be ${allowed} (got ${shown(issue.input, path)})`];
        default:
            // too_small, too_big, invalid_format, invalid_value, not_multiple_of, ...: the schema's
            // description says what is allowed.
            return [`${where}: must be ${allowed} (got ${shown(issue.input, path)})`];
    }
}

function recordKeySchema(path: readonly PropertyKey[]): AnySchema | undefined {
    const s = schemaAt(path);
    if (!s) return undefined;
    const def = unwrap(s)._zod.def as unknown as { type: string; keyType?: AnySchema };
    return def.type === "record" ? def.keyType : undefined;
}

// ---------------------------------------------------------------------------------------------
// Cross-field rules: what no single field can know
// ---------------------------------------------------------------------------------------------
type ElementOf<T> = T extends readonly (infer E)[] ? E : never;
interface Indexed<T> {
    readonly index: number;
    readonly value: T;
}
interface ListPart<T> {
    readonly items: readonly Indexed<T>[];
    /** Every element parsed: rules that need the whole list (e.g. "is a known mailbox") may run. */
    readonly complete: boolean;
}
/** What parsed of each key, for the relation checks. */
interface RelationInput {
    mailHost?: string;
    domains: ListPart<string>;
    users: ListPart<ElementOf<Parsed["users"]>>;
    /** The address of every user entry whose address parses, even when another field of it does not. */
    mailboxAddresses: ListPart<string>;
    aliases: ListPart<ElementOf<Parsed["aliases"]>>;
    sharedMailboxes: ListPart<ElementOf<Parsed["sharedMailboxes"]>>;
    dkimSelectors: ListPart<string>;
    nextcloudHost?: string;
}

function whole<T>(list: readonly T[]): ListPart<T> {
    return { items: list.map((value, index) => ({ index, value })), complete: true };
}

function fromComplete(c: Parsed): RelationInput {
    return {
        mailHost: c.mailHost,
        domains: whole(c.domains),
        users: whole(c.users),
        mailboxAddresses: whole(c.users.map((u) => u.address)),
        aliases: whole(c.aliases),
        sharedMailboxes: whole(c.sharedMailboxes),
        dkimSelectors: whole(c.dkimSelectors),
        nextcloudHost: c.nextcloud.host,
    };
}

/** Parses a list key element by element when the list as a whole fails. */
function partialList<K extends "domains" | "users" | "aliases" | "sharedMailboxes" | "dkimSelectors">(values: Record<string, unknown>, key: K): ListPart<ElementOf<Parsed[K]>> {
    const schema = configSchema.shape[key];
    const whole = schema.safeParse(values[key]);
    if (whole.success) return { items: (whole.data as ElementOf<Parsed[K]>[]).map((value, index) => ({ index, value })), complete: true };
    const input = values[key];
    if (!Array.isArray(input)) return { items: [], complete: false };
    const element = schemaAt([key, 0])!;
    const items: Indexed<ElementOf<Parsed[K]>>[] = [];
    input.forEach((raw, index) => {
        const r = z.safeParse(element, raw);
        if (r.success) items.push({ index, value: r.data as ElementOf<Parsed[K]> });
    });
    return { items, complete: false };
}

const UNKNOWN = Symbol("undecodable");

function partialAddresses(users: unknown): ListPart<string> {
    if (!Array.isArray(users)) return { items: [], complete: users === undefined };
    const items: Indexed<string>[] = [];
    users.forEach((u: unknown, index) => {
        const r = emailAddress.safeParse(u && typeof u === "object" ? (u as { address?: unknown }).address : undefined);
        if (r.success) items.push({ index, value: r.data });
    });
    return { items, complete: items.length === users.length };
}

function partialParse(decoded: Record<string, unknown>, undecodable: ReadonlySet<string>): RelationInput {
    // An undecodable key is unknown: a value no schema accepts keeps every list built from it incomplete.
    const values: Record<string, unknown> = { ...decoded };
    for (const key of undecodable) values[key] = UNKNOWN;
    const mailHost = configSchema.shape.mailHost.safeParse(values.mailHost);
    const nextcloud = configSchema.shape.nextcloud.safeParse(values.nextcloud);
    return {
        ...(mailHost.success ? { mailHost: mailHost.data } : {}),
        domains: partialList(values, "domains"),
        users: partialList(values, "users"),
        mailboxAddresses: partialAddresses(values.users),
        aliases: partialList(values, "aliases"),
        sharedMailboxes: partialList(values, "sharedMailboxes"),
        dkimSelectors: partialList(values, "dkimSelectors"),
        ...(nextcloud.success && nextcloud.data.host ? { nextcloudHost: nextcloud.data.host } : {}),
    };
}

function splitAddress(a: string): { local: string; domain: string } {
    const at = a.lastIndexOf("@");
    return { local: a.slice(0, at), domain: a.slice(at + 1) };
}

function checkRelations(c: RelationInput, secretKeys: ReadonlySet<string>, problems: string[]): void {
    const managed = new Set<string>();
    for (const { index, value: d } of c.domains.items) {
        if (managed.has(d)) problems.push(`${keyPath(["domains", index])}: "${d}" is listed twice; each domain may appear once (compared ignoring case)`);
        managed.add(d);
    }
    const domainList = [...managed].join(", ");
    // "not a managed domain" is only said when every domain parsed; otherwise it is noise.
    const domainsKnown = c.domains.complete;
    const mailboxes = new Set<string>();
    for (const { index, value: address } of c.mailboxAddresses.items) {
        const { domain } = splitAddress(address);
        if (domainsKnown && !managed.has(domain)) problems.push(`${keyPath(["users", index, "address"])}: domain "${domain}" is not managed here; a mailbox must be in one of ispmail:domains (${domainList})`);
        if (mailboxes.has(address)) problems.push(`${keyPath(["users", index, "address"])}: "${address}" is listed twice; each mailbox may appear once (compared ignoring case)`);
        mailboxes.add(address);
    }
    const mailboxesKnown = c.mailboxAddresses.complete;
    if (!secretKeys.has(`${CONFIG_NAMESPACE}:users`)) {
        for (const { index, value: u } of c.users.items) {
            if (u.password === undefined) continue;
            problems.push(`${keyPath(["users", index, "password"])}: is plain (non-secret) config; passwords must be secret: pulumi config set --secret --path 'ispmail:users[${index}].password' <password>, or leave it out to get a generated one`);
        }
    }
    const aliasPairs = new Set<string>();
    for (const { index, value: a } of c.aliases.items) {
        const src = a.source.startsWith("@") ? { local: "", domain: a.source.slice(1) } : splitAddress(a.source);
        if (domainsKnown && !managed.has(src.domain)) problems.push(`${keyPath(["aliases", index, "source"])}: domain "${src.domain}" is not managed here; an alias source must be in one of ispmail:domains (${domainList})`);
        if (mailboxes.has(a.source)) problems.push(`${keyPath(["aliases", index, "source"])}: "${a.source}" is a mailbox in ispmail:users; an address is either a mailbox or an alias source, not both`);
        const dst = splitAddress(a.destination);
        if (a.destination === a.source) {
            problems.push(`${keyPath(["aliases", index, "destination"])}: an alias cannot point to itself; the destination must be a mailbox here or an address in another domain`);
        } else if (mailboxesKnown && managed.has(dst.domain) && !mailboxes.has(a.destination)) {
            problems.push(`${keyPath(["aliases", index, "destination"])}: "${a.destination}" is in managed domain ${dst.domain} but is not a mailbox in ispmail:users; a destination must be a mailbox here or an address in another domain`);
        }
        const key = `${a.source}>${a.destination}`;
        if (aliasPairs.has(key)) problems.push(`${keyPath(["aliases", index])}: the alias ${a.source} -> ${a.destination} is listed twice; each pair may appear once`);
        aliasPairs.add(key);
    }
    const shares = new Set<string>();
    for (const { index, value: s } of c.sharedMailboxes.items) {
        if (mailboxesKnown && !mailboxes.has(s.mailbox)) problems.push(`${keyPath(["sharedMailboxes", index, "mailbox"])}: "${s.mailbox}" is not a mailbox in ispmail:users; only mailboxes can be shared`);
        if (mailboxesKnown && !mailboxes.has(s.sharedTo)) problems.push(`${keyPath(["sharedMailboxes", index, "sharedTo"])}: "${s.sharedTo}" is not a mailbox in ispmail:users; a share must go to a mailbox here`);
        if (s.mailbox === s.sharedTo) problems.push(`${keyPath(["sharedMailboxes", index, "sharedTo"])}: a mailbox cannot be shared to itself; sharedTo must be another mailbox`);
        const key = `${s.mailbox}>${s.sharedTo}`;
        if (shares.has(key)) problems.push(`${keyPath(["sharedMailboxes", index])}: the share ${s.mailbox} -> ${s.sharedTo} is listed twice; each pair may appear once`);
        shares.add(key);
    }
    const selectors = new Set<string>();
    for (const { index, value: s } of c.dkimSelectors.items) {
        if (selectors.has(s)) problems.push(`${keyPath(["dkimSelectors", index])}: selector "${s}" is listed twice; each selector may appear once`);
        selectors.add(s);
    }
    const host = c.nextcloudHost;
    if (host && c.mailHost && domainsKnown && host !== c.mailHost && !c.domains.items.some(({ value: d }) => host === d || host.endsWith(`.${d}`))) {
        problems.push(`${keyPath(["nextcloud", "host"])}: "${host}" must be mailHost or a name in one of ispmail:domains (${domainList}), so that its DNS is managed here`);
    }
}

// ---------------------------------------------------------------------------------------------
// Building the frozen model
// ---------------------------------------------------------------------------------------------
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
