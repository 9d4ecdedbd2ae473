/**
 * `ispmail:index:MailDns`: the record set of {@link renderDnsRecords} as `cloudflare.DnsRecord`s
 * (provider v6), nothing proxied: mail and ACME need the server's own addresses.
 *
 * Resource names come from the record's identity, not from its position in the list, so adding a
 * user, an alias or even a domain registers new records without touching the others:
 * - `TYPE:name` when the stack publishes one record of that type at that name (A, MX, SPF, DKIM,
 *   `_mta-sts`, ...). A changed value (new IP, rotated key, new MTA-STS id) is then an in-place
 *   update: replacing it would briefly publish two SPF or two STSv1 records, which RFC 7208 §4.5 and
 *   RFC 8461 §3.1 both treat as "no valid record".
 * - `TYPE:name:<hash of the content>` for record sets with several values (the CAA set).
 * - `TLSA:_25._tcp.<mailHost>:<key name>` for the certificate keys' records, one or several: a key
 *   rollover adds and later removes one record, and must never rename (delete and re-create) the
 *   record of the key in use, which DANE senders need throughout.
 *
 * The values that are only known after deployment (addresses, DKIM keys) are rendered from the
 * same pure function once they are known; the structure (names, types, count) is rendered up front
 * with placeholders, so the graph never depends on an `apply()`.
 */
import { createHash } from "node:crypto";
import * as cloudflare from "@pulumi/cloudflare";
import * as pulumi from "@pulumi/pulumi";
import type { Model } from "../config";
import { dkimRecordName } from "../dkim";
import type { Service } from "../services";
import { dnsZones, renderDnsRecords, sshfpOf, type DnsRecord } from "./records";
import { componentType } from "../component-types";

/** The arguments of one `cloudflare.DnsRecord`, without zoneId. */
export interface CloudflareRecordArgs {
    readonly name: string;
    readonly type: string;
    readonly ttl: number;
    readonly proxied: false;
    readonly content?: string;
    readonly priority?: number;
    readonly data?: { flags?: number; tag?: string; value?: string; priority?: number; weight?: number; port?: number; target?: string; algorithm?: number; type?: number; fingerprint?: string; usage?: number; selector?: number; matchingType?: number; certificate?: string };
}

/**
 * Maps a presentation-format record to Cloudflare's API shape: MX has its preference in `priority`;
 * CAA, SRV, SSHFP and TLSA are structured `data` (the API rejects them as `content`); TXT keeps the quoted
 * character-strings, which the API takes as they are.
 */
export function toCloudflareRecord(r: DnsRecord): CloudflareRecordArgs {
    const base = { name: r.name, type: r.type, ttl: r.ttl, proxied: false as const };
    switch (r.type) {
        case "A":
        case "AAAA":
        case "TXT":
        case "CNAME":
            return { ...base, content: r.content };
        case "MX": {
            const m = /^(\d+) (\S+)$/.exec(r.content);
            if (!m) throw new Error(`MX ${r.name}: cannot read "${r.content}"`);
            return { ...base, priority: Number(m[1]), content: m[2] };
        }
        case "CAA": {
            const m = /^(\d+) ([a-z]+) "(.*)"$/.exec(r.content);
            if (!m) throw new Error(`CAA ${r.name}: cannot read "${r.content}"`);
            return { ...base, data: { flags: Number(m[1]), tag: m[2], value: m[3] } };
        }
        case "SRV": {
            const m = /^(\d+) (\d+) (\d+) (\S+)$/.exec(r.content);
            if (!m) throw new Error(`SRV ${r.name}: cannot read "${r.content}"`);
            const [priority, weight, port] = [Number(m[1]), Number(m[2]), Number(m[3])];
            return { ...base, priority, data: { priority, weight, port, target: m[4] } };
        }
        case "SSHFP": {
            const m = /^(\d+) (\d+) ([0-9a-f]+)$/.exec(r.content);
            if (!m) throw new Error(`SSHFP ${r.name}: cannot read "${r.content}"`);
            return { ...base, data: { algorithm: Number(m[1]), type: Number(m[2]), fingerprint: m[3] } };
        }
        case "TLSA": {
            const m = /^(\d+) (\d+) (\d+) ([0-9a-f]+)$/.exec(r.content);
            if (!m) throw new Error(`TLSA ${r.name}: cannot read "${r.content}"`);
            return { ...base, data: { usage: Number(m[1]), selector: Number(m[2]), matchingType: Number(m[3]), certificate: m[4] } };
        }
        default: {
            const unknown: never = r.type;
            throw new Error(`unsupported record type ${String(unknown)}`);
        }
    }
}

const PLACEHOLDER = "@@ispmail-dns-placeholder@@";

/** The types {@link toCloudflareRecord} maps to structured `data` instead of `content`. */
const STRUCTURED_TYPES: ReadonlySet<DnsRecord["type"]> = new Set(["CAA", "SRV", "SSHFP", "TLSA"]);

