/**
 * The stack-config contract (components/config/): a wrong setting is refused before anything is
 * created, with the full key path and what is allowed; a right one becomes a frozen, normalised model.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { ConfigError, DB_ADMINS, isProtectedStack, parseConfig, stackFileConfig } from "../../components/config";
import { REPO_ROOT, modelFromStackFile, rawFromStackFile, validRawConfig } from "../fixtures/config";
import { webHosts } from "../../components/services";

type Raw = Record<string, any>;

/** Parses and returns the problems; fails the test when the config is accepted. */
function problemsOf(raw: Raw, secretKeys: string[] = []): readonly string[] {
    try {
        parseConfig(raw, { stack: "test", secretKeys });
    } catch (e) {
        assert.ok(e instanceof ConfigError, `expected a ConfigError, got ${String(e)}`);
        // The error's own message lists every problem, so the CLI shows them all at once.
        for (const p of e.problems) assert.ok(e.message.includes(p));
        return e.problems;
    }
    assert.fail("the config was accepted");
}

interface BadCase {
    /** What a mail admin did wrong, as the test name says it. */
    readonly name: string;
    readonly mutate: (c: Raw) => void;
    /** The exact key path the (single) problem must name. */
    readonly path: string;
    /** The message must say what is allowed: a pattern of that explanation. */
    readonly allowed: RegExp;
    readonly secretKeys?: string[];
    /** How many problems the mistake causes (default 1: one mistake, one message, no noise). */
    readonly count?: number;
}

const PEM_KEY = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----";

