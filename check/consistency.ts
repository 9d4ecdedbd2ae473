/**
 * Cross-checks of what the DNS and the server say, independent of how the records were rendered:
 * the MX points at the server, SPF lets the server send, exactly one DMARC policy exists and can
 * pass, the signing DKIM key is published and usable, and the MTA-STS policy served covers the MX
 * and is the one its TXT record announces. A record edited by hand shows up here even when the
 * rendered set is not known.
 */
import { createHash, createPublicKey } from "node:crypto";
import type { Model } from "../components/config";
import { dnsZones } from "../components/dns/records";
import { type Finding, ok, problem } from "./findings";
import type { Lookup } from "./lookup";
import { normaliseAddress } from "./lookup";

export interface ServerAddresses {
    readonly ipv4: string;
    readonly ipv6: string;
}

/** Parses `k=v; k=v` tag lists (DKIM RFC 6376 §3.2, DMARC RFC 7489 §6.4, MTA-STS TXT). */
export function tagList(text: string): Map<string, string> {
    const tags = new Map<string, string>();
    for (const part of text.split(";")) {
        const eq = part.indexOf("=");
        if (eq > 0) tags.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim().replace(/\s+/g, ""));
    }
    return tags;
}

const addressesOf = async (lookup: Lookup, host: string) => [...(await lookup.resolve(host, "A")), ...(await lookup.resolve(host, "AAAA"))];

export async function checkMx(model: Model, server: ServerAddresses, lookup: Lookup, fix: string): Promise<Finding[]> {
    const out: Finding[] = [];
    const serverAddrs = [server.ipv4, server.ipv6].map(normaliseAddress);
    const hostAddrs = await addressesOf(lookup, model.mailHost);
    const missing = serverAddrs.filter((a) => !hostAddrs.includes(a));
    if (missing.length) out.push(problem("mx", `${model.mailHost} resolves to ${hostAddrs.join(", ") || "nothing"}, not to the server's ${missing.join(", ")}`, fix));
    else out.push(ok("mx", `${model.mailHost} resolves to the server (${serverAddrs.join(", ")})`));
    for (const domain of model.domains) {
        const mx = (await lookup.resolve(domain, "MX")).map((m) => m.split(" ")[1]);
        if (mx.length === 0) out.push(problem("mx", `${domain} has no MX record: mail to it goes to the A record or bounces`, fix));
        else if (mx.some((h) => h !== model.mailHost)) out.push(problem("mx", `${domain} MX names ${mx.join(", ")}; only ${model.mailHost} serves this domain`, fix));
        else out.push(ok("mx", `${domain} MX is ${model.mailHost}`));
    }
    return out;
}

/**
 * Does the SPF record permit the server's addresses? Evaluates the mechanisms that need no further
 * policy fetches (mx, a, ip4, ip6); an `include:`/`redirect=` that would be needed is reported as
 * not evaluable rather than guessed.
 */
