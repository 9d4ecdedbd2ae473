/**
 * Renames: which old address each mailbox had, from the users' `renamedFrom` and the domains'
 * `{name, renamedFrom}`. One function, so that the relation checks and the model agree on it.
 *
 * A mailbox in a renamed domain was `<same local part>@<old domain>` unless it says otherwise with
 * its own `renamedFrom` (a mailbox may change its local part and its domain at once).
 */
import { splitAddress } from "./schema";

export interface DomainEntry {
    readonly name: string;
    readonly renamedFrom?: string;
}
export interface RenamableUser {
    readonly address: string;
    readonly renamedFrom?: string;
}

/** New address -> the address it had until now, for every mailbox that was renamed. */
export function mailboxRenames(domains: readonly DomainEntry[], users: readonly RenamableUser[]): Map<string, string> {
    const domainWas = new Map(domains.filter((d) => d.renamedFrom !== undefined).map((d) => [d.name, d.renamedFrom!]));
    const renames = new Map<string, string>();
    for (const u of users) {
        const { local, domain } = splitAddress(u.address);
        const was = u.renamedFrom ?? (domainWas.has(domain) ? `${local}@${domainWas.get(domain)}` : undefined);
        if (was !== undefined && was !== u.address) renames.set(u.address, was);
    }
    return renames;
}