const BAD_CASES: readonly BadCase[] = [
    // --- mailHost and domains
    { name: "a mailHost that is not a FQDN", mutate: (c) => (c.mailHost = "mailserver"), path: "ispmail:mailHost", allowed: /fully qualified domain name such as mx1\.example\.org/ },
    { name: "a mailHost with an underscore label", mutate: (c) => (c.mailHost = "mx_1.example.org"), path: "ispmail:mailHost", allowed: /no underscores/ },
    { name: "a mailHost with a trailing dot", mutate: (c) => (c.mailHost = "mx1.example.org."), path: "ispmail:mailHost", allowed: /trailing dot/ },
    { name: "a mailHost given as a number", mutate: (c) => (c.mailHost = 42), path: "ispmail:mailHost", allowed: /host name, a fully qualified domain name .*\(got 42\)/ },
    { name: "a domain with a space", mutate: (c) => (c.domains = ["example.org", "exa mple.com"]), path: "ispmail:domains[1]", allowed: /letters, digits and inner hyphens/ /* no noise about users in example.com while the domain list is broken */ },
    { name: "an empty domains list", mutate: (c) => (c.domains = []), path: "ispmail:domains", allowed: /a list of at least one mail domain/ },
    { name: "domains given as a single string", mutate: (c) => (c.domains = "example.org"), path: "ispmail:domains", allowed: /a list of at least one mail domain .*\(got "example\.org"\)/ },
    { name: "a domain listed twice in different case", mutate: (c) => c.domains.push("Example.COM"), path: "ispmail:domains[2]", allowed: /listed twice; each domain may appear once \(compared ignoring case\)/ },
    // --- adminEmail
    { name: "an adminEmail without @", mutate: (c) => (c.adminEmail = "hostmaster"), path: "ispmail:adminEmail", allowed: /has no @; must be an e-mail address local@domain/ },
    { name: "an adminEmail whose domain is not a FQDN", mutate: (c) => (c.adminEmail = "root@localhost"), path: "ispmail:adminEmail", allowed: /domain part "localhost" must be a fully qualified domain name/ },
    // --- users
    { name: "users that is not a list", mutate: (c) => (c.users = { address: "alice@example.org" }), path: "ispmail:users", allowed: /a list of mailboxes, each a mapping \{address, displayName\?, quotaMb\?, password\?, renamedFrom\?\}/ /* aliases are not reported as pointing nowhere while the users are unknown */ },
    { name: "a user given as a bare string", mutate: (c) => (c.users[0] = "alice@example.org"), path: "ispmail:users[0]", allowed: /a mapping \{address, displayName\?, quotaMb\?, password\?, renamedFrom\?\}/ },
    { name: "a user in a domain that is not managed", mutate: (c) => (c.users[2].address = "carol@example.net"), path: "ispmail:users[2].address", allowed: /not managed here; a mailbox must be in one of ispmail:domains \(example\.org, example\.com\)/, count: 2 /* the catch-all then points to an unknown carol@example.com */ },
    { name: "a local part over 64 characters", mutate: (c) => c.users.push({ address: `${"a".repeat(65)}@example.org` }), path: "ispmail:users[3].address", allowed: /local part \(before @\) must be 1 to 64 characters \(RFC 5321\), got 65/ },
    { name: "a local part with a space", mutate: (c) => c.users.push({ address: "dave smith@example.org" }), path: "ispmail:users[3].address", allowed: /local part .* may contain only letters, digits/ },
    { name: "the same user twice, ignoring case", mutate: (c) => c.users.push({ address: "ALICE@Example.org" }), path: "ispmail:users[3].address", allowed: /"alice@example\.org" is listed twice; each mailbox may appear once \(compared ignoring case\)/ },
    { name: "an address without @", mutate: (c) => c.users.push({ address: "dave.example.org" }), path: "ispmail:users[3].address", allowed: /has no @; must be an e-mail address local@domain such as alice@example\.org/ },
    { name: "a quota that is not a number", mutate: (c) => (c.users[1].quotaMb = "1GB"), path: "ispmail:users[1].quotaMb", allowed: /a whole number of MB from 1 to 1048576 .*\(got "1GB"\)/ },
    { name: "a quota of zero", mutate: (c) => (c.users[1].quotaMb = 0), path: "ispmail:users[1].quotaMb", allowed: /a whole number of MB from 1 to 1048576/ },
    { name: "a fractional quota", mutate: (c) => (c.users[1].quotaMb = 1.5), path: "ispmail:users[1].quotaMb", allowed: /a whole number of MB/ },
    { name: "a display name with a newline", mutate: (c) => (c.users[0].displayName = "Alice\nBcc: x"), path: "ispmail:users[0].displayName", allowed: /without control characters/ },
    { name: "a user setting with a typo", mutate: (c) => (c.users[1].quota = 10), path: "ispmail:users[1].quota", allowed: /unknown setting \(did you mean ispmail:users\[1\]\.quotaMb\?\); allowed here: address, displayName, quotaMb, password/ },
    // --- passwords
    { name: "a password given as plain (non-secret) config", mutate: (c) => (c.users[0].password = "correct horse battery staple"), path: "ispmail:users[0].password", allowed: /must be secret: pulumi config set --secret --path 'ispmail:users\[0\]\.password'/ },
    { name: "a secret password shorter than 12 characters", mutate: (c) => (c.users[2].password = "hunter2"), secretKeys: ["ispmail:users"], path: "ispmail:users[2].password", allowed: /a secret string of 12 to 256 characters/ },
    // --- aliases
    { name: "an alias whose destination is an unknown address in a managed domain", mutate: (c) => (c.aliases[0].destination = "nobody@example.org"), path: "ispmail:aliases[0].destination", allowed: /not a mailbox in ispmail:users; a destination must be a mailbox here or an address in another domain/ },
    { name: "an alias source that is also a mailbox", mutate: (c) => (c.aliases[1].source = "alice@example.org"), path: "ispmail:aliases[1].source", allowed: /is a mailbox in ispmail:users; an address is either a mailbox or an alias source/ },
    { name: "an alias source in a domain that is not managed", mutate: (c) => (c.aliases[1].source = "sales@example.net"), path: "ispmail:aliases[1].source", allowed: /domain "example\.net" is not managed here; an alias source must be in one of ispmail:domains/ },
    { name: "a catch-all for a domain that is not managed", mutate: (c) => (c.aliases[3].source = "@example.net"), path: "ispmail:aliases[3].source", allowed: /must be in one of ispmail:domains \(example\.org, example\.com\)/ },
    { name: "a catch-all without a domain", mutate: (c) => (c.aliases[3].source = "@"), path: "ispmail:aliases[3].source", allowed: /a catch-all source must be @ followed by a managed mail domain, such as @example\.org/ },
    { name: "an adminEmail on a managed domain that is neither a mailbox nor an alias source", mutate: (c) => (c.adminEmail = "hostmaster@example.org"), path: "ispmail:adminEmail", allowed: /"hostmaster@example\.org" is in managed domain example\.org but is neither a mailbox in ispmail:users nor an alias source/ },
    { name: "an alias that points to itself", mutate: (c) => (c.aliases[2].destination = "info@example.org"), path: "ispmail:aliases[2].destination", allowed: /an alias cannot point to itself/ },
    // --- renames
    { name: "a mailbox renamed from its own address", mutate: (c) => (c.users[0].renamedFrom = "Alice@example.org"), path: "ispmail:users[0].renamedFrom", allowed: /is the mailbox's own address; renamedFrom must be the address it had until now/ },
    { name: "a mailbox renamed from a mailbox still listed", mutate: (c) => (c.users[0].renamedFrom = "bob@example.org"), path: "ispmail:users[0].renamedFrom", allowed: /"bob@example\.org" is still a mailbox in ispmail:users; a renamed mailbox's old address must not be listed any more \(make it an alias/ },
    { name: "a mailbox renamed from something that is no address", mutate: (c) => (c.users[0].renamedFrom = "alice"), path: "ispmail:users[0].renamedFrom", allowed: /"alice" has no @; must be an e-mail address/ },
    { name: "a domain renamed from its own name", mutate: (c) => (c.domains[1] = { name: "example.com", renamedFrom: "Example.com" }), path: "ispmail:domains[1].renamedFrom", allowed: /is the domain's own name/ },
    { name: "a domain renamed from a domain still listed", mutate: (c) => (c.domains[1] = { name: "example.com", renamedFrom: "example.org" }), path: "ispmail:domains[1].renamedFrom", allowed: /"example\.org" is still in ispmail:domains; a renamed domain's old name must not be listed any more/ },
    { name: "a domain entry with an unknown setting", mutate: (c) => (c.domains[1] = { name: "example.com", renamedFromm: "example.net" }), path: "ispmail:domains[1]", allowed: /a mapping \{name, renamedFrom\}/ },
    {
        name: "two mailboxes taking over the same old one (one by its own renamedFrom, one by its domain's)",
        mutate: (c) => {
            c.domains[1] = { name: "example.com", renamedFrom: "example.net" };
            c.users.push({ address: "carol2@example.org", renamedFrom: "carol@example.net" });
        },
        path: "ispmail:users[3]",
        allowed: /carol2@example\.org and carol@example\.com would both take over the mailbox carol@example\.net .*one old mailbox can become one new one only/,
    },
    { name: "the same alias twice", mutate: (c) => c.aliases.push({ source: "Sales@example.com", destination: "bob@example.org" }), path: "ispmail:aliases[4]", allowed: /sales@example\.com -> bob@example\.org is listed twice/ },
    // --- shared mailboxes
    { name: "a share to the mailbox itself", mutate: (c) => (c.sharedMailboxes[0].sharedTo = "Alice@example.org"), path: "ispmail:sharedMailboxes[0].sharedTo", allowed: /cannot be shared to itself; sharedTo must be another mailbox/ },
    { name: "a share of an unknown mailbox", mutate: (c) => (c.sharedMailboxes[0].mailbox = "dave@example.org"), path: "ispmail:sharedMailboxes[0].mailbox", allowed: /not a mailbox in ispmail:users; only mailboxes can be shared/ },
    { name: "a share to an unknown mailbox", mutate: (c) => (c.sharedMailboxes[0].sharedTo = "dave@example.net"), path: "ispmail:sharedMailboxes[0].sharedTo", allowed: /a share must go to a mailbox here/ },
    { name: "share rights with letters IMAP ACLs do not have", mutate: (c) => (c.sharedMailboxes[0].rights = "lrwz"), path: "ispmail:sharedMailboxes[0].rights", allowed: /rights letters from 'lrwsteipkxa' \(RFC 4314\)/ },
    // --- DKIM
    { name: "a DKIM selector with a dot", mutate: (c) => (c.dkimSelectors = ["s2026.a"]), path: "ispmail:dkimSelectors[0]", allowed: /no dots or underscores, such as s2026/ },
    { name: "no DKIM selector", mutate: (c) => (c.dkimSelectors = []), path: "ispmail:dkimSelectors", allowed: /at least one DKIM selector .* the first one signs/ },
    { name: "a missing dkimSelectors key", mutate: (c) => delete c.dkimSelectors, path: "ispmail:dkimSelectors", allowed: /is required; must be a list of at least one DKIM selector/ },
    { name: "the same selector twice", mutate: (c) => c.dkimSelectors.push("S2026B"), path: "ispmail:dkimSelectors[2]", allowed: /listed twice; each selector may appear once/ },
    { name: "a TLS key name with an underscore", mutate: (c) => (c.tlsKeys = ["tls_1"]), path: "ispmail:tlsKeys[0]", allowed: /a TLS key name: lowercase letters, digits and inner hyphens/ },
    { name: "no TLS key", mutate: (c) => (c.tlsKeys = []), path: "ispmail:tlsKeys", allowed: /at least one TLS key name .* the first key is the certificate's/ },
    { name: "the same TLS key twice", mutate: (c) => (c.tlsKeys = ["tls1", "TLS1"]), path: "ispmail:tlsKeys[1]", allowed: /key "tls1" is listed twice; each key may appear once/ },
    { name: "dnssec as a word", mutate: (c) => (c.dns = { dnssec: "yes" }), path: "ispmail:dns.dnssec", allowed: /true or false \(default true\)/ },
    // --- server
    { name: "a missing server", mutate: (c) => delete c.server, path: "ispmail:server", allowed: /is required; must be a mapping \{type, location, sshPublicKeys, adminCidrs, image\?, volumeSizeGb\?\}/ },
    { name: "an admin CIDR with prefix /33", mutate: (c) => (c.server.adminCidrs = ["198.51.100.0/33"]), path: "ispmail:server.adminCidrs[0]", allowed: /prefix 0-32 for IPv4, 0-128 for IPv6/ },
    { name: "an IPv6 admin CIDR with prefix /129", mutate: (c) => c.server.adminCidrs.push("2001:db8::/129"), path: "ispmail:server.adminCidrs[2]", allowed: /CIDR notation/ },
    { name: "an admin CIDR with host bits set", mutate: (c) => (c.server.adminCidrs = ["10.1.2.3/8"]), path: "ispmail:server.adminCidrs[0]", allowed: /host bits set; .* use 10\.0\.0\.0\/8/ },
    { name: "an admin address without prefix", mutate: (c) => (c.server.adminCidrs = ["203.0.113.7"]), path: "ispmail:server.adminCidrs[0]", allowed: /in CIDR notation such as 203\.0\.113\.7\/32/ },
    { name: "an SSH key that is not OpenSSH (PEM)", mutate: (c) => (c.server.sshPublicKeys = [PEM_KEY]), path: "ispmail:server.sshPublicKeys[0]", allowed: /an OpenSSH public key line such as 'ssh-ed25519 AAAAC3/ },
    { name: "no SSH key at all", mutate: (c) => (c.server.sshPublicKeys = []), path: "ispmail:server.sshPublicKeys", allowed: /at least one OpenSSH public key line/ },
    { name: "a server location that is a city name", mutate: (c) => (c.server.location = "Falkenstein"), path: "ispmail:server.location", allowed: /fsn1, nbg1, hel1, ash, hil or sin/ },
    { name: "a volume below Hetzner's minimum", mutate: (c) => (c.server.volumeSizeGb = 5), path: "ispmail:server.volumeSizeGb", allowed: /a whole number of GB from 10 to 10240 .*\(got 5\)/ },
    { name: "a server setting with a typo", mutate: (c) => (c.server.loction = "fsn1"), path: "ispmail:server.loction", allowed: /did you mean ispmail:server\.location\?/ },
    // --- nextcloud
    { name: "nextcloud enabled without version", mutate: (c) => (c.nextcloud = { enabled: true, sha256: "ab".repeat(32) }), path: "ispmail:nextcloud.version", allowed: /is required when nextcloud\.enabled is true: a Nextcloud release number such as 31\.0\.9/ },
    { name: "nextcloud enabled without sha256", mutate: (c) => (c.nextcloud = { enabled: true, version: "31.0.9" }), path: "ispmail:nextcloud.sha256", allowed: /pinned by hash.*64 hex digits/ },
    { name: "a placeholder nextcloud sha256 (all zeros)", mutate: (c) => (c.nextcloud = { enabled: true, version: "31.0.9", sha256: "0".repeat(64) }), path: "ispmail:nextcloud.sha256", allowed: /is a placeholder \(one digit 64 times\): copy the real SHA-256 from the \.sha256 file next to the archive/ },
    { name: "a nextcloud sha256 that is too short", mutate: (c) => (c.nextcloud = { enabled: true, version: "31.0.9", sha256: "abc123" }), path: "ispmail:nextcloud.sha256", allowed: /SHA-256 as 64 hex digits/ },
    { name: "a nextcloud archive URL that is not http(s)", mutate: (c) => (c.nextcloud = { enabled: false, url: "ftp://example.org/nc.tar.bz2" }), path: "ispmail:nextcloud.url", allowed: /an http\(s\) URL of the Nextcloud \.tar\.bz2 archive/ },
    { name: "nextcloud.enabled given as yes", mutate: (c) => (c.nextcloud = { enabled: "yes" }), path: "ispmail:nextcloud.enabled", allowed: /true or false/ },
    { name: "a nextcloud host outside the managed domains", mutate: (c) => (c.nextcloud = { host: "cloud.example.net" }), path: "ispmail:nextcloud.host", allowed: /must be mailHost or a name in one of ispmail:domains/ },
    // --- the rest of the contract
    { name: "a top-level key with a typo", mutate: (c) => (c.domain = ["example.org"]), path: "ispmail:domain", allowed: /unknown setting \(did you mean ispmail:domains\?\); allowed here: mailHost, domains/ },
    { name: "a database admin that is not offered", mutate: (c) => (c.dbAdmin = "pgadmin4"), path: "ispmail:dbAdmin", allowed: /^ispmail:dbAdmin: must be one of "phppgadmin" \(the default, as in the tutorial\), "adminer" or "none".* \(got "pgadmin4"\)$/ },
    { name: "a database admin given as false instead of none", mutate: (c) => (c.dbAdmin = false), path: "ispmail:dbAdmin", allowed: /must be one of "phppgadmin" .*"adminer" or "none".* \(got false\)$/ },
    { name: "an MTA-STS mode that does not exist", mutate: (c) => (c.mtaSts = { mode: "on" }), path: "ispmail:mtaSts.mode", allowed: /one of "enforce", "testing", "none"/ },
    { name: "an ACME directory over plain http", mutate: (c) => (c.acme = { directoryUrl: "http://acme.example.org/dir" }), path: "ispmail:acme.directoryUrl", allowed: /an https URL of an ACME directory/ },
    { name: "an ACME account URL over plain http", mutate: (c) => (c.acme = { accountUri: "http://acme-v02.api.letsencrypt.org/acme/acct/1" }), path: "ispmail:acme.accountUri", allowed: /the https URL of the server's ACME account/ },
    { name: "a DNS TTL below 60 seconds", mutate: (c) => (c.dns = { ttl: 10 }), path: "ispmail:dns.ttl", allowed: /from 60 to 86400/ },
    { name: "a zone id keyed by something that is no zone name", mutate: (c) => (c.dns = { zoneIds: { example_org: "0123456789abcdef0123456789abcdef" } }), path: "ispmail:dns.zoneIds.example_org", allowed: /keys here must be a zone name such as example\.org/ },
    { name: "a backup without repository", mutate: (c) => (c.backup = { keepDaily: 7 }), path: "ispmail:backup.repository", allowed: /is required; must be a restic repository/ },
    { name: "structured config that is not valid JSON", mutate: (c) => (c.users = "[{address: alice"), path: "ispmail:users", allowed: /not valid structured config \(a YAML list or mapping/ },
    { name: "a resolver to forward to that is a name, not an address", mutate: (c) => (c.resolver = { forwardTo: ["dns.example.net"] }), path: "ispmail:resolver.forwardTo[0]", allowed: /an IPv4 or IPv6 address such as 192\.0\.2\.53/ },
    { name: "a trust anchor that is not in zone-file form", mutate: (c) => (c.resolver = { trustAnchors: ["example.org 257 3 13 AAAA"] }), path: "ispmail:resolver.trustAnchors[0]", allowed: /"<zone>\. DNSKEY <flags> 3 <algorithm> <base64 key>"/ },
];

describe("config: refuses a wrong setting, naming its key path and what is allowed", () => {
    test(`there are at least 35 of these cases (${BAD_CASES.length})`, () => assert.ok(BAD_CASES.length >= 35));
    for (const c of BAD_CASES) {
        test(`config: refuses ${c.name}`, () => {
            const raw = validRawConfig();
            c.mutate(raw);
            const problems = problemsOf(raw, c.secretKeys);
            const mine = problems.filter((p) => p.startsWith(`${c.path}: `));
            assert.equal(mine.length, 1, `expected one problem at ${c.path}, got:\n${problems.join("\n")}`);
            assert.match(mine[0], c.allowed);
            assert.equal(problems.length, c.count ?? 1, `unexpected number of messages:\n${problems.join("\n")}`);
        });
    }
});

describe("config: every setting explains itself", () => {
    /** Every leaf of a config: [path, value] with the path as key-path segments. */
    function leaves(value: unknown, path: (string | number)[] = []): Array<(string | number)[]> {
        if (Array.isArray(value)) return value.flatMap((v, i) => leaves(v, [...path, i]));
        if (value && typeof value === "object") return Object.entries(value).flatMap(([k, v]) => leaves(v, [...path, k]));
        return [path];
    }
    const keyPathOf = (path: (string | number)[]) => "ispmail:" + path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");

    test("config: a mapping given where any setting of Pulumi.prod.yaml expects a value is refused with a description, not zod's wording", () => {
        const base = rawFromStackFile("Pulumi.prod.yaml");
        const paths = leaves(base);
        assert.ok(paths.length > 40, `only ${paths.length} settings found`);
        for (const path of paths) {
            const raw = structuredClone(base) as Raw;
            let parent: any = raw;
            for (const p of path.slice(0, -1)) parent = parent[p];
            parent[path[path.length - 1]] = { wrong: true };
            const where = keyPathOf(path);
            const problem = problemsOf(raw).find((p) => p.startsWith(`${where}: `));
            assert.ok(problem, `no problem reported at ${where}`);
            assert.match(problem, new RegExp(`^${where.replace(/[[\].]/g, "\\$&")}: must be .+ \\(got a mapping\\)$`));
            assert.doesNotMatch(problem, /Invalid input|expected (string|number|boolean)/, "zod's generic wording leaked");
        }
    });
});

describe("config: reports every mistake at once", () => {
    test("config: a stack with seven mistakes in schema and relations gets seven messages", () => {
        const raw = validRawConfig();
        raw.mailHost = "bad_host.example.org";
        raw.users[1].quotaMb = "lots"; // a schema error in bob ...
        raw.users[2].address = "carol@example.net"; // ... must not hide that carol is in no managed domain
        raw.aliases[0].destination = "nobody@example.org";
        raw.dkimSelectors = ["s2026.a"];
        raw.server.adminCidrs = ["10.0.0.0/33"];
        raw.nextcloud = { enabled: true, version: "31.0.9" };
        const problems = problemsOf(raw);
        const paths = problems.map((p) => p.slice(0, p.indexOf(": ")));
        assert.deepEqual([...paths].sort(), [
            "ispmail:aliases[0].destination",
            "ispmail:aliases[3].destination", // the catch-all to carol@example.com, who is gone
            "ispmail:dkimSelectors[0]",
            "ispmail:mailHost",
            "ispmail:nextcloud.sha256",
            "ispmail:server.adminCidrs[0]",
            "ispmail:users[1].quotaMb",
            "ispmail:users[2].address",
        ]);
    });

    test("config: every plain password is named, each with its own set --secret command", () => {
        const raw = validRawConfig();
        raw.users[0].password = "correct horse battery staple";
        raw.users[2].password = "another long passphrase";
        const problems = problemsOf(raw);
        assert.equal(problems.length, 2);
        assert.match(problems[0], /^ispmail:users\[0\]\.password: .*--path 'ispmail:users\[0\]\.password'/);
        assert.match(problems[1], /^ispmail:users\[2\]\.password: .*--path 'ispmail:users\[2\]\.password'/);
    });

    test("config: no message ever repeats a password", () => {
        for (const [password, secretKeys] of [["hunter2", ["ispmail:users"]], ["plain but long enough", []], ["x".repeat(300), ["users"]]] as const) {
            const raw = validRawConfig();
            raw.users[0].password = password;
            const problems = problemsOf(raw, [...secretKeys]);
            assert.equal(problems.length, 1);
            assert.ok(!problems[0].includes(password), problems[0]);
        }
    });
});

describe("config: a right stack becomes a normalised, frozen model", () => {
    test("config: names are lowercased and trimmed", () => {
        const raw = validRawConfig();
        raw.mailHost = " MX1.Example.ORG ";
        raw.domains = ["Example.ORG", "example.COM"];
        raw.adminEmail = "PostMaster@Example.org";
        raw.users[0].address = "Alice@EXAMPLE.org";
        raw.aliases[1] = { source: "SALES@Example.com", destination: "Bob@Example.ORG" };
        raw.dkimSelectors = ["S2026B", "s2026A"];
        raw.nextcloud = { enabled: true, version: "31.0.9", sha256: "ABCDEF".padEnd(64, "0") };
        const { model } = parseConfig(raw, { stack: "test" });
        assert.equal(model.mailHost, "mx1.example.org");
        assert.deepEqual(model.domains, ["example.org", "example.com"]);
        assert.equal(model.adminEmail, "postmaster@example.org");
        assert.deepEqual(model.users[0], { address: "alice@example.org", local: "alice", domain: "example.org", displayName: "Alice", quotaMb: 2048, passwordFromConfig: false });
        assert.equal(model.aliases[1].source, "sales@example.com");
        assert.equal(model.aliases[1].destination, "bob@example.org");
        assert.deepEqual(model.dkimSelectors, ["s2026b", "s2026a"]);
        assert.equal(model.nextcloud.sha256, "abcdef".padEnd(64, "0"));
    });

    test("config: a renamed domain renames its mailboxes unless one says otherwise; the model lists each mailbox's old address", () => {
        const raw = validRawConfig();
        raw.domains[1] = { name: "example.edu", renamedFrom: "example.com" };
        raw.users[2].address = "carol@example.edu";
        raw.users.push({ address: "dave@example.edu", renamedFrom: "bob.old@example.org" });
        raw.users[1].renamedFrom = "Robert@example.org";
        raw.aliases = raw.aliases.filter((a: { source: string }) => !a.source.endsWith("example.com"));
        const { model } = parseConfig(raw, { stack: "test" });
        assert.deepEqual(model.domains, ["example.org", "example.edu"]);
        assert.deepEqual(
            model.users.map((u) => [u.address, u.renamedFrom]),
            [["alice@example.org", undefined], ["bob@example.org", "robert@example.org"], ["carol@example.edu", "carol@example.com"], ["dave@example.edu", "bob.old@example.org"]],
        );
    });

    test("config: defaults fill what the stack leaves out", () => {
        const raw = validRawConfig();
        delete raw.users[0].displayName;
        delete raw.sharedMailboxes[0].rights;
        const { model } = parseConfig(raw, { stack: "test" });
        assert.equal(model.server.image, "debian-13");
        assert.equal(model.server.volumeSizeGb, 20);
        assert.equal(model.defaultQuotaMb, 2048);
        assert.equal(model.users[0].quotaMb, 2048, "users without quotaMb get defaultQuotaMb");
        assert.equal(model.users[1].quotaMb, 1024, "an explicit quota wins");
        assert.ok(!("displayName" in model.users[0]));
        assert.equal(model.sharedMailboxes[0].rights, "lrwstipekxa");
        assert.equal(model.dkimSelectors[0], "s2026b", "the first selector is the one wanted for signing");
        assert.equal(model.messageSizeLimitMb, 50);
        assert.deepEqual(model.nextcloud, { enabled: false, host: "mx1.example.org" });
        assert.deepEqual(model.webmail, { enabled: true, host: "webmail.example.org" }, "webmail on, on the first domain");
        assert.equal(model.dbAdmin, "phppgadmin", "the tutorial's database admin unless the stack says otherwise");
        assert.equal(model.acme.directoryUrl, "https://acme-v02.api.letsencrypt.org/directory");
        assert.deepEqual(model.mtaSts, { mode: "enforce", maxAge: 604800 });
        assert.deepEqual(model.dns, { ttl: 3600, zoneIds: {}, dnssec: true });
        assert.deepEqual(model.tlsKeys, ["tls1"], "one certificate key unless a rollover lists more");
        assert.equal(model.backup, undefined);
        assert.deepEqual(webHosts(model), ["mx1.example.org", "mta-sts.example.org", "autoconfig.example.org", "mta-sts.example.com", "autoconfig.example.com", "webmail.example.org"]);

        const bare = validRawConfig();
        delete bare.users;
        delete bare.aliases;
        delete bare.sharedMailboxes;
        bare.adminEmail = "admin@elsewhere.example"; // with no mailboxes, an address of ours could receive nothing
        const empty = parseConfig(bare, { stack: "test" }).model;
        assert.deepEqual([empty.users, empty.aliases, empty.sharedMailboxes], [[], [], []]);
    });

    test("config: ispmail:dbAdmin takes each offered database admin as it is", () => {
        assert.deepEqual(DB_ADMINS, ["phppgadmin", "adminer", "none"]);
        for (const choice of DB_ADMINS) {
            const raw = validRawConfig();
            raw.dbAdmin = choice;
            assert.equal(parseConfig(raw, { stack: "test" }).model.dbAdmin, choice);
        }
    });

    test("config: the model is deeply frozen (assignment throws)", () => {
        const { model } = parseConfig(validRawConfig(), { stack: "test" });
        const m = model as any;
        assert.throws(() => {
            "use strict";
            m.mailHost = "evil.example.net";
        }, TypeError);
        assert.throws(() => m.users.push({ address: "mallory@example.org" }), TypeError);
        assert.throws(() => {
            "use strict";
            m.server.adminCidrs[0] = "0.0.0.0/0";
        }, TypeError);
        assert.throws(() => {
            "use strict";
            m.nextcloud.enabled = true;
        }, TypeError);
        assert.equal(model.mailHost, "mx1.example.org");
    });

    test("config: a catch-all alias has an empty local part and names its domain", () => {
        const { model } = parseConfig(validRawConfig(), { stack: "test" });
        const catchAll = model.aliases.find((a) => a.source === "@example.com");
        assert.deepEqual(catchAll, { source: "@example.com", sourceLocal: "", sourceDomain: "example.com", destination: "carol@example.com", destinationIsLocal: true });
        const forward = model.aliases.find((a) => a.source === "info@example.org");
        assert.equal(forward?.destinationIsLocal, false, "an outside destination is not local");
    });

    test("config: mailHostIsMailDomain says whether mailHost is itself a managed mail domain", () => {
        assert.equal(parseConfig(validRawConfig(), { stack: "test" }).model.mailHostIsMailDomain, false, "mx1.example.org is a host, not a mail domain");
        const raw = validRawConfig();
        raw.mailHost = "Example.ORG"; // compared after normalisation
        assert.equal(parseConfig(raw, { stack: "test" }).model.mailHostIsMailDomain, true, "mailHost example.org is one of the domains");
    });

    test("config: without ispmail:protect every stack is protected but the disposable ones (lab, dev, test, staging, ... alone or with a -suffix)", () => {
        const expected: Record<string, boolean> = {
            prod: true, production: true, "prod-eu": true, mail: true, "my-prod": true, produce: true,
            staging: false, "staging-eu": false, lab: false, dev: false, "dev-alice": false, test: false, ci: false, preview: false, sandbox: false, demo: false,
            "staging2": true, "labrador": true,
        };
        for (const [stack, protect] of Object.entries(expected)) {
            assert.equal(isProtectedStack(stack), protect, stack);
            assert.equal(parseConfig(validRawConfig(), { stack }).model.protectState, protect, stack);
            assert.equal(parseConfig(validRawConfig(), { stack }).model.stack, stack);
        }
    });

    test("config: ispmail:protect overrides the stack name either way; anything but a boolean is refused", () => {
        assert.equal(parseConfig({ ...validRawConfig(), protect: true }, { stack: "staging" }).model.protectState, true);
        assert.equal(parseConfig({ ...validRawConfig(), protect: false }, { stack: "prod" }).model.protectState, false);
        assert.throws(() => parseConfig({ ...validRawConfig(), protect: "yes" }, { stack: "prod" }), /ispmail:protect: .*true or false/);
    });

    test("config: a secret password goes to the configured secrets, never into the model", () => {
        const raw = validRawConfig();
        raw.users[1].password = "a long secret passphrase";
        for (const secretKeys of [["ispmail:users"], ["users"]]) {
            const { model, configured } = parseConfig(raw, { stack: "test", secretKeys });
            assert.equal(configured.get("user:bob@example.org"), "a long secret passphrase");
            assert.equal(configured.size, 1);
            assert.deepEqual(model.users.map((u) => u.passwordFromConfig), [false, true, false]);
            assert.ok(!JSON.stringify(model).includes("a long secret passphrase"));
        }
    });

    test("config: the Spamhaus DQS key must be secret config, and goes to the configured secrets, never into the model", () => {
        const key = "abcdefghij0123456789klmnop";
        const raw = { ...validRawConfig(), spamhausDqsKey: key };
        const { model, configured } = parseConfig(raw, { stack: "test", secretKeys: ["ispmail:spamhausDqsKey"] });
        assert.equal(configured.get("spamhaus.dqs"), key);
        assert.equal(model.spamhausDqs, true);
        assert.ok(!JSON.stringify(model).includes(key));
        assert.equal(parseConfig(validRawConfig(), { stack: "test" }).model.spamhausDqs, false);
        assert.match(problemsOf(raw).join("\n"), /^ispmail:spamhausDqsKey: is plain \(non-secret\) config; the key must be secret: pulumi config set --secret ispmail:spamhausDqsKey <key>$/m);
        assert.match(problemsOf({ ...raw, spamhausDqsKey: "short" }).join("\n"), /^ispmail:spamhausDqsKey: must be a Spamhaus DQS key \(26 lowercase letters and digits\).*\(got "short"\)$/m);
    });

    test("config: values as Pulumi passes them (JSON strings, numbers as text) parse like YAML values", () => {
        const raw = validRawConfig();
        const asPulumi: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(raw)) asPulumi[k] = typeof v === "string" ? v : JSON.stringify(v);
        asPulumi.defaultQuotaMb = "4096";
        const { model } = parseConfig(asPulumi, { stack: "test" });
        const direct = parseConfig({ ...raw, defaultQuotaMb: 4096 }, { stack: "test" }).model;
        assert.deepEqual(model, direct);
        assert.equal(model.users[0].quotaMb, 4096);
        assert.match(problemsOf({ ...raw, defaultQuotaMb: "lots" })[0], /^ispmail:defaultQuotaMb: must be a whole number of MB/);
    });
});

describe("config: the example stack files", () => {
    test("config: Pulumi.prod.yaml parses into a protected model with a catch-all, a cross-domain alias, a share and two selectors; Nextcloud off until its hash is filled in", () => {
        const { model, configured } = modelFromStackFile("Pulumi.prod.yaml", "prod");
        assert.equal(model.mailHost, "mx1.example.org");
        assert.deepEqual(model.domains, ["example.org", "example.com"]);
        assert.equal(model.protectState, true);
        // The example cannot know the archive's hash: it names the version and leaves Nextcloud off.
        assert.equal(model.nextcloud.enabled, false);
        assert.equal(model.nextcloud.sha256, undefined);
        assert.ok(model.nextcloud.version);
        assert.ok(model.aliases.some((a) => a.sourceLocal === "" && a.destinationIsLocal), "a catch-all");
        assert.ok(model.aliases.some((a) => a.destinationIsLocal && a.sourceDomain !== a.destination.split("@")[1]), "a cross-domain alias");
        assert.equal(model.sharedMailboxes.length, 1);
        assert.equal(model.dkimSelectors.length, 2);
        assert.ok(model.backup);
        assert.equal(configured.size, 0, "no password or key is written into the example");
    });

    test("config: Pulumi.staging.yaml parses into a small unprotected model without nextcloud", () => {
        const { model } = modelFromStackFile("Pulumi.staging.yaml", "staging");
        assert.equal(model.mailHost, "mx1.staging.example.org");
        assert.deepEqual(model.domains, ["staging.example.org"]);
        assert.equal(model.protectState, false);
        assert.equal(model.nextcloud.enabled, false);
        assert.equal(model.backup, undefined);
        assert.ok(model.acme.directoryUrl.includes("staging"), "staging uses the ACME staging CA");
    });

    test("config: the lab's stack file follows the same contract", () => {
        const { model } = modelFromStackFile("lab/stack.yaml", "lab");
        assert.equal(model.mailHost, "mx1.example.org");
        assert.ok(model.users.length >= 3);
    });

    for (const file of ["Pulumi.prod.yaml", "Pulumi.staging.yaml"]) {
        test(`config: ${file} holds no secret value, only instructions to set them`, () => {
            const text = readFileSync(join(REPO_ROOT, file), "utf8");
            const { otherKeys } = stackFileConfig(text);
            assert.deepEqual(otherKeys, [], "provider tokens come from the environment, they are not written here");
            assert.doesNotMatch(text, /^\s*password:/m);
            assert.doesNotMatch(text, /^\s*[^#\s].*secure:/m, "no encrypted value either: the example must parse without the CLI");
            // One way to pass the provider tokens, the same as the workflows': environment variables.
            assert.match(text, /export HCLOUD_TOKEN=/);
            assert.match(text, /export CLOUDFLARE_API_TOKEN=/);
            assert.doesNotMatch(text, /hcloud:token|cloudflare:apiToken/, "not a second way through the stack config");
            assert.match(text, /pulumi config set --secret --path 'ispmail:users\[0\]\.password'/);
        });

        test(`config: every setting in ${file} has a comment saying what it does`, () => {
            const lines = readFileSync(join(REPO_ROOT, file), "utf8").split("\n");
            const raw = rawFromStackFile(file);
            const uncommented: string[] = [];
            lines.forEach((line, i) => {
                // Top-level ispmail keys, and keys of the settings mappings (not of list entries such as users).
                const m = /^(  ispmail:\w+|    \w+):/.exec(line);
                if (!m) return;
                if (!/^\s*#/.test(lines[i - 1] ?? "")) uncommented.push(`${i + 1}: ${line.trim()}`);
            });
            assert.deepEqual(uncommented, []);
            assert.ok(Object.keys(raw).length >= 12, "the example shows (nearly) every key");
        });
    }

    test("config: a stack file with an encrypted value is refused with its key, not silently read", () => {
        const text = "config:\n  ispmail:mailHost: mx1.example.org\n  ispmail:users:\n    - address: a@example.org\n      password:\n        secure: v1:abc\n  hcloud:token:\n    secure: v1:def\n";
        assert.throws(() => stackFileConfig(text), /ispmail:users holds an encrypted \(secure:\) value/);
        const { raw, otherKeys } = stackFileConfig("config:\n  ispmail:mailHost: mx1.example.org\n  hcloud:token:\n    secure: v1:def\n");
        assert.deepEqual(raw, { mailHost: "mx1.example.org" });
        assert.deepEqual(otherKeys, ["hcloud:token"]);
    });
});
