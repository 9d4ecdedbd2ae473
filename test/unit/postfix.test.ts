/**
 * The postfix step: what main.cf/master.cf say (checked by Debian 13's postconf, which warns about
 * every parameter it does not know), how the password-holding maps are installed, and the order.
 */
import assert from "node:assert/strict";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parseConfig } from "../../components/config";
import { PGSQL_MAPS } from "../../components/services/postfix";
import { renderApplyScript, resolveSecrets, secretsOf, type Step } from "../../components/steps";
import { validRawConfig } from "../fixtures/config";
import { runWithStubs, shellFunction } from "../harness/shell";
import { CHROOT, chrootSkipReason, inChroot, withStepFiles } from "./mail-chroot";
import { SERVICE, stepsOf } from "../../components/services";

const model = parseConfig(validRawConfig(), { stack: "test" }).model;
const [step] = stepsOf(SERVICE.postfix, model);
const file = (path: string) => {
    const f = step.files.find((x) => x.path === path);
    assert.ok(f, `${path} is not a file of the postfix step`);
    return f;
};

/** The postfix step of the fixture config with one change. */
function stepWith(change: (raw: Record<string, any>) => void): Step {
    const raw = validRawConfig();
    change(raw);
    return stepsOf(SERVICE.postfix, parseConfig(raw, { stack: "test" }).model)[0];
}

/** One parameter's value in `postconf -n` output. */
const valueIn = (out: string, parameter: string) => new RegExp(`^${parameter} = (.*)$`, "m").exec(out)?.[1];

/** `postconf` against the rendered main.cf/master.cf (of `s`, the fixture's step by default) in the chroot. */
function postconf(args: readonly string[], s: Step = step): { out: string; warnings: string } {
    return withStepFiles([s], (inside, host) => {
        // postconf also reads dynamicmaps.cf to know pgsql: tables exist.
        copyFileSync(join(CHROOT, "etc/postfix/dynamicmaps.cf"), join(host, "etc/postfix/dynamicmaps.cf"));
        // Point main.cf at the rendered pgsql maps, so postconf checks their parameters too.
        const mainCf = join(host, "etc/postfix/main.cf");
        writeFileSync(mainCf, readFileSync(mainCf, "utf8").replaceAll("pgsql:/etc/postfix/", `pgsql:${inside}/etc/postfix/`));
        const r = inChroot(["postconf", "-c", `${inside}/etc/postfix`, ...args]);
        assert.equal(r.code, 0, r.stderr);
        return { out: r.stdout, warnings: r.stderr };
    });
}

