/**
 * The `tls` step: the certificate's key and, until the certbot step installs the ACME certificate,
 * a self-signed certificate for it, so Postfix, Dovecot and Apache start with TLS from the first
 * apply.
 *
 * The key is the stack's (the first of ispmail:tlsKeys, a `tls.PrivateKey` in Pulumi): its TLSA
 * record (DANE) is published before the server exists, so even the stopgap certificate matches it
 * and a DANE sender delivers from the first minute. The script never replaces an existing
 * certificate (the certbot step's ispmail-certificate does, on a key change too).
 */
import type { Model } from "../config";
import { tlsKeySecret, type SecretSpec } from "../secrets";
import { secretRef } from "../steps";
import { shellAssignments } from "../shell";
import { readStatic } from "../templates";
import { STEP } from "./names";
import type { RenderContext, Service, StepBody } from "./service";

export const TLS_DIR = "/etc/ispmail/tls";
export const TLS_CERT = `${TLS_DIR}/fullchain.pem`;
export const TLS_KEY = `${TLS_DIR}/privkey.pem`;
/** The key the certificate carries: the first of ispmail:tlsKeys (root only; copied to TLS_KEY with its certificate). */
export const CERTIFICATE_KEY = "/etc/ispmail/certificate/key.pem";

/** The names the self-signed certificate covers: mailHost first, then every web host. */
export function certificateNames(model: Pick<Model, "mailHost">, webHosts: readonly string[]): string[] {
    return [...new Set([model.mailHost, ...webHosts])];
}

/** Every listed TLS key is kept by the stack (its TLSA is published); the first is installed. */
function secrets(model: Model): SecretSpec[] {
    return model.tlsKeys.map((key, i) => ({
        name: tlsKeySecret(key),
        kind: "tls-rsa2048",
        description: `TLS key ${key} of the server's certificate${i === 0 ? " (in use)" : " (published as TLSA for a rollover)"}`,
        stateful: true,
    }));
}

function render(model: Model, { webHosts }: RenderContext): StepBody {
    const names = certificateNames(model, webHosts);
    return {
        description: `TLS: the certificate key ${model.tlsKeys[0]}, with a self-signed certificate for mailHost and the web hosts until certbot installs the ACME one`,
        // ssl-cert provides the group that may read private keys.
        packages: ["openssl", "ssl-cert"],
        files: [{ path: CERTIFICATE_KEY, content: secretRef(tlsKeySecret(model.tlsKeys[0])), owner: "root", group: "root", mode: "0600", secret: true }],
        script: [
            shellAssignments({ ISPMAIL_TLS_SUBJECT: model.mailHost, ISPMAIL_TLS_SANS: names.map((n) => `DNS:${n}`).join(","), ISPMAIL_TLS_CONFIGURED_KEY: CERTIFICATE_KEY }),
            readStatic("tls/apply.sh"),
        ].join("\n"),
    };
}

export const tls: Service = { name: STEP.tls, after: [STEP.base], secrets, render };
