/**
 * Shell text built from data. Step scripts get their per-stack values as single-quoted assignments
 * in front of the static script (files/<service>/apply.sh), so nothing in a value ever expands.
 */

/** One single-quoted shell word: safe for any string. */
export function shellQuote(s: string): string {
    return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** `NAME='value'` lines for a step script. */
export function shellAssignments(vars: Readonly<Record<string, string>>): string {
    return Object.entries(vars)
        .map(([name, value]) => {
            if (!/^[A-Z_][A-Z0-9_]*$/.test(name)) throw new Error(`bad shell variable name ${name}`);
            return `${name}=${shellQuote(value)}`;
        })
        .join("\n");
}
