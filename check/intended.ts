/**
 * What a stack should look like from outside: its model (from the stack file), the server's
 * addresses and the DNS records as rendered.
 *
 * - `--stack lab`: lab/stack.yaml, the lab's addresses, DKIM keys from the lab's secrets, the lab DNS.
 * - any other stack: Pulumi.<stack>.yaml plus the stack outputs. The Pulumi CLI is what knows
 *   them: `pulumi stack output --json -s <stack> > outputs.json`, then `--outputs outputs.json`
 *   (ipv4, ipv6 and dnsRecords, the exact rendered set); or `--ipv4/--ipv6` alone, when the
 *   records are rendered here and DKIM keys (only in the state) are checked for validity only.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { isIP } from "node:net";
import { parseConfig, stackFileConfig, type Model, type StackFile } from "../components/config";
import { type DnsRecord, renderDnsRecords } from "../components/dns/records";

export const REPO_DIR = join(__dirname, "..");

export interface Intended {
    readonly stack: string;
    readonly lab: boolean;
    readonly model: Model;
    readonly ipv4: string;
    readonly ipv6: string;
    readonly records: readonly DnsRecord[];
    /** False when the DKIM public keys are unknown (rendered with placeholders): compare DKIM by validity. */
    readonly dkimKnown: boolean;
    /** Resolver to ask; undefined = the system resolver. */
    readonly dnsServers?: readonly string[];
    /** How DNS/PTR get fixed in this stack (said after each problem). */
    readonly fixDns: string;
    readonly fixPtr: string;
}

export interface IntendedOptions {
    readonly stack: string;
    readonly ipv4?: string;
    readonly ipv6?: string;
    readonly outputsFile?: string;
    readonly dnsServer?: string;
}

interface StackOutputs {
    ipv4?: string;
    ipv6?: string;
    dnsRecords?: DnsRecord[];
}

/**
 * Encrypted config values (`secure: v1:...`) can only be read by the Pulumi CLI; the check needs
 * none of them (they are passwords). They are replaced by a stand-in, and their keys reported as
 * secret so that the config contract (passwords must be secret) still holds.
 */
export function stackFileForCheck(yamlText: string): StackFile {
    return stackFileConfig(yamlText, { encryptedStandIn: "encrypted-value-not-read-by-check" });
}

function requireAddress(value: string | undefined, family: 4 | 6, what: string): string {
    if (!value) throw new Error(`${what}: the server's IPv${family} address is needed (--ipv${family} or --outputs with ipv${family})`);
    if (isIP(value) !== family) throw new Error(`${what}: "${value}" is not an IPv${family} address`);
    return value;
}

/** A stand-in key so that records can be rendered when the real ones are unknown (never compared). */
const UNKNOWN_DKIM_KEY = "unknown";
/** A stand-in too: without the stack outputs the certificate key is unknown, and compareRecords skips TLSA like DKIM. */
const UNKNOWN_TLSA = "3 1 1 unknown";

export async function loadIntended(opts: IntendedOptions): Promise<Intended> {
    if (opts.stack === "lab") return loadLab();
    const file = join(REPO_DIR, `Pulumi.${opts.stack}.yaml`);
    const { raw, secretKeys } = stackFileForCheck(readFileSync(file, "utf8"));
    const { model } = parseConfig(raw, { stack: opts.stack, secretKeys });
    const outputs: StackOutputs = opts.outputsFile ? (JSON.parse(readFileSync(opts.outputsFile, "utf8")) as StackOutputs) : {};
    const ipv4 = requireAddress(opts.ipv4 ?? outputs.ipv4, 4, opts.stack);
    const ipv6 = requireAddress(opts.ipv6 ?? outputs.ipv6, 6, opts.stack);
    const dkimKnown = Array.isArray(outputs.dnsRecords);
    const records = dkimKnown
        ? outputs.dnsRecords!
        : renderDnsRecords({
              model,
              ipv4,
              ipv6,
              dkimPublicKeys: Object.fromEntries(model.dkimSelectors.map((s) => [s, UNKNOWN_DKIM_KEY])),
              tlsa: Object.fromEntries(model.tlsKeys.map((k) => [k, UNKNOWN_TLSA])),
          });
    return {
        stack: opts.stack,
        lab: false,
        model,
        ipv4,
        ipv6,
        records,
        dkimKnown,
        ...(opts.dnsServer ? { dnsServers: [opts.dnsServer] } : {}),
        fixDns: `records are managed by the stack: \`pulumi preview -s ${opts.stack}\` should show the change and \`pulumi up -s ${opts.stack}\` restore it (after a change made in the Cloudflare UI: \`pulumi refresh\` first)`,
        fixPtr: `reverse DNS is set by the stack (hcloud Rdns on the primary IPs): \`pulumi up -s ${opts.stack}\``,
    };
}

async function loadLab(): Promise<Intended> {
    // Lab modules are loaded only here: a real stack's check needs nothing of the lab.
    const { LAB, PATHS } = await import("../lab/lab");
    const { dkimPublicKeys, ensureSecrets, loadLabStack, tlsaData } = await import("../lab/stack");
    const { model, configured } = loadLabStack(readFileSync(`${PATHS.deployKey}.pub`, "utf8").trim());
    const secrets = ensureSecrets(model, configured);
    const ipv4 = LAB.mail.ipv4;
    const ipv6 = LAB.mail.ipv6;
    return {
        stack: "lab",
        lab: true,
        model,
        ipv4,
        ipv6,
        records: renderDnsRecords({ model, ipv4, ipv6, dkimPublicKeys: dkimPublicKeys(model, secrets), tlsa: tlsaData(model, secrets) }),
        dkimKnown: true,
        dnsServers: [LAB.dns],
        fixDns: "the lab DNS serves renderDnsRecords: `npm run lab` re-renders and reloads the zones",
        fixPtr: "the lab's reverse zones are written by `npm run lab` (lab/dns.ts)",
    };
}
