/**
 * What `npm run check` reports: one finding per thing checked. A problem names its cause and the
 * fix; a skip says why it was not checked (offline, not applicable).
 */
export type Status = "ok" | "problem" | "skipped";

export interface Finding {
    /** Area: dns, ptr, tls, port, mx, spf, dmarc, dkim, mta-sts, outbound-25, blocklist. */
    readonly check: string;
    readonly status: Status;
    /** What was found (for a problem: the cause). */
    readonly message: string;
    /** For a problem: what to do about it. */
    readonly fix?: string;
}

export const ok = (check: string, message: string): Finding => ({ check, status: "ok", message });
export const problem = (check: string, message: string, fix: string): Finding => ({ check, status: "problem", message, fix });
export const skipped = (check: string, message: string): Finding => ({ check, status: "skipped", message });

/** One line per finding; problems carry "-> fix: ...". */
export function formatFinding(f: Finding): string {
    const tag = { ok: "ok     ", problem: "PROBLEM", skipped: "skipped" }[f.status];
    return `${tag} ${f.check}: ${f.message}${f.fix ? ` -> fix: ${f.fix}` : ""}`;
}

export function summary(findings: readonly Finding[]): string {
    const n = (s: Status) => findings.filter((f) => f.status === s).length;
    return `${n("problem")} problem(s), ${n("ok")} ok, ${n("skipped")} skipped`;
}
