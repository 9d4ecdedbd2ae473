/**
 * The `tls` step: the one certificate every daemon reads, /etc/ispmail/tls/{fullchain,privkey}.pem.
 * Until the certbot step installs the ACME certificate there, a self-signed one for mailHost and
 * all web hosts fills the place, so Postfix, Dovecot and Apache can start with TLS from the first
 * apply. The script never replaces an existing certificate.
 */
import type { Model } from "../config";
import type { Step } from "../steps";
import { readStatic } from "../templates";

export const TLS_STEP = "tls";
export const TLS_DIR = "/etc/ispmail/tls";
export const TLS_CERT = `${TLS_DIR}/fullchain.pem`;
export const TLS_KEY = `${TLS_DIR}/privkey.pem`;

/** The names the self-signed certificate covers: mailHost first, then every web host. */
export function certificateNames(model: Model): string[] {
    return [...new Set([model.mailHost, ...model.webHosts])];
}

export function renderTlsSteps(model: Model): Step[] {
    const names = certificateNames(model);
    // Host names are validated FQDNs (letters, digits, hyphens, dots): safe inside single quotes.
    const sans = names.map((n) => `DNS:${n}`).join(",");
    return [
        {
            name: TLS_STEP,
            description: "TLS: a self-signed certificate for mailHost and the web hosts until certbot installs the ACME one",
            // ssl-cert provides the group that may read private keys.
            packages: ["openssl", "ssl-cert"],
            files: [],
            script: [`ISPMAIL_TLS_SUBJECT='${model.mailHost}'`, `ISPMAIL_TLS_SANS='${sans}'`, readStatic("tls/self-signed.sh")].join("\n"),
            after: ["base"],
        },
    ];
}
