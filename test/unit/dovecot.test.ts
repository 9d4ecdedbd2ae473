/**
 * The dovecot step: the rendered configuration as Debian 13's Dovecot 2.4.1 reads it (doveconf -n
 * must be warning-free), the Sieve scripts compile, the quota numbers follow the stack config and
 * configured shares become ACL lines for the step's sync.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parseConfig } from "../../components/config";
import { aclRightNames, DOVECOT_SQL_CONF, renderSharesFile, SHARES_FILE } from "../../components/services/dovecot";
import { secretsOf, type Step } from "../../components/steps";
import { validRawConfig } from "../fixtures/config";
import { chrootSkipReason, inChroot, withStepFiles } from "./mail-chroot";
import { SERVICE, stepsOf } from "../../components/services";

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

describe("dovecot step", () => {
    test("dovecot: runs after directory, tls and postfix (its sockets belong to the postfix user)", () => {
        assert.deepEqual([...step.after].sort(), ["directory", "postfix", "tls"]);
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

    test("dovecot: quota default and maximum mail size follow the stack config", { skip: skipDovecot }, () => {
        const r = doveconf(step, ["-h", "quota_storage_size"]);
        assert.equal(r.out.trim(), `${model.defaultQuotaMb}M`);
        const size = doveconf(step, ["-h", "quota_mail_size"]);
        assert.equal(size.out.trim(), `${model.messageSizeLimitMb + 1}M`);
        const other = parseConfig({ ...validRawConfig(), defaultQuotaMb: 512 }, { stack: "test" }).model;
        const [otherStep] = stepsOf(SERVICE.dovecot, other);
        assert.equal(doveconf(otherStep, ["-h", "quota_storage_size"]).out.trim(), "512M");
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
