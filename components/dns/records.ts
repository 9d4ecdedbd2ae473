/**
 * The DNS record set of a stack, as data: one pure function used by the Cloudflare component
 * (components/dns/cloudflare.ts) and by the lab's authoritative server (lab/).
 *
 * What is published and why:
 * - A/AAAA for mailHost and every web name (groupware host, mta-sts.<domain>, autoconfig.<domain>).
 * - Per mail domain: MX 10 mailHost; SPF `v=spf1 mx -all` (only the MX may send); DMARC p=reject with
 *   strict alignment; one DKIM TXT per selector (the first signs, the others stay published for
 *   rotation); `_mta-sts` (RFC 8461) and `_smtp._tls` TLS-RPT (RFC 8460); SRV records per RFC 6186
 *   and RFC 8314 (implicit TLS preferred; plain IMAP and POP3 explicitly "not offered" with ".").
 * - SPF `v=spf1 a -all` on mailHost: bounces and the server's own mail pass SPF and DMARC there.
 * - `<domain>._report._dmarc.<admin's domain>` (RFC 7489 §7.1) when DMARC reports go to another
 *   domain whose zone is ours.
 * - CAA on every zone apex (RFC 8659): only Let's Encrypt may issue, only after an http-01 challenge
 *   (certbot's webroot) and, once ispmail:acme.accountUri is set, only to that account (RFC 8657);
 *   no wildcards; reports to the admin.
 * - SSHFP on mailHost for the server's SSH host key (RFC 4255), when the caller knows it.
 */
import { createHash, createPublicKey } from "node:crypto";
import { dkimRecordName } from "../dkim";
import type { Model } from "../config";
import { splitAddress } from "../config/schema";
import { publicPorts, webHosts, type Service } from "../services";
import { mtaStsPolicy } from "./mta-sts";

export { mtaStsPolicy } from "./mta-sts";
export type { MtaStsPolicy } from "./mta-sts";

export type DnsRecordType = "A" | "AAAA" | "MX" | "TXT" | "CAA" | "SRV" | "CNAME" | "SSHFP" | "TLSA";

export interface DnsRecord {
    /** The zone the record lives in (e.g. example.org). */
    readonly zone: string;
    /** Fully qualified owner name, no trailing dot (e.g. _dmarc.example.org). */
    readonly name: string;
    readonly type: DnsRecordType;
    readonly ttl: number;
    /**
     * Presentation-format data without the owner/type: an address, "10 mx1.example.org" for MX,
     * `"v=spf1 mx -all"` (quoted character-strings, long TXT split into <= 255-byte strings),
     * `0 issue "letsencrypt.org; validationmethods=http-01"` for CAA, "0 1 465 mx1.example.org" for SRV.
     */
    readonly content: string;
}

export interface DnsInput {
    readonly model: Model;
    readonly ipv4: string;
    readonly ipv6: string;
    /** selector -> base64 SPKI (DER) of the DKIM public key. */
    readonly dkimPublicKeys: Readonly<Record<string, string>>;
    /** The services whose web names and ports are published; the program's list when left out. */
    readonly services?: readonly Service[];
    /**
     * SSHFP data of the server's SSH host keys ({@link sshfpOf}), published on mailHost so that an
     * admin's ssh can check the host key through DNSSEC (VerifyHostKeyDNS) on first contact.
     */
    readonly sshfp?: readonly string[];
    /**
     * TLS key name -> TLSA data ({@link tlsaOfKey}) for every key in `model.tlsKeys`: published on
     * _25._tcp.<mailHost>, so that senders that validate DNSSEC (DANE, RFC 7672) authenticate us.
     */
    readonly tlsa: Readonly<Record<string, string>>;
}

/** RFC 1035 §3.3.14: a TXT character-string holds at most 255 octets. */
export const TXT_STRING_MAX_BYTES = 255;

const isUnder = (name: string, zone: string) => name === zone || name.endsWith(`.${zone}`);

/**
 * The zones the records go into: each managed domain that is not below another managed domain,
 * plus every zone named in `dns.zoneIds` (a delegated sub-zone can be given there). A mailHost that
 * is in none of them lives in its parent domain (mx1.provider.net -> provider.net).
 */