export async function checkSpf(model: Model, server: ServerAddresses, lookup: Lookup, fix: string): Promise<Finding[]> {
    const out: Finding[] = [];
    const serverAddrs = [server.ipv4, server.ipv6].map(normaliseAddress);
    for (const domain of model.domains) {
        const spf = (await lookup.resolve(domain, "TXT")).filter((t) => /^v=spf1(\s|$)/i.test(t));
        if (spf.length !== 1) {
            out.push(problem("spf", `${domain} has ${spf.length} SPF records (exactly one is allowed, RFC 7208 §4.5: ${spf.length ? "permerror" : "none = no protection"})`, fix));
            continue;
        }
        const terms = spf[0].split(/\s+/).slice(1);
        const permitted = new Set<string>();
        let unevaluated = false;
        for (const term of terms) {
            const m = /^([+?~-]?)([a-z0-9]+)(?:[:=](.*))?$/i.exec(term);
            if (!m || (m[1] !== "" && m[1] !== "+")) continue;
            const [, , mech, arg] = m;
            if (mech === "mx") {
                for (const mx of await lookup.resolve(arg ?? domain, "MX")) for (const a of await addressesOf(lookup, mx.split(" ")[1])) permitted.add(a);
            } else if (mech === "a") {
                for (const a of await addressesOf(lookup, arg ?? domain)) permitted.add(a);
            } else if ((mech === "ip4" || mech === "ip6") && arg && !arg.includes("/")) {
                permitted.add(normaliseAddress(arg));
            } else if (mech === "ip4" || mech === "ip6" || mech === "include" || mech === "redirect") {
                unevaluated = true;
            }
        }
        const refused = serverAddrs.filter((a) => !permitted.has(a));
        if (refused.length === 0) out.push(ok("spf", `${domain} SPF permits the server (${spf[0]})`));
        else if (unevaluated) out.push(problem("spf", `${domain} SPF "${spf[0]}" does not plainly permit ${refused.join(", ")} (include/CIDR terms not evaluated here)`, `verify by hand or use "v=spf1 mx -all"; ${fix}`));
        else out.push(problem("spf", `${domain} SPF "${spf[0]}" does not permit ${refused.join(", ")}: mail from the server fails SPF`, fix));
    }
    return out;
}

export async function checkDmarc(model: Model, lookup: Lookup, fix: string): Promise<Finding[]> {
    const out: Finding[] = [];
    for (const domain of model.domains) {
        const records = (await lookup.resolve(`_dmarc.${domain}`, "TXT")).filter((t) => /^v=DMARC1\s*(;|$)/i.test(t));
        if (records.length !== 1) {
            out.push(problem("dmarc", `_dmarc.${domain} has ${records.length} DMARC records (exactly one is needed, RFC 7489 §6.6.3)`, fix));
            continue;
        }
        const p = tagList(records[0]).get("p");
        if (!p || !["none", "quarantine", "reject"].includes(p)) out.push(problem("dmarc", `_dmarc.${domain} has no valid p= policy ("${records[0]}")`, fix));
        else out.push(ok("dmarc", `_dmarc.${domain} p=${p}`));
    }
    return out;
}

/** The signing selector's key must be published for every domain (and every listed selector stays published). */
export async function checkDkim(model: Model, lookup: Lookup, fix: string): Promise<Finding[]> {
    const out: Finding[] = [];
    for (const domain of model.domains) {
        for (const selector of model.dkimSelectors) {
            const name = `${selector}._domainkey.${domain}`;
            // The first listed selector signs (once its record has been public for its TTL).
            const wanted = selector === model.dkimSelectors[0];
            const role = wanted ? "the signing selector" : "a published selector";
            const records = (await lookup.resolve(name, "TXT")).filter((t) => /^v=DKIM1\s*(;|$)/i.test(t) || /(^|;)\s*p=/.test(t));
            if (records.length !== 1) {
                out.push(problem("dkim", `${name} (${role}) has ${records.length} DKIM key records${wanted ? ": receivers cannot verify the signatures" : ""}`, fix));
                continue;
            }
            const key = tagList(records[0]).get("p") ?? "";
            try {
                const pub = createPublicKey({ key: Buffer.from(key, "base64"), format: "der", type: "spki" });
                const bits = pub.asymmetricKeyDetails?.modulusLength ?? 0;
                if (pub.asymmetricKeyType !== "rsa" || bits < 2048) out.push(problem("dkim", `${name}: key is ${pub.asymmetricKeyType} ${bits} bits, expected RSA >= 2048`, fix));
                else out.push(ok("dkim", `${name} publishes an RSA ${bits}-bit key (${role})`));
            } catch {
                out.push(problem("dkim", `${name}: p= is not a valid public key ("${key.slice(0, 24)}...")`, fix));
            }
        }
    }
    return out;
}

/** RFC 8461 §3.1 ids are opaque; ours are the first 32 hex digits of the policy's sha256 (components/dns/mta-sts.ts). */
export const policyId = (text: string) => createHash("sha256").update(text).digest("hex").slice(0, 32);

