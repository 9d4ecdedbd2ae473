/**
 * The DNS record set of a stack, as data: one pure function used by the Cloudflare component
 * (components/dns/cloudflare.ts) and by the lab's authoritative server (lab/).
 *
 * STUB: the contract is fixed (types and signature); the full record set is built by the cloud/DNS
 * work (issue 3).
 */
import type { Model } from "../config";

export type DnsRecordType = "A" | "AAAA" | "MX" | "TXT" | "CAA" | "SRV" | "CNAME";

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
     * `0 issue "letsencrypt.org"` for CAA, "0 1 465 mx1.example.org" for SRV.
     */
    readonly content: string;
}

export interface DnsInput {
    readonly model: Model;
    readonly ipv4: string;
    readonly ipv6: string;
    /** selector -> base64 SPKI (DER) of the DKIM public key. */
    readonly dkimPublicKeys: Readonly<Record<string, string>>;
}

export function renderDnsRecords(input: DnsInput): DnsRecord[] {
    const { model, ipv4, ipv6 } = input;
    const ttl = model.dns.ttl;
    const zone = (name: string) => model.domains.filter((d) => name === d || name.endsWith(`.${d}`)).sort((a, b) => b.length - a.length)[0] ?? name;
    const out: DnsRecord[] = [];
    for (const host of model.webHosts) {
        out.push({ zone: zone(host), name: host, type: "A", ttl, content: ipv4 });
        out.push({ zone: zone(host), name: host, type: "AAAA", ttl, content: ipv6 });
    }
    for (const d of model.domains) out.push({ zone: zone(d), name: d, type: "MX", ttl, content: `10 ${model.mailHost}` });
    return out;
}
