/**
 * The foreign MTA (lab-only): mx.example.net, a Postfix for example.net that the ispmail server
 * delivers to and receives from, strict like a large provider. Its Rspamd (as a milter) checks
 * DKIM, SPF and DMARC of what it receives and records the verdicts in an Authentication-Results
 * header on each stored message (~rcpt/Maildir/new/); it enforces DMARC (p=reject is refused at
 * SMTP time, p=quarantine gets X-Spam) and DKIM-signs its own domain's mail. The lab host counts as
 * its users' network (mynetworks, Rspamd's local_addrs): mail the tests inject there is relayed and
 * signed like a logged-in user's, not judged as inbound. It is configured with the same Step
 * machinery as the server, so it is idempotent in the same way.
 */
import { generateKeyPairSync } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import type { Model } from "../components/config";
import { renderResolverStep } from "../components/services/resolver";
import type { Step } from "../components/steps";
import { readStatic } from "../components/templates";
import { ecP256PrivateKey, keptKey, labFile, labTemplate } from "./files";
import { LAB, PATHS } from "./lab";
import { labCaCertificate } from "./pebble";

export const FOREIGN_DKIM_SELECTOR = "lab";
const FOREIGN_DKIM_KEY_PATH = `/var/lib/rspamd/dkim/${LAB.foreignDomain}.${FOREIGN_DKIM_SELECTOR}.key`;

/** example.net's DKIM private key (PEM), generated once into .lab (0600), as a provider keeps one. */
export function ensureForeignDkimKey(): string {
    return keptKey(PATHS.foreignDkimKey, () => generateKeyPairSync("rsa", { modulusLength: 2048, privateKeyEncoding: { type: "pkcs1", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } }).privateKey);
}

/** mx.example.net's TLS private key (ECDSA P-256, PEM), made once into .lab: its TLSA record stays valid. */
export function ensureForeignTlsKey(): string {
    return keptKey(PATHS.foreignTlsKey, ecP256PrivateKey);
}

const FOREIGN_TLS_KEY_PATH = "/etc/postfix/tls/mx.key";
const FOREIGN_TLS_CERT_PATH = "/etc/postfix/tls/mx.crt";
/** The lab's MTA-STS domains (LAB.mtaSts), each with its MX. */
export const STS_DOMAINS = [LAB.mtaSts.ok, LAB.mtaSts.mismatch, LAB.mtaSts.dane];
/** Their policy hosts (https://mta-sts.<domain>/.well-known/mta-sts.txt). */
const STS_POLICY_HOSTS = STS_DOMAINS.map((d) => `mta-sts.${d.domain}`);

/**
 * The names the foreign guest serves with a certificate of the lab CA (for its TLS key), as a
 * provider's would come from a public CA: the MTA-STS policy hosts, and the MX name whose policy
 * verifies (Postfix picks that certificate by SNI).
 */
export const FOREIGN_WEB_NAMES = [...STS_POLICY_HOSTS, LAB.mtaSts.ok.mx];

/** Makes the lab CA's certificate for FOREIGN_WEB_NAMES (once, or when the names change). */
export async function ensureForeignWebCertificate(): Promise<void> {
    ensureForeignTlsKey();
    await labCaCertificate(PATHS.foreignTlsKey, FOREIGN_WEB_NAMES.map((n) => `DNS:${n}`), PATHS.foreignWebCert);
}

function foreignWebCertificate(): string {
    if (!existsSync(PATHS.foreignWebCert)) throw new Error(`${PATHS.foreignWebCert} is missing: \`npm run lab\` makes it (ensureForeignWebCertificate)`);
    return readFileSync(PATHS.foreignWebCert, "utf8");
}

/** An MTA-STS policy in enforce mode for one MX (RFC 8461, section 3.2: CRLF-separated lines). */
export function stsPolicy(mx: string): string {
    return ["version: STSv1", "mode: enforce", `mx: ${mx}`, "max_age: 86400", ""].join("\r\n");
}

/**
 * The foreign MTA's steps. `resolver`: the lab world's resolver settings (the lab stack's
 * ispmail:resolver: the lab DNS as forwarder, the lab zones' trust anchors); the foreign MTA
 * validates through its own unbound like the server, so that it can send with DANE.
 */