/** An MTA-STS `mx:` pattern matches a host (RFC 8461 §4.1: a leading `*.` matches one label). */
export function mxPatternMatches(pattern: string, host: string): boolean {
    if (pattern.startsWith("*.")) return host.split(".").slice(1).join(".") === pattern.slice(2);
    return pattern === host;
}

export interface PolicyFetch {
    (domain: string): Promise<{ status: number; body: string }>;
}

export async function checkMtaSts(model: Model, lookup: Lookup, fetchPolicy: PolicyFetch, fix: string): Promise<Finding[]> {
    const out: Finding[] = [];
    if (model.mtaSts.mode === "none") return out;
    for (const domain of model.domains) {
        const txt = (await lookup.resolve(`_mta-sts.${domain}`, "TXT")).filter((t) => /^v=STSv1\s*(;|$)/i.test(t));
        if (txt.length !== 1) {
            out.push(problem("mta-sts", `_mta-sts.${domain} has ${txt.length} v=STSv1 records (exactly one is needed)`, fix));
            continue;
        }
        const id = tagList(txt[0]).get("id") ?? "";
        let policy: { status: number; body: string };
        try {
            policy = await fetchPolicy(domain);
        } catch (e) {
            out.push(problem("mta-sts", `https://mta-sts.${domain}/.well-known/mta-sts.txt cannot be fetched (${(e as Error).message})`, "check the web server and the certificate for mta-sts names (web and certbot steps)"));
            continue;
        }
        if (policy.status !== 200) {
            out.push(problem("mta-sts", `https://mta-sts.${domain}/.well-known/mta-sts.txt answers HTTP ${policy.status}`, "the web step serves the policy: pulumi up / npm run lab"));
            continue;
        }
        const lines = policy.body.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
        const field = (k: string) => lines.filter((l) => l.startsWith(`${k}:`)).map((l) => l.slice(k.length + 1).trim());
        const mxHosts = (await lookup.resolve(domain, "MX")).map((m) => m.split(" ")[1]);
        const uncovered = mxHosts.filter((h) => !field("mx").some((p) => mxPatternMatches(p, h)));
        if (uncovered.length) {
            out.push(problem("mta-sts", `${domain}: the MTA-STS policy (mx: ${field("mx").join(", ")}) does not cover the MX ${uncovered.join(", ")}; senders in enforce mode will not deliver`, fix));
        } else if (field("mode")[0] !== model.mtaSts.mode) {
            out.push(problem("mta-sts", `${domain}: the policy served says mode ${field("mode")[0] ?? "(none)"}, the stack says ${model.mtaSts.mode}`, fix));
        } else if (policyId(policy.body) !== id) {
            out.push(problem("mta-sts", `${domain}: _mta-sts id=${id} does not belong to the policy served (its id would be ${policyId(policy.body)}); senders keep a stale policy`, fix));
        } else {
            out.push(ok("mta-sts", `${domain}: policy mode ${model.mtaSts.mode} covers the MX and matches _mta-sts id=${id}`));
        }
    }
    return out;
}

/**
 * DNSSEC is in effect only once the parent zone holds a DS record for the zone (the registrar
 * publishes the one Cloudflare gives, stack output dnssecDs). Without it, resolvers treat the zone
 * as unsigned: no DANE for mail to us, no SSHFP.
 */
export async function checkDnssec(model: Model, lookup: Lookup): Promise<Finding[]> {
    if (!model.dns.dnssec) return [ok("dnssec", "signing is off in this stack (ispmail:dns.dnssec: false)")];
    const out: Finding[] = [];
    for (const zone of dnsZones(model)) {
        const ds = await lookup.resolve(zone, "DS");
        if (ds.length === 0) {
            out.push(problem("dnssec", `${zone} has no DS record at its parent: the zone is signed but not validated, so DANE senders do not check this server`, `give the registrar of ${zone} the DS record from \`pulumi stack output dnssecDs\``));
        } else out.push(ok("dnssec", `${zone} has a DS record at its parent (${ds.join(", ")})`));
    }
    return out;
}
