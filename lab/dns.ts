/**
 * Lab DNS: the zones the lab serves, rendered from the same `renderDnsRecords` the Cloudflare
 * component uses, plus what the lab adds itself (SOA/NS, the foreign domain, reverse zones that
 * Hetzner's rDNS would provide), served by knot on the lab bridge. Every zone is DNSSEC-signed with
 * one lab key, whose DNSKEY is the trust anchor the server's resolver gets (lab/stack.ts).
 */
import { createPublicKey } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as ipaddr from "ipaddr.js";
import type { Model } from "../components/config";
import { renderDnsRecords, sshfpOf, tlsaOfKey, txtContent, zoneOf, type DnsRecord } from "../components/dns/records";
import { dkimPublicKeyFromPem } from "../components/secrets";
import { ensureForeignDkimKey, ensureForeignTlsKey, FOREIGN_DKIM_SELECTOR, STS_DOMAINS } from "./foreign";
import { ecP256PrivateKey, keptKey, labTemplate, writeIfChanged } from "./files";
import { LAB, PATHS } from "./lab";
import { daemonPid, inLabNet, run, runOk, startDaemon, waitFor } from "./proc";
import { pinnedHostKey } from "./ssh";

/** A record of a lab zone: the product's record types plus the ones only the lab serves. */
export interface ZoneRecord {
    readonly name: string;
    readonly type: DnsRecord["type"] | "NS" | "PTR" | "DS" | "TLSA";
    readonly ttl: number;
    readonly content: string;
}

export interface Zone {
    readonly origin: string;
    readonly records: readonly ZoneRecord[];
}

/** The lab's name server, in the lab-owned foreign zone. */
const NS_HOST = `ns.${LAB.foreignDomain}`;
const LAB_TTL = 300;

/** The reverse-zone owner name of an address (RFC 1035 in-addr.arpa, RFC 3596 ip6.arpa). */
export function reverseName(address: string): string {
    const addr = ipaddr.parse(address);
    if (addr.kind() === "ipv4") return `${addr.toByteArray().reverse().join(".")}.in-addr.arpa`;
    const hex = (addr as ipaddr.IPv6).parts.map((p) => p.toString(16).padStart(4, "0")).join("");
    return `${hex.split("").reverse().join(".")}.ip6.arpa`;
}

/** The reverse zone of a network given by one address and its prefix (on an octet/nibble boundary). */
export function reverseZone(address: string, prefixLength: number): string {
    const labels = reverseName(address).split(".");
    const perLabel = ipaddr.parse(address).kind() === "ipv4" ? 8 : 4;
    if (prefixLength % perLabel !== 0) throw new Error(`prefix /${prefixLength} is not on a label boundary`);
    const hostLabels = (ipaddr.parse(address).kind() === "ipv4" ? 32 : 128) / perLabel - prefixLength / perLabel;
    return labels.slice(hostLabels).join(".");
}

/**
 * The origins of every zone the lab serves: the stack's mail domains, the foreign domain, the
 * reverse zones of the guests' networks (what Hetzner's rDNS would be) and the lab's blocklist.
 */
export function labZoneOrigins(domains: readonly string[]): string[] {
    const reverse = [LAB.mail.ipv4, LAB.mail.ipv6].map((a) => reverseZone(a, a.includes(":") ? LAB.prefix.ipv6 : LAB.prefix.ipv4));
    return [...new Set([...domains, LAB.foreignDomain, ...reverse, LAB.dnsbl.zone, LAB.dnsbl.dqsZone])];
}

/**
 * A zone whose chain of trust is broken on purpose (its parent's DS matches no key of it), like the
 * public dnssec-failed.org: a validating resolver must refuse its answers. Served, never anchored.
 */
export const BROKEN_ZONE = `dnssec-failed.${LAB.foreignDomain}`;
export const BROKEN_ZONE_HOST = `www.${BROKEN_ZONE}`;

/** The lab's zone-signing key (ECDSA P-256, PEM), made once into .lab. */
export function ensureLabZoneKey(): string {
    return keptKey(PATHS.dnsZoneKey, ecP256PrivateKey);
}

/** The DNSKEY data of an ECDSA P-256 key as a combined signing key: flags 257 (SEP), protocol 3, algorithm 13, x||y. */
export function dnskeyOf(pem: string): string {
    const jwk = createPublicKey(pem).export({ format: "jwk" });
    const point = Buffer.concat([Buffer.from(jwk.x!, "base64url"), Buffer.from(jwk.y!, "base64url")]);
    return `257 3 13 ${point.toString("base64")}`;
}

