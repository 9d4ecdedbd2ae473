/**
 * DNS observation through node:dns (TLSA, SSHFP and DS through check/wire.ts): the system
 * resolver, or a given server (the lab's DNS). Every
 * answer is turned into the presentation form `renderDnsRecords` uses, so expected and observed
 * records compare as plain strings.
 */
import { Resolver } from "node:dns/promises";
import * as ipaddr from "ipaddr.js";
import type { DnsRecordType } from "../components/dns/records";
import { queryWire } from "./wire";

export type LookupType = DnsRecordType | "PTR" | "DS";

export interface Lookup {
    /** Normalised values; [] when the name has no such records (NXDOMAIN/NODATA). Throws on other errors. */
    resolve(name: string, type: LookupType): Promise<string[]>;
}

const NO_ANSWER = new Set(["ENOTFOUND", "ENODATA", "ENONAME"]);

const stripDot = (s: string) => s.replace(/\.$/, "").toLowerCase();

/** Canonical text of an address, so 2001:db8:2::10 and 2001:0db8:0002::0010 compare equal. */
export function normaliseAddress(a: string): string {
    return ipaddr.parse(a).toString();
}

/** TXT: the character-strings of one record joined, as the receiver reads them. */
export const normaliseTxt = (chunks: readonly string[]): string => chunks.join("");

export function dnsLookup(opts: { servers?: readonly string[]; timeoutMs?: number }): Lookup {
    const resolver = new Resolver({ timeout: opts.timeoutMs ?? 3000, tries: 2 });
    if (opts.servers?.length) resolver.setServers([...opts.servers]);
    return {
        async resolve(name, type) {
            try {
                switch (type) {
                    case "A":
                        return (await resolver.resolve4(name)).map(normaliseAddress);
                    case "AAAA":
                        return (await resolver.resolve6(name)).map(normaliseAddress);
                    case "MX":
                        return (await resolver.resolveMx(name)).map((m) => `${m.priority} ${stripDot(m.exchange)}`);
                    case "TXT":
                        return (await resolver.resolveTxt(name)).map(normaliseTxt);
                    case "CAA":
                        return (await resolver.resolveCaa(name)).map((c) => {
                            const tag = Object.keys(c).find((k) => k !== "critical") ?? "";
                            return `${c.critical} ${tag} "${String((c as unknown as Record<string, unknown>)[tag])}"`;
                        });
                    case "SRV":
                        return (await resolver.resolveSrv(name)).map((s) => `${s.priority} ${s.weight} ${s.port} ${stripDot(s.name) || "."}`);
                    case "CNAME":
                        return (await resolver.resolveCname(name)).map(stripDot);
                    case "PTR":
                        return (await resolver.reverse(name)).map(stripDot);
                    case "SSHFP":
                    case "TLSA":
                    case "DS": {
                        // Node's resolver cannot ask for these: one query of our own to the same server.
                        const answer = await queryWire(opts.servers?.[0] ?? resolver.getServers()[0], name, type, opts.timeoutMs);
                        if (answer.rcode === "NXDOMAIN") return [];
                        if (answer.rcode !== "NOERROR") throw new Error(`${type} ${name}: ${answer.rcode}`);
                        return answer.values;
                    }
                    default: {
                        // A new record type fails to compile here until it is looked up and normalised.
                        const unknown: never = type;
                        throw new Error(`no lookup for record type ${String(unknown)}`);
                    }
                }
            } catch (e) {
                if (NO_ANSWER.has((e as NodeJS.ErrnoException).code ?? "")) return [];
                throw e;
            }
        },
    };
}
