/**
 * The dovecot step: the rendered configuration as Debian 13's Dovecot 2.4.1 reads it (doveconf -n
 * must be warning-free), the Sieve scripts compile, the quota numbers follow the stack config, the
 * quota policy service for Postfix and the quota warning mails are configured, and configured
 * shares become ACL lines for the step's sync.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parseConfig } from "../../components/config";
import { aclRightNames, DOVECOT_SQL_CONF, QUOTA_WARNING_SCRIPT, renderSharesFile, SHARES_FILE } from "../../components/services/dovecot";
import { secretsOf, type Step } from "../../components/steps";
import { validRawConfig } from "../fixtures/config";
import { chrootSkipReason, inChroot, withStepFiles } from "./mail-chroot";
import { renderServerSteps, SERVICE, stepsOf } from "../../components/services";

const model = parseConfig(validRawConfig(), { stack: "test" }).model;
const [step] = stepsOf(SERVICE.dovecot, model);
const content = (path: string) => {
    const f = step.files.find((x) => x.path === path);
    assert.ok(f, `${path} is not a file of the dovecot step`);
    return f.content;
};

/**
 * Runs a Dovecot tool (doveconf, sievec) with `-c` on the rendered tree; the absolute include of
 * the SQL file is pointed at the copy. `args` may use {root} for the tree's path in the chroot.
 */
function dovecotTool(s: Step, tool: string, args: readonly string[]): { code: number; out: string; err: string } {
    return withStepFiles([s], (inside, host) => {
        const auth = join(host, "etc/dovecot/conf.d/10-auth.conf");
        writeFileSync(auth, readFileSync(auth, "utf8").replace(`!include ${DOVECOT_SQL_CONF}`, `!include ${inside}${DOVECOT_SQL_CONF}`));
        const r = inChroot([tool, "-c", `${inside}/etc/dovecot/dovecot.conf`, ...args.map((a) => a.replaceAll("{root}", inside))]);
        return { code: r.code, out: r.stdout, err: r.stderr };
    });
}
const doveconf = (s: Step, args: readonly string[]) => dovecotTool(s, "doveconf", args);
const skipDovecot = chrootSkipReason("usr/bin/doveconf");

/** The top-level block `header { ... }` of doveconf -n output, from its first line to its closing brace. */
function topBlock(out: string, header: string): string {
    const start = out.indexOf(`\n${header} {\n`);
    assert.ok(start >= 0, `doveconf -n has no block "${header} {"`);
    const end = out.indexOf("\n}\n", start + 1);
    return out.slice(start + 1, end + 2);
}