/** One trust anchor per lab zone ("<zone>. DNSKEY ..."): the lab DNS has no signed root above them. */
export function labTrustAnchors(domains: readonly string[], pem: string = ensureLabZoneKey()): string[] {
    const key = dnskeyOf(pem);
    return labZoneOrigins(domains).map((origin) => `${origin}. DNSKEY ${key}`);
}

export interface LabZoneInput {
    readonly model: Model;
    readonly dkimPublicKeys: Readonly<Record<string, string>>;
    /** TLS key name -> TLSA data of our certificate's keys (lab/stack.ts tlsaData). */
    readonly tlsa: Readonly<Record<string, string>>;
    /** The foreign MTA's DKIM public key (base64 SPKI); ensureDns fills it in from .lab. */
    readonly foreignDkimPublicKey?: string;
    /** The foreign MTA's TLSA data ("3 1 1 <hash>" of its TLS key); ensureDns fills it in from .lab. */
    readonly foreignTlsa?: string;
    /**
     * SSHFP data of the mail server's host key, as the program publishes it; ensureDns fills it in
     * from the key pinned when the server was created (none before that).
     */
    readonly sshfp?: readonly string[];
}

/** Every zone the lab serves. Pure: the unit tests check it without a running server. */
export function labZones({ model, dkimPublicKeys, tlsa, foreignDkimPublicKey, foreignTlsa, sshfp }: LabZoneInput): Zone[] {
    const zones = new Map<string, ZoneRecord[]>();
    const add = (zone: string, r: ZoneRecord) => {
        if (!zones.has(zone)) zones.set(zone, []);
        zones.get(zone)!.push(r);
    };
    for (const origin of labZoneOrigins(model.domains)) zones.set(origin, []);
    for (const r of renderDnsRecords({ model, ipv4: LAB.mail.ipv4, ipv6: LAB.mail.ipv6, dkimPublicKeys, tlsa, sshfp })) {
        add(r.zone, { name: r.name, type: r.type, ttl: r.ttl, content: r.content });
    }
    // The foreign MTA's domain: a plain, correct mail domain of someone else.
    const f = LAB.foreign;
    add(LAB.foreignDomain, { name: LAB.foreignDomain, type: "MX", ttl: LAB_TTL, content: `10 ${f.fqdn}` });
    add(LAB.foreignDomain, { name: LAB.foreignDomain, type: "TXT", ttl: LAB_TTL, content: '"v=spf1 mx -all"' });
    // Like a large provider: it signs its mail and asks receivers to reject what fails DMARC.
    add(LAB.foreignDomain, { name: `_dmarc.${LAB.foreignDomain}`, type: "TXT", ttl: LAB_TTL, content: `"v=DMARC1; p=reject; rua=mailto:postmaster@${LAB.foreignDomain}"` });
    if (foreignDkimPublicKey) {
        add(LAB.foreignDomain, { name: `${FOREIGN_DKIM_SELECTOR}._domainkey.${LAB.foreignDomain}`, type: "TXT", ttl: LAB_TTL, content: txtContent(`v=DKIM1; k=rsa; p=${foreignDkimPublicKey}`) });
    }
    add(LAB.foreignDomain, { name: f.fqdn, type: "A", ttl: LAB_TTL, content: f.ipv4 });
    // DANE: the foreign MX publishes its key's hash; a second name for the same MX, serving a
    // domain of its own, publishes a hash that matches no key.
    if (foreignTlsa) add(LAB.foreignDomain, { name: `_25._tcp.${f.fqdn}`, type: "TLSA", ttl: LAB_TTL, content: foreignTlsa });
    const bad = LAB.daneMismatch;
    add(LAB.foreignDomain, { name: bad.domain, type: "MX", ttl: LAB_TTL, content: `10 ${bad.mx}` });
    add(LAB.foreignDomain, { name: bad.mx, type: "A", ttl: LAB_TTL, content: f.ipv4 });
    add(LAB.foreignDomain, { name: bad.mx, type: "AAAA", ttl: LAB_TTL, content: f.ipv6 });
    add(LAB.foreignDomain, { name: `_25._tcp.${bad.mx}`, type: "TLSA", ttl: LAB_TTL, content: `3 1 1 ${"ab".repeat(32)}` });
    add(LAB.foreignDomain, { name: f.fqdn, type: "AAAA", ttl: LAB_TTL, content: f.ipv6 });
    // MTA-STS (RFC 8461): the policy's TXT record and its HTTPS host, on the foreign guest; the MX
    // names other than the foreign MTA's own have no TLSA record (DNSSEC proves there is none).
    for (const { domain, mx } of STS_DOMAINS) {
        add(LAB.foreignDomain, { name: domain, type: "MX", ttl: LAB_TTL, content: `10 ${mx}` });
        add(LAB.foreignDomain, { name: `_mta-sts.${domain}`, type: "TXT", ttl: LAB_TTL, content: txtContent(`v=STSv1; id=${LAB.mtaSts.policyId}`) });
        for (const host of mx === f.fqdn ? [`mta-sts.${domain}`] : [`mta-sts.${domain}`, mx]) {
            add(LAB.foreignDomain, { name: host, type: "A", ttl: LAB_TTL, content: f.ipv4 });
            add(LAB.foreignDomain, { name: host, type: "AAAA", ttl: LAB_TTL, content: f.ipv6 });
        }
    }
    // And for mail to us: the ispmail server under a second name in our first domain's zone.
    const badIn = LAB.daneMismatchInbound;
    const ours = zoneOf(badIn.domain, labZoneOrigins(model.domains));
    add(ours, { name: badIn.domain, type: "MX", ttl: LAB_TTL, content: `10 ${badIn.mx}` });
    add(ours, { name: badIn.mx, type: "A", ttl: LAB_TTL, content: LAB.mail.ipv4 });
    add(ours, { name: badIn.mx, type: "AAAA", ttl: LAB_TTL, content: LAB.mail.ipv6 });
    add(ours, { name: `_25._tcp.${badIn.mx}`, type: "TLSA", ttl: LAB_TTL, content: `3 1 1 ${"cd".repeat(32)}` });
    add(LAB.foreignDomain, { name: NS_HOST, type: "A", ttl: LAB_TTL, content: LAB.host.ipv4 });
    add(LAB.foreignDomain, { name: NS_HOST, type: "AAAA", ttl: LAB_TTL, content: LAB.host.ipv6 });
    // The broken zone: delegated from the foreign domain with a DS no key of it matches.
    add(LAB.foreignDomain, { name: BROKEN_ZONE, type: "NS", ttl: LAB_TTL, content: NS_HOST });
    add(LAB.foreignDomain, { name: BROKEN_ZONE, type: "DS", ttl: LAB_TTL, content: `12345 13 2 ${"0".repeat(64)}` });
    zones.set(BROKEN_ZONE, [{ name: BROKEN_ZONE_HOST, type: "A", ttl: LAB_TTL, content: LAB.host.ipv4 }]);
    // The blocklist, as a DNSBL answers: its standard test entry (127.0.0.2, which Rspamd's health
    // check of the list asks for) and the one listed lab address, in reverse-octet form.
    const bl = LAB.dnsbl;
    add(bl.zone, { name: `2.0.0.127.${bl.zone}`, type: "A", ttl: LAB_TTL, content: "127.0.0.2" });
    add(bl.zone, { name: `${reverseName(bl.listed).replace(/\.in-addr\.arpa$/, "")}.${bl.zone}`, type: "A", ttl: LAB_TTL, content: bl.code });
    // The same list behind Spamhaus's Data Query Service, for the lab's DQS key.
    const dqs = `${bl.dqsKey}.zen.${bl.dqsZone}`;
    add(bl.dqsZone, { name: `2.0.0.127.${dqs}`, type: "A", ttl: LAB_TTL, content: "127.0.0.2" });
    add(bl.dqsZone, { name: `${reverseName(bl.listed).replace(/\.in-addr\.arpa$/, "")}.${dqs}`, type: "A", ttl: LAB_TTL, content: bl.code });
    // Reverse DNS, as hcloud.Rdns sets it for the server's addresses.
    const ptrs: Array<[string, string]> = [
        [LAB.mail.ipv4, model.mailHost],
        [LAB.mail.ipv6, model.mailHost],
        [f.ipv4, f.fqdn],
        [f.ipv6, f.fqdn],
    ];
    for (const [address, host] of ptrs) {
        const prefix = address.includes(":") ? LAB.prefix.ipv6 : LAB.prefix.ipv4;
        add(reverseZone(address, prefix), { name: reverseName(address), type: "PTR", ttl: LAB_TTL, content: host });
    }
    // Each zone is signed and anchored (labTrustAnchors): a record outside them would be neither.
    const origins = labZoneOrigins(model.domains);
    for (const zone of zones.keys()) if (!origins.includes(zone) && zone !== BROKEN_ZONE) throw new Error(`lab zone ${zone} is not one of labZoneOrigins()`);
    return [...zones].map(([origin, records]) => ({ origin, records }));
}

