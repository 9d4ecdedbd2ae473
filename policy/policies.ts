/**
 * The stack's rules as a CrossGuard policy pack (`pulumi preview --policy-pack policy`): what must
 * hold for any stack of this program, checked by the engine on the resources as registered, so a
 * config or a code change that breaks one stops the preview in review instead of reaching the
 * server. Each policy is a plain object here (policy/index.ts puts them into the pack) so that the
 * unit tests can feed it a violating and a conforming resource (test/unit/policy.test.ts).
 *
 * Policy config (`--policy-pack-config`): `ispmail-protected-resources.protected` is false for the
 * disposable stacks (staging), as `ispmail:protect` is; the workflows pass it.
 */
import type { PolicyResource, ResourceValidationPolicy, StackValidationPolicy } from "@pulumi/policy";

const PRIMARY_IP = "hcloud:index/primaryIp:PrimaryIp";
const VOLUME = "hcloud:index/volume:Volume";
const PRIVATE_KEY = "tls:index/privateKey:PrivateKey";
const FIREWALL = "hcloud:index/firewall:Firewall";
const DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord";
const COMMAND = "command:remote:Command";

/** In protected stacks the addresses, the data volume and the DKIM keys cannot be deleted. */
export const protectedResources: ResourceValidationPolicy = {
    name: "ispmail-protected-resources",
    description: "In a protected stack the primary IPs, the data volume and the DKIM keys are protected (Pulumi protect, and Hetzner's delete protection).",
    enforcementLevel: "mandatory",
    configSchema: { properties: { protected: { type: "boolean", default: true } } },
    validateResource: (args, reportViolation) => {
        if (!args.getConfig<{ protected: boolean }>().protected) return;
        const hetzner = args.type === PRIMARY_IP || args.type === VOLUME;
        const dkimKey = args.type === PRIVATE_KEY && args.name.startsWith("dkim:");
        if (!hetzner && !dkimKey) return;
        if (!args.opts.protect) reportViolation(`${args.name} must be protected (protect: true): losing it loses mail, reputation or signatures.`);
        if (hetzner && args.props.deleteProtection !== true) reportViolation(`${args.name} must have Hetzner's delete protection on.`);
    },
};

/** Does a Hetzner firewall port spec ("22", "20-30", "any") include port 22? */
function includesSsh(port: unknown): boolean {
    if (port === undefined || port === "any") return true;
    const [from, to = from] = String(port).split("-").map(Number);
    return from <= 22 && 22 <= to;
}

/** SSH is never open to the whole internet: only `server.adminCidrs` reach port 22. */
export const sshNotWorldOpen: ResourceValidationPolicy = {
    name: "ispmail-ssh-not-world-open",
    description: "No firewall rule opens port 22 to 0.0.0.0/0 or ::/0.",
    enforcementLevel: "mandatory",
    validateResource: (args, reportViolation) => {
        if (args.type !== FIREWALL) return;
        for (const rule of (args.props.rules ?? []) as { direction?: string; protocol?: string; port?: string; sourceIps?: string[] }[]) {
            if (rule.direction !== "in" || rule.protocol !== "tcp" || !includesSsh(rule.port)) continue;
            const open = (rule.sourceIps ?? []).filter((ip) => ip === "0.0.0.0/0" || ip === "::/0");
            if (open.length) reportViolation(`firewall ${args.name}: port 22 is open to ${open.join(" and ")}; list the admin networks in ispmail:server.adminCidrs instead.`);
        }
    },
};

/** Mail needs the server's own addresses in DNS: Cloudflare's proxy carries only HTTP(S). */
export const dnsNotProxied: ResourceValidationPolicy = {
    name: "ispmail-dns-not-proxied",
    description: "No DNS record is proxied by Cloudflare (SMTP, IMAP, DANE and reverse DNS need the server's own addresses).",
    enforcementLevel: "mandatory",
    validateResource: (args, reportViolation) => {
        if (args.type === DNS_RECORD && args.props.proxied === true) reportViolation(`${args.name} is proxied; mail records must point at the server itself.`);
    },
};

/**
 * A step command that installs secrets logs nothing and keeps its output secret. Which secrets a
 * step installs is in its triggers (components/steps.ts stepSummary: "secrets NAME ...", names only).
 */
export const secretStepsLogNothing: ResourceValidationPolicy = {
    name: "ispmail-secret-steps-log-nothing",
    description: "Every step command whose stdin holds secrets has logging none and secret stdout/stderr.",
    enforcementLevel: "mandatory",
    validateResource: (args, reportViolation) => {
        if (args.type !== COMMAND) return;
        const triggers = Array.isArray(args.props.triggers) ? (args.props.triggers as unknown[]) : [];
        const secrets = triggers.find((t): t is string => typeof t === "string" && t.startsWith("secrets "));
        if (!secrets) return;
        if (args.props.logging !== "none") reportViolation(`command ${args.name} installs ${secrets} and must not log (logging: none).`);
        for (const output of ["stdout", "stderr"]) {
            if (!args.opts.additionalSecretOutputs.includes(output)) reportViolation(`command ${args.name} installs secrets: its ${output} must be a secret output.`);
        }
    },
};

/** DMARC reports reach someone: every DMARC record names a rua. */
export const dmarcHasRua: ResourceValidationPolicy = {
    name: "ispmail-dmarc-rua",
    description: "Every DMARC record (TXT _dmarc.<domain>) asks for aggregate reports (rua=mailto:...).",
    enforcementLevel: "mandatory",
    validateResource: (args, reportViolation) => {
        if (args.type !== DNS_RECORD || args.props.type !== "TXT" || !String(args.props.name ?? "").startsWith("_dmarc.")) return;
        if (!/\brua=mailto:[^;\s"]+/.test(String(args.props.content ?? ""))) reportViolation(`${args.name} has no rua=mailto: (nobody would learn of spoofing or broken signatures).`);
    },
};

/** Only the CAs the stack names may issue for its domains: a CAA record in every zone it writes to. */
export const caaPerZone: StackValidationPolicy = {
    name: "ispmail-caa-per-zone",
    description: "Every Cloudflare zone the stack writes records to has a CAA record.",
    enforcementLevel: "mandatory",
    validateStack: (args, reportViolation) => {
        const records = args.resources.filter((r: PolicyResource) => r.type === DNS_RECORD);
        const zones = new Map<string, string>();
        for (const r of records) if (!zones.has(r.props.zoneId)) zones.set(r.props.zoneId, r.urn);
        const withCaa = new Set(records.filter((r) => r.props.type === "CAA").map((r) => r.props.zoneId));
        for (const [zone, urn] of zones) if (!withCaa.has(zone)) reportViolation(`zone ${zone} has records of this stack but no CAA record.`, urn);
    },
};

export const POLICIES = [protectedResources, sshNotWorldOpen, dnsNotProxied, secretStepsLogNothing, dmarcHasRua, caaPerZone];
