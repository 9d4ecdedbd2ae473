/**
 * All checks of one stack, in the order an admin would look: DNS as rendered, reverse DNS, the
 * records' consistency, ports, certificates, then the things that need the internet.
 */
import { compareRecords, checkPtr } from "./dns";
import { checkDkim, checkDmarc, checkDnssec, checkMtaSts, checkMx, checkSpf } from "./consistency";
import { type Finding, ok, problem, skipped } from "./findings";
import type { Intended } from "./intended";
import { dnsLookup, type Lookup } from "./lookup";
import { publicPorts, type Service } from "../components/services";
import { httpsGet, readGreeting, tcpProbe, tlsCertificate } from "./net";

/** Below this many days a certificate is a problem: ispmail-certificate renews 30 days ahead, so renewal is failing. */
export const CERT_MIN_DAYS = 14;


/** Public DNS blocklists that answer A 127.0.0.x for a listed IPv4 address. */
const BLOCKLISTS = ["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"];

export interface RunOptions {
    /** Checks that need the internet (blocklists; outbound 25 of a real server). Off by default. */
    readonly online?: boolean;
    /** Overrides the resolver (tests). */
    readonly lookup?: Lookup;
    /** Runs a shell command on the server (the lab's SSH); without it, server-side checks are skipped. */
    readonly onServer?: (command: string) => Promise<{ code: number; stdout: string; stderr: string }>;
    /** An address of another MTA the server should reach on port 25 (the lab's foreign MTA). */
    readonly outboundTarget?: string;
    /** The services whose public ports are probed; the program's list when left out (tests give their own). */
    readonly services?: readonly Service[];
}

/** A check that cannot complete (resolver down, timeout) is itself a problem, not a crash. */
async function guarded(check: string, fn: () => Promise<Finding[]>): Promise<Finding[]> {
    try {
        return await fn();
    } catch (e) {
        return [problem(check, `could not be checked: ${(e as Error).message}`, "check that the resolver and the server are reachable from here")];
    }
}