/** Host names in record data are written fully qualified (trailing dot), never relative to $ORIGIN. */
function absoluteData(r: ZoneRecord): string {
    const dot = (name: string) => (name.endsWith(".") ? name : `${name}.`);
    const parts = r.content.trim().split(/\s+/);
    switch (r.type) {
        case "MX":
        case "SRV": {
            const target = parts[parts.length - 1];
            return [...parts.slice(0, -1), target === "." ? "." : dot(target)].join(" ");
        }
        case "CNAME":
        case "NS":
        case "PTR":
            return dot(r.content.trim());
        case "A":
        case "AAAA":
        case "TXT":
        case "CAA":
        case "DS":
        case "TLSA":
        case "SSHFP":
            return r.content;
        default: {
            // A new record type fails to compile here until its data is written out deliberately.
            const unknown: never = r.type;
            throw new Error(`no zone-file form for record type ${String(unknown)}`);
        }
    }
}

/** A zone file in RFC 1035 master format. */
export function renderZoneFile(zone: Zone, serial: number): string {
    const lines = [
        "; Rendered by the ispmail lab (lab/dns.ts) from renderDnsRecords(); do not edit.",
        `$ORIGIN ${zone.origin}.`,
        `$TTL ${LAB_TTL}`,
        // refresh, retry, expire, and a short negative-caching TTL (60 s) so tests see changes.
        `@ SOA ${NS_HOST}. hostmaster.${LAB.foreignDomain}. ${serial} 3600 600 86400 60`,
        `@ NS ${NS_HOST}.`,
    ];
    for (const r of zone.records) lines.push(`${r.name}. ${r.ttl} IN ${r.type} ${absoluteData(r)}`);
    return lines.join("\n") + "\n";
}

