/**
 * DKIM rotation as a config change, decided by one pure function that Pulumi and the lab share.
 *
 * `ispmail:dkimSelectors` is an ordered list: every listed selector is published in DNS and its
 * private key is installed; the first one is the one the admin wants to sign with. Signing switches
 * to it only once its record has been public for at least the record's TTL in every domain: before
 * that, a resolver may still hold the answer "no such name" (or an older key) for it, and a receiver
 * that looks it up would fail the signature. Until then the next listed selector whose record *is*
 * old enough keeps signing. A rotation is therefore:
 *
 *   1. [s2026]          -> add s2027 at the end: [s2026, s2027]; `up` publishes s2027, s2026 signs.
 *   2. [s2027, s2026]   -> move it first; `up` switches signing once s2027 has been public >= TTL
 *                          (an earlier `up` keeps s2026 and says when to run `up` again).
 *   3. [s2027]          -> after a few days (mail in flight, forwarded copies), drop s2026; its
 *                          record goes away. Nothing about s2027 changes.
 *
 * Where the publication time comes from: Pulumi reads it from the Cloudflare records
 * (`modifiedOn`, else `createdOn`); the lab from the time its DNS server started serving the record.
 */
import type { Model } from "./config";

/** The DKIM TXT record's owner name of a selector in a domain (RFC 6376 §3.6.2.1). */
export const dkimRecordName = (selector: string, domain: string) => `${selector}._domainkey.${domain}`;

export interface DkimSigningPlan {
    /** The selector that signs now. */
    readonly selector: string;
    /** The selector the config asks for (the first listed). */
    readonly wanted: string;
    /**
     * settled: the wanted selector signs and its records are old enough; waiting: an older
     * selector signs until `readyAt`; immediate: the wanted one signs although no listed record is
     * old enough yet (nothing better to sign with).
     */
    readonly state: "settled" | "waiting" | "immediate";
    /** When `wanted` does not sign yet: the moment its records will have been public for their TTL. */
    readonly readyAt?: string;
    /** One sentence for the log: who signs and why. */
    readonly reason: string;
}

/**
 * Since when each selector's records have been public in *all* domains: the latest of the
 * per-domain times, undefined while any domain's record is missing or not yet published.
 * `publishedAt(name)` gives the time one record (by owner name) was published, if it is.
 */
export function selectorPublishedAt(model: Pick<Model, "domains" | "dkimSelectors">, publishedAt: (recordName: string) => Date | undefined): Record<string, Date | undefined> {
    const out: Record<string, Date | undefined> = {};
    for (const selector of model.dkimSelectors) {
        let latest: Date | undefined;
        let missing = false;
        for (const domain of model.domains) {
            const t = publishedAt(dkimRecordName(selector, domain));
            if (!t || Number.isNaN(t.getTime())) missing = true;
            else if (!latest || t > latest) latest = t;
        }
        out[selector] = missing ? undefined : latest;
    }
    return out;
}

/**
 * Who signs now. The first listed selector whose records have been public for at least the DNS TTL
 * signs, in config order. When none has (a new stack, or the old selector was removed together with
 * the new one being added), the first listed signs at once: there is nothing better to sign with.
 */
export function planDkimSigning(model: Pick<Model, "dkimSelectors" | "dns">, publishedAt: Readonly<Record<string, Date | undefined>>, now: Date): DkimSigningPlan {
    const ttlMs = model.dns.ttl * 1000;
    const [wanted] = model.dkimSelectors;
    const readyTime = (s: string) => {
        const t = publishedAt[s];
        return t ? new Date(t.getTime() + ttlMs) : undefined;
    };
    const isReady = (s: string) => {
        const t = readyTime(s);
        return t !== undefined && t.getTime() <= now.getTime();
    };
    const ready = model.dkimSelectors.find(isReady);
    if (ready === wanted) {
        return { selector: wanted, wanted, state: "settled", reason: `DKIM: ${wanted} signs (its record has been public for at least the ${model.dns.ttl} s TTL)` };
    }
    const wantedReady = readyTime(wanted);
    const when = wantedReady ? `after ${wantedReady.toISOString()}` : `once its record is published, ${model.dns.ttl} s after that`;
    if (ready === undefined) {
        return {
            selector: wanted,
            wanted,
            state: "immediate",
            reason: `DKIM: ${wanted} signs at once: no listed selector's record has been public for the ${model.dns.ttl} s TTL yet (a new stack, or the signing selector was removed in the same change); receivers that cached its absence may fail signatures until then`,
        };
    }
    return {
        selector: ready,
        wanted,
        state: "waiting",
        ...(wantedReady ? { readyAt: wantedReady.toISOString() } : {}),
        reason: `DKIM: ${ready} keeps signing; ${wanted} is listed first but its record has not been public for the ${model.dns.ttl} s TTL yet: run the deployment again ${when} to switch`,
    };
}
