/**
 * The `tls` step: the one certificate every daemon reads, /etc/ispmail/tls/{fullchain,privkey}.pem.
 * Until the certbot step installs the ACME certificate there, a self-signed one for mailHost and
 * all web hosts fills the place, so Postfix, Dovecot and Apache can start with TLS from the first
 * apply. The script never replaces an existing certificate.
 */
import type { Model } from "../config";
import { readStatic } from "../templates";
import { STEP } from "./names";
import type { RenderContext, Service, StepBody } from "./service";

export const TLS_DIR = "/etc/ispmail/tls";
export const TLS_CERT = `${TLS_DIR}/fullchain.pem`;
export const TLS_KEY = `${TLS_DIR}/privkey.pem`;

/** The names the self-signed certificate covers: mailHost first, then every web host. */
export function certificateNames(model: Pick<Model, "mailHost">, webHosts: readonly string[]): string[] {
    return [...new Set([model.mailHost, ...webHosts])];
}

function render(model: Model, { webHosts }: RenderContext): StepBody {
    const names = certificateNames(model, webHosts);
    // Host names are validated FQDNs (letters, digits, hyphens, dots): safe inside single quotes.
    const sans = names.map((n) => `DNS:${n}`).join(",");
    return {
        description: "TLS: a self-signed certificate for mailHost and the web hosts until certbot installs the ACME one",
        // ssl-cert provides the group that may read private keys.
        packages: ["openssl", "ssl-cert"],
        files: [],
        script: [`ISPMAIL_TLS_SUBJECT='${model.mailHost}'`, `ISPMAIL_TLS_SANS='${sans}'`, readStatic("tls/apply.sh")].join("\n"),
    };
}

export const tls: Service = { name: STEP.tls, after: [STEP.base], render };