const SERIAL = /^@ SOA \S+ \S+ (\d+) /m;

/**
 * Writes the zone file when its records changed, with a serial above the previous one. Returns
 * whether it wrote.
 */
export function writeZoneIfChanged(zone: Zone, file: string, now = Math.floor(Date.now() / 1000)): boolean {
    const old = existsSync(file) ? readFileSync(file, "utf8") : undefined;
    const oldSerial = old ? Number(SERIAL.exec(old)?.[1] ?? 0) : 0;
    if (old !== undefined && renderZoneFile(zone, oldSerial) === old) return false;
    writeFileSync(file, renderZoneFile(zone, Math.max(oldSerial + 1, now)));
    return true;
}

// ---------------------------------------------------------------------------------------------
// knot
// ---------------------------------------------------------------------------------------------
const KNOT = "knot";
const knotConf = () => join(PATHS.dns, "knot.conf");
const knotRun = () => join(PATHS.run, "knot");

/** Queries the lab DNS from inside the lab namespace (kdig); returns the answer lines. */
export async function labDig(name: string, type: string): Promise<string[]> {
    const [cmd, args] = inLabNet("kdig", [`@${LAB.dns}`, name, type, "+short", "+time=2", "+retry=1"]);
    const r = await run(cmd, args, { timeoutMs: 10_000 });
    return r.code === 0 ? r.stdout.split("\n").filter(Boolean) : [];
}

/**
 * SSHFP data of the mail server's host key as pinned in the lab's known_hosts when the engine made
 * the server from its user data (the program's tls.PrivateKey); none while there is no server.
 */
export function labServerSshfp(): string[] {
    const key = pinnedHostKey(LAB.mail);
    return key ? [sshfpOf(key)] : [];
}

/**
 * Renders the zones and knot's config, starts knot when it is not running, and reloads it only
 * when something changed. Returns what it did.
 */
