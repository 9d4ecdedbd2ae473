/**
 * The program behind index.ts, as a function so tests can run it under mocks with any config.
 * Only this module reads stack config; everything below it receives the typed model.
 */
import * as pulumi from "@pulumi/pulumi";
import { CONFIG_NAMESPACE, ConfigError, parseConfig } from "./config";
import { MailServer, beforeFirstUse, clientSettings, type ClientSettings } from "./mail-server";
import type { DkimSigningPlan } from "./dkim";
import type { DnsRecord } from "./dns/records";

/**
 * Is this config key secret? The CLI passes the secret keys to the program in the
 * PULUMI_CONFIG_SECRET_KEYS environment variable (a JSON list); @pulumi/pulumi reads it into its
 * store (where `setAllConfig` also puts them) and answers with `runtime.isConfigSecret`, which works
 * but is marked internal in its typings. Fall back to the variable itself if it ever disappears.
 */
function isConfigSecret(key: string): boolean {
    const runtime = pulumi.runtime as unknown as { isConfigSecret?: (k: string) => boolean };
    if (typeof runtime.isConfigSecret === "function") return runtime.isConfigSecret(key);
    const listed: unknown = JSON.parse(process.env.PULUMI_CONFIG_SECRET_KEYS || "[]");
    return Array.isArray(listed) && listed.includes(key);
}

/** The `ispmail:*` keys of the stack (without namespace) and the ones marked secret. */
export function readStackConfig(): { raw: Record<string, string>; secretKeys: string[] } {
    const raw: Record<string, string> = {};
    const secretKeys: string[] = [];
    const prefix = `${CONFIG_NAMESPACE}:`;
    for (const [key, value] of Object.entries(pulumi.runtime.allConfig())) {
        if (!key.startsWith(prefix)) continue;
        raw[key.slice(prefix.length)] = value;
        if (isConfigSecret(key)) secretKeys.push(key);
    }
    return { raw, secretKeys };
}

export interface ProgramOutputs {
    readonly ipv4: pulumi.Output<string>;
    readonly ipv6: pulumi.Output<string>;
    readonly mailHost: string;
    readonly clientSettings: ClientSettings;
    readonly dnsRecords: pulumi.Output<DnsRecord[]>;
    /** Zone -> DS record to give to the registrar (DNSSEC). */
    readonly dnssecDs: pulumi.Output<Record<string, string>>;
    readonly userPasswords: pulumi.Output<Record<string, string>>;
    /** Secret name -> value of the secrets an administrator logs in with (components/secrets.ts ADMIN_SECRETS). */
    readonly adminSecrets: pulumi.Output<Record<string, string>>;
    /** Which DKIM selector signs, and when a rotation listed in the config will take effect. */
    readonly dkimSigning: pulumi.Output<DkimSigningPlan>;
    readonly beforeFirstUse: string;
}

export function program(): ProgramOutputs {
    const { raw, secretKeys } = readStackConfig();
    let parsed: ReturnType<typeof parseConfig>;
    try {
        parsed = parseConfig(raw, { stack: pulumi.getStack(), secretKeys });
    } catch (e) {
        // RunError: the CLI prints just the message (every problem with its key path), no stack
        // trace, and nothing has been registered yet.
        if (e instanceof ConfigError) throw new pulumi.RunError(e.message);
        throw e;
    }
    const { model, configured } = parsed;
    const server = new MailServer("ispmail", { model, configuredSecrets: configured });
    return {
        ipv4: server.ipv4,
        ipv6: server.ipv6,
        mailHost: model.mailHost,
        clientSettings: clientSettings(model),
        dnsRecords: server.dnsRecords,
        dnssecDs: server.dnssecDs,
        userPasswords: server.userPasswords,
        adminSecrets: server.adminSecrets,
        dkimSigning: server.dkimSigning,
        beforeFirstUse: beforeFirstUse(model),
    };
}
