/**
 * The `certbot` step: one ACME certificate for mailHost and every web name, for the key the stack
 * generated (the first of ispmail:tlsKeys), obtained with certbot from Debian through
 * the web step's webroot (http-01) from the ACME directory of the stack (Let's Encrypt in real
 * stacks, the lab's pebble in the lab).
 *
 * The key (installed by the tls step, /etc/ispmail/certificate/key.pem) comes from the stack
 * rather than from certbot so that its TLSA record (DANE, published
 * by components/dns) is known before the server exists and stays valid across renewals and server
 * replacements. certbot cannot manage a lineage for a given key, so /usr/local/sbin/ispmail-certificate
 * requests certificates for a CSR and renews them itself (ispmail-certificate.timer), installing
 * them into /etc/ispmail/tls and reloading Postfix, Dovecot and Apache. Idempotent: it asks the CA
 * only when there is no certificate from this server for exactly these names and this key, or it
 * expires within 30 days.
 */
import type { Model } from "../config";
import { ACME_WEBROOT } from "../paths";
import { stepLockPath, type StepFile } from "../steps";
import { shellAssignments } from "../shell";
import { readStatic } from "../templates";
import { STEP } from "./names";
import { CERTIFICATE_KEY } from "./tls";
import type { RenderContext, Service, StepBody } from "./service";

export const CERTIFICATE_SCRIPT = "/usr/local/sbin/ispmail-certificate";
export const CERTIFICATE_CONF = "/etc/ispmail/certificate.conf";
const UNIT_DIR = "/etc/systemd/system";

/** The certificate's names (SANs): mailHost and every web host, each once, sorted. */
export function certificateDomains(model: Pick<Model, "mailHost">, webHosts: readonly string[]): string[] {
    return [...new Set([model.mailHost, ...webHosts])].sort();
}

/** The daemons that read the certificate, each with the step that configures it (whose lock the reload takes). */
const RELOADED: readonly (readonly [unit: string, step: string])[] = [
    ["postfix", STEP.postfix],
    ["dovecot", STEP.dovecot],
    ["apache2", STEP.web],
];

function render(model: Model, { webHosts }: RenderContext): StepBody {
    const domains = certificateDomains(model, webHosts);
    const conf = shellAssignments({
        CERT_CN: model.mailHost,
        CERT_DOMAINS: domains.join(" "),
        ACME_SERVER: model.acme.directoryUrl,
        ACME_EMAIL: model.adminEmail,
        ACME_WEBROOT,
        KEY: CERTIFICATE_KEY,
        // Which of ispmail:tlsKeys the installed key is: moving another key first changes this file,
        // so the step runs again and asks for a certificate of the new key right after the tls step.
        KEY_NAME: model.tlsKeys[0],
        RELOADS: RELOADED.map(([unit, step]) => `${unit}=${stepLockPath(step)}`).join(" "),
    });
    const file = (path: string, content: string, mode = "0644"): StepFile => ({ path, content, owner: "root", group: "root", mode });
    return {
        description: `ACME certificate for ${domains.length} names with TLS key ${model.tlsKeys[0]} from ${model.acme.directoryUrl}, installed into /etc/ispmail/tls`,
        // openssl: the CSR and the checks of the installed certificate; ssl-cert: the key's group.
        packages: ["certbot", "openssl", "ssl-cert"],
        files: [
            file(CERTIFICATE_CONF, `# ispmail-certificate's settings (the certbot step renders them).\n${conf}\n`),
            file(CERTIFICATE_SCRIPT, readStatic("certbot/ispmail-certificate.sh"), "0755"),
            file(`${UNIT_DIR}/ispmail-certificate.service`, readStatic("certbot/ispmail-certificate.service")),
            file(`${UNIT_DIR}/ispmail-certificate.timer`, readStatic("certbot/ispmail-certificate.timer")),
        ],
        script: readStatic("certbot/apply.sh"),
    };
}

// Mail does not wait for the CA: Postfix and Dovecot start with the tls step's certificate.
export const certbot: Service = { name: STEP.certbot, after: [STEP.web], background: true, render };