export async function ensureDns(input: LabZoneInput): Promise<"started" | "reloaded" | "unchanged"> {
    const zones = labZones({ foreignDkimPublicKey: dkimPublicKeyFromPem(ensureForeignDkimKey()), foreignTlsa: tlsaOfKey(ensureForeignTlsKey()), sshfp: labServerSshfp(), ...input });
    const zoneDir = join(PATHS.dns, "zones");
    mkdirSync(zoneDir, { recursive: true });
    mkdirSync(join(PATHS.dns, "db"), { recursive: true });
    mkdirSync(knotRun(), { recursive: true });
    let changed = writeIfChanged(
        knotConf(),
        labTemplate("knot/knot.conf.mustache", {
            runDir: knotRun(),
            dbDir: join(PATHS.dns, "db"),
            zoneDir,
            hostIpv4: LAB.host.ipv4,
            hostIpv6: LAB.host.ipv6,
            zones: zones.map((z) => z.origin),
        }),
    );
    for (const z of zones) changed = writeZoneIfChanged(z, join(zoneDir, `${z.origin}.zone`)) || changed;
    await runOk("knotc", ["-c", knotConf(), "conf-check"], { timeoutMs: 20_000 });
    // Every zone signs with the lab's one key (its DNSKEY is the trust anchor), imported into
    // knot's key database once per zone.
    const keyFile = PATHS.dnsZoneKey;
    ensureLabZoneKey();
    for (const z of zones) {
        const listed = await runOk("keymgr", ["-c", knotConf(), z.origin, "list"], { timeoutMs: 20_000 });
        if (listed.stdout.trim()) continue;
        await runOk("keymgr", ["-c", knotConf(), z.origin, "import-pem", keyFile, "algorithm=ecdsap256sha256", "ksk=yes", "zsk=yes"], { timeoutMs: 20_000 });
        changed = true;
    }

    const probe = zones[0].origin;
    const answers = async () => (await labDig(probe, "SOA")).length > 0;
    let status: "started" | "reloaded" | "unchanged" = "unchanged";
    if (daemonPid(KNOT) === undefined) {
        const [cmd, args] = inLabNet("knotd", ["-c", knotConf()]);
        startDaemon(KNOT, cmd, args);
        await waitFor("the lab DNS (knot) to answer", answers, { tries: 50, intervalMs: 200, timeoutMs: 15_000 });
        status = "started";
    } else if (changed) {
        await runOk("knotc", ["-c", knotConf(), "-t", "10", "reload"], { timeoutMs: 20_000 });
        await waitFor("the lab DNS (knot) to answer after reload", answers, { tries: 50, intervalMs: 200, timeoutMs: 15_000 });
        status = "reloaded";
    }
    // Only now are the records served: that is when they became public.
    recordPublication(zones, new Date());
    return status;
}

// ---------------------------------------------------------------------------------------------
// Publication times: the lab's counterpart of Cloudflare's record timestamps
// ---------------------------------------------------------------------------------------------
const publishedFile = () => join(PATHS.dns, "published.json");
const recordKey = (r: ZoneRecord) => `${r.name} ${r.type} ${r.content}`;

/**
 * Remembers since when each served record (by name, type and content) has been served: kept for
 * records still served, `now` for new ones, forgotten for removed ones. A record that is removed
 * and served again starts over, as a deleted and re-created Cloudflare record does.
 */
export function recordPublication(zones: readonly Zone[], now: Date, file = publishedFile()): void {
    const old = readPublication(file);
    const next: Record<string, string> = {};
    for (const r of zones.flatMap((z) => z.records)) next[recordKey(r)] = old[recordKey(r)] ?? now.toISOString();
    writeIfChanged(file, JSON.stringify(next, null, 2) + "\n");
}

function readPublication(file: string): Record<string, string> {
    return existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as Record<string, string>) : {};
}

/**
 * When the lab DNS started serving the record of this owner name and type, by the file
 * {@link recordPublication} keeps; undefined if it does not serve one (or serves several).
 */
export function labPublishedAt(type: ZoneRecord["type"], file = publishedFile()): (name: string) => Date | undefined {
    const entries = Object.entries(readPublication(file));
    return (name) => {
        const matches = entries.filter(([key]) => key.startsWith(`${name} ${type} `));
        return matches.length === 1 ? new Date(matches[0][1]) : undefined;
    };
}

export { KNOT as KNOT_DAEMON };
