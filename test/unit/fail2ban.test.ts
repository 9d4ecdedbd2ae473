/**
 * The fail2ban step: what it installs, where it sits in the order, that its script is valid bash,
 * and (where the trixie chroot is available, i.e. on the team's machine as root) that Debian 13's
 * fail2ban loads our jails and that the Dovecot and Nextcloud filters match what Dovecot 2.4 and
 * Nextcloud 31 really log.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { renderServerSteps, SERVICE, stepsOf } from "../../components/services";
import { NEXTCLOUD_LOG_DROPIN, sshExemptNetworks } from "../../components/services/fail2ban";
import { NEXTCLOUD_DATA, NEXTCLOUD_LOG } from "../../components/services/nextcloud";
import { renderApplyScript } from "../../components/steps";
import { FILES_DIR } from "../../components/templates";
import { labModel } from "../fixtures/config";
import { TRIXIE_CHROOT } from "../harness/trixie-chroot";
import { chrootSkipReason } from "./mail-chroot";

const CHROOT = TRIXIE_CHROOT;
const chrootReason = () => chrootSkipReason("usr/bin/fail2ban-regex");

/** Runs fail2ban-regex inside the trixie chroot with Debian's config plus ours. */
function fail2banRegex(line: string, filter: string, extraArgs: readonly string[] = []): { matched: number; out: string } {
    const dir = mkdtempSync(join(CHROOT, "tmp", "f2b-test-"));
    try {
        cpSync(join(CHROOT, "etc", "fail2ban"), join(dir, "conf"), { recursive: true });
        cpSync(join(FILES_DIR, "fail2ban"), join(dir, "conf"), { recursive: true });
        writeFileSync(join(dir, "log"), line + "\n");
        const inside = dir.slice(CHROOT.length);
        const out = execFileSync("chroot", [CHROOT, "fail2ban-regex", ...extraArgs, "-c", `${inside}/conf`, `${inside}/log`, filter], { encoding: "utf8", timeout: 60_000 });
        if (extraArgs.length) return { matched: -1, out };
        const m = /^Lines: \d+ lines, \d+ ignored, (\d+) matched/m.exec(out);
        assert.ok(m, `unexpected fail2ban-regex output:\n${out}`);
        return { matched: Number(m[1]), out };
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
}

/** The lab stack with Nextcloud enabled (the lab itself cannot download it). */
const withNextcloud = () => labModel({ nextcloud: { enabled: true, version: "31.0.9", sha256: "cd".repeat(32) } });

/** The jail file as the step installs it (rendered for the lab stack). */
function renderedJail(model = labModel()): string {
    return stepsOf(SERVICE.fail2ban, model)[0].files.find((f) => f.path === "/etc/fail2ban/jail.d/ispmail.conf")!.content;
}

describe("fail2ban step", () => {
    test("fail2ban: installs the journal backend and nftables beside fail2ban", () => {
        const [step] = stepsOf(SERVICE.fail2ban, labModel());
        assert.deepEqual([...(step.packages ?? [])].sort(), ["fail2ban", "nftables", "python3-systemd"]);
        assert.deepEqual(step.files.map((f) => f.path).sort(), [
            "/etc/fail2ban/action.d/ispmail-login-guard.conf",
            "/etc/fail2ban/filter.d/dovecot.local",
            "/etc/fail2ban/filter.d/ispmail-login.conf",
            "/etc/fail2ban/filter.d/sshd.local",
            "/etc/fail2ban/jail.d/ispmail.conf",
            "/usr/local/sbin/ispmail-login-guard",
        ]);
        assert.ok(step.files.every((f) => !f.secret && f.mode === (f.path.startsWith("/usr/local/sbin/") ? "0755" : "0644")));
    });

    test("fail2ban: comes after base, postfix, dovecot and directory when they are registered, and names no other step", () => {
        const model = labModel();
        assert.deepEqual(stepsOf(SERVICE.fail2ban, model)[0].after, ["base", "postfix", "dovecot", "directory"]);
        assert.deepEqual(stepsOf(SERVICE.fail2ban, model, { services: [SERVICE.base, SERVICE.fail2ban] })[0].after, ["base"]);
        assert.deepEqual(stepsOf(SERVICE.fail2ban, model, { services: [SERVICE.fail2ban] })[0].after, []);
        // In the real service list: fail2ban is there, and follows every daemon it watches.
        const names = renderServerSteps(model, { dkimSigner: model.dkimSelectors[0] }).map((s) => s.name);
        assert.ok(names.includes("fail2ban"));
        for (const daemon of ["base", "postfix", "dovecot", "directory"]) {
            if (names.includes(daemon)) assert.ok(names.indexOf(daemon) < names.indexOf("fail2ban"), `${daemon} must come before fail2ban`);
        }
    });

    test("fail2ban: jails for sshd, postfix-sasl and dovecot read the journal; loopback is exempt everywhere, the admin networks from the SSH jail only", () => {
        const jail = renderedJail();
        const section = (name: string) => new RegExp(`^\\[${name}\\]\\n([\\s\\S]*?)(?=^\\[|(?![\\s\\S]))`, "m").exec(jail)?.[1] ?? "";
        const setting = (text: string, key: string) => new RegExp(`^${key.replace(".", "\\.")}\\s*=\\s*(.+)$`, "m").exec(text)?.[1].trim();
        assert.equal(setting(section("DEFAULT"), "backend"), "systemd");
        assert.equal(setting(section("DEFAULT"), "ignoreip"), "127.0.0.0/8 ::1");
        // lab/stack.yaml's adminCidrs are the lab host's own two addresses.
        assert.equal(setting(section("sshd"), "ignoreip"), "127.0.0.0/8 ::1 198.51.100.1/32 2001:db8:2::1/128");
        for (const mailJail of ["postfix-sasl", "dovecot"]) assert.equal(setting(section(mailJail), "ignoreip"), undefined, `${mailJail} exempts loopback only`);
        // OpenSSH 10 logs failures from sshd-session; key-only failures count in aggressive mode.
        assert.equal(setting(section("sshd"), "journalmatch"), "_SYSTEMD_UNIT=ssh.service + _COMM=sshd + _COMM=sshd-session");
        assert.equal(setting(section("sshd"), "maxretry"), "3");
        for (const j of ["sshd", "postfix-sasl", "dovecot"]) assert.match(jail, new RegExp(`^\\[${j}\\]\\s*\\nenabled = true`, "m"));
        assert.match(jail, /^filter = postfix\[mode=auth\]$/m);
    });

    test("fail2ban: an admin network of all addresses (SSH from anywhere) is not exempt from the SSH jail", () => {
        const model = labModel();
        const open = { ...model, server: { ...model.server, adminCidrs: ["0.0.0.0/0", "::/0", "203.0.113.0/24"] } };
        assert.deepEqual(sshExemptNetworks(open), ["203.0.113.0/24"]);
        const jail = stepsOf(SERVICE.fail2ban, open)[0].files.find((f) => f.path.endsWith("ispmail.conf"))!.content;
        assert.match(jail, /^ignoreip = 127\.0\.0\.0\/8 ::1 203\.0\.113\.0\/24$/m);
        assert.doesNotMatch(jail.split("\n").filter((l) => !l.startsWith("#")).join("\n"), /\/0\b/);
    });

    test("fail2ban: the apply script is valid bash", () => {
        const script = renderApplyScript(stepsOf(SERVICE.fail2ban, labModel())[0]);
        const r = spawnSync("bash", ["-n"], { input: script, encoding: "utf8" });
        assert.equal(r.status, 0, r.stderr);
    });

    test("fail2ban: Debian 13's fail2ban loads the jails with our config", { skip: chrootReason() }, () => {
        const dir = mkdtempSync(join(CHROOT, "tmp", "f2b-test-"));
        try {
            cpSync(join(CHROOT, "etc", "fail2ban"), dir, { recursive: true });
            cpSync(join(FILES_DIR, "fail2ban", "filter.d"), join(dir, "filter.d"), { recursive: true });
            cpSync(join(FILES_DIR, "fail2ban", "action.d"), join(dir, "action.d"), { recursive: true });
            writeFileSync(join(dir, "jail.d", "ispmail.conf"), renderedJail());
            const out = execFileSync("chroot", [CHROOT, "fail2ban-client", "-c", dir.slice(CHROOT.length), "-d"], { encoding: "utf8", timeout: 60_000 });
            for (const j of ["sshd", "postfix-sasl", "dovecot", "ispmail-login"]) assert.ok(out.includes(`['add', '${j}', 'systemd']`), `jail ${j} with the systemd backend:\n${out.slice(0, 2000)}`);
            // The per-account jail's ban runs the guard with the failure's account, not a firewall.
            assert.ok(out.includes("/usr/local/sbin/ispmail-login-guard lock <fid>"), out.slice(0, 3000));
            assert.ok(out.includes("['port', 'smtp,submission,submissions']"));
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });

    // Lines as Dovecot 2.4.1 and Postfix 3.10 write them (captured from the daemons in the trixie
    // chroot), in the form fail2ban's journal backend passes them to the filter.
    const DOVECOT_24_FAILURE = "Nov 25 10:19:38 mx1 dovecot[812]: imap-login: Login aborted: Logged out (auth failed, 1 attempts in 2 secs) (auth_failed): user=<alice@example.org>, method=PLAIN, rip=192.0.2.50, lip=192.0.2.10, TLS, session=<Quf9KRdhmr1/AAAB>";
    const DOVECOT_24_SUCCESS = "Nov 25 10:20:09 mx1 dovecot[812]: imap-login: Logged in: user=<alice@example.org>, method=PLAIN, rip=192.0.2.50, lip=192.0.2.10, mpid=2183, TLS, session=</+0JKxdh0p1/AAAB>";
    const POSTFIX_SASL_FAILURE = "Nov 25 10:19:38 mx1 postfix/submission/smtpd[901]: warning: unknown[2001:db8:2::50]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=alice@example.org";

    test("fail2ban: the dovecot filter matches Dovecot 2.4's failed login and not a successful one", { skip: chrootReason() }, () => {
        assert.equal(fail2banRegex(DOVECOT_24_FAILURE, "dovecot").matched, 1);
        assert.equal(fail2banRegex(DOVECOT_24_SUCCESS, "dovecot").matched, 0);
    });

    test("fail2ban: the postfix-sasl filter matches a failed SMTP AUTH", { skip: chrootReason() }, () => {
        assert.equal(fail2banRegex(POSTFIX_SASL_FAILURE, "postfix[mode=auth]").matched, 1);
    });

    test("fail2ban: the ispmail-login filter counts Dovecot's and Postfix's failed logins by account, never a successful one", { skip: chrootReason() }, () => {
        for (const line of [DOVECOT_24_FAILURE, POSTFIX_SASL_FAILURE]) {
            assert.equal(fail2banRegex(line, "ispmail-login").matched, 1, line);
            // The failure's ID is the account (<F-ID>), the address is only recorded.
            assert.match(fail2banRegex(line, "ispmail-login", ["-o", "<fid>"]).out, /^alice@example\.org$/m);
        }
        assert.equal(fail2banRegex(DOVECOT_24_SUCCESS, "ispmail-login").matched, 0);
    });

    test("fail2ban: with Nextcloud, a nextcloud jail reads Nextcloud's log file with our filter; without it, no such jail or files", () => {
        const files = stepsOf(SERVICE.fail2ban, withNextcloud())[0].files.map((f) => f.path);
        assert.ok(files.includes("/etc/fail2ban/filter.d/ispmail-nextcloud.conf"));
        assert.ok(files.includes(NEXTCLOUD_LOG_DROPIN));
        const jail = renderedJail(withNextcloud());
        const section = /^\[nextcloud\]\n([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(jail)?.[1] ?? "";
        const settings = Object.fromEntries([...section.matchAll(/^([a-z.]+) = (.+)$/gm)].map((m) => [m[1], m[2]]));
        assert.deepEqual(settings, { enabled: "true", port: "http,https", filter: "ispmail-nextcloud", backend: "polling", logpath: NEXTCLOUD_LOG });
        assert.equal(NEXTCLOUD_LOG, `${NEXTCLOUD_DATA}/nextcloud.log`);
        assert.doesNotMatch(renderedJail(), /^\[nextcloud\]/m);
        assert.ok(!stepsOf(SERVICE.fail2ban, labModel())[0].files.some((f) => /nextcloud/.test(f.path)));
        // The script knows the log file only when the jail is there.
        const vars = (model: ReturnType<typeof labModel>) =>
            spawnSync("bash", ["-c", `${stepsOf(SERVICE.fail2ban, model)[0].script.split("\n").filter((l) => /^[A-Z_]+='/.test(l)).join("\n")}\nprintf '%s' "$NEXTCLOUD_LOG"`], { encoding: "utf8" }).stdout;
        assert.equal(vars(withNextcloud()), NEXTCLOUD_LOG);
        assert.equal(vars(labModel()), "");
        const r = spawnSync("bash", ["-n"], { input: renderApplyScript(stepsOf(SERVICE.fail2ban, withNextcloud())[0]), encoding: "utf8" });
        assert.equal(r.status, 0, r.stderr);
    });

    test("fail2ban: Debian 13's fail2ban loads the nextcloud jail (file backend, our filter) beside the journal jails", { skip: chrootReason() }, () => {
        const dir = mkdtempSync(join(CHROOT, "tmp", "f2b-test-"));
        try {
            cpSync(join(CHROOT, "etc", "fail2ban"), dir, { recursive: true });
            cpSync(join(FILES_DIR, "fail2ban", "filter.d"), join(dir, "filter.d"), { recursive: true });
            cpSync(join(FILES_DIR, "fail2ban", "action.d"), join(dir, "action.d"), { recursive: true });
            writeFileSync(join(dir, "jail.d", "ispmail.conf"), renderedJail(withNextcloud()));
            const out = execFileSync("chroot", [CHROOT, "fail2ban-client", "-c", dir.slice(CHROOT.length), "-d"], { encoding: "utf8", timeout: 60_000 });
            assert.ok(out.includes("['add', 'nextcloud', 'polling']"), out.slice(0, 3000));
            for (const j of ["sshd", "postfix-sasl", "dovecot", "ispmail-login", "roundcube-auth"]) assert.ok(out.includes(`['add', '${j}', 'systemd']`), j);
            assert.ok(out.includes("['set', 'nextcloud', 'datepattern', ',\"time\":\"%Y-%m-%dT%H:%M:%S%z\"']"), out.slice(0, 3000));
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });

    // Nextcloud 31's log lines (lib/private/Log/LogDetails.php field order, logtimezone UTC): a wrong
    // password on the login page (LoggedInCheckCommand), one over WebDAV from the desktop client
    // (Session::logClientIn, quoted form), a login name made to look like another address, and a
    // successful login as the admin_audit app logs it.
    const NC_FAILED_WEB = '{"reqId":"Wq2xkT9mB3dLr8ZpYc4N","level":2,"time":"2025-11-25T10:19:38+00:00","remoteAddr":"192.0.2.50","user":"--","app":"no app in context","method":"POST","url":"/login","scriptName":"/index.php","message":"Login failed: alice@example.org (Remote IP: 192.0.2.50)","userAgent":"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0","version":"31.0.9.1","data":[]}';
    const NC_FAILED_DAV = '{"reqId":"p0Lk2M9xQw7Rt4Zs1Vb8","level":2,"time":"2025-11-25T10:21:02+00:00","remoteAddr":"2001:db8:2::50","user":"--","app":"core","method":"PROPFIND","url":"/remote.php/dav/files/alice@example.org/","scriptName":"/remote.php","message":"Login failed: \'alice@example.org\' (Remote IP: \'2001:db8:2::50\')","userAgent":"Mozilla/5.0 (Linux) mirall/3.16.0 (Nextcloud, debian-6.12.43 ClientArchitecture: x86_64 OsArchitecture: x86_64)","version":"31.0.9.1","data":{"app":"core"}}';
    const NC_FAILED_SPOOF = '{"reqId":"Jd8Hs2Kq5Lm1Nb7Vc3Xz","level":2,"time":"2025-11-25T10:22:15+00:00","remoteAddr":"192.0.2.51","user":"--","app":"no app in context","method":"POST","url":"/login","scriptName":"/index.php","message":"Login failed: x\\",\\"remoteAddr\\":\\"203.0.113.66\\",\\"message\\":\\"Login failed: (Remote IP: 203.0.113.66) (Remote IP: 192.0.2.51)","userAgent":"curl/8.14.1","version":"31.0.9.1","data":[]}';
    const NC_SUCCESS = '{"reqId":"Tz4Yb6Nc1Md9Ke3Lf7Gh","level":1,"time":"2025-11-25T10:20:09+00:00","remoteAddr":"192.0.2.50","user":"alice@example.org","app":"admin_audit","method":"POST","url":"/login","scriptName":"/index.php","message":"Login successful: \\"alice@example.org\\"","userAgent":"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0","version":"31.0.9.1","data":{"app":"admin_audit"}}';

    test("fail2ban: the ispmail-nextcloud filter matches Nextcloud 31's failed logins with the client's address, never a successful one", { skip: chrootReason() }, () => {
        for (const [line, address] of [[NC_FAILED_WEB, "192.0.2.50"], [NC_FAILED_DAV, "2001:db8:2::50"], [NC_FAILED_SPOOF, "192.0.2.51"]]) {
            JSON.parse(line); // a real JSON line, as Nextcloud writes it
            assert.equal(fail2banRegex(line, "ispmail-nextcloud").matched, 1, line);
            // The address is the connection's (remoteAddr), not one written into the login name.
            assert.equal(fail2banRegex(line, "ispmail-nextcloud", ["-o", "<ip>"]).out.trim(), address);
        }
        assert.equal(fail2banRegex(NC_SUCCESS, "ispmail-nextcloud").matched, 0);
        // Its date is the line's "time" field (not the time of the test run).
        assert.match(fail2banRegex(NC_FAILED_WEB, "ispmail-nextcloud").out, /\[1\] ,"time":"Year-Month-DayT24hour:Minute:SecondZone offset"/);
    });

    test("fail2ban: before fail2ban starts, the drop-in creates Nextcloud's missing log file as Nextcloud would, and leaves an existing one alone", { skip: chrootSkipReason("usr/bin/install") }, () => {
        const dropin = stepsOf(SERVICE.fail2ban, withNextcloud())[0].files.find((f) => f.path === NEXTCLOUD_LOG_DROPIN)!.content;
        const command = /^ExecStartPre=\/bin\/sh -c '(.*)'$/m.exec(dropin)?.[1];
        assert.ok(command, dropin);
        const dir = mkdtempSync(join(CHROOT, "tmp", "f2b-dropin-"));
        try {
            // The same command with the data directory moved into a scratch directory.
            const inside = `${dir.slice(CHROOT.length)}/data`;
            const run = () => execFileSync("chroot", [CHROOT, "sh", "-c", command.replaceAll(NEXTCLOUD_DATA, inside)], { encoding: "utf8" });
            run();
            const log = join(dir, "data", "nextcloud.log");
            const st = statSync(log);
            assert.deepEqual([st.uid, st.gid, (st.mode & 0o777).toString(8), st.size], [33, 33, "640", 0]);
            assert.equal((statSync(join(dir, "data")).mode & 0o777).toString(8), "750");
            writeFileSync(log, NC_FAILED_WEB + "\n");
            run();
            assert.equal(readFileSync(log, "utf8"), NC_FAILED_WEB + "\n");
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });

    test("fail2ban: the login guard refuses an account name that is not a plain address, before any database access", { skip: chrootSkipReason("usr/bin/python3") }, () => {
        const dir = mkdtempSync(join(CHROOT, "tmp", "f2b-guard-"));
        try {
            cpSync(join(FILES_DIR, "fail2ban", "ispmail-login-guard"), join(dir, "guard"));
            const inside = dir.slice(CHROOT.length);
            for (const hostile of ["x'; DROP TABLE users; --@example.org", "$(reboot)@example.org", "alice"]) {
                const r = spawnSync("chroot", [CHROOT, "python3", `${inside}/guard`, "lock", hostile], { encoding: "utf8", timeout: 30_000 });
                assert.equal(r.status, 1, r.stderr);
                assert.match(r.stderr, /not an address, ignored/, r.stderr);
            }
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });
});
