/**
 * Records as rendered vs records as served, and the PTR of both addresses. One finding per
 * (name, type), so that a broken record is named exactly.
 */
import { type DnsRecord, txtText } from "../components/dns/records";
import { type Finding, ok, problem } from "./findings";
import { type Lookup, normaliseAddress } from "./lookup";

/** The value of a rendered record in the form {@link Lookup} returns. */
export function expectedValue(r: DnsRecord): string {
    switch (r.type) {
        case "A":
        case "AAAA":
            return normaliseAddress(r.content);
        case "TXT":
            return txtText(r.content);
        case "MX":
        case "CNAME":
            return r.content.toLowerCase().replace(/\.$/, "");
        case "CAA":
        case "SRV":
            return r.content;
        case "SSHFP":
        case "TLSA":
            return r.content.toLowerCase();
        default: {
            const unknown: never = r.type;
            throw new Error(`no expected value for record type ${String(unknown)}`);
        }
    }
}

/** TXT records of other parties may share a name (site verifications): only ours are compared. */
const TXT_TAG = /^(v=spf1|v=DMARC1|v=DKIM1|v=STSv1|v=TLSRPTv1)\b/i;
const txtTag = (t: string) => TXT_TAG.exec(t)?.[1].toLowerCase();

export interface DnsCompareOptions {
    /** Said after every DNS problem (how records get published in this stack). */
    readonly fix: string;
    /**
     * The stack's keys are not known here (no stack outputs): DKIM records are checked for validity
     * only (see consistency), TLSA records not at all.
     */
    readonly skipDkimContent?: boolean;
}

export async function compareRecords(expected: readonly DnsRecord[], lookup: Lookup, opts: DnsCompareOptions): Promise<Finding[]> {
    const groups = new Map<string, DnsRecord[]>();
    for (const r of expected) {
        const key = `${r.type} ${r.name}`;
        groups.set(key, [...(groups.get(key) ?? []), r]);
    }
    const findings: Finding[] = [];
    for (const [key, records] of groups) {
        const { name, type } = records[0];
        if (opts.skipDkimContent && ((type === "TXT" && name.includes("._domainkey.")) || type === "TLSA")) continue;
        let observed: string[];
        try {
            observed = await lookup.resolve(name, type);
        } catch (e) {
            findings.push(problem("dns", `${key}: lookup failed (${(e as Error).message})`, "check that the resolver / name servers answer for this zone"));
            continue;
        }
        const want = records.map(expectedValue);
        const tags = new Set(want.map(txtTag));
        const relevant = type === "TXT" ? observed.filter((o) => tags.has(txtTag(o))) : observed;
        const missing = want.filter((w) => !relevant.includes(w));
        const extra = relevant.filter((o) => !want.includes(o));
        if (missing.length === 0 && extra.length === 0) {
            findings.push(ok("dns", `${key} as rendered`));
            continue;
        }
        const parts: string[] = [];
        if (missing.length) parts.push(`missing ${missing.map((m) => JSON.stringify(m)).join(", ")}`);
        if (extra.length) parts.push(`unexpected ${extra.map((m) => JSON.stringify(m)).join(", ")}`);
        const found = relevant.length ? `the DNS answers ${relevant.map((o) => JSON.stringify(o)).join(", ")}` : "the DNS has no such record";
        findings.push(problem("dns", `${key}: ${parts.join("; ")} (${found})`, opts.fix));
    }
    return findings;
}

/** Reverse DNS of both addresses must name the mail host (receivers check PTR <-> HELO). */
export async function checkPtr(addresses: readonly string[], mailHost: string, lookup: Lookup, fix: string): Promise<Finding[]> {
    const findings: Finding[] = [];
    for (const address of addresses) {
        let names: string[];
        try {
            names = await lookup.resolve(address, "PTR");
        } catch (e) {
            findings.push(problem("ptr", `PTR of ${address}: lookup failed (${(e as Error).message})`, fix));
            continue;
        }
        if (names.length === 1 && names[0] === mailHost) findings.push(ok("ptr", `PTR of ${address} is ${mailHost}`));
        else findings.push(problem("ptr", `PTR of ${address} is ${names.length ? names.join(", ") : "missing"}, expected exactly ${mailHost}`, fix));
    }
    return findings;
}