export function dnsZones(model: Pick<Model, "domains" | "mailHost" | "dns">): string[] {
    const zones = new Set<string>();
    for (const d of model.domains) if (!model.domains.some((o) => o !== d && isUnder(d, o))) zones.add(d);
    for (const z of Object.keys(model.dns.zoneIds)) zones.add(z);
    if (![...zones].some((z) => isUnder(model.mailHost, z))) zones.add(model.mailHost.slice(model.mailHost.indexOf(".") + 1));
    return [...zones].sort();
}

/** The nearest enclosing zone of `name`. */
export function zoneOf(name: string, zones: readonly string[]): string {
    return zoneFinder(zones)(name);
}

/**
 * {@link zoneOf} for many names: the nearest enclosing zone is the first zone met walking up the
 * name's labels, a set lookup each (not a scan of every zone per name: 200 domains publish ~4,000
 * records).
 */
function zoneFinder(zones: readonly string[]): (name: string) => string {
    const set = new Set(zones);
    return (name) => {
        for (let n = name; ; ) {
            if (set.has(n)) return n;
            const dot = n.indexOf(".");
            if (dot < 0) throw new Error(`DNS name ${name} is in none of the zones ${zones.join(", ")}`);
            n = n.slice(dot + 1);
        }
    };
}

/**
 * TXT presentation data: the text split into quoted character-strings of at most 255 bytes each
 * (a 2048-bit DKIM key is ~400 characters). `"` and `\` are escaped as RFC 1035 §5.1 requires.
 */
export function txtContent(text: string): string {
    const bytes = Buffer.from(text, "utf8");
    const strings: string[] = [];
    for (let i = 0; i < bytes.length || i === 0; i += TXT_STRING_MAX_BYTES) {
        strings.push(bytes.subarray(i, i + TXT_STRING_MAX_BYTES).toString("utf8"));
    }
    return strings.map((s) => `"${s.replace(/[\\"]/g, (c) => `\\${c}`)}"`).join(" ");
}

/** The character-strings of TXT presentation data, unquoted and joined (inverse of {@link txtContent}). */
export function txtText(content: string): string {
    const strings = [...content.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1].replace(/\\(.)/g, "$1"));
    return strings.join("");
}

/** Mail services announced as decidedly not offered (SRV target "."): clients must not try them. */
const NOT_OFFERED_SRV = ["_imap._tcp", "_pop3._tcp", "_pop3s._tcp"] as const;

/** SSH key types and their SSHFP algorithm numbers (RFC 4255, 6594, 7479). */
const SSHFP_ALGORITHM: Readonly<Record<string, number>> = { "ssh-rsa": 1, "ecdsa-sha2-nistp256": 3, "ecdsa-sha2-nistp384": 3, "ecdsa-sha2-nistp521": 3, "ssh-ed25519": 4 };

/** The SSHFP data ("<algorithm> 2 <SHA-256 hex>") of an OpenSSH public key line ("ssh-ed25519 AAAA... comment"). */
export function sshfpOf(openssh: string): string {
    const [type, blob] = openssh.trim().split(/\s+/);
    const algorithm = SSHFP_ALGORITHM[type];
    if (!algorithm || !blob) throw new Error(`not an SSH public key this program publishes as SSHFP: ${openssh.slice(0, 40)}`);
    return `${algorithm} 2 ${createHash("sha256").update(Buffer.from(blob, "base64")).digest("hex")}`;
}

/**
 * DANE-EE, SPKI, SHA-256 ("3 1 1", RFC 7671 §5.1): the TLSA data of a key, whatever certificate
 * carries it, so a renewal with the same key keeps it valid. Takes a public or private key PEM.
 */
export function tlsaOfKey(pem: string): string {
    const spki = createPublicKey(pem).export({ type: "spki", format: "der" });
    return `3 1 1 ${createHash("sha256").update(spki).digest("hex")}`;
}

/** The TLSA owner name of SMTP on a host (RFC 7672 §2.2): only port 25 is DANE's for MX delivery. */
export const smtpTlsaName = (host: string) => `_25._tcp.${host}`;

/**
 * The CAA `issue` value: Let's Encrypt, validated over http-01 only (the certbot step's webroot; a
 * DNS or TLS-ALPN challenge is then refused), and, when the account is known, for it alone.
 */
export function caaIssueValue(accountUri?: string): string {
    return ["letsencrypt.org", "validationmethods=http-01", ...(accountUri ? [`accounturi=${accountUri}`] : [])].join("; ");
}

