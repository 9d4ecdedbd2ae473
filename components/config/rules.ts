/**
 * Cross-field rules: what no single field can know (a mailbox must be in a managed domain, an alias
 * source must not be a mailbox, a share needs two different mailboxes, passwords must be secret
 * config, ...). They run on whatever parsed, even when some keys failed the schema, so that one
 * typo does not hide the next mistake.
 */
import { z } from "zod";
import { CONFIG_NAMESPACE, configSchema, emailAddress, splitAddress, type Parsed } from "./schema";
import { keyPath, schemaAt } from "./messages";
import { mailboxRenames, type DomainEntry } from "./renames";

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
export interface RelationInput {
    mailHost?: string;
    adminEmail?: string;
    domains: ListPart<string>;
    /** The domain entries that parsed, with their renamedFrom (the names alone are in `domains`). */
    domainEntries: ListPart<DomainEntry>;
    users: ListPart<ElementOf<Parsed["users"]>>;
    /** The address of every user entry whose address parses, even when another field of it does not. */
    mailboxAddresses: ListPart<string>;
    aliases: ListPart<ElementOf<Parsed["aliases"]>>;
    sharedMailboxes: ListPart<ElementOf<Parsed["sharedMailboxes"]>>;
    dkimSelectors: ListPart<string>;
    tlsKeys: ListPart<string>;
    nextcloudHost?: string;
    webmailHost?: string;
    /** ispmail:spamhausDqsKey is given (whether or not it parsed): it must be secret config. */
    spamhausDqsKeyGiven: boolean;
}

function whole<T>(list: readonly T[]): ListPart<T> {
    return { items: list.map((value, index) => ({ index, value })), complete: true };
}

export function fromComplete(c: Parsed): RelationInput {
    return {
        mailHost: c.mailHost,
        adminEmail: c.adminEmail,
        domains: whole(c.domains.map((d) => d.name)),
        domainEntries: whole(c.domains),
        users: whole(c.users),
        mailboxAddresses: whole(c.users.map((u) => u.address)),
        aliases: whole(c.aliases),
        sharedMailboxes: whole(c.sharedMailboxes),
        dkimSelectors: whole(c.dkimSelectors),
        tlsKeys: whole(c.tlsKeys),
        nextcloudHost: c.nextcloud.host,
        webmailHost: c.webmail.host,
        spamhausDqsKeyGiven: c.spamhausDqsKey !== undefined,
    };
}