/** The record set with placeholders for the values known only after deployment. */
export function recordTemplate(model: Model, services?: readonly Service[], sshHostKeyCount = 0): DnsRecord[] {
    const dkimPublicKeys = Object.fromEntries(model.dkimSelectors.map((s) => [s, `${PLACEHOLDER}dkim-${s}`]));
    const sshfp = Array.from({ length: sshHostKeyCount }, (_, i) => `${PLACEHOLDER}sshfp-${i}`);
    const tlsa = Object.fromEntries(model.tlsKeys.map((k) => [k, `${PLACEHOLDER}tlsa-${k}`]));
    return renderDnsRecords({ model, ipv4: `${PLACEHOLDER}ipv4`, ipv6: `${PLACEHOLDER}ipv6`, dkimPublicKeys, services, sshfp, tlsa });
}

/** Stable resource names, one per template record (see the module comment). */
export function recordResourceNames(records: readonly DnsRecord[]): string[] {
    const count = new Map<string, number>();
    for (const r of records) count.set(`${r.type}:${r.name}`, (count.get(`${r.type}:${r.name}`) ?? 0) + 1);
    return records.map((r) => {
        const key = `${r.type}:${r.name}`;
        const tlsKey = r.type === "TLSA" ? new RegExp(`^${PLACEHOLDER}tlsa-([a-z0-9-]+)$`).exec(r.content)?.[1] : undefined;
        if (tlsKey) return `${key}:${tlsKey}`;
        if (count.get(key) === 1) return key;
        return `${key}:${createHash("sha256").update(r.content).digest("hex").slice(0, 8)}`;
    });
}

export interface MailDnsArgs {
    readonly model: Model;
    /** The server's public IPv4 address (the primary IP, stable across server replacements). */
    readonly ipv4: pulumi.Input<string>;
    /** The server's IPv6 address (::1 of its /64). */
    readonly ipv6: pulumi.Input<string>;
    /** selector -> base64 SPKI of the DKIM public key, one Output per selector. */
    readonly dkimPublicKeys: Readonly<Record<string, pulumi.Input<string>>>;
    /** The services whose names and ports are published; the program's list when left out. */
    readonly services?: readonly Service[];
    /** The server's SSH host public keys (OpenSSH lines), published as SSHFP on mailHost. */
    readonly sshHostKeys?: readonly pulumi.Input<string>[];
    /** TLS key name -> TLSA data of the certificate's key, one per `model.tlsKeys` entry. */
    readonly tlsa: Readonly<Record<string, pulumi.Input<string>>>;
}

/**
 * The deployment-time values a template record needs, by placeholder key ("ipv4", "ipv6",
 * "dkim-<selector>"): each record waits for its own inputs only, so in a preview a new DKIM key
 * leaves the A/AAAA records and the other selectors' records known and unchanged.
 */
export function placeholderKeys(record: DnsRecord): string[] {
    const keys = new Set<string>();
    for (const m of record.content.matchAll(new RegExp(`${PLACEHOLDER}([a-z0-9-]+)`, "gi"))) keys.add(m[1]);
    return [...keys].sort();
}

export class MailDns extends pulumi.ComponentResource {
    /** The published records, as data (also what the lab's DNS server serves). */
    public readonly records: pulumi.Output<DnsRecord[]>;
    /** Records by resource name; `addressRecords` are the A/AAAA ones (certbot waits for them). */
    public readonly resources: Readonly<Record<string, cloudflare.DnsRecord>>;
    public readonly addressRecords: cloudflare.DnsRecord[];
    /**
     * DKIM record owner name -> when Cloudflare last changed it (`modifiedOn`, else `createdOn`):
     * since when it has been public. The rotation gate (components/dkim.ts) reads it.
     */
    public readonly dkimPublishedAt: pulumi.Output<Record<string, string>>;
    /** Zone -> its DS record as Cloudflare gives it ("example.org. 3600 IN DS 2371 13 2 ..."), for the registrar. */
    public readonly dnssecDs: pulumi.Output<Record<string, string>>;