describe("dovecot step", () => {
    test("dovecot: runs after directory and tls, not after postfix (the packages step made the postfix user its sockets belong to)", () => {
        assert.deepEqual([...step.after].sort(), ["directory", "tls"]);
        const all = renderServerSteps(model, { dkimSigner: model.dkimSelectors[0] });
        const index = (name: string) => all.findIndex((s) => s.name === name);
        assert.ok(index("packages") < index("dovecot") && all[index("dovecot")].after.includes("packages"), "the postfix package is installed first");
        assert.ok(all.find((s) => s.name === "packages")!.packages!.includes("postfix"));
    });

    test("dovecot: the SQL connection file is the only secret, root:dovecot 0640", () => {
        const sql = step.files.find((f) => f.path === DOVECOT_SQL_CONF);
        assert.ok(sql);
        assert.deepEqual([sql.secret, sql.owner, sql.group, sql.mode], [true, "root", "dovecot", "0640"]);
        assert.deepEqual(secretsOf(step), ["db.mailreader"]);
        assert.deepEqual(step.files.filter((f) => f.secret).map((f) => f.path), [DOVECOT_SQL_CONF]);
    });

    test("dovecot: Debian 13's Dovecot reads the configuration without a single warning", { skip: skipDovecot }, () => {
        const r = doveconf(step, ["-n"]);
        assert.equal(r.code, 0, r.err);
        assert.equal(r.err, "", "doveconf -n printed warnings");
        assert.match(r.out, /^dovecot_config_version = 2\.4\.1$/m);
    });

    test("dovecot: IMAP only on 993, LMTP and auth sockets inside Postfix's queue, ManageSieve on 4190", { skip: skipDovecot }, () => {
        const r = doveconf(step, ["-n"]);
        assert.match(r.out, /inet_listener imap \{\n\s+port = 0\n/);
        assert.match(r.out, /inet_listener imaps \{\n\s+port = 993\n\s+ssl = yes\n/);
        assert.match(r.out, /unix_listener \/var\/spool\/postfix\/private\/dovecot-lmtp \{/);
        assert.match(r.out, /unix_listener \/var\/spool\/postfix\/private\/auth \{/);
        assert.match(r.out, /inet_listener sieve \{\n\s+port = 4190\n/);
        assert.match(r.out, /^protocols = imap lmtp sieve$/m);
        assert.match(r.out, /^ssl = required$/m);
    });

    test("dovecot: Postfix, not Dovecot, limits parallel LMTP deliveries, so a burst to one mailbox gets no 451", { skip: skipDovecot }, () => {
        const [postfixStep] = stepsOf(SERVICE.postfix, model);
        const mainCf = postfixStep.files.find((f) => f.path === "/etc/postfix/main.cf");
        assert.ok(mainCf, "the postfix step writes /etc/postfix/main.cf");
        const postfixLimit = Number(/^lmtp_destination_concurrency_limit = (\d+)$/m.exec(mainCf.content)?.[1]);
        const dovecotLimit = Number(doveconf(step, ["-h", "lmtp_user_concurrency_limit"]).out.trim());
        assert.ok(postfixLimit > 0, "main.cf sets lmtp_destination_concurrency_limit");
        // Equal limits still met an occasional 451 in the lab (bench/README.md): Dovecot's must be higher.
        assert.ok(dovecotLimit > postfixLimit, `Dovecot's per-user LMTP limit ${dovecotLimit} must be above Postfix's ${postfixLimit}`);
    });

    test("dovecot: quota default and maximum mail size follow the stack config", { skip: skipDovecot }, () => {
        const r = doveconf(step, ["-h", "quota_storage_size"]);
        assert.equal(r.out.trim(), `${model.defaultQuotaMb}M`);
        const size = doveconf(step, ["-h", "quota_mail_size"]);
        assert.equal(size.out.trim(), `${model.messageSizeLimitMb + 1}M`);
        const other = parseConfig({ ...validRawConfig(), defaultQuotaMb: 512 }, { stack: "test" }).model;
        const [otherStep] = stepsOf(SERVICE.dovecot, other);
        assert.equal(doveconf(otherStep, ["-h", "quota_storage_size"]).out.trim(), "512M");
    });

    test("dovecot: Sieve redirects and vacation replies leave with the user's own address as envelope sender", { skip: skipDovecot }, () => {
        // What Rspamd's rule for mail the server submits itself compares the From header with.
        assert.equal(doveconf(step, ["-h", "sieve_redirect_envelope_from"]).out.trim(), "recipient");
        assert.equal(doveconf(step, ["-h", "sieve_vacation_send_from_recipient"]).out.trim(), "yes");
    });

    test("dovecot: the quota policy socket for Postfix and the 95 % and 80 % warnings are in the rendered config", () => {
        const conf = content("/etc/dovecot/conf.d/90-quota.conf");
        assert.match(conf, /^service quota-status \{\n(\s+#.*\n|\s+\w+ = .*\n)*\s+unix_listener \/var\/spool\/postfix\/private\/quota-status \{\n\s+user = postfix\n/m);
        // quota-status without "-p postfix" exits at once ("Missing -p parameter").
        assert.match(conf, /^ {2}executable = quota-status -p postfix$/m);
        assert.match(conf, /^quota_status_success = DUNNO$/m);
        assert.match(conf, /^quota_status_nouser = DUNNO$/m);
        assert.match(conf, /^quota_status_overquota = "552 5\.2\.2 Mailbox is full"$/m);
        // Highest first: Dovecot runs only the first warning that matches.
        const warn95 = conf.search(/quota_warning warn-95 \{\n\s+quota_storage_percentage = 95\n\s+execute quota-warning \{\n\s+args = 95 %\{user\}\n/);
        const warn80 = conf.search(/quota_warning warn-80 \{\n\s+quota_storage_percentage = 80\n\s+execute quota-warning \{\n\s+args = 80 %\{user\}\n/);
        assert.ok(warn95 > 0 && warn80 > warn95, "warn-95, then warn-80, inside the quota block");
        assert.match(conf, new RegExp(`^ {2}executable = script ${QUOTA_WARNING_SCRIPT}$`, "m"));
        const script = step.files.find((f) => f.path === QUOTA_WARNING_SCRIPT);
        assert.ok(script, "the warning script is a file of the step");
        assert.equal(script.mode, "0755");
        // The second line of defence stays: LMTP refuses a full mailbox at its own RCPT.
        assert.match(content("/etc/dovecot/conf.d/20-lmtp.conf"), /^\s+lmtp_rcpt_check_quota = yes$/m);
    });

    test("dovecot: doveconf shows the quota policy service in Postfix's queue and the two warnings", { skip: skipDovecot }, () => {
        const r = doveconf(step, ["-n"]);
        assert.equal(r.code, 0, r.err);
        assert.equal(
            topBlock(r.out, "service quota-status"),
            [
                "service quota-status {",
                "  client_limit = 1",
                "  executable = quota-status -p postfix",
                "  user = vmail",
                "  unix_listener /var/spool/postfix/private/quota-status {",
                "    group = postfix",
                "    mode = 0600",
                "    user = postfix",
                "  }",
                "}",
            ].join("\n"),
        );
        assert.equal(
            topBlock(r.out, 'quota "User quota"'),
            [
                'quota "User quota" {',
                "  driver = count",
                "  quota_warning warn-95 {",
                "    quota_storage_percentage = 95",
                "    execute quota-warning {",
                "      args = 95 %{user}",
                "    }",
                "  }",
                "  quota_warning warn-80 {",
                "    quota_storage_percentage = 80",
                "    execute quota-warning {",
                "      args = 80 %{user}",
                "    }",
                "  }",
                "}",
            ].join("\n"),
        );
        assert.equal(
            topBlock(r.out, "service quota-warning"),
            [
                "service quota-warning {",
                "  executable = script /etc/dovecot/quota-warning.sh",
                "  extra_groups = dovecot",
                "  user = vmail",
                "  unix_listener quota-warning {",
                "    group = vmail",
                "    mode = 0600",
                "    user = vmail",
                "  }",
                "}",
            ].join("\n"),
        );
        assert.match(r.out, /^protocol lmtp \{\n(\s+.*\n)*?\s+lmtp_rcpt_check_quota = yes\n/m);
        const answers = ["quota_status_success", "quota_status_nouser", "quota_status_overquota", "quota_status_toolarge"].map((k) => doveconf(step, ["-h", k]).out.trim());
        // toolarge must not be empty: 2.4.1 would answer a bare "action=" (seen live with a SIZE above the space left).
        assert.deepEqual(answers, ["DUNNO", "DUNNO", "552 5.2.2 Mailbox is full", "552 5.2.2 Mailbox is full"]);
    });

    test("dovecot: the warning script hands dovecot-lda one auto-generated message from the domain's postmaster", () => {
        const original = content(QUOTA_WARNING_SCRIPT);
        const lda = "/usr/lib/dovecot/dovecot-lda";
        assert.equal(original.split(lda).length, 2, "dovecot-lda is called exactly once, by its full path");
        const dir = mkdtempSync(join(tmpdir(), "quota-warning-"));
        try {
            // A stand-in for dovecot-lda that records its arguments and the message.
            const stub = join(dir, "lda");
            writeFileSync(stub, `#!/bin/sh\nprintf '%s\\n' "$@" > ${dir}/args\ncat > ${dir}/mail\n`);
            chmodSync(stub, 0o755);
            const script = join(dir, "quota-warning.sh");
            writeFileSync(script, original.replace(lda, stub));
            // Dovecot's script service starts it with an empty environment, as Debian's /bin/sh (dash).
            const run = (...args: string[]) => spawnSync("/bin/sh", [script, ...args], { env: {}, encoding: "utf8" });

            const ok = run("80", "alice@example.org");
            assert.equal(ok.status, 0, ok.stderr);
            assert.deepEqual(readFileSync(join(dir, "args"), "utf8").split("\n"), ["-e", "-f", "", "-d", "alice@example.org", "-o", "quota_enforce=no", ""]);
            const mail = readFileSync(join(dir, "mail"), "utf8");
            const [head, body] = mail.split("\n\n", 2);
            assert.match(head, /^From: Mail system <postmaster@example\.org>$/m);
            assert.match(head, /^To: <alice@example\.org>$/m);
            assert.match(head, /^Subject: Your mailbox is 80% full$/m);
            assert.match(head, /^Auto-Submitted: auto-generated$/m);
            assert.match(head, /^Date: \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}$/m);
            assert.match(head, /^Message-ID: <quota-warning\.\d+\.\d+@example\.org>$/m);
            assert.match(body, /alice@example\.org has reached 80% of its storage quota/);

            // Anything but a number and an address is refused before dovecot-lda runs.
            rmSync(join(dir, "args"));
            for (const args of [["80;id", "alice@example.org"], ["", "alice@example.org"], ["95", "alice"]]) {
                const bad = run(...args);
                assert.equal(bad.status, 64, `${args.join(" ")}: ${bad.stderr}`);
                assert.match(bad.stderr, /^quota-warning: unexpected /);
            }
            assert.throws(() => readFileSync(join(dir, "args")), /ENOENT/);
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });

    test("dovecot: the global and IMAPSieve scripts compile with Pigeonhole", { skip: chrootSkipReason("usr/bin/sievec") }, () => {
        // The plugins and extensions conf.d/90-sieve.conf enables for administrator scripts (sievec
        // with our dovecot.conf would need the vmail user, which the chroot does not have).
        const sieveSetup = ["-P", "sieve_extprograms", "-P", "sieve_imapsieve", "-x", "+vnd.dovecot.pipe +vnd.dovecot.environment"];
        withStepFiles([step], (inside) => {
            for (const rel of ["before/spam-to-junk.sieve", "imapsieve/report-spam.sieve", "imapsieve/report-ham.sieve"]) {
                const r = inChroot(["sievec", ...sieveSetup, `${inside}/etc/dovecot/sieve/${rel}`, `${inside}/out.svbin`]);
                assert.equal(r.code, 0, `${rel}: ${r.stderr}`);
                assert.equal(r.stderr, "", `${rel}: sievec warned`);
            }
        });
    });

    test("dovecot: the spam filter files X-Spam: Yes into Junk before the user's scripts", () => {
        const script = content("/etc/dovecot/sieve/before/spam-to-junk.sieve");
        assert.match(script, /header :contains "X-Spam" "Yes"/);
        assert.match(script, /fileinto :create "Junk";\s*(#.*\n\s*)*stop;/);
        assert.match(content("/etc/dovecot/conf.d/90-sieve.conf"), /sieve_script spam-to-junk \{\n\s+sieve_script_type = before/);
    });

    test("dovecot: shares become one sorted ACL line per owner and grantee with Dovecot's right names", () => {
        assert.deepEqual(aclRightNames("lrws"), ["lookup", "read", "write", "write-seen"]);
        assert.deepEqual(aclRightNames("lrwstipekxa").length, 11);
        assert.throws(() => aclRightNames("lz"), /unknown IMAP ACL right "z"/);
        const lines = renderSharesFile([
            { mailbox: "carol@example.com", sharedTo: "alice@example.org", rights: "lr" },
            { mailbox: "alice@example.org", sharedTo: "bob@example.org", rights: "lrws" },
        ]);
        assert.equal(lines, "alice@example.org bob@example.org lookup read write write-seen\ncarol@example.com alice@example.org lookup read\n");
        assert.equal(renderSharesFile([]), "");
        assert.equal(content(SHARES_FILE), renderSharesFile(model.sharedMailboxes));
    });
});
