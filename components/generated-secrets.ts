/**
 * `ispmail:secrets:GeneratedSecrets`: every secret of {@link secretSpecs} as a resource, so that it
 * is generated once, kept (encrypted) in the Pulumi state and reused on every `up`.
 *
 * - "password" -> `random.RandomPassword` (32 letters and digits: safe in every config syntax);
 * - "dkim-rsa2048" -> `tls.PrivateKey` RSA 2048 (PEM, PKCS#1 as OpenDKIM/Rspamd read it).
 *
 * Resource names are the secret names (`db.mailreader`, `user:alice@example.org`, `dkim:s2026`), so
 * adding a user or a selector creates one resource and touches no other. Stateful secrets (DKIM
 * keys, the backup repository password) are `protect`ed in protected stacks and ignore changes of
 * their generation parameters, so a code change can never rotate them by accident.
 */
import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import * as tls from "@pulumi/tls";
import type { ConfiguredPasswords, Model } from "./config";
import { dkimPublicKeyFromPem, secretSpecs, userPasswordSecret, type SecretSpec } from "./secrets";

export interface GeneratedSecretsArgs {
    readonly model: Model;
    /** Passwords set in stack config (address -> password); provided under `user:<address>`. */
    readonly configuredPasswords: ConfiguredPasswords;
}

export class GeneratedSecrets extends pulumi.ComponentResource {
    /** Every secret value by name (generated and configured). */
    public readonly values: pulumi.Output<Record<string, string>>;
    /** selector -> base64 SPKI of the DKIM public key (public data). */
    public readonly dkimPublicKeys: pulumi.Output<Record<string, string>>;
    /** address -> password, for the users whose password was generated (secret; a stack output). */
    public readonly generatedUserPasswords: pulumi.Output<Record<string, string>>;
    /** The names `values` holds. */
    public readonly names: readonly string[];

    constructor(name: string, args: GeneratedSecretsArgs, opts?: pulumi.ComponentResourceOptions) {
        super("ispmail:secrets:GeneratedSecrets", name, {}, opts);
        const { model } = args;
        const specs = secretSpecs(model);
        const generated: Record<string, pulumi.Output<string>> = {};
        const dkim: Record<string, pulumi.Output<string>> = {};
        const optsFor = (spec: SecretSpec, parameters: string[]): pulumi.CustomResourceOptions => ({
            parent: this,
            protect: spec.stateful && model.protectState,
            ...(spec.stateful ? { ignoreChanges: parameters } : {}),
        });

        for (const spec of specs) {
            switch (spec.kind) {
                case "password": {
                    const pw = new random.RandomPassword(spec.name, { length: 32, special: false }, optsFor(spec, ["length", "special"]));
                    generated[spec.name] = pw.result;
                    break;
                }
                case "dkim-rsa2048": {
                    const key = new tls.PrivateKey(spec.name, { algorithm: "RSA", rsaBits: 2048 }, {
                        ...optsFor(spec, ["algorithm", "rsaBits"]),
                        additionalSecretOutputs: ["privateKeyPem", "privateKeyOpenssh", "privateKeyPemPkcs8"],
                    });
                    generated[spec.name] = key.privateKeyPem;
                    dkim[spec.name.slice("dkim:".length)] = key.publicKeyPem.apply(dkimPublicKeyFromPem);
                    break;
                }
                default: {
                    const unknown: never = spec.kind;
                    throw new pulumi.ResourceError(`unknown secret kind ${String(unknown)}`, this);
                }
            }
        }

        const configured: Record<string, string> = {};
        for (const [address, password] of args.configuredPasswords) configured[userPasswordSecret(address)] = password;
        this.names = [...specs.map((s) => s.name), ...Object.keys(configured)];

        this.values = pulumi.secret(pulumi.all(generated).apply((g) => ({ ...g, ...configured })));
        this.dkimPublicKeys = pulumi.all(dkim);
        const generatedUsers = model.users.filter((u) => !u.passwordFromConfig);
        this.generatedUserPasswords = pulumi.secret(
            pulumi.all(generated).apply((g) => Object.fromEntries(generatedUsers.map((u) => [u.address, g[userPasswordSecret(u.address)]]))),
        );
        this.registerOutputs({ dkimPublicKeys: this.dkimPublicKeys });
    }
}
