/**
 * The `web` step: Apache 2.4 with PHP 8.4-FPM serving every web name of the server over HTTPS
 * (the groupware host, mta-sts.<domain>, autoconfig.<domain>), port 80 only for ACME challenges
 * and redirects, and the database admin (`ispmail:dbAdmin`: phpPgAdmin, Adminer or none; ./dbadmin.ts)
 * on the loopback interface only.
 *
 * Config files are real files under files/apache, files/autoconfig; this module fills in the
 * names. The certificate is the convention's /etc/ispmail/tls pair (tls step, then certbot).
 */
import type { Model } from "../config";
import { mtaStsPolicy } from "../dns/mta-sts";
import { ACME_WEBROOT, NEXTCLOUD_ROOT } from "../paths";
import { shellAssignments } from "../shell";
import type { StepFile } from "../steps";
import { readStatic, renderTemplate } from "../templates";
import { DB_ADMIN_APPS, DB_ADMIN_GLOBAL_CONFS, DB_ADMIN_PORT, DB_ADMIN_ROOT, dbAdminFiles, dbAdminPackages, renderDbAdminSite } from "./dbadmin";
import { STEP } from "./names";
import { WEBMAIL_ROOT } from "./webmail";
import type { PublicPort, RenderContext, Service, StepBody } from "./service";

/** The ports Apache serves to the internet (the firewall, `check` and the SRV records are made from them). */
const WEB_PORTS: readonly PublicPort[] = [
    { port: 80, name: "HTTP", description: "HTTP: ACME http-01 challenges and redirects to HTTPS", daemon: "apache2" },
    { port: 443, name: "HTTPS", description: "HTTPS: webmail, groupware, MTA-STS policy, autoconfig", daemon: "apache2", implicitTls: true },
];

export { ACME_WEBROOT };
/** Static page for the groupware host while Nextcloud is disabled. */
export const PLACEHOLDER_ROOT = "/var/www/ispmail";
export const MTA_STS_ROOT = "/var/www/mta-sts";
export const AUTOCONFIG_ROOT = "/var/www/autoconfig";
export { DB_ADMIN_PORT, DB_ADMIN_ROOT };

export const MTA_STS_POLICY_PATH = `${MTA_STS_ROOT}/.well-known/mta-sts.txt`;
export const AUTOCONFIG_XML_PATH = `${AUTOCONFIG_ROOT}/mail/config-v1.1.xml`;
export const AUTODISCOVER_PHP_PATH = `${AUTOCONFIG_ROOT}/autodiscover/autodiscover.php`;

const APACHE_SITES = "/etc/apache2/sites-available";

/** The names on mta-sts.<domain>, one per mail domain. */
export const mtaStsHosts = (model: Pick<Model, "domains">) => model.domains.map((d) => `mta-sts.${d}`);
/** The names on autoconfig.<domain>, one per mail domain. */
export const autoconfigHosts = (model: Pick<Model, "domains">) => model.domains.map((d) => `autoconfig.${d}`);

/** Thunderbird's autoconfig file (IMAP 993 TLS, SMTP 465 TLS and 587 STARTTLS, login = address). */
export function renderAutoconfigXml(model: Pick<Model, "mailHost" | "domains">): string {
    return renderTemplate("autoconfig/config-v1.1.xml.mustache", { mailHost: model.mailHost, domains: model.domains });
}

/** Outlook's autodiscover responder (PHP), naming the same servers as the autoconfig file. */
export function renderAutodiscoverPhp(model: Pick<Model, "mailHost" | "domains">): string {
    // Domains are validated FQDNs (letters, digits, dots, hyphens): safe inside PHP single quotes.
    const domainsPhp = model.domains.map((d) => `'${d}'`).join(", ");
    return renderTemplate("autoconfig/autodiscover.php.mustache", { mailHost: model.mailHost, domainsPhp });
}

interface ApacheSite {
    readonly name: string;
    readonly content: string;
}