export function renderDnsRecords(input: DnsInput): DnsRecord[] {
    const { model, ipv4, ipv6, dkimPublicKeys, services } = input;
    const ttl = model.dns.ttl;
    const zones = dnsZones(model);
    const zoneOfName = zoneFinder(zones);
    const out: DnsRecord[] = [];
    const add = (name: string, type: DnsRecordType, content: string) => out.push({ zone: zoneOfName(name), name, type, ttl, content });

    for (const host of webHosts(model, services)) {
        add(host, "A", ipv4);
        add(host, "AAAA", ipv6);
    }

    for (const data of input.sshfp ?? []) add(model.mailHost, "SSHFP", data);
    // Every listed key, so that the next key's record is public before the certificate switches
    // to it (and the old one until every cache has the new record): the rollover in OPERATIONS.md.
    for (const key of model.tlsKeys) {
        const data = input.tlsa[key];
        if (!data) throw new Error(`no TLSA data for TLS key "${key}"`);
        add(smtpTlsaName(model.mailHost), "TLSA", data);
    }

    // CAA goes on the apex of each zone that holds a name we publish (it covers every name below).
    const usedZones = [...new Set(out.map((r) => r.zone).concat(model.domains.map(zoneOfName)))].sort();
    for (const zone of usedZones) {
        add(zone, "CAA", `0 issue "${caaIssueValue(model.acme.accountUri)}"`);
        add(zone, "CAA", `0 issuewild ";"`);
        add(zone, "CAA", `0 iodef "mailto:${model.adminEmail}"`);
    }

    // The server's own mail (bounces from MAILER-DAEMON@mailHost with an empty envelope, cron and
    // alert mail from root@mailHost) is checked by SPF against the HELO name / mailHost, and DMARC
    // (our p=reject covers subdomains) needs that to pass. Skipped when mailHost is itself a mail
    // domain, which already has its SPF record (two would be a permerror).
    if (!model.mailHostIsMailDomain) add(model.mailHost, "TXT", txtContent("v=spf1 a -all"));

    // RFC 7489 §7.1: a domain whose reports go to an address in another domain needs that domain's
    // consent, <domain>._report._dmarc.<report domain>. Published when we hold that zone; for an
    // address elsewhere (a mailbox provider) its owner must publish it, or reports are dropped.
    const reportDomain = splitAddress(model.adminEmail).domain;
    const reportZoneIsOurs = zones.some((z) => isUnder(reportDomain, z));

    const sts = mtaStsPolicy(model);
    const srvPorts = publicPorts(model, services).filter((p) => p.srv);
    for (const domain of model.domains) {
        add(domain, "MX", `10 ${model.mailHost}`);
        add(domain, "TXT", txtContent("v=spf1 mx -all"));
        add(`_dmarc.${domain}`, "TXT", txtContent(`v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:${model.adminEmail}`));
        if (reportZoneIsOurs && !isUnder(reportDomain, domain)) add(`${domain}._report._dmarc.${reportDomain}`, "TXT", txtContent("v=DMARC1"));
        for (const selector of model.dkimSelectors) {
            const key = dkimPublicKeys[selector];
            if (!key) throw new Error(`no DKIM public key for selector "${selector}"`);
            add(dkimRecordName(selector, domain), "TXT", txtContent(`v=DKIM1; k=rsa; p=${key}`));
        }
        add(`_mta-sts.${domain}`, "TXT", txtContent(`v=STSv1; id=${sts.id}`));
        add(`_smtp._tls.${domain}`, "TXT", txtContent(`v=TLSRPTv1; rua=mailto:${model.adminEmail}`));
        // RFC 6186 / RFC 8314: the ports the services announce (components/services publicPorts).
        for (const p of srvPorts) add(`${p.srv}.${domain}`, "SRV", `0 1 ${p.port} ${model.mailHost}`);
        for (const service of NOT_OFFERED_SRV) add(`${service}.${domain}`, "SRV", "0 0 0 .");
        if (model.nextcloud.enabled) {
            // RFC 6764: CalDAV/CardDAV clients find the groupware server from the mail address.
            add(`_caldavs._tcp.${domain}`, "SRV", `0 1 443 ${model.nextcloud.host}`);
            add(`_carddavs._tcp.${domain}`, "SRV", `0 1 443 ${model.nextcloud.host}`);
        }
    }
    return out;
}