export function renderForeignMtaSteps(
    resolver: Model["resolver"],
    dkimKeyPem: string = ensureForeignDkimKey(),
    tlsKeyPem: string = ensureForeignTlsKey(),
    webCertPem: string = foreignWebCertificate(),
): Step[] {
    const view = {
        fqdn: LAB.foreign.fqdn,
        domain: LAB.foreignDomain,
        user: LAB.foreignUser,
        labHostIpv4: LAB.host.ipv4,
        labHostIpv6: LAB.host.ipv6,
        dkimSelector: FOREIGN_DKIM_SELECTOR,
        dkimKeyPath: FOREIGN_DKIM_KEY_PATH,
        tlsKeyPath: FOREIGN_TLS_KEY_PATH,
        tlsCertPath: FOREIGN_TLS_CERT_PATH,
        stsDomains: STS_DOMAINS.map((d) => d.domain).join(" "),
        webNames: STS_POLICY_HOSTS.join(" "),
    };
    const rspamdLocal = (name: string) => ({ path: `/etc/rspamd/local.d/${name}`, content: labFile(`foreign/rspamd/${name}`) });
    const rspamdTemplate = (name: string) => ({ path: `/etc/rspamd/local.d/${name}`, content: labTemplate(`foreign/rspamd/${name}.mustache`, view) });
    return [
        { name: "foreign-resolver", ...renderResolverStep(resolver, LAB.foreignDomain), after: [] },
        {
            name: "foreign-mta",
            description: `Postfix for ${LAB.foreignDomain} with rspamd enforcing DMARC, recording verdicts and DKIM-signing`,
            // nginx: the MTA-STS policy hosts (https://mta-sts.<domain>/.well-known/mta-sts.txt).
            packages: ["postfix", "rspamd", "ssl-cert", "nginx"],
            // main.cf is ours: the package must not write one of its own.
            debconf: ["postfix postfix/main_mailer_type select No configuration", `postfix postfix/mailname string ${LAB.foreignDomain}`],
            files: [
                { path: "/etc/mailname", content: `${LAB.foreignDomain}\n` },
                { path: "/etc/postfix/main.cf", content: labTemplate("foreign/postfix/main.cf.mustache", view) },
                { path: "/etc/aliases", content: labTemplate("foreign/aliases.mustache", view) },
                rspamdLocal("milter_headers.conf"),
                rspamdLocal("actions.conf"),
                rspamdLocal("fuzzy_check.conf"),
                rspamdLocal("dmarc.conf"),
                rspamdTemplate("options.inc"),
                rspamdTemplate("dkim_signing.conf"),
                // Scores German (raw UTF-8) text as the ispmail server does: with Rspamd's defaults
                // the foreign MTA marked its own users' "Grüße aus Köln" as spam (X-Spam: Yes).
                { path: "/etc/rspamd/local.d/headers_group.conf", content: readStatic("rspamd/local.d/headers_group.conf") },
                { path: FOREIGN_DKIM_KEY_PATH, content: dkimKeyPem, owner: "_rspamd", group: "_rspamd", mode: "0600" },
                { path: FOREIGN_TLS_KEY_PATH, content: tlsKeyPem, mode: "0600" },
                // The lab CA's certificate for the key: nginx serves it, and Postfix to a client
                // that asks for the verified MX name (SNI; key first, then the certificate).
                { path: "/etc/nginx/mta-sts.crt", content: webCertPem, mode: "0644" },
                { path: "/etc/nginx/conf.d/mta-sts.conf", content: labTemplate("foreign/nginx/mta-sts.conf.mustache", view) },
                ...STS_DOMAINS.map((d) => ({ path: `/srv/mta-sts/mta-sts.${d.domain}/.well-known/mta-sts.txt`, content: stsPolicy(d.mx), mode: "0644" })),
                { path: "/etc/postfix/tls/sni.pem", content: tlsKeyPem + webCertPem, mode: "0600" },
                { path: "/etc/postfix/sni", content: `${LAB.mtaSts.ok.mx} /etc/postfix/tls/sni.pem\n`, mode: "0644" },
            ],
            script: `
if ! id ${LAB.foreignUser} >/dev/null 2>&1; then
  useradd --create-home --shell /usr/sbin/nologin ${LAB.foreignUser}
  ispmail_action "created user ${LAB.foreignUser}"
fi
if changed /etc/aliases || [ ! -f /etc/aliases.db ]; then
  newaliases
  ispmail_action "rebuilt /etc/aliases.db"
fi
if changed /etc/rspamd/local.d ${FOREIGN_DKIM_KEY_PATH}; then
  rspamadm configtest >&2
  restart rspamd
fi
# A self-signed certificate for the lab's key: DANE-EE (TLSA 3 1 1) pins the key, not a CA.
if changed ${FOREIGN_TLS_KEY_PATH} || [ ! -s ${FOREIGN_TLS_CERT_PATH} ]; then
  openssl req -x509 -new -key ${FOREIGN_TLS_KEY_PATH} -subj "/CN=${LAB.foreign.fqdn}" -addext "subjectAltName=DNS:${LAB.foreign.fqdn},DNS:${LAB.daneMismatch.mx}" -days 3650 -out ${FOREIGN_TLS_CERT_PATH} 2>/dev/null
  ispmail_action "made the TLS certificate"
  mark_pending postfix
fi
# -F: the map holds the files' contents, so Postfix's chrooted smtpd can use them.
if changed /etc/postfix/sni /etc/postfix/tls/sni.pem || [ ! -s /etc/postfix/sni.db ]; then
  postmap -F hash:/etc/postfix/sni
  ispmail_action "built /etc/postfix/sni.db"
  mark_pending postfix
fi
systemctl enable --quiet postfix
reload_when_changed postfix /etc/postfix /etc/mailname -- postfix check
systemctl enable --quiet nginx
reload_when_changed nginx /etc/nginx/conf.d/mta-sts.conf /etc/nginx/mta-sts.crt /srv/mta-sts -- nginx -t -q
`,
            after: ["foreign-resolver"],
        },
    ];
}