/** Parses a list key element by element when the list as a whole fails. */
function partialList<K extends "domains" | "users" | "aliases" | "sharedMailboxes" | "dkimSelectors" | "tlsKeys">(values: Record<string, unknown>, key: K): ListPart<ElementOf<Parsed[K]>> {
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

function domainParts(entries: ListPart<DomainEntry>): Pick<RelationInput, "domains" | "domainEntries"> {
    return { domains: { items: entries.items.map(({ index, value }) => ({ index, value: value.name })), complete: entries.complete }, domainEntries: entries };
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

/** What parsed of each key when the config as a whole did not: the input of the relation checks then. */
export function partialParse(decoded: Record<string, unknown>, undecodable: ReadonlySet<string>): RelationInput {
    // An undecodable key is unknown: a value no schema accepts keeps every list built from it incomplete.
    const values: Record<string, unknown> = { ...decoded };
    for (const key of undecodable) values[key] = UNKNOWN;
    const mailHost = configSchema.shape.mailHost.safeParse(values.mailHost);
    const adminEmail = configSchema.shape.adminEmail.safeParse(values.adminEmail);
    const nextcloud = configSchema.shape.nextcloud.safeParse(values.nextcloud);
    const webmail = configSchema.shape.webmail.safeParse(values.webmail);
    return {
        ...(mailHost.success ? { mailHost: mailHost.data } : {}),
        ...(adminEmail.success ? { adminEmail: adminEmail.data } : {}),
        ...domainParts(partialList(values, "domains")),
        users: partialList(values, "users"),
        mailboxAddresses: partialAddresses(values.users),
        aliases: partialList(values, "aliases"),
        sharedMailboxes: partialList(values, "sharedMailboxes"),
        dkimSelectors: partialList(values, "dkimSelectors"),
        tlsKeys: partialList(values, "tlsKeys"),
        spamhausDqsKeyGiven: decoded.spamhausDqsKey !== undefined,
        ...(nextcloud.success && nextcloud.data.host ? { nextcloudHost: nextcloud.data.host } : {}),
        ...(webmail.success && webmail.data.host ? { webmailHost: webmail.data.host } : {}),
    };
}

/** Adds one problem per broken relation; what is unknown (a key that did not parse) is not judged. */
export function checkRelations(c: RelationInput, secretKeys: ReadonlySet<string>, problems: string[]): void {
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
    if (c.spamhausDqsKeyGiven && !secretKeys.has(`${CONFIG_NAMESPACE}:spamhausDqsKey`)) {
        problems.push(`${keyPath(["spamhausDqsKey"])}: is plain (non-secret) config; the key must be secret: pulumi config set --secret ispmail:spamhausDqsKey <key>`);
    }
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
    checkRenames(c, managed, mailboxes, problems);
    // Alerts, bounces' reports and DMARC/TLS reports go to adminEmail: on a managed domain it must
    // be an address that receives mail here, or they would be refused as an unknown user.
    const admin = c.adminEmail;
    const adminDomain = admin ? splitAddress(admin).domain : undefined;
    if (admin && adminDomain && domainsKnown && mailboxesKnown && c.aliases.complete && managed.has(adminDomain)) {
        const receives = mailboxes.has(admin) || c.aliases.items.some(({ value: a }) => a.source === admin || a.source === `@${adminDomain}`);
        if (!receives) problems.push(`${keyPath(["adminEmail"])}: "${admin}" is in managed domain ${adminDomain} but is neither a mailbox in ispmail:users nor an alias source in ispmail:aliases; alerts and reports sent there would be refused. Add it as an alias (e.g. {source: ${admin}, destination: <your mailbox>}) or use an address elsewhere`);
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
    const tlsKeys = new Set<string>();
    for (const { index, value: k } of c.tlsKeys.items) {
        if (tlsKeys.has(k)) problems.push(`${keyPath(["tlsKeys", index])}: key "${k}" is listed twice; each key may appear once`);
        tlsKeys.add(k);
    }
    // Web host names get A/AAAA records and the certificate: they must be in a zone managed here.
    for (const [service, host] of [["nextcloud", c.nextcloudHost], ["webmail", c.webmailHost]] as const) {
        if (host && c.mailHost && domainsKnown && host !== c.mailHost && !c.domains.items.some(({ value: d }) => host === d || host.endsWith(`.${d}`))) {
            problems.push(`${keyPath([service, "host"])}: "${host}" must be mailHost or a name in one of ispmail:domains (${domainList}), so that its DNS is managed here`);
        }
    }
}

/**
 * A rename names an old name that is gone: not the new name itself, not a domain or mailbox still
 * listed (that would be a copy, not a rename), and each old name taken over by one new one only.
 * The old address may be an alias source after the rename (the usual way to keep it receiving).
 */
function checkRenames(c: RelationInput, managed: ReadonlySet<string>, mailboxes: ReadonlySet<string>, problems: string[]): void {
    const oldDomains = new Map<string, number>();
    for (const { index, value: d } of c.domainEntries.items) {
        if (d.renamedFrom === undefined) continue;
        const at = keyPath(["domains", index, "renamedFrom"]);
        if (d.renamedFrom === d.name) problems.push(`${at}: is the domain's own name; renamedFrom must be the name it had until now`);
        else if (managed.has(d.renamedFrom)) problems.push(`${at}: "${d.renamedFrom}" is still in ispmail:domains; a renamed domain's old name must not be listed any more (keep both and use aliases to move mail instead)`);
        const first = oldDomains.get(d.renamedFrom);
        if (first !== undefined) problems.push(`${at}: "${d.renamedFrom}" is also renamedFrom of ${keyPath(["domains", first])}; one old name can become one new name only`);
        else oldDomains.set(d.renamedFrom, index);
    }
    for (const { index, value: u } of c.users.items) {
        if (u.renamedFrom === undefined) continue;
        const at = keyPath(["users", index, "renamedFrom"]);
        if (u.renamedFrom === u.address) problems.push(`${at}: is the mailbox's own address; renamedFrom must be the address it had until now`);
        else if (mailboxes.has(u.renamedFrom)) problems.push(`${at}: "${u.renamedFrom}" is still a mailbox in ispmail:users; a renamed mailbox's old address must not be listed any more (make it an alias to keep it receiving)`);
    }
    if (!c.domainEntries.complete || !c.users.complete) return;
    const claimedBy = new Map<string, string>();
    for (const [address, was] of mailboxRenames(c.domainEntries.items.map((i) => i.value), c.users.items.map((i) => i.value))) {
        const index = c.users.items.find((i) => i.value.address === address)!.index;
        const other = claimedBy.get(was);
        if (other !== undefined) problems.push(`${keyPath(["users", index])}: ${address} and ${other} would both take over the mailbox ${was} (by renamedFrom or a renamed domain); one old mailbox can become one new one only`);
        else claimedBy.set(was, address);
    }
}