export async function runChecks(intended: Intended, opts: RunOptions = {}): Promise<Finding[]> {
    const { model, ipv4, ipv6 } = intended;
    const lookup = opts.lookup ?? dnsLookup({ servers: intended.dnsServers });
    const findings: Finding[] = [];

    findings.push(...(await compareRecords(intended.records, lookup, { fix: intended.fixDns, skipDkimContent: !intended.dkimKnown })));
    if (!intended.dkimKnown) findings.push(skipped("dns", "DKIM keys and the certificate key (TLSA) are only in the stack state: give --outputs (pulumi stack output --json) to compare them; DKIM is checked for validity below"));
    findings.push(...(await guarded("ptr", () => checkPtr([ipv4, ipv6], model.mailHost, lookup, intended.fixPtr))));
    findings.push(...(await guarded("mx", () => checkMx(model, { ipv4, ipv6 }, lookup, intended.fixDns))));
    findings.push(...(await guarded("spf", () => checkSpf(model, { ipv4, ipv6 }, lookup, intended.fixDns))));
    findings.push(...(await guarded("dmarc", () => checkDmarc(model, lookup, intended.fixDns))));
    findings.push(...(await guarded("dkim", () => checkDkim(model, lookup, intended.fixDns))));
    if (intended.lab) findings.push(skipped("dnssec", "the lab zones are the resolvers' trust anchors: there is no parent zone to hold a DS record"));
    else findings.push(...(await guarded("dnssec", () => checkDnssec(model, lookup))));

    // The ports the stack's services open (the same list the firewall is made from).
    const ports = publicPorts(model, opts.services);
    for (const address of [ipv4, ipv6]) {
        for (const p of ports) {
            const err = await tcpProbe(address, p.port);
            if (err) findings.push(problem("port", `${p.port} (${p.name}) on ${address} is not reachable (${err})`, `allow it in the firewall (the stack's hcloud firewall) and check \`systemctl status ${p.daemon}\``));
            else findings.push(ok("port", `${p.port} (${p.name}) on ${address} is reachable`));
        }
    }

    try {
        const greeting = await readGreeting(ipv4, 25);
        if (!greeting.startsWith("220 ") || greeting.split(/\s+/)[1] !== model.mailHost) {
            findings.push(problem("smtp", `port 25 greets with "${greeting}", expected "220 ${model.mailHost} ..."`, "postfix myhostname must be mailHost (postfix step)"));
        } else findings.push(ok("smtp", `port 25 greets as ${model.mailHost}`));
    } catch (e) {
        findings.push(problem("smtp", `no SMTP greeting on ${ipv4}:25 (${(e as Error).message})`, "check `systemctl status postfix`"));
    }

    for (const t of ports.filter((p) => p.implicitTls)) {
        try {
            const cert = await tlsCertificate(ipv4, t.port, model.mailHost);
            if (cert.nameError) findings.push(problem("tls", `${t.port}: certificate does not cover ${model.mailHost} (${cert.subjectAltNames.join(", ")})`, "the certbot step requests one certificate for every web name: check `journalctl -u ispmail-certificate`"));
            else if (cert.daysLeft < 0) findings.push(problem("tls", `${t.port}: certificate expired on ${cert.validTo.toISOString()}`, "renew: `ispmail-certificate --force` on the server (it reloads the daemons)"));
            else if (cert.daysLeft < CERT_MIN_DAYS) findings.push(problem("tls", `${t.port}: certificate expires in ${cert.daysLeft} days (renewal should have happened at 30)`, "check `systemctl list-timers ispmail-certificate.timer` and `journalctl -u ispmail-certificate`"));
            else if (!intended.lab && !cert.trusted) findings.push(problem("tls", `${t.port}: certificate not trusted (${cert.trustError})`, "the self-signed fallback is still in place: check the certbot step (`journalctl -u ispmail-certificate`)"));
            else findings.push(ok("tls", `${t.port}: certificate for ${model.mailHost}, ${cert.daysLeft} days left${intended.lab ? " (chain not checked in the lab: pebble's test CA)" : ""}`));
        } catch (e) {
            findings.push(problem("tls", `${t.port}: no TLS handshake on ${ipv4} (${(e as Error).message})`, `check \`systemctl status ${t.daemon}\``));
        }
    }

    findings.push(
        ...(await guarded("mta-sts", () => checkMtaSts(
            model,
            lookup,
            async (domain) => {
                const host = `mta-sts.${domain}`;
                const [address] = await lookup.resolve(host, "A");
                if (!address) throw new Error(`${host} has no A record`);
                return httpsGet(address, host, "/.well-known/mta-sts.txt");
            },
            intended.fixDns,
        ))),
    );

    if (opts.onServer && opts.outboundTarget) {
        const r = await opts.onServer(`timeout 10 bash -c '</dev/tcp/${opts.outboundTarget}/25' 2>&1`);
        if (r.code === 0) findings.push(ok("outbound-25", `the server reaches ${opts.outboundTarget}:25`));
        else findings.push(problem("outbound-25", `the server cannot open ${opts.outboundTarget}:25 (${(r.stdout + r.stderr).trim() || `exit ${r.code}`})`, "new Hetzner accounts block outbound 25: ask Hetzner support to unblock it (after the PTR is set)"));
    } else {
        findings.push(skipped("outbound-25", `needs a shell on the server and the internet; by hand: ssh root@${ipv4} "timeout 10 bash -c '</dev/tcp/gmail-smtp-in.l.google.com/25' && echo open"`));
    }

    if (opts.online && !intended.lab) {
        const reversed = ipv4.split(".").reverse().join(".");
        const system = dnsLookup({});
        for (const list of BLOCKLISTS) {
            const answers = await system.resolve(`${reversed}.${list}`, "A").catch(() => [] as string[]);
            const listed = answers.filter((a) => /^127\.0\.0\.\d+$/.test(a));
            if (listed.length) findings.push(problem("blocklist", `${ipv4} is listed on ${list} (${listed.join(", ")})`, `request delisting at ${list}'s website; find the cause first (open relay? compromised account?)`));
            else findings.push(ok("blocklist", `${ipv4} is not listed on ${list}`));
        }
    } else {
        findings.push(skipped("blocklist", intended.lab ? "lab addresses are not on public blocklists" : "offline: give --online to query public DNS blocklists"));
    }
    return findings;
}
