/**
 * The rspamd step: workers on loopback only, DKIM signing for every managed domain with the active
 * selector, keys readable by _rspamd only, and the whole local.d and lua.local.d accepted by
 * Debian 13's Rspamd 3.12 (rspamadm configtest in the trixie chroot).
 */
import assert from "node:assert/strict";
import { cpSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parseConfig } from "../../components/config";
import { SERVICE, stepsOf } from "../../components/services";
import { ARC_CONF, DKIM_SIGNING_CONF } from "../../components/services/dkim-signer";
import { dkimKeyPath, RBL_CONF } from "../../components/services/rspamd";
import { resolveSecrets, secretsOf } from "../../components/steps";
import { validRawConfig } from "../fixtures/config";
import { CHROOT, chrootSkipReason, inChroot, withStepFiles } from "./mail-chroot";

const model = parseConfig(validRawConfig(), { stack: "test" }).model;
const [step] = stepsOf(SERVICE.rspamd, model);
const [signer] = stepsOf(SERVICE.dkimSigner, model);
const content = (path: string) => {
    const f = step.files.find((x) => x.path === path);
    assert.ok(f, `${path} is not a file of the rspamd step`);
    return f.content;
};

/** Every file below dir, recursively. */
function walk(dir: string): string[] {
    return readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? walk(join(dir, n)) : [join(dir, n)]));
}

