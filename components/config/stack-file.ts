/**
 * The one reader of Pulumi stack files (Pulumi.<stack>.yaml, lab/stack.yaml): their `config:` map,
 * in the forms the lab (the `raw` argument of parseConfig), `npm run check` (which needs no
 * password) and the tests (the strings the CLI hands the program) need.
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { CONFIG_NAMESPACE } from "./schema";

export interface StackFileOptions {
    /**
     * What takes the place of each encrypted value (`secure: v1:...`), which only the Pulumi CLI can
     * decrypt. Without it, an encrypted `ispmail:*` value is refused: the lab must never run on a
     * stand-in. Readers that need no secret value (`npm run check`, tests) give one long enough for
     * every password rule; its key is then listed in `secretKeys`, so that the config contract
     * (passwords must be secret config) still holds.
     */
    readonly encryptedStandIn?: string;
}

export interface StackFile {
    /** The `ispmail:*` keys without namespace (mailHost, users, ...), values as the file holds them. */
    readonly raw: Record<string, unknown>;
    /** Keys of other namespaces (hcloud:, cloudflare:), left out of `raw`. */
    readonly otherKeys: string[];
    /** Every key (with namespace) whose value holds an encrypted value: the keys the stack marks as secret. */
    readonly secretKeys: string[];
    /**
     * Every key (with namespace) as the CLI hands it to the program: strings as they are, every
     * other value (structured config, numbers, booleans) as JSON.
     */
    readonly cliConfig: Record<string, string>;
}

/** Pulumi's form of an encrypted value: a mapping whose only key is `secure`. */
function isEncrypted(value: unknown): boolean {
    if (!value || typeof value !== "object" || Array.isArray(value)) return false;
    const keys = Object.keys(value);
    return keys.length === 1 && keys[0] === "secure";
}

/** `value` with each encrypted value inside replaced by `standIn` (kept when there is none); `found` says whether there was one. */
function replaceEncrypted(value: unknown, standIn: string | undefined, found: { encrypted: boolean }): unknown {
    if (isEncrypted(value)) {
        found.encrypted = true;
        return standIn ?? value;
    }
    if (Array.isArray(value)) return value.map((v) => replaceEncrypted(v, standIn, found));
    if (value && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, replaceEncrypted(v, standIn, found)]));
    return value;
}

/** Reads the `config:` map of a stack file's text. See {@link StackFileOptions} for encrypted values. */
export function stackFileConfig(yamlText: string, opts: StackFileOptions = {}): StackFile {
    const doc = (parseYaml(yamlText) ?? {}) as { config?: Record<string, unknown> };
    const file: StackFile = { raw: {}, otherKeys: [], secretKeys: [], cliConfig: {} };
    for (const [key, given] of Object.entries(doc.config ?? {})) {
        const [ns, ...rest] = key.split(":");
        const ours = ns === CONFIG_NAMESPACE && rest.length === 1;
        const found = { encrypted: false };
        const value = replaceEncrypted(given, opts.encryptedStandIn, found);
        if (found.encrypted) {
            if (ours && opts.encryptedStandIn === undefined) throw new Error(`${key} holds an encrypted (secure:) value; only the Pulumi CLI can decrypt it`);
            file.secretKeys.push(key);
        }
        if (ours) file.raw[rest[0]] = value;
        else file.otherKeys.push(key);
        file.cliConfig[key] = typeof value === "string" ? value : JSON.stringify(value);
    }
    return file;
}

/** {@link stackFileConfig} of the stack file at `path`. */
export function readStackFile(path: string, opts: StackFileOptions = {}): StackFile {
    return stackFileConfig(readFileSync(path, "utf8"), opts);
}
