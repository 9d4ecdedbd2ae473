/**
 * Turning zod issues into messages that name the full key path (`ispmail:users[2].address`) and
 * what is allowed.
 *
 * How messages are made: every schema carries a `.describe()` text that says what is allowed
 * ("a whole number of MB from 1 to 1048576"). zod's own issues (wrong type, too small, bad format,
 * unknown key) are turned into "must be <description>" by {@link describeIssue}; rules zod cannot
 * express are `custom` issues whose message already says what is wrong and what is allowed.
 */
import { z } from "zod";
import { CONFIG_NAMESPACE, configSchema } from "./schema";

export class ConfigError extends Error {
    /** One line per problem: `ispmail:<key path>: <what is wrong and what is allowed>`. */
    constructor(readonly problems: readonly string[]) {
        super(`Invalid stack configuration (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n  - ${problems.join("\n  - ")}`);
        this.name = "ConfigError";
    }
}

/** `ispmail:users[2].address` from ["users", 2, "address"]. */
export function keyPath(path: readonly PropertyKey[]): string {
    let out = CONFIG_NAMESPACE + ":";
    path.forEach((p, i) => {
        if (typeof p === "number") out += `[${p}]`;
        else out += i === 0 ? String(p) : `.${String(p)}`;
    });
    return out;
}

type AnySchema = z.core.$ZodType;

/** Strips optional/default/pipe/... wrappers, keeping the schema that holds the shape or type. */
export function unwrap(schema: AnySchema): AnySchema {
    let s = schema;
    for (let i = 0; i < 10; i++) {
        const def = s._zod.def as unknown as { type: string; innerType?: AnySchema; in?: AnySchema };
        if ((def.type === "optional" || def.type === "default" || def.type === "prefault" || def.type === "nullable" || def.type === "readonly") && def.innerType) s = def.innerType;
        else if (def.type === "pipe" && def.in) s = def.in;
        else break;
    }
    return s;
}

function descriptionOf(schema: AnySchema): string | undefined {
    let s = schema;
    for (let i = 0; i < 10; i++) {
        const d = z.globalRegistry.get(s)?.description;
        if (d) return d;
        const next = unwrapOnce(s);
        if (!next) return undefined;
        s = next;
    }
    return undefined;
}

function unwrapOnce(s: AnySchema): AnySchema | undefined {
    const def = s._zod.def as unknown as { type: string; innerType?: AnySchema; in?: AnySchema };
    if (def.innerType) return def.innerType;
    if (def.type === "pipe") return def.in;
    return undefined;
}

/** The schema at a key path (e.g. ["users", 2, "address"]), or undefined when the path is not in the schema. */
export function schemaAt(path: readonly PropertyKey[]): AnySchema | undefined {
    let s: AnySchema | undefined = configSchema;
    for (const p of path) {
        if (!s) return undefined;
        const u = unwrap(s);
        const def = u._zod.def as unknown as { type: string; shape?: Record<string, AnySchema>; element?: AnySchema; valueType?: AnySchema };
        if (def.type === "object" && typeof p === "string") s = def.shape?.[p];
        else if (def.type === "array" && typeof p === "number") s = def.element;
        else if (def.type === "record") s = def.valueType;
        else return undefined;
    }
    return s;
}

/** The keys allowed in the mapping at `path`. */
function allowedKeys(path: readonly PropertyKey[]): string[] {
    const s = schemaAt(path);
    if (!s) return [];
    const def = unwrap(s)._zod.def as unknown as { type: string; shape?: Record<string, AnySchema> };
    return def.type === "object" && def.shape ? Object.keys(def.shape) : [];
}

/** Edit distance, to suggest the key a typo meant (small strings only). */
function editDistance(a: string, b: string): number {
    const row = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
        let diag = row[0];
        row[0] = i;
        for (let j = 1; j <= b.length; j++) {
            const up = row[j];
            row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
            diag = up;
        }
    }
    return row[b.length];
}

function suggestKey(typo: string, allowed: readonly string[]): string | undefined {
    const t = typo.toLowerCase();
    let best: { key: string; d: number } | undefined;
    for (const k of allowed) {
        const d = editDistance(t, k.toLowerCase());
        if (d <= Math.max(2, Math.floor(k.length / 3)) && (!best || d < best.d)) best = { key: k, d };
    }
    return best?.key;
}

/** A short, non-secret rendering of what was given. */
function shown(input: unknown, path: readonly PropertyKey[]): string {
    if (path.some((p) => typeof p === "string" && /password|secret|token/i.test(p))) return "a value";
    if (input === null) return "null";
    if (Array.isArray(input)) return input.length ? "a list" : "an empty list";
    if (typeof input === "object") return "a mapping";
    const text = JSON.stringify(input) ?? String(input);
    return text.length > 60 ? `${text.slice(0, 57)}..."` : text;
}

export function describeIssue(issue: z.core.$ZodIssue): string[] {
    const path = issue.path;
    const where = keyPath(path);
    const allowed = descriptionOf(schemaAt(path) ?? configSchema) ?? issue.message;
    switch (issue.code) {
        case "custom":
            return [`${where}: ${issue.message}`];
        case "unrecognized_keys": {
            const keys = allowedKeys(path);
            return issue.keys.map((k) => {
                const hint = suggestKey(k, keys);
                return `${keyPath([...path, k])}: unknown setting${hint ? ` (did you mean ${keyPath([...path, hint])}?)` : ""}; allowed here: ${keys.join(", ")}`;
            });
        }
        case "invalid_key":
            // A record key (e.g. a zone name in dns.zoneIds) failed its own schema.
            return [`${where}: the key is not allowed; keys here must be ${descriptionOf(recordKeySchema(path.slice(0, -1)) ?? configSchema) ?? "valid names"}`];
        case "invalid_type":
            if (issue.input === undefined) return [`${where}: is required; must be ${allowed}`];
            return [`${where}: must be ${allowed} (got ${shown(issue.input, path)})`];
        default:
            // too_small, too_big, invalid_format, invalid_value, not_multiple_of, ...: the schema's
            // description says what is allowed.
            return [`${where}: must be ${allowed} (got ${shown(issue.input, path)})`];
    }
}

function recordKeySchema(path: readonly PropertyKey[]): AnySchema | undefined {
    const s = schemaAt(path);
    if (!s) return undefined;
    const def = unwrap(s)._zod.def as unknown as { type: string; keyType?: AnySchema };
    return def.type === "record" ? def.keyType : undefined;
}
