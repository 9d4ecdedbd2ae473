/**
 * The model: what the rest of the program reads. {@link buildModel} turns a parsed config into it:
 * derived facts computed once (per-user quota, alias `destinationIsLocal`,
 * `protectState`, `mailHostIsMailDomain`), everything deeply frozen. Configured passwords are returned beside it, never inside.
 */
import { splitAddress, type Parsed } from "./schema";

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
    /**
     * True when mailHost is itself one of `domains` (e.g. mailHost example.org). Decided here once
     * because two consumers must agree on it: Postfix leaves $myhostname out of mydestination then
     * (a domain is either local or virtual, never both), and DNS publishes no separate
     * `v=spf1 a -all` for mailHost (the domain already has its SPF record; two are a permerror).
     */
    readonly mailHostIsMailDomain: boolean;
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
    readonly mailPolicy: Readonly<Parsed["mailPolicy"]>;
    /** The server's own validating resolver: full recursion unless forwardTo, extra trust anchors. */
    readonly resolver: Readonly<Parsed["resolver"]>;
}

/** Passwords given in stack config (secret values), by address. Kept out of the model on purpose. */
export type ConfiguredPasswords = ReadonlyMap<string, string>;

/**
 * Stacks whose stateful resources (primary IPs, volume, DKIM keys, backup password) are protected
 * against deletion: prod, production and prod-*. Staging, lab and dev stacks can be torn down.
 */
export function isProtectedStack(stack: string): boolean {
    return stack === "prod" || stack.startsWith("prod-") || stack === "production";
}

function deepFreeze<T>(o: T): T {
    if (o && typeof o === "object" && !Object.isFrozen(o)) {
        Object.freeze(o);
        for (const v of Object.values(o as object)) deepFreeze(v);
    }
    return o;
}

/** The frozen model of a config that passed the schema and the relation checks. */
export function buildModel(c: Parsed, stack: string): { model: Model; passwords: ConfiguredPasswords } {
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
    const model: Model = {
        stack,
        protectState: isProtectedStack(stack),
        mailHost: c.mailHost,
        domains: c.domains,
        mailHostIsMailDomain: c.domains.includes(c.mailHost),
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
        mailPolicy: c.mailPolicy,
        resolver: c.resolver,
    };
    return { model: deepFreeze(model), passwords };
}