/** The Apache sites (vhosts) of the stack, in load order: the first *:443 one is the default. */
export function renderApacheSites(model: Model, webHosts: readonly string[]): ApacheSite[] {
    const groupwareHost = model.nextcloud.host;
    const sites: ApacheSite[] = [
        {
            name: "ispmail-00-http",
            content: renderTemplate("apache/sites/ispmail-00-http.conf.mustache", {
                mailHost: model.mailHost,
                aliases: webHosts.filter((h) => h !== model.mailHost),
                acmeWebroot: ACME_WEBROOT,
            }),
        },
        {
            name: "ispmail-10-groupware",
            content: renderTemplate("apache/sites/ispmail-10-groupware.conf.mustache", {
                host: groupwareHost,
                nextcloud: model.nextcloud.enabled ? { docroot: NEXTCLOUD_ROOT } : false,
                placeholderRoot: PLACEHOLDER_ROOT,
            }),
        },
    ];
    if (model.webmail.enabled) {
        sites.push({ name: "ispmail-15-webmail", content: renderTemplate("apache/sites/ispmail-15-webmail.conf.mustache", { host: model.webmail.host, docroot: WEBMAIL_ROOT }) });
    }
    if (groupwareHost !== model.mailHost) {
        sites.push({
            name: "ispmail-20-mailhost",
            content: renderTemplate("apache/sites/ispmail-20-mailhost.conf.mustache", { mailHost: model.mailHost, placeholderRoot: PLACEHOLDER_ROOT }),
        });
    }
    const [firstSts, ...otherSts] = mtaStsHosts(model);
    sites.push({
        name: "ispmail-30-mta-sts",
        content: renderTemplate("apache/sites/ispmail-30-mta-sts.conf.mustache", { first: firstSts, aliases: otherSts, docroot: MTA_STS_ROOT }),
    });
    const [firstAuto, ...otherAuto] = autoconfigHosts(model);
    sites.push({
        name: "ispmail-40-autoconfig",
        content: renderTemplate("apache/sites/ispmail-40-autoconfig.conf.mustache", { first: firstAuto, aliases: otherAuto, docroot: AUTOCONFIG_ROOT }),
    });
    const dbAdmin = renderDbAdminSite(model);
    if (dbAdmin) sites.push(dbAdmin);
    return sites;
}

function placeholderPage(model: Model, host: string, reason: string): string {
    return renderTemplate("apache/placeholder.html.mustache", { host, domainList: model.domains.join(", "), reason });
}

const file = (path: string, content: string, extra: Partial<StepFile> = {}): StepFile => ({ path, content, owner: "root", group: "root", mode: "0644", ...extra });

function render(model: Model, { webHosts }: RenderContext): StepBody {
    const sites = renderApacheSites(model, webHosts);
    const files: StepFile[] = [
        file("/etc/apache2/conf-available/ispmail.conf", readStatic("apache/ispmail.conf")),
        file("/etc/apache2/ispmail/https-vhost.conf", readStatic("apache/https-vhost.conf")),
        ...sites.map((s) => file(`${APACHE_SITES}/${s.name}.conf`, s.content)),
        file(
            `${PLACEHOLDER_ROOT}/index.html`,
            placeholderPage(model, model.nextcloud.enabled ? model.mailHost : model.nextcloud.host, "Webmail and calendars are not offered here; use your mail client (IMAP and SMTP on this host)."),
        ),
        file(MTA_STS_POLICY_PATH, mtaStsPolicy(model).text),
        file(AUTOCONFIG_XML_PATH, renderAutoconfigXml(model)),
        file(AUTODISCOVER_PHP_PATH, renderAutodiscoverPhp(model)),
        ...dbAdminFiles(model),
    ];
    const script = [
        shellAssignments({ WEB_SITES: sites.map((s) => s.name).join(" "), ACME_WEBROOT, DB_ADMIN_CONFS: DB_ADMIN_GLOBAL_CONFS.join(" ") }),
        readStatic("apache/apply.sh"),
    ].join("\n");
    return {
        description: `Apache 2.4 + PHP 8.4-FPM: HTTPS vhosts (groupware, MTA-STS, autoconfig/autodiscover), ACME webroot, ${
            model.dbAdmin === "none" ? "no database admin" : `loopback-only ${DB_ADMIN_APPS[model.dbAdmin].title}`
        }`,
        // php8.4-xml: SimpleXML for the autodiscover responder; php8.4-pgsql: the database admin on
        // PostgreSQL; php8.4-cli: `php -l` checks. The admin's package comes last: phppgadmin and
        // adminer depend on "libapache2-mod-php | php-cgi | php-fpm", and apt satisfies that with the
        // php8.4-fpm (Provides: php-fpm) already installed or in the same request, instead of pulling
        // in mod_php, which would need the prefork MPM.
        packages: ["apache2", "ssl-cert", "php8.4-fpm", "php8.4-cli", "php8.4-xml", "php8.4-pgsql", "php-pgsql", ...dbAdminPackages(model)],
        files,
        script,
    };
}

export const web: Service = {
    name: STEP.web,
    after: [STEP.base, STEP.tls],
    // Mail flows without it (senders fetch MTA-STS policies later and cache them).
    background: true,
    publicPorts: WEB_PORTS,
    // The groupware host (Nextcloud or its placeholder page), then each mail domain's MTA-STS and
    // autoconfig names.
    webNames: (model) => [model.nextcloud.host, ...model.domains.flatMap((d) => [`mta-sts.${d}`, `autoconfig.${d}`])],
    render,
};