describe("postfix step", () => {
    test("postfix: runs after directory, tls, rspamd and its TLS policy tables (dovecot follows it)", () => {
        assert.deepEqual([...step.after].sort(), ["directory", "rspamd", "tls", "tls-policy"]);
        assert.equal(step.name, "postfix");
    });

    test("postfix: main.cf names the host and limits messages to messageSizeLimitMb MiB", () => {
        const main = file("/etc/postfix/main.cf").content;
        assert.match(main, /^myhostname = mx1\.example\.org$/m);
        assert.match(main, new RegExp(`^message_size_limit = ${model.messageSizeLimitMb * 1024 * 1024}$`, "m"));
    });

    test("postfix: /etc/aliases sends the server's own names to root and root to ispmail:adminEmail", () => {
        const aliases = (s: Step) => {
            const f = s.files.find((x) => x.path === "/etc/aliases");
            assert.ok(f, "the postfix step installs /etc/aliases");
            assert.equal(f.mode, "0644");
            const map = new Map<string, string>();
            for (const line of f.content.split("\n")) {
                if (!line.trim() || line.startsWith("#")) continue;
                const m = /^([^:\s]+):\s*(\S+)$/.exec(line);
                assert.ok(m, `not a "name: target" line: ${line}`);
                assert.ok(!map.has(m[1].toLowerCase()), `${m[1]} is listed twice`);
                map.set(m[1].toLowerCase(), m[2]);
            }
            /** Where mail to `name` ends up, following local names as local(8) does. */
            const resolve = (name: string, seen: string[] = []): string[] => {
                const next = map.get(name.toLowerCase());
                if (next === undefined) return [...seen, name];
                assert.ok(!seen.includes(name), `alias loop: ${[...seen, name].join(" -> ")}`);
                return resolve(next, [...seen, name]);
            };
            return { map, resolve };
        };
        const { map, resolve } = aliases(step);
        assert.equal(map.get("root"), model.adminEmail);
        assert.equal(map.get("postmaster"), "root");
        assert.equal(map.get("abuse"), "root");
        for (const name of ["postmaster", "abuse", "MAILER-DAEMON", "nobody", "www-data"]) {
            const chain = resolve(name);
            assert.equal(chain.at(-2), "root", `${name} does not reach root: ${chain.join(" -> ")}`);
            assert.equal(chain.at(-1), model.adminEmail, `${name}: ${chain.join(" -> ")}`);
        }
        // The address is the stack's, not a fixed one.
        assert.equal(aliases(stepWith((raw) => (raw.adminEmail = "ops@elsewhere.example"))).map.get("root"), "ops@elsewhere.example");
    });

    test("postfix: PostSRSd rewrites to the host name and never touches our own domains", () => {
        const srs = file("/etc/default/postsrsd").content;
        assert.match(srs, /^SRS_DOMAIN=mx1\.example\.org$/m);
        assert.match(srs, /^SRS_EXCLUDE_DOMAINS=example\.org,example\.com$/m);
        assert.match(srs, /^SRS_LISTEN_ADDR=127\.0\.0\.1$/m);
        assert.ok(step.packages?.includes("postsrsd"), "postsrsd is not installed by the postfix step");
    });

    test("postfix: the pgsql maps hold the mailreader password only as a placeholder, root:postfix 0640", () => {
        for (const name of PGSQL_MAPS) {
            const f = file(`/etc/postfix/${name}.cf`);
            assert.equal(f.secret, true);
            assert.deepEqual([f.owner, f.group, f.mode], ["root", "postfix", "0640"]);
            assert.match(f.content, /^password = @@secret:db\.mailreader@@$/m);
            assert.match(f.content, /^user = mailreader$/m);
        }
        assert.deepEqual(secretsOf(step), ["db.mailreader"]);
        const resolved = resolveSecrets(step, { "db.mailreader": "R3aderPassw0rd" });
        assert.match(renderApplyScript(resolved), /ispmail_file \/etc\/postfix\/pgsql-sender-login-maps\.cf root postfix 0640/);
    });

    test("postfix: every lookup goes through proxymap to the directory's views", () => {
        const main = file("/etc/postfix/main.cf").content;
        for (const param of ["virtual_mailbox_domains", "virtual_mailbox_maps", "virtual_alias_maps", "smtpd_sender_login_maps"]) {
            assert.match(main, new RegExp(`^${param} = proxy:pgsql:/etc/postfix/pgsql-[a-z-]+\\.cf$`, "m"), param);
        }
        const views = PGSQL_MAPS.map((n) => /FROM (\w+)/.exec(file(`/etc/postfix/${n}.cf`).content)?.[1]);
        assert.deepEqual(views, ["virtual_domains", "virtual_mailboxes", "virtual_aliases", "sender_logins"]);
    });

    test("postfix: Debian 13's postconf knows every main.cf parameter and reads the restrictions we mean", { skip: chrootSkipReason("usr/sbin/postconf") }, () => {
        const { out, warnings } = postconf(["-n"]);
        assert.equal(warnings, "", "postconf warned about main.cf");
        const value = (p: string) => valueIn(out, p);
        assert.equal(value("smtpd_relay_restrictions"), "permit_sasl_authenticated reject_unauth_destination");
        assert.equal(value("smtpd_sasl_auth_enable"), "no");
        assert.equal(value("smtpd_tls_auth_only"), "yes");
        assert.equal(value("virtual_transport"), "lmtp:unix:private/dovecot-lmtp");
        // SRS for forwards: envelope senders only, bounces mapped back (PostSRSd on loopback).
        assert.equal(value("sender_canonical_maps"), "tcp:127.0.0.1:10001");
        assert.equal(value("sender_canonical_classes"), "envelope_sender");
        assert.equal(value("recipient_canonical_maps"), "tcp:127.0.0.1:10002");
        assert.equal(value("smtpd_milters"), "unix:/rspamd/milter.sock");
        assert.equal(value("milter_mail_macros"), "i {mail_addr} {client_addr} {client_name} {auth_authen}");
        // Outbound DANE: verified TLS where the MX publishes TLSA in a signed zone, opportunistic
        // elsewhere; DNSSEC answers from the resolver step's unbound.
        assert.equal(value("smtp_tls_security_level"), "dane");
        assert.equal(value("smtp_dns_support_level"), "dnssec");
        // Per destination: DANE first, then the destination's MTA-STS policy (the tls-policy step).
        assert.equal(value("smtp_tls_policy_maps"), "socketmap:inet:127.0.0.1:8462:dane-first, socketmap:inet:127.0.0.1:8461:postfix");
        // Port 25 leaves address ownership to DMARC (forwarded and list mail keeps our users as
        // envelope senders); the login check belongs to the submission ports (master.cf).
        assert.equal(value("smtpd_sender_restrictions"), "reject_non_fqdn_sender check_sender_access regexp:/etc/postfix/non-ascii-sender.regexp reject_unknown_sender_domain");
        // A full mailbox is refused at RCPT by Dovecot's quota-status service, asked last: a
        // malformed recipient or an unknown domain is refused without a round trip to Dovecot.
        const recipient = (value("smtpd_recipient_restrictions") ?? "").split(/[\s,]+/);
        assert.deepEqual(recipient.slice(-2), ["check_policy_service", "unix:private/quota-status"]);
        // local(8) (root's mail through /etc/aliases) refuses to start with a mailbox limit below
        // the message size limit.
        assert.equal(value("message_size_limit"), String(model.messageSizeLimitMb * 1024 * 1024));
        assert.equal(value("mailbox_size_limit"), value("message_size_limit"));
        // root@mailHost is local (delivered through /etc/aliases), or its mail "loops back to myself".
        assert.equal(value("mydestination"), "$myhostname, localhost.$mydomain, localhost");
        // ... unless mailHost is itself a mail domain: a domain is either local or virtual.
        const hostIsDomain = postconf(["-n"], stepWith((raw) => (raw.mailHost = "example.org")));
        assert.equal(hostIsDomain.warnings, "", "postconf warned about main.cf with mailHost = example.org");
        assert.match(hostIsDomain.out, /^myhostname = example\.org$/m);
        assert.equal(/^mydestination = (.*)$/m.exec(hostIsDomain.out)?.[1], "localhost.$mydomain, localhost");
    });

    test("postfix: port 25 is screened by postscreen (pregreet, Spamhaus ZEN weights); with a DQS key no list is named in main.cf", { skip: chrootSkipReason("usr/sbin/postconf") }, () => {
        const services = postconf(["-M"]);
        assert.equal(services.warnings, "", "postconf warned about master.cf");
        const service = (name: string) => services.out.split("\n").find((l) => l.startsWith(`${name} `))?.trim().split(/\s+/);
        assert.deepEqual(service("smtp")?.slice(0, 2).concat(service("smtp")!.slice(-2)), ["smtp", "inet", "1", "postscreen"]);
        assert.deepEqual(service("smtpd")?.slice(0, 2).concat(service("smtpd")!.slice(-1)), ["smtpd", "pass", "smtpd"]);
        for (const helper of ["dnsblog", "tlsproxy"]) assert.ok(service(helper), `${helper} is defined`);
        const { out, warnings } = postconf(["-n"]);
        assert.equal(warnings, "");
        const value = (p: string) => valueIn(out, p);
        assert.equal(value("postscreen_greet_action"), "enforce");
        assert.equal(value("postscreen_dnsbl_action"), "enforce");
        assert.equal(value("postscreen_access_list"), "permit_mynetworks");
        assert.equal(value("postscreen_dnsbl_threshold"), "3");
        assert.equal(value("postscreen_dnsbl_sites"), "zen.spamhaus.org=127.0.0.[2..7]*3, zen.spamhaus.org=127.0.0.[10..11]*1");
        const keyed = stepsOf(SERVICE.postfix, parseConfig({ ...validRawConfig(), spamhausDqsKey: "abcdefghij0123456789klmnop" }, { stack: "test", secretKeys: ["ispmail:spamhausDqsKey"] }).model)[0];
        const withKey = postconf(["-n"], keyed);
        assert.equal(withKey.warnings, "");
        assert.doesNotMatch(withKey.out, /spamhaus/);
        assert.doesNotMatch(keyed.files.find((f) => f.path === "/etc/postfix/main.cf")!.content, /abcdefghij0123456789klmnop/);
    });

    test("postfix: submission (587) requires STARTTLS and AUTH, submissions (465) is implicit TLS, both strip client headers", { skip: chrootSkipReason("usr/sbin/postconf") }, () => {
        const { out, warnings } = postconf(["-P"]);
        assert.equal(warnings, "", "postconf warned about master.cf");
        const params = new Set(out.trim().split("\n"));
        for (const p of [
            "submission/inet/smtpd_tls_security_level = encrypt",
            "submission/inet/smtpd_sasl_auth_enable = yes",
            "submission/inet/smtpd_client_restrictions = permit_sasl_authenticated,reject",
            "submission/inet/cleanup_service_name = header_cleanup",
            "submission/inet/smtpd_sender_restrictions = reject_non_fqdn_sender,reject_authenticated_sender_login_mismatch,permit_sasl_authenticated,reject",
            "submissions/inet/smtpd_sender_restrictions = reject_non_fqdn_sender,reject_authenticated_sender_login_mismatch,permit_sasl_authenticated,reject",
            "submissions/inet/smtpd_tls_wrappermode = yes",
            "submissions/inet/smtpd_sasl_auth_enable = yes",
            "submissions/inet/cleanup_service_name = header_cleanup",
            "header_cleanup/unix/header_checks = regexp:/etc/postfix/submission_header_cleanup",
            // No SMTPUTF8 autodetection in either cleanup: it would make raw UTF-8 headers require
            // SMTPUTF8 at Dovecot's LMTP, which does not offer it (bounce after acceptance).
            "cleanup/unix/smtputf8_enable = no",
            "header_cleanup/unix/smtputf8_enable = no",
        ]) {
            assert.ok(params.has(p), `master.cf lacks ${p}`);
        }
        assert.ok(![...params].some((p) => p.startsWith("smtp/inet/smtpd_sasl_auth_enable")), "port 25 must not enable AUTH");
    });

    test("postfix: the submission header checks drop Received, User-Agent and X-Originating-IP but keep Subject", { skip: chrootSkipReason("usr/sbin/postmap") }, () => {
        withStepFiles([step], (inside) => {
            const check = (header: string) => inChroot(["postmap", "-q", header, `regexp:${inside}/etc/postfix/submission_header_cleanup`]).stdout.trim();
            assert.equal(check("Received: from [198.51.100.7] (laptop.example [198.51.100.7])"), "IGNORE");
            assert.equal(check("User-Agent: Mozilla/5.0 Thunderbird/128.0"), "IGNORE");
            assert.equal(check("X-Originating-IP: [198.51.100.7]"), "IGNORE");
            assert.equal(check("Subject: Received your invoice"), "");
        });
    });

    test("postfix: the script checks the configuration before reloading and reloads only on change", () => {
        const script = readFileSync(join(__dirname, "..", "..", "files", "postfix", "apply.sh"), "utf8");
        // reload_when_changed runs the check first and reloads only on a change (test/unit/steps.test.ts).
        assert.match(script, /^reload_when_changed postfix \/etc\/postfix -- postfix_check_unless_stopped$/m);
    });

    test("postfix: a main.cf the step just wrote is dated back so that Debian 13's Postfix reads it at once, not after it cools down for 2 s", { skip: chrootSkipReason("usr/sbin/postconf") }, () => {
        const script = readFileSync(join(__dirname, "..", "..", "files", "postfix", "apply.sh"), "utf8");
        const cooled = shellFunction(script, "main_cf_cooled");
        withStepFiles([step], (inside) => {
            const conf = `${inside}/etc/postfix`;
            // postconf -vv says each time it reads main.cf again to let it cool down.
            const rereads = (before: string) => {
                const r = inChroot(["bash", "-c", `set -euo pipefail\nchanged() { return 0; }\n${cooled.replaceAll("/etc/postfix/main.cf", `${conf}/main.cf`)}\ntouch ${conf}/main.cf\n${before}\npostconf -vv -c ${conf} -h myhostname 2>&1 >/dev/null | grep -c 'cool down' || true`]);
                assert.equal(r.code, 0, r.stderr);
                return Number(r.stdout.trim());
            };
            assert.ok(rereads("") > 0, "a file written this second is read again until it is 2 s old");
            assert.equal(rereads("main_cf_cooled"), 0);
        });
    });

    test("postfix: `postfix check` runs before a reload of a running Postfix, fails the step when it fails, and is left to the start of a stopped one", () => {
        const script = readFileSync(join(__dirname, "..", "..", "files", "postfix", "apply.sh"), "utf8");
        const prelude = readFileSync(join(__dirname, "..", "..", "files", "common", "prelude.sh"), "utf8");
        const check = ["declare -A ISPMAIL_ACTIVE=()", "ISPMAIL_UNITS=()", shellFunction(prelude, "is_active"), shellFunction(script, "postfix_check_unless_stopped"), "postfix_check_unless_stopped", "echo checked"].join("\n");
        const running = runWithStubs(check, { systemctl: "echo active", postfix: "exit 0" });
        assert.deepEqual(running.calls, ["systemctl is-active -- postfix", "postfix check"]);
        assert.equal(running.stdout, "checked\n");
        const broken = runWithStubs(check, { systemctl: "echo active", postfix: "exit 1" });
        assert.notEqual(broken.code, 0, "a failed check ends the step");
        assert.equal(broken.stdout, "");
        // Stopped: postfix.service's ExecStartPre runs `postfix check` when the reload starts it.
        const stopped = runWithStubs(check, { systemctl: "echo inactive; exit 3", postfix: "exit 1" });
        assert.deepEqual(stopped.calls, ["systemctl is-active -- postfix"]);
        assert.equal(stopped.stdout, "checked\n");
    });
});
