/**
 * The lab's fixed plan: addresses, names and where its state lives. Everything else in lab/ and the
 * e2e tests (through lab/testkit.ts) reads these constants.
 *
 * The whole lab network lives in a network namespace of its own (`ispmail-lab`): the bridge, the
 * host-side services (DNS, ACME CA, apt proxy) and the guests' links. Nothing of it is reachable
 * from the machine's own namespace, and nothing in it can reach out. The addresses are TEST-NET-2
 * (RFC 5737) rather than TEST-NET-1, because 192.0.2.0/24 is this machine's real LAN; and since a
 * documentation range may be anyone's LAN, the namespace keeps the lab apart all the same.
 */
import { join } from "node:path";

/** Repository root (lab/ is one level below). */
export const REPO_DIR = join(__dirname, "..");
/** All lab state: rootfs cache, guests, keys, secrets, logs, pids. Gitignored. */
export const STATE_DIR = process.env.ISPMAIL_LAB_DIR ?? join(REPO_DIR, ".lab");

export type GuestName = "mail" | "foreign";

export interface GuestPlan {
    readonly name: GuestName;
    /** systemd-nspawn machine name (also the log file name). */
    readonly machine: string;
    /** Fully qualified host name; the PTR of its addresses. */
    readonly fqdn: string;
    readonly ipv4: string;
    readonly ipv6: string;
}

export const LAB = {
    netns: "ispmail-lab",
    bridge: "isplab0",
    /** The host side of the lab bridge: DNS, ACME CA and apt proxy listen here. */
    host: { ipv4: "198.51.100.1", ipv6: "2001:db8:2::1" },
    prefix: { ipv4: 24, ipv6: 64 },
    /** The lab's authoritative DNS server, used as resolver by guests and tests. */
    dns: "198.51.100.1",
    acme: {
        directoryUrl: "https://198.51.100.1:14000/dir",
        /** pebble's management interface: /roots/0 is the root that signs issued certificates. */
        managementUrl: "https://198.51.100.1:15000",
    },
    aptProxy: { url: "http://198.51.100.1:3142", port: 3142 },
    mail: { name: "mail", machine: "ispmail-mail", fqdn: "mx1.example.org", ipv4: "198.51.100.10", ipv6: "2001:db8:2::10" } as GuestPlan,
    foreign: { name: "foreign", machine: "ispmail-foreign", fqdn: "mx.example.net", ipv4: "198.51.100.20", ipv6: "2001:db8:2::20" } as GuestPlan,
    /** The foreign MTA's own mail domain and the local user that receives its mail. */
    foreignDomain: "example.net",
    foreignUser: "rcpt",
    /**
     * The lab's DNS blocklist: the lab DNS serves a zone under the name of a real list (Spamhaus
     * ZEN, which Rspamd queries by default) that lists this client address of the lab host, so a
     * test can prove that the server's lists are really asked through its own resolver.
     */
    dnsbl: { zone: "zen.spamhaus.org", listed: "198.51.100.66", code: "127.0.0.4", dqsZone: "dq.spamhaus.net", dqsKey: "labdqskey0123456789abcdefg" },
    /**
     * A foreign mail domain whose MX (the foreign MTA under a second name) publishes a TLSA record
     * that matches no key: a DANE sender must defer its mail rather than send it unverified.
     */
    daneMismatch: { domain: "tlsa-mismatch.example.net", mx: "mx-tlsa-mismatch.example.net" },
    /**
     * The same for mail to us: a name in our first domain's zone whose MX is the ispmail server
     * under a second name with a TLSA record that matches no key. The foreign MTA (sending with
     * DANE) must defer mail to it.
     */
    daneMismatchInbound: { domain: "tlsa-mismatch.example.org", mx: "mx-tlsa-mismatch.example.org" },
    /**
     * Foreign mail domains with an MTA-STS policy in enforce mode (RFC 8461), each served by the
     * foreign MTA under an MX name of its own, the policy from https://mta-sts.<domain>/ on the
     * foreign guest (a certificate of the lab CA, which every guest trusts like a public CA):
     *  - ok: its MX presents a lab-CA certificate for its name (SNI): verified, delivered;
     *  - mismatch: its MX presents the foreign MTA's self-signed certificate: deferred;
     *  - dane: the same self-signed certificate, but the MX (mx.example.net) publishes a matching
     *    TLSA record: DANE comes first and the mail is delivered.
     */
    mtaSts: {
        ok: { domain: "sts-ok.example.net", mx: "mx-sts-ok.example.net" },
        mismatch: { domain: "sts-mismatch.example.net", mx: "mx-sts-mismatch.example.net" },
        dane: { domain: "sts-dane.example.net", mx: "mx.example.net" },
        /** The policies' id (the _mta-sts TXT record): a new one tells senders to fetch again. */
        policyId: "20261129",
    },
    /** Only one lab operation at a time on this machine (shared convention). */
    lockFile: "/run/ispmail-lab.lock",
} as const;

export const GUESTS: readonly GuestPlan[] = [LAB.mail, LAB.foreign];

export function guestPlan(name: GuestName): GuestPlan {
    return name === "mail" ? LAB.mail : LAB.foreign;
}

/** Where each piece of lab state lives. */
export const PATHS = {
    stackFile: join(REPO_DIR, "lab", "stack.yaml"),
    rootfsScript: join(REPO_DIR, "lab", "build-rootfs.sh"),
    rootfsCache: join(STATE_DIR, "rootfs"),
    guests: join(STATE_DIR, "guests"),
    /** The mail guest's data volume (/srv/ispmail inside): survives guest re-creation. */
    mailData: join(STATE_DIR, "data", "mail"),
    sshDir: join(STATE_DIR, "ssh"),
    deployKey: join(STATE_DIR, "ssh", "deploy_ed25519"),
    knownHosts: join(STATE_DIR, "ssh", "known_hosts"),
    secrets: join(STATE_DIR, "secrets.json"),
    /** The foreign MTA's DKIM key for example.net (lab/foreign.ts), generated once. */
    foreignDkimKey: join(STATE_DIR, "foreign-dkim.pem"),
    /** The foreign MTA's TLS key, made once: its DANE TLSA record (3 1 1) is this key's hash. */
    foreignTlsKey: join(STATE_DIR, "foreign-tls.pem"),
    /** The lab CA's certificate for that key under the foreign guest's MTA-STS names (lab/pebble.ts). */
    foreignWebCert: join(STATE_DIR, "ca", "foreign-web.pem"),
    /** The key that DNSSEC-signs every lab zone (ECDSA P-256), made once: the zones' trust anchor. */
    dnsZoneKey: join(STATE_DIR, "dns-zone-key.pem"),
    ca: join(STATE_DIR, "ca"),
    dns: join(STATE_DIR, "dns"),
    pebble: join(STATE_DIR, "pebble"),
    /** The root that signs pebble's certificates (fetched from its management port on every up). */
    pebbleIssuingRoot: join(STATE_DIR, "pebble", "issuing-root.pem"),
    aptProxy: join(STATE_DIR, "apt-proxy"),
    aptCache: join(STATE_DIR, "apt-cache"),
    /**
     * Pid files and sockets: under /run (cleared on reboot, like the processes they describe) and
     * short, whatever the checkout's path (Unix socket paths are limited to 108 bytes).
     */
    run: "/run/ispmail-lab",
    logs: join(STATE_DIR, "logs"),
} as const;

/** The guest's root directory (an independent copy of the cached rootfs). */
export const guestRoot = (g: GuestPlan) => join(PATHS.guests, g.name, "root");
