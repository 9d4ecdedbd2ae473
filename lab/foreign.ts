/**
 * The foreign MTA (lab-only): mx.example.net, a plain Postfix for example.net that the ispmail
 * server delivers to and receives from. It checks DKIM, SPF and DMARC of what it receives with
 * rspamd as a milter, which records the verdicts in an Authentication-Results header on each stored
 * message (~rcpt/Maildir/new/). It is configured with the same Step machinery as the server, so it
 * is idempotent in the same way.
 */
import type { Step } from "../components/steps";
import { labFile, labTemplate } from "./files";
import { LAB } from "./lab";

export function renderForeignMtaSteps(): Step[] {
    const view = {
        fqdn: LAB.foreign.fqdn,
        domain: LAB.foreignDomain,
        user: LAB.foreignUser,
        labHostIpv4: LAB.host.ipv4,
        labHostIpv6: LAB.host.ipv6,
    };
    const rspamdLocal = (name: string) => ({ path: `/etc/rspamd/local.d/${name}`, content: labFile(`foreign/rspamd/${name}`) });
    return [
        {
            name: "foreign-mta",
            description: `Postfix for ${LAB.foreignDomain} with rspamd recording DKIM/SPF/DMARC verdicts`,
            packages: ["postfix", "rspamd", "ssl-cert"],
            // main.cf is ours: the package must not write one of its own.
            debconf: ["postfix postfix/main_mailer_type select No configuration", `postfix postfix/mailname string ${LAB.foreignDomain}`],
            files: [
                { path: "/etc/mailname", content: `${LAB.foreignDomain}\n` },
                { path: "/etc/postfix/main.cf", content: labTemplate("foreign/postfix/main.cf.mustache", view) },
                { path: "/etc/aliases", content: labTemplate("foreign/aliases.mustache", view) },
                rspamdLocal("milter_headers.conf"),
                rspamdLocal("actions.conf"),
                rspamdLocal("fuzzy_check.conf"),
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
if changed /etc/rspamd/local.d; then
  rspamadm configtest >&2
  restart rspamd
fi
if changed /etc/postfix /etc/mailname; then
  postfix check
  systemctl enable --quiet postfix
  reload postfix
elif ! systemctl is-active --quiet postfix; then
  restart postfix
fi
`,
            after: [],
        },
    ];
}
