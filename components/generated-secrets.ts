/**
 * `ispmail:index:GeneratedSecrets`: every secret of {@link secretSpecs} as a resource, so that it
 * is generated once, kept (encrypted) in the Pulumi state and reused on every `up`.
 *
 * - "password" -> `random.RandomPassword` (32 letters and digits: safe in every config syntax);
 * - "dkim-rsa2048" -> `tls.PrivateKey` RSA 2048 (PEM, PKCS#1 as OpenDKIM/Rspamd read it);
 * - "tls-rsa2048" -> `tls.PrivateKey` RSA 2048, the certificate's key: made here rather than by
 *   certbot so that its TLSA record is known before the server exists and a new server (or a
 *   renewal) carries the same key.
 *
 * Resource names are the secret names (`db.mailreader`, `user:alice@example.org`, `dkim:s2026`), so
 * adding a user or a selector creates one resource and touches no other; a renamed mailbox's
 * password carries an alias of its former name, so the rename keeps it. Every secret ignores
 * changes of its generation parameters, so a code change can never rotate one by accident; the
 * stateful ones (DKIM and TLS keys, the backup password, the digests' key) are also `protect`ed in
 * protected stacks.
 */
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import * as tls from "@pulumi/tls";
import type { ConfiguredSecrets, Model } from "./config";
import { tlsaOfKey } from "./dns/records";
import { ADMIN_SECRETS, DKIM_SECRET_PREFIX, dkimPublicKeyFromPem, TLS_KEY_SECRET_PREFIX, userPasswordSecret, type SecretSpec } from "./secrets";
import { secretSpecs, type Service } from "./services";
import { componentType } from "./component-types";

export interface GeneratedSecretsArgs {
    readonly model: Model;
    /** Secrets set in stack config, by secret name (`user:<address>`, `spamhaus.dqs`). */
    readonly configuredSecrets: ConfiguredSecrets;
    /** The services whose secrets are generated; the program's list when left out. */
    readonly services?: readonly Service[];
}

export class GeneratedSecrets extends pulumi.ComponentResource {
    /**
     * Every secret by name (generated and configured), each its own secret Output: a consumer that
     * needs one secret waits for that one only, so a new secret leaves the others known in preview.
     */
    public readonly byName: Readonly<Record<string, pulumi.Output<string>>>;
    /** selector -> base64 SPKI of the DKIM public key (public data), one Output per selector. */
    public readonly dkimPublicKeys: Readonly<Record<string, pulumi.Output<string>>>;
    /** TLS key name -> its TLSA data ("3 1 1 <sha256 of the SPKI>", public), one Output per key. */
    public readonly tlsa: Readonly<Record<string, pulumi.Output<string>>>;
    /** address -> password, for the users whose password was generated (secret; a stack output). */
    public readonly generatedUserPasswords: pulumi.Output<Record<string, string>>;
    /** Secret name -> value of the stack's {@link ADMIN_SECRETS} (secret; a stack output). */
    public readonly adminSecrets: pulumi.Output<Record<string, string>>;

    constructor(name: string, args: GeneratedSecretsArgs, opts?: pulumi.ComponentResourceOptions) {
        const [type, options] = componentType("GeneratedSecrets", opts);
        super(type, name, {}, options);
        const { model } = args;
        const specs = secretSpecs(model, args.services);
        const generated: Record<string, pulumi.Output<string>> = {};
        const dkim: Record<string, pulumi.Output<string>> = {};
        const tlsa: Record<string, pulumi.Output<string>> = {};
        const optsFor = (spec: SecretSpec, parameters: string[]): pulumi.CustomResourceOptions => ({
            parent: this,
            protect: spec.stateful && model.protectState,
            // Every secret, not only the stateful ones: a changed length or alphabet in this code
            // must not regenerate every mailbox's initial password (an admin reset of all of them).
            ignoreChanges: parameters,
            // A renamed mailbox's password is the same resource under its new name: kept, not made anew.
            ...(spec.formerName ? { aliases: [{ name: spec.formerName }] } : {}),
        });

        /** An RSA 2048 key kept in the state; its private PEM is the secret's value. */
        const rsaKey = (spec: SecretSpec): tls.PrivateKey => {
            const key = new tls.PrivateKey(spec.name, { algorithm: "RSA", rsaBits: 2048 }, {
                ...optsFor(spec, ["algorithm", "rsaBits"]),
                additionalSecretOutputs: ["privateKeyPem", "privateKeyOpenssh", "privateKeyPemPkcs8"],
            });
            generated[spec.name] = key.privateKeyPem;
            return key;
        };

        for (const spec of specs) {
            switch (spec.kind) {
                case "password": {
                    const pw = new random.RandomPassword(spec.name, { length: 32, special: false }, optsFor(spec, ["length", "special"]));
                    generated[spec.name] = pw.result;
                    break;
                }
                case "dkim-rsa2048": {
                    const key = rsaKey(spec);
                    dkim[spec.name.slice(DKIM_SECRET_PREFIX.length)] = key.publicKeyPem.apply(dkimPublicKeyFromPem);
                    break;
                }
                case "tls-rsa2048": {
                    const key = rsaKey(spec);
                    tlsa[spec.name.slice(TLS_KEY_SECRET_PREFIX.length)] = key.publicKeyPem.apply(tlsaOfKey);
                    break;
                }
                default: {
                    const unknown: never = spec.kind;
                    throw new pulumi.ResourceError(`unknown secret kind ${String(unknown)}`, this);
                }
            }
        }

        const byName: Record<string, pulumi.Output<string>> = {};
        for (const [secretName, value] of Object.entries(generated)) byName[secretName] = pulumi.secret(value);
        for (const [name, value] of args.configuredSecrets) byName[name] = pulumi.secret(value);
        this.byName = byName;
        this.dkimPublicKeys = dkim;
        this.tlsa = tlsa;
        const generatedUsers = model.users.filter((u) => !u.passwordFromConfig);
        const admin = ADMIN_SECRETS.filter((name) => name in byName);
        this.adminSecrets = pulumi.secret(pulumi.all(admin.map((name) => byName[name])).apply((values) => Object.fromEntries(admin.map((name, i) => [name, values[i]]))));
        this.generatedUserPasswords = pulumi.secret(
            pulumi.all(generated).apply((g) => Object.fromEntries(generatedUsers.map((u) => [u.address, g[userPasswordSecret(u.address)]]))),
        );
        this.registerOutputs({ dkimPublicKeys: pulumi.all(dkim), tlsa: pulumi.all(tlsa) });
    }
}
