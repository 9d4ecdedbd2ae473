/**
 * The lab's stack: lab/stack.yaml parsed exactly like a Pulumi stack file, with the lab's deploy
 * key as the server's SSH key, and the stack's secrets generated once into .lab/secrets.json (the
 * lab's counterpart of the secrets Pulumi keeps in its state).
 */
import { generateKeyPairSync, randomInt } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { parseConfig, stackFileConfig, type ConfiguredSecrets, type Model } from "../components/config";
import { tlsaOfKey } from "../components/dns/records";
import { dkimKeySecret, dkimPublicKeyFromPem, tlsKeySecret, type SecretSpec } from "../components/secrets";
import { secretSpecs } from "../components/services";
import { labTrustAnchors } from "./dns";
import { PATHS } from "./lab";

export const LAB_STACK = "lab";

/**
 * The lab stack's raw `ispmail:*` keys (without namespace): lab/stack.yaml with the lab's deploy key
 * as the one admin key (so the lab and its tests can log in once ssh-access ran) and the lab zones'
 * trust anchors for the server's resolver. `overrides`: keys
 * replaced for a test of a config change.
 */
export function labStackRaw(deployPublicKey: string, overrides: Readonly<Record<string, unknown>> = {}): Record<string, unknown> {
    const { raw } = stackFileConfig(readFileSync(PATHS.stackFile, "utf8"));
    const server = { ...(raw.server as Record<string, unknown>), sshPublicKeys: [deployPublicKey] };
    // The lab zones are signed with a key made on this machine (lab/dns.ts): its trust anchors are
    // data the lab adds, as the deploy key is.
    const resolver = (raw.resolver ?? {}) as { trustAnchors?: string[] };
    const trustAnchors = [...(resolver.trustAnchors ?? []), ...labTrustAnchors((raw.domains as Array<string | { name: string }>).map((d) => (typeof d === "string" ? d : d.name)))];
    return { ...raw, server, resolver: { ...resolver, trustAnchors }, ...overrides };
}

export function loadLabStack(deployPublicKey: string, overrides: Readonly<Record<string, unknown>> = {}): { model: Model; configured: ConfiguredSecrets } {
    // A DQS key given by a test counts as secret config, as `pulumi config set --secret` makes it.
    return parseConfig(labStackRaw(deployPublicKey, overrides), { stack: LAB_STACK, secretKeys: ["ispmail:spamhausDqsKey"] });
}

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** 32 letters and digits, as `random.RandomPassword({ length: 32, special: false })` makes them. */
function generatePassword(): string {
    let s = "";
    for (let i = 0; i < 32; i++) s += ALNUM[randomInt(ALNUM.length)];
    return s;
}

function generate(spec: SecretSpec): string {
    switch (spec.kind) {
        case "password":
            return generatePassword();
        case "dkim-rsa2048":
        case "tls-rsa2048":
            return generateKeyPairSync("rsa", { modulusLength: 2048, privateKeyEncoding: { type: "pkcs1", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } }).privateKey;
        default: {
            const never: never = spec.kind;
            throw new Error(`unknown secret kind ${String(never)}`);
        }
    }
}

/**
 * Every secret of the stack: generated ones are created once and kept in .lab/secrets.json (0600);
 * new names are added, existing values are never replaced. Configured secrets are given under the
 * same names as in Pulumi (`user:<address>`, `spamhaus.dqs`).
 */
export function ensureSecrets(model: Model, configured: ConfiguredSecrets): Record<string, string> {
    const stored: Record<string, string> = existsSync(PATHS.secrets) ? (JSON.parse(readFileSync(PATHS.secrets, "utf8")) as Record<string, string>) : {};
    let added = false;
    for (const spec of secretSpecs(model)) {
        if (stored[spec.name] === undefined) {
            // A renamed secret keeps its value, as the resource alias keeps it in Pulumi.
            const former = spec.formerName === undefined ? undefined : stored[spec.formerName];
            stored[spec.name] = former ?? generate(spec);
            added = true;
        }
    }
    if (added || !existsSync(PATHS.secrets)) writeFileSync(PATHS.secrets, JSON.stringify(stored, null, 2) + "\n", { mode: 0o600 });
    const values = { ...stored };
    for (const [name, value] of configured) values[name] = value;
    return values;
}

/** selector -> base64 SPKI (DER) of the DKIM public key: the `p=` of the DKIM TXT record. */
export function dkimPublicKeys(model: Model, secrets: Readonly<Record<string, string>>): Record<string, string> {
    const out: Record<string, string> = {};
    for (const selector of model.dkimSelectors) {
        const pem = secrets[dkimKeySecret(selector)];
        if (!pem) throw new Error(`no DKIM key for selector ${selector}`);
        out[selector] = dkimPublicKeyFromPem(pem);
    }
    return out;
}

/** TLS key name -> TLSA data of the certificate's key: what the lab DNS publishes as Pulumi would. */
export function tlsaData(model: Model, secrets: Readonly<Record<string, string>>): Record<string, string> {
    return Object.fromEntries(
        model.tlsKeys.map((key) => {
            const pem = secrets[tlsKeySecret(key)];
            if (!pem) throw new Error(`no TLS key "${key}"`);
            return [key, tlsaOfKey(pem)];
        }),
    );
}
