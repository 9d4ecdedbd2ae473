/**
 * Reads a Pulumi.<stack>.yaml the way the CLI hands it to the program: every key of `config:`
 * becomes a string (structured values as JSON), and keys holding `secure:` values are listed as
 * secret. Encrypted values cannot be decrypted here: they become a fixed placeholder password.
 */
import { readFileSync } from "node:fs";
import YAML from "yaml";

/** Stands in for every `secure:` value (long enough for every password rule). */
export const SECURE_PLACEHOLDER = "mock-secret-value-0123456789";

export interface StackConfig {
    readonly config: Record<string, string>;
    readonly secretKeys: string[];
}

function replaceSecure(value: unknown, found: { secure: boolean }): unknown {
    if (Array.isArray(value)) return value.map((v) => replaceSecure(v, found));
    if (value && typeof value === "object") {
        const entries = Object.entries(value as Record<string, unknown>);
        if (entries.length === 1 && entries[0][0] === "secure") {
            found.secure = true;
            return SECURE_PLACEHOLDER;
        }
        return Object.fromEntries(entries.map(([k, v]) => [k, replaceSecure(v, found)]));
    }
    return value;
}

export function loadStackFile(path: string): StackConfig {
    const doc = YAML.parse(readFileSync(path, "utf8")) as { config?: Record<string, unknown> } | null;
    const config: Record<string, string> = {};
    const secretKeys: string[] = [];
    for (const [key, raw] of Object.entries(doc?.config ?? {})) {
        const found = { secure: false };
        const value = replaceSecure(raw, found);
        if (found.secure) secretKeys.push(key);
        config[key] = typeof value === "string" ? value : JSON.stringify(value);
    }
    return { config, secretKeys };
}
