/**
 * The MTA-STS policy (RFC 8461) as data. The `_mta-sts` TXT record carries an id derived from the
 * policy text, and the web service serves the very same text at
 * https://mta-sts.<domain>/.well-known/mta-sts.txt: both read {@link mtaStsPolicy}, so the id
 * changes exactly when what senders fetch changes (RFC 8461 §3.1: senders refetch on a new id).
 */
import { createHash } from "node:crypto";
import type { Model } from "../config";

export interface MtaStsPolicy {
    /** The policy file, CRLF-terminated lines as in RFC 8461 §3.2. */
    readonly text: string;
    /** 1-32 alphanumerics (RFC 8461 §3.1); a hash of {@link text}. */
    readonly id: string;
}

/** The policy for every domain of the stack: all of them are served by the one mailHost. */
export function mtaStsPolicy(model: Pick<Model, "mailHost" | "mtaSts">): MtaStsPolicy {
    const lines = ["version: STSv1", `mode: ${model.mtaSts.mode}`, `mx: ${model.mailHost}`, `max_age: ${model.mtaSts.maxAge}`];
    const text = lines.map((l) => `${l}\r\n`).join("");
    const id = createHash("sha256").update(text).digest("hex").slice(0, 32);
    return { text, id };
}