describe("rspamd step", () => {
    test("rspamd: runs after base and the resolver (its DNS server) and installs Rspamd with Valkey", () => {
        assert.deepEqual(step.after, ["base", "resolver"]);
        assert.deepEqual([...(step.packages ?? [])].sort(), ["rspamd", "valkey-server"]);
    });

    test("rspamd: the milter listens on a Unix socket in Postfix's chroot, scanner and controller on loopback only", () => {
        assert.match(content("/etc/rspamd/local.d/worker-proxy.inc"), /^bind_socket = "\/var\/spool\/postfix\/rspamd\/milter\.sock mode=0666";$/m);
        assert.match(content("/etc/rspamd/local.d/worker-normal.inc"), /^bind_socket = "localhost:11333";$/m);
        assert.match(content("/etc/rspamd/local.d/worker-controller.inc"), /^bind_socket = "localhost:11334";$/m);
        // No plain-text password in any file: the hash is derived on the server.
        assert.doesNotMatch(content("/etc/rspamd/local.d/worker-controller.inc"), /^\s*(enable_)?password/m);
    });

    test("dkim-signer: DKIM signs every managed domain with the signing selector's key, never inbound mail; its own step after rspamd", () => {
        assert.deepEqual(signer.after, ["rspamd"]);
        assert.ok(!step.files.some((f) => f.path === DKIM_SIGNING_CONF), "the rspamd step leaves the signer to the dkim-signer step");
        assert.deepEqual(signer.files.map((f) => f.path), [DKIM_SIGNING_CONF, ARC_CONF]);
        const conf = signer.files[0].content;
        for (const d of model.domains) {
            assert.match(conf, new RegExp(`\\b${d.replace(".", "\\.")} \\{\\s*selectors \\[\\s*\\{ path = "${dkimKeyPath(model.dkimSelectors[0])}"; selector = "${model.dkimSelectors[0]}"; \\}`));
        }
        assert.match(conf, /^sign_inbound = false;$/m);
        assert.match(conf, /^use_domain = "header";$/m);
        assert.match(conf, /^try_fallback = false;$/m);
    });

    test("dkim-signer: ARC seals arriving mail for the recipient's domain with the same key, and nothing our users send", () => {
        const arc = signer.files.find((f) => f.path === ARC_CONF)!.content;
        for (const d of model.domains) {
            assert.match(arc, new RegExp(`\\b${d.replace(".", "\\.")} \\{\\s*selectors \\[\\s*\\{ path = "${dkimKeyPath(model.dkimSelectors[0])}"; selector = "${model.dkimSelectors[0]}"; \\}`));
        }
        assert.match(arc, /^sign_inbound = true;$/m);
        assert.match(arc, /^use_domain_sign_inbound = "recipient";$/m);
        assert.match(arc, /^sign_local = false;$/m);
        assert.match(arc, /^sign_authenticated = false;$/m);
        assert.match(arc, /^try_fallback = false;$/m);
    });

    test("rspamd: every selector's key is a secret file owned by _rspamd, mode 0600", () => {
        assert.ok(model.dkimSelectors.length >= 2, "the fixture has two selectors");
        for (const s of model.dkimSelectors) {
            const f = step.files.find((x) => x.path === dkimKeyPath(s));
            assert.ok(f, `no key file for ${s}`);
            assert.deepEqual([f.secret, f.owner, f.group, f.mode, f.content], [true, "_rspamd", "_rspamd", "0600", `@@secret:dkim:${s}@@`]);
        }
        assert.deepEqual(secretsOf(step), [...model.dkimSelectors.map((s) => `dkim:${s}`), "rspamd.controller"].sort());
    });

    test("rspamd: Debian 13's Rspamd 3.12 accepts the configuration", { skip: chrootSkipReason("usr/bin/rspamadm") }, () => {
        withStepFiles([step, signer], (inside, host) => {
            // Debian's tree with our local.d on top, every $CONFDIR/$LOCAL_CONFDIR include pointed at
            // the copy (rspamd's own variables would point at the chroot's /etc/rspamd).
            const conf = join(host, "conf");
            cpSync(join(CHROOT, "etc/rspamd"), conf, { recursive: true });
            cpSync(join(host, "etc/rspamd/local.d"), join(conf, "local.d"), { recursive: true });
            cpSync(join(host, "etc/rspamd/lua.local.d"), join(conf, "lua.local.d"), { recursive: true });
            for (const f of walk(conf)) {
                if (!/\.(conf|inc)$/.test(f)) continue;
                writeFileSync(f, readFileSync(f, "utf8").replaceAll("$LOCAL_CONFDIR", `${inside}/conf`).replaceAll("$CONFDIR", `${inside}/conf`));
            }
            // LOCAL_CONFDIR too, so that rules/rspamd.lua loads our lua.local.d (a Lua error there is
            // "syntax BAD").
            const r = inChroot(["rspamadm", `--var=LOCAL_CONFDIR=${inside}/conf`, "configtest", "-c", `${inside}/conf/rspamd.conf`]);
            assert.equal(r.code, 0, r.stdout + r.stderr);
            assert.match(r.stdout, /syntax OK/);
            const dump = inChroot(["rspamadm", "configdump", "-c", `${inside}/conf/rspamd.conf`, "actions"]);
            assert.match(dump.stdout, /reject = 15/);
            assert.match(dump.stdout, /add_header = 6/);
            assert.match(dump.stdout, /greylist = 4/);
            // RFC 6532 headers (raw UTF-8) are scored like RFC 2047 ones.
            const options = inChroot(["rspamadm", "configdump", "-c", `${inside}/conf/rspamd.conf`, "options"]);
            assert.match(options.stdout, /enable_mime_utf = true/);
            const headers = inChroot(["rspamadm", "configdump", "-c", `${inside}/conf/rspamd.conf`, "group"]);
            assert.match(headers.stdout, /"?R_MIXED_CHARSET"? \{[^}]*weight = 1/);
        });
    });

    test("rspamd: with ispmail:spamhausDqsKey the Spamhaus lists are asked in the DQS zones, from a file only Rspamd reads", { skip: chrootSkipReason("usr/bin/rspamadm") }, () => {
        const key = "abcdefghij0123456789klmnop";
        const withKey = parseConfig({ ...validRawConfig(), spamhausDqsKey: key }, { stack: "test", secretKeys: ["ispmail:spamhausDqsKey"] }).model;
        const [keyed] = stepsOf(SERVICE.rspamd, withKey);
        const rbl = keyed.files.find((f) => f.path === RBL_CONF)!;
        assert.deepEqual([rbl.owner, rbl.group, rbl.mode, rbl.secret], ["root", "_rspamd", "0640", true]);
        assert.deepEqual(secretsOf(keyed).filter((n) => n === "spamhaus.dqs"), ["spamhaus.dqs"]);
        assert.ok(!rbl.content.includes(key), "the key itself is a placeholder until transport");
        // Without a key: a comment only, the defaults (public mirrors) stay.
        const plain = step.files.find((f) => f.path === RBL_CONF)!;
        assert.equal(plain.secret, undefined);
        assert.doesNotMatch(plain.content.replace(/^#.*$/gm, ""), /\S/);
        // What Rspamd 3.12 makes of it: the zen (IP), DBL and URIBL lists under the key's zones.
        withStepFiles([resolveSecrets(keyed, { "spamhaus.dqs": key, "rspamd.controller": "x", "dkim:s2026a": "k", "dkim:s2026b": "k" })], (inside, host) => {
            const conf = join(host, "conf");
            cpSync(join(CHROOT, "etc/rspamd"), conf, { recursive: true });
            cpSync(join(host, "etc/rspamd/local.d"), join(conf, "local.d"), { recursive: true });
            const dump = inChroot(["rspamadm", `--var=LOCAL_CONFDIR=${inside}/conf`, "configdump", "-c", `${inside}/conf/rspamd.conf`, "rbl"]);
            const zones = [...dump.stdout.matchAll(/rbl = "([^"]*spamhaus[^"]*)"/g)].map((m) => m[1]).sort();
            assert.deepEqual(zones, [`${key}.dbl.dq.spamhaus.net`, `${key}.zen.dq.spamhaus.net`, `${key}.zen.dq.spamhaus.net`], dump.stdout.slice(0, 2000));
        });
    });

    test("rspamd: mailPolicy decides DMARC enforcement and the per-login sending limits", () => {
        const rendered = (raw: (r: Record<string, unknown>) => void) => {
            const config = validRawConfig();
            raw(config as Record<string, unknown>);
            const [s] = stepsOf(SERVICE.rspamd, parseConfig(config, { stack: "test" }).model);
            return (path: string) => s.files.find((f) => f.path === path)!.content;
        };
        const off = rendered((r) => (r.mailPolicy = { enforceDmarc: false, sendLimit: { perHour: 5, perDay: 50 } }));
        assert.doesNotMatch(off("/etc/rspamd/local.d/dmarc.conf"), /actions/);
        assert.match(off("/etc/rspamd/local.d/ratelimit.conf"), /burst = 5;\s*rate = "5 \/ 1h";/);
        assert.match(off("/etc/rspamd/local.d/ratelimit.conf"), /burst = 50;\s*rate = "50 \/ 1d";/);
        // The administrator's notice when a login hits the limit: marked by the ratelimit module,
        // mailed to postmaster on loopback, with the stack's numbers in its text.
        assert.match(off("/etc/rspamd/local.d/ratelimit.conf"), /^info_symbol = "ISPMAIL_RATELIMITED";$/m);
        const notice = off("/etc/rspamd/lua.local.d/ispmail_ratelimit_notice.lua");
        assert.match(notice, /task:get_symbol\('ISPMAIL_RATELIMITED'\)/);
        assert.match(notice, /^local MAIL_HOST = 'mx1\.example\.org'$/m);
        assert.match(notice, /\(5 messages an hour, 50 a day; bucket /);
        assert.match(notice, /one message every 720 s/);
        assert.match(notice, /recipients = \{ 'postmaster' \}/);
        assert.doesNotMatch(notice, /\{\{/);
        const on = rendered(() => {});
        assert.match(on("/etc/rspamd/local.d/dmarc.conf"), /^actions \{\n  reject = "reject";\n  quarantine = "add header";\n\}$/m);
    });

    test("rspamd: the controller password is hashed from the secret file, never from an argument", () => {
        const script = step.script;
        assert.match(script, /ISPMAIL_SECRET_PATH=\$CONTROLLER_SECRET rspamadm lua -e/);
        assert.match(script, /<\/dev\/null > "\$tmp"/, "rspamadm lua must not read the apply script from stdin");
        assert.doesNotMatch(script, /rspamadm pw/);
    });
});
