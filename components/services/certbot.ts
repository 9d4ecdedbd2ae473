/**
 * The `certbot` step: one ACME certificate (lineage `ispmail`) for mailHost and every web name,
 * obtained with certbot from Debian through the web step's webroot (http-01), from the ACME
 * directory of the stack (Let's Encrypt in real stacks, the lab's pebble in the lab).
 *
 * The deploy hook puts it where every daemon reads it (/etc/ispmail/tls) and reloads Postfix,
 * Dovecot and Apache; Debian's certbot.timer renews it. The step asks the CA for a certificate only
 * when there is none with exactly the wanted names from the configured server (idempotent).
 */
import type { Model } from "../config";
import { ACME_WEBROOT } from "../paths";
import { shellAssignments } from "../shell";
import { readStatic } from "../templates";
import { ALERT_ON_FAILURE } from "./base";
import { STEP } from "./names";
import type { RenderContext, Service, StepBody } from "./service";

/** certbot's lineage name: /etc/letsencrypt/live/ispmail. */
export const CERT_NAME = "ispmail";
export const DEPLOY_HOOK_PATH = "/etc/letsencrypt/renewal-hooks/deploy/ispmail";

/** The certificate's names (SANs): mailHost and every web host, each once, sorted. */
export function certificateDomains(model: Pick<Model, "mailHost">, webHosts: readonly string[]): string[] {
    return [...new Set([model.mailHost, ...webHosts])].sort();
}

function render(model: Model, { webHosts }: RenderContext): StepBody {
    const script = [
        shellAssignments({
            CERT_NAME,
            CERT_DOMAINS: certificateDomains(model, webHosts).join(" "),
            ACME_SERVER: model.acme.directoryUrl,
            ACME_EMAIL: model.adminEmail,
            ACME_WEBROOT,
            DEPLOY_HOOK: DEPLOY_HOOK_PATH,
        }),
        readStatic("certbot/apply.sh"),
    ].join("\n");
    return {
        description: `ACME certificate "${CERT_NAME}" for ${certificateDomains(model, webHosts).length} names from ${model.acme.directoryUrl}, installed into /etc/ispmail/tls`,
        // openssl: reading the current certificate's names; ssl-cert: the group of the private key.
        packages: ["certbot", "openssl", "ssl-cert"],
        files: [
            { path: DEPLOY_HOOK_PATH, content: readStatic("certbot/deploy-hook.sh"), owner: "root", group: "root", mode: "0755" },
            // A failed renewal (certbot.service, from Debian's certbot.timer) mails the administrator.
            { path: "/etc/systemd/system/certbot.service.d/ispmail-alert.conf", content: ALERT_ON_FAILURE, owner: "root", group: "root", mode: "0644" },
        ],
        script,
    };
}

export const certbot: Service = { name: STEP.certbot, after: [STEP.web], render };