    constructor(name: string, args: MailDnsArgs, opts?: pulumi.ComponentResourceOptions) {
        const [type, options] = componentType("MailDns", opts);
        super(type, name, {}, options);
        const { model } = args;
        const sshHostKeys = args.sshHostKeys ?? [];
        const template = recordTemplate(model, args.services, sshHostKeys.length);
        const names = recordResourceNames(template);
        const values: Record<string, pulumi.Input<string>> = { ipv4: args.ipv4, ipv6: args.ipv6 };
        for (const selector of model.dkimSelectors) values[`dkim-${selector}`] = args.dkimPublicKeys[selector];
        sshHostKeys.forEach((key, i) => (values[`sshfp-${i}`] = pulumi.output(key).apply(sshfpOf)));
        for (const key of model.tlsKeys) values[`tlsa-${key}`] = args.tlsa[key];
        /** The record set rendered from the given values, placeholders for the others. */
        const render = (known: Readonly<Record<string, string>>) =>
            renderDnsRecords({
                model,
                services: args.services,
                ipv4: known.ipv4 ?? `${PLACEHOLDER}ipv4`,
                ipv6: known.ipv6 ?? `${PLACEHOLDER}ipv6`,
                dkimPublicKeys: Object.fromEntries(model.dkimSelectors.map((s) => [s, known[`dkim-${s}`] ?? `${PLACEHOLDER}dkim-${s}`])),
                sshfp: sshHostKeys.map((_, i) => known[`sshfp-${i}`] ?? `${PLACEHOLDER}sshfp-${i}`),
                tlsa: Object.fromEntries(model.tlsKeys.map((k) => [k, known[`tlsa-${k}`] ?? `${PLACEHOLDER}tlsa-${k}`])),
            });
        this.records = pulumi.all(values).apply(render);
        // Each record with a placeholder takes its values from the record set rendered with the
        // values it needs; records needing the same values (every A record: ipv4) share one
        // rendering, so a stack renders the set a handful of times, not once per record (which
        // grew with the square of the domains: 200 domains, ~1,000 such records of ~4,000).
        const renderedWith = new Map<string, DnsRecord[]>();
        const renderShared = (known: Readonly<Record<string, string>>): DnsRecord[] => {
            const key = JSON.stringify(Object.entries(known).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
            let records = renderedWith.get(key);
            if (!records) renderedWith.set(key, (records = render(known)));
            return records;
        };

        const zoneIds = new Map<string, pulumi.Input<string>>();
        for (const zone of dnsZones(model)) {
            const configured = model.dns.zoneIds[zone];
            zoneIds.set(zone, configured ?? cloudflare.getZoneOutput({ filter: { name: zone } }, { parent: this }).id);
        }

        const resources: Record<string, cloudflare.DnsRecord> = {};
        this.addressRecords = [];
        template.forEach((t, i) => {
            // Only A/AAAA/DKIM content and SSHFP/TLSA data wait for deployment-time values; the rest is
            // known in preview.
            const needs = placeholderKeys(t);
            const resolved = needs.length
                ? pulumi.all(Object.fromEntries(needs.map((k) => [k, values[k]]))).apply((known) => {
                      const r = renderShared(known)[i];
                      if (r.name !== t.name || r.type !== t.type) throw new Error(`DNS record ${i} changed identity: ${t.type} ${t.name} -> ${r.type} ${r.name}`);
                      return toCloudflareRecord(r);
                  })
                : undefined;
            // A template record with a placeholder in structured data (SSHFP, TLSA) cannot be mapped
            // before its value is known; its identity is the template's.
            const structured = STRUCTURED_TYPES.has(t.type);
            const fixed = resolved && structured ? { name: t.name, type: t.type, ttl: t.ttl, proxied: false as const } : toCloudflareRecord(t);
            const content = structured ? undefined : resolved ? resolved.apply((c) => c.content!) : fixed.content;
            const data = structured && resolved ? resolved.apply((c) => c.data!) : fixed.data;
            const record = new cloudflare.DnsRecord(
                names[i],
                {
                    zoneId: zoneIds.get(t.zone)!,
                    name: fixed.name,
                    type: fixed.type,
                    ttl: fixed.ttl,
                    proxied: fixed.proxied,
                    ...(content !== undefined ? { content } : {}),
                    ...(fixed.priority !== undefined ? { priority: fixed.priority } : {}),
                    ...(data !== undefined ? { data } : {}),
                    comment: `ispmail stack ${model.stack}`,
                },
                { parent: this },
            );
            resources[names[i]] = record;
            if (t.type === "A" || t.type === "AAAA") this.addressRecords.push(record);
        });
        this.resources = resources;
        const dkimNames = new Set(model.dkimSelectors.flatMap((s) => model.domains.map((d) => dkimRecordName(s, d))));
        const dkimTimes: Record<string, pulumi.Output<string>> = {};
        template.forEach((t, i) => {
            if (t.type !== "TXT" || !dkimNames.has(t.name)) return;
            const r = resources[names[i]];
            dkimTimes[t.name] = pulumi.all([r.modifiedOn, r.createdOn]).apply(([modified, created]) => modified || created || "");
        });
        this.dkimPublishedAt = pulumi.all(dkimTimes);

        // DNSSEC: Cloudflare signs each zone; the registrar needs the DS record (the stack output
        // dnssecDs) before resolvers validate it. retainOnDelete: turning signing off while the DS
        // is still at the registrar would make the whole zone fail validation (no mail, no web),
        // so leaving the stack or setting dns.dnssec to false never switches it off; OPERATIONS.md
        // says how to, in the safe order.
        const ds: Record<string, pulumi.Output<string>> = {};
        if (model.dns.dnssec) {
            for (const zone of dnsZones(model)) {
                const signed = new cloudflare.ZoneDnssec(`dnssec:${zone}`, { zoneId: zoneIds.get(zone)!, status: "active" }, { parent: this, retainOnDelete: true, protect: model.protectState });
                ds[zone] = signed.ds;
            }
        }
        this.dnssecDs = pulumi.all(ds);
        this.registerOutputs({ records: this.records, dnssecDs: this.dnssecDs });
    }
}
