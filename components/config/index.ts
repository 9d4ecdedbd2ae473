/**
 * The stack-config contract: one zod schema turns the raw `ispmail:*` keys of a stack into a typed,
 * frozen {@link Model}. Every other module reads the model, never `pulumi.Config`.
 *
 * All problems are collected and reported together, each naming the full key path
 * (`ispmail:users[2].address`) and what is allowed, before any resource is registered.
 *
 * The parts: schema.ts (what each key may hold), messages.ts (zod issues as clear messages),
 * rules.ts (cross-field rules), model.ts (the model built from a valid config), stack-file.ts
 * (reading Pulumi.<stack>.yaml and lab/stack.yaml). This module is the public API.
 */
import { z } from "zod";
import { CONFIG_NAMESPACE, configSchema } from "./schema";
import { ConfigError, describeIssue, keyPath, unwrap } from "./messages";
import { checkRelations, fromComplete, partialParse } from "./rules";
import { buildModel, type ConfiguredSecrets, type Model } from "./model";

export { CONFIG_NAMESPACE, configSchema, DB_ADMINS, type DbAdmin, type RawConfig } from "./schema";
export { ConfigError, keyPath } from "./messages";
export { isProtectedStack, type ConfiguredSecrets, type MailAlias, type MailUser, type Model, type SharedMailbox } from "./model";
export { readStackFile, stackFileConfig, type StackFile, type StackFileOptions } from "./stack-file";

/**
 * Parses raw stack config. `raw` maps keys without namespace (mailHost, users, ...) to their values:
 * JSON strings as Pulumi stores structured config (and plain strings for numbers), or already-parsed
 * values. `secretKeys` lists the keys (with or without namespace) that the stack marks as secret
 * (Pulumi passes them in PULUMI_CONFIG_SECRET_KEYS). Throws a {@link ConfigError} listing every
 * problem found.
 */
export function parseConfig(
    raw: Readonly<Record<string, unknown>>,
    opts: { stack: string; secretKeys?: readonly string[] },
): { model: Model; configured: ConfiguredSecrets } {
    const problems: string[] = [];
    const values: Record<string, unknown> = {};
    /** Keys whose text could not be decoded: unknown to the relation checks (not "empty"). */
    const undecodable = new Set<string>();
    for (const [key, value] of Object.entries(raw)) {
        const decoded = decodeRawValue(key, value);
        if ("error" in decoded) {
            problems.push(decoded.error);
            undecodable.add(key);
        } else values[key] = decoded.value;
    }
    const result = configSchema.safeParse(values, { reportInput: true });
    if (!result.success) for (const issue of result.error.issues) problems.push(...describeIssue(issue));
    const secret = new Set((opts.secretKeys ?? []).map((k) => (k.includes(":") ? k : `${CONFIG_NAMESPACE}:${k}`)));
    // Relations are checked on whatever parsed, so that one typo does not hide the other mistakes.
    checkRelations(result.success && undecodable.size === 0 ? fromComplete(result.data) : partialParse(values, undecodable), secret, problems);
    if (problems.length || !result.success) throw new ConfigError(problems);
    return buildModel(result.data, opts.stack);
}

/**
 * Pulumi hands every top-level value to the program as a string: structured values as JSON and
 * scalars as their text ("2048", "true"). Decode both, guided by the schema of the key.
 */
function decodeRawValue(key: string, value: unknown): { value: unknown } | { error: string } {
    if (typeof value !== "string") return { value };
    if (/^\s*[[{]/.test(value)) {
        try {
            return { value: JSON.parse(value) };
        } catch {
            return { error: `${keyPath([key])}: is not valid structured config (a YAML list or mapping, passed as JSON by Pulumi)` };
        }
    }
    const schema = Object.prototype.hasOwnProperty.call(configSchema.shape, key) ? unwrap(configSchema.shape[key as keyof typeof configSchema.shape]) : undefined;
    if (schema instanceof z.ZodNumber && /^-?[0-9]+(\.[0-9]+)?$/.test(value.trim())) return { value: Number(value) };
    if (schema instanceof z.ZodBoolean && /^(true|false)$/.test(value.trim())) return { value: value.trim() === "true" };
    return { value };
}

