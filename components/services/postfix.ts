/**
 * The `postfix` step: Postfix 3.10 as the MTA — virtual domains, mailboxes and aliases from the
 * directory's PostgreSQL views, delivery to Dovecot over LMTP, SMTP AUTH through Dovecot on
 * submission (587, STARTTLS) and submissions (465, implicit TLS) only, sender ownership checks,
 * the Rspamd milter and header cleanup of submitted mail.
 *
 * Config files: files/postfix (main.cf template, master.cf, pgsql maps, header checks, apply.sh).
 */
import type { Model } from "../config";
import { DB_ROLES, dbPasswordSecret } from "../secrets";
import type { StepFile } from "../steps";
import { secretRef } from "../steps";
import { readStatic, renderTemplate } from "../templates";
import { STEP } from "./names";
import { MILTER_ADDRESS } from "./rspamd";
import { TLS_POLICY_MAPS } from "./tls-policy";
import type { PublicPort, Service, StepBody } from "./service";

/** The ports Postfix serves to the internet (the firewall, `check` and the SRV records are made from them). */
const POSTFIX_PORTS: readonly PublicPort[] = [
    { port: 25, name: "SMTP", description: "SMTP from other mail servers", daemon: "postfix" },
    { port: 465, name: "submissions", description: "SMTP submission over implicit TLS (RFC 8314)", daemon: "postfix", implicitTls: true, srv: "_submissions._tcp" },
    { port: 587, name: "submission", description: "SMTP submission with STARTTLS", daemon: "postfix", srv: "_submission._tcp" },
];

/**
 * debconf answers set before Postfix is installed: "No configuration", or Debian's postinst would
 * write its own main.cf on first install. This step is the only one that answers Postfix's questions.
 */
export function postfixPreseed(model: Pick<Model, "mailHost">): string[] {
    return [`postfix postfix/main_mailer_type select No configuration`, `postfix postfix/mailname string ${model.mailHost}`];
}

/** The pgsql lookup tables (each holds the mailreader password). */
export const PGSQL_MAPS = ["pgsql-virtual-mailbox-domains", "pgsql-virtual-mailbox-maps", "pgsql-virtual-alias-maps", "pgsql-sender-login-maps"] as const;

export const messageSizeLimitBytes = (model: Model) => model.messageSizeLimitMb * 1024 * 1024;

export function renderMainCf(model: Model): string {
    return renderTemplate("postfix/main.cf.mustache", {
        mailHost: model.mailHost,
        // The host's own name is a local destination (root@mailHost -> /etc/aliases), unless it is
        // also a mail domain: Postfix refuses a domain that is both local and virtual.
        mailHostIsLocal: !model.mailHostIsMailDomain,
        messageSizeLimitMb: model.messageSizeLimitMb,
        messageSizeLimitBytes: messageSizeLimitBytes(model),
        dnsblSites: model.spamhausDqs ? "" : POSTSCREEN_DNSBL_SITES.join(", "),
        tlsPolicyMaps: TLS_POLICY_MAPS.join(", "),
        milterAddress: MILTER_ADDRESS,
    });
}

/**
 * postscreen's blocklists and weights (threshold 3): Spamhaus ZEN's SBL, CSS and XBL answers reach
 * it alone, its PBL answers add 1. Without a DQS key only: main.cf is world-readable.
 */
export const POSTSCREEN_DNSBL_SITES = ["zen.spamhaus.org=127.0.0.[2..7]*3", "zen.spamhaus.org=127.0.0.[10..11]*1"] as const;

export function renderPgsqlMap(name: (typeof PGSQL_MAPS)[number]): string {
    return renderTemplate(`postfix/${name}.cf.mustache`, { password: secretRef(dbPasswordSecret(DB_ROLES.reader)) });
}

function render(model: Model): StepBody {
    const files: StepFile[] = [
        { path: "/etc/postfix/main.cf", content: renderMainCf(model), mode: "0644" },
        { path: "/etc/postfix/master.cf", content: readStatic("postfix/master.cf"), mode: "0644" },
        { path: "/etc/postfix/submission_header_cleanup", content: readStatic("postfix/submission_header_cleanup"), mode: "0644" },
        { path: "/etc/postfix/non-ascii-sender.regexp", content: readStatic("postfix/non-ascii-sender.regexp"), mode: "0644" },
        { path: "/etc/aliases", content: renderTemplate("postfix/aliases.mustache", { adminEmail: model.adminEmail }), mode: "0644" },
        // SRS for forwards (sender_canonical_maps): every mail domain is ours and stays as it is.
        { path: "/etc/default/postsrsd", content: renderTemplate("postfix/postsrsd.mustache", { mailHost: model.mailHost, excludeDomains: model.domains.join(",") }), mode: "0644" },
        // Readable by the postfix group only: proxymap reads them, nobody else needs the password.
        ...PGSQL_MAPS.map((name) => ({ path: `/etc/postfix/${name}.cf`, content: renderPgsqlMap(name), owner: "root", group: "postfix", mode: "0640", secret: true })),
    ];
    return {
        description: "Postfix: MTA on 25, submission on 587/465, virtual users from PostgreSQL, LMTP to Dovecot, Rspamd milter",
        debconf: postfixPreseed(model),
        packages: ["postfix", "postfix-pgsql", "postsrsd"],
        files,
        script: readStatic("postfix/apply.sh"),
    };
}

export const postfix: Service = { name: STEP.postfix, after: [STEP.directory, STEP.tls, STEP.rspamd, STEP.tlsPolicy], publicPorts: POSTFIX_PORTS, render };
