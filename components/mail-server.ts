/**
 * `ispmail:index:MailServer`: the whole stack as one component.
 *
 *   config model ──► GeneratedSecrets (passwords, DKIM keys)
 *                ──► Host (primary IPs, firewall, server, volume, rDNS, "machine ready")
 *                ──► MailDns (every record, from the host's addresses and the DKIM public keys)
 *                ──► ServerConfig (one command per step of renderServerSteps(model, facts); only the
 *                    dkim-signer step waits for the DKIM records' ages, components/dkim.ts)
 */
import * as pulumi from "@pulumi/pulumi";
import { Host } from "./cloud/host";
import type { ConfiguredSecrets, Model } from "./config";
import { MailDns } from "./dns/cloudflare";
import type { DnsRecord } from "./dns/records";
import { GeneratedSecrets } from "./generated-secrets";
import { planDkimSigning, selectorPublishedAt, type DkimSigningPlan } from "./dkim";
import { ServerConfig, type DeferredStep } from "./remote";
import { factStepCandidates, publicPorts, renderServerSteps, settledFacts, type Service } from "./services";
import type { Step } from "./steps";
import { componentType } from "./component-types";

export interface MailServerArgs {
    readonly model: Model;
    readonly configuredSecrets: ConfiguredSecrets;
    /** The steps to apply; renderServerSteps(model, ...) unless a test gives its own. */
    readonly steps?: readonly Step[];
    /** The services (components/services SERVICES unless a test gives its own list). */
    readonly services?: readonly Service[];
    /** The clock the DKIM rotation gate reads (tests set it). */
    readonly now?: () => Date;
}

export interface ClientSettings {
    readonly username: string;
    readonly imap: { readonly host: string; readonly port: number; readonly security: "TLS" };
    readonly smtp: { readonly host: string; readonly port: number; readonly security: "TLS" };
    readonly smtpStartTls: { readonly host: string; readonly port: number; readonly security: "STARTTLS" };
    readonly manageSieve: { readonly host: string; readonly port: number; readonly security: "STARTTLS" };
}

/** What a mail client needs (RFC 8314: implicit TLS first), from the services' public ports. */
export function clientSettings(model: Model): ClientSettings {
    const host = model.mailHost;
    const ports = publicPorts(model);
    const port = (name: string) => {
        const found = ports.find((p) => p.name === name);
        if (!found) throw new Error(`no public port named ${name}`);
        return found.port;
    };
    return {
        username: "the full e-mail address",
        imap: { host, port: port("IMAPS"), security: "TLS" },
        smtp: { host, port: port("submissions"), security: "TLS" },
        smtpStartTls: { host, port: port("submission"), security: "STARTTLS" },
        manageSieve: { host, port: port("ManageSieve"), security: "STARTTLS" },
    };
}

export function beforeFirstUse(model: Pick<Model, "mailHost" | "dns">): string {
    return [
        `Before first use of ${model.mailHost}:`,
        "1. New Hetzner Cloud accounts have outbound port 25 (and 465) blocked: ask Hetzner support to unblock it after the first paid invoice, or no mail leaves the server.",
        `2. Reverse DNS (PTR) of both addresses is set to ${model.mailHost} by this stack; check it with: dig -x <ipv4> +short`,
        "3. Each domain's zone must be active at Cloudflare (its registrar points to Cloudflare's name servers), or the records here are not seen.",
        "4. The certificate comes from Let's Encrypt once the A/AAAA records resolve; until then the server uses a self-signed one.",
        "5. Generated mailbox passwords: pulumi stack output --show-secrets userPasswords; the admins' (database admin as mailadmin, Rspamd's web interface, Nextcloud's admin, the backup repository): pulumi stack output --show-secrets adminSecrets",
        ...(model.dns.dnssec
            ? ["6. DNSSEC: give each zone's DS record (pulumi stack output dnssecDs) to its registrar; until then the zones are signed but not validated, and DANE senders do not check this server. `npm run check` says which zone's DS is missing."]
            : []),
    ].join("\n");
}

export class MailServer extends pulumi.ComponentResource {
    public readonly ipv4: pulumi.Output<string>;
    public readonly ipv6: pulumi.Output<string>;
    public readonly dnsRecords: pulumi.Output<DnsRecord[]>;
    /** Zone -> DS record for the registrar (empty when dns.dnssec is false). */
    public readonly dnssecDs: pulumi.Output<Record<string, string>>;
    public readonly userPasswords: pulumi.Output<Record<string, string>>;
    public readonly adminSecrets: pulumi.Output<Record<string, string>>;
    public readonly secrets: GeneratedSecrets;
    public readonly host: Host;
    public readonly dns: MailDns;
    public readonly config: ServerConfig;
    /** Which DKIM selector signs after this deployment, and why (components/dkim.ts). */
    public readonly dkimSigning: pulumi.Output<DkimSigningPlan>;

    constructor(name: string, args: MailServerArgs, opts?: pulumi.ComponentResourceOptions) {
        const [type, options] = componentType("MailServer", opts);
        super(type, name, {}, options);
        const { model, services } = args;
        this.secrets = new GeneratedSecrets("secrets", { model, configuredSecrets: args.configuredSecrets, services }, { parent: this });
        this.host = new Host("host", { model, services }, { parent: this });
        this.dns = new MailDns("dns", { model, ipv4: this.host.ipv4, ipv6: this.host.ipv6, dkimPublicKeys: this.secrets.dkimPublicKeys, services, sshHostKeys: [this.host.hostPublicKey], tlsa: this.secrets.tlsa }, { parent: this });

        // DKIM rotation: the signer is decided from how long each selector's records have been
        // public (Cloudflare's timestamps) and the config order. Only the steps that use the
        // deployment facts (dkim-signer) wait for that; the others are plain data known at preview.
        const now = args.now ?? (() => new Date());
        this.dkimSigning = this.dns.dkimPublishedAt.apply((times) => {
            const publishedAt = selectorPublishedAt(model, (name) => (times[name] ? new Date(times[name]) : undefined));
            const plan = planDkimSigning(model, publishedAt, now());
            if (plan.state === "settled" || model.dkimSelectors.length === 1) pulumi.log.info(plan.reason, this);
            else pulumi.log.warn(plan.reason, this);
            return plan;
        });
        const deferred: Record<string, DeferredStep> = {};
        for (const [name, bySigner] of factStepCandidates(model, services)) {
            // With one selector there is nothing to choose: the step is plain data, known at preview.
            if (bySigner.size > 1) deferred[name] = { candidates: [...bySigner.values()], chosen: this.dkimSigning.apply((plan) => bySigner.get(plan.selector)!) };
        }
        this.config = new ServerConfig(
            "config",
            {
                steps: args.steps ?? renderServerSteps(model, settledFacts(model), services),
                ...(args.steps ? {} : { deferred }),
                secrets: this.secrets.byName,
                connection: this.host.connection,
                serverId: this.host.serverId,
                machineReady: this.host.ready,
                // http-01 validation needs the names to resolve to this server first.
                extraDependsOn: { certbot: this.dns.addressRecords },
            },
            { parent: this },
        );
        this.ipv4 = this.host.ipv4;
        this.ipv6 = this.host.ipv6;
        this.dnsRecords = this.dns.records;
        this.dnssecDs = this.dns.dnssecDs;
        this.userPasswords = this.secrets.generatedUserPasswords;
        this.adminSecrets = this.secrets.adminSecrets;
        this.registerOutputs({ ipv4: this.ipv4, ipv6: this.ipv6 });
    }
}
