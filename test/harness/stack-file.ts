/**
 * Reads a Pulumi.<stack>.yaml the way the CLI hands it to the program (components/config/stack-file.ts,
 * the one stack-file reader): every key of `config:` becomes a string (structured values as JSON),
 * and keys holding `secure:` values are listed as secret. Encrypted values cannot be decrypted here:
 * they become a fixed placeholder password.
 */
import { readStackFile } from "../../components/config";

/** Stands in for every `secure:` value (long enough for every password rule). */
export const SECURE_PLACEHOLDER = "mock-secret-value-0123456789";

export interface StackConfig {
    readonly config: Record<string, string>;
    readonly secretKeys: string[];
}

export function loadStackFile(path: string): StackConfig {
    const { cliConfig, secretKeys } = readStackFile(path, { encryptedStandIn: SECURE_PLACEHOLDER });
    return { config: cliConfig, secretKeys };
}
