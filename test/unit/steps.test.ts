/**
 * components/steps.ts: the apply script is run for real with bash (as root) against a temporary
 * directory under /tmp, the way both transports run it on the server (RUN_SCRIPT_FROM_STDIN, script on stdin).
 * `systemctl` is replaced by a recorder on PATH, so reloads and restarts can be counted. The tests
 * that install files need root (every file gets its owner with chown); they skip, saying so, as
 * any other user.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { needsRoot } from "../harness/needs";
import { withStateDir } from "../harness/shell";
import { parseConfig } from "../../components/config";
import { renderServerSteps } from "../../components/services";
import { validRawConfig } from "../fixtures/config";
import { orderSteps, parseStepResult, RESULT_PREFIX, renderApplyScript, RUN_SCRIPT_FROM_STDIN, resolveSecrets, secretRef, secretsOf, stepHash, stepSummary, type Step, type StepFile } from "../../components/steps";

let root: string;
let fakeBin: string;
let systemctlLog: string;
let writeLog: string;

before(() => {
    root = mkdtempSync("/tmp/ispmail-steps-test-");
    fakeBin = join(root, "bin");
    mkdirSync(fakeBin);
    systemctlLog = join(root, "systemctl.log");
    writeLog = join(root, "writes.log");
    // Records every systemctl call instead of touching the host's services.
    writeFileSync(join(fakeBin, "systemctl"), `#!/bin/bash\necho "$*" >> ${systemctlLog}\n`, { mode: 0o755 });
    // Wraps base64 (which writes a file's content): records the mode and owner the target file
    // already has at the moment content starts to flow into it.
    writeFileSync(
        join(fakeBin, "base64"),
        `#!/bin/bash\ntarget=$(readlink /proc/$$/fd/1)\nstat -c '%a %U:%G %s %n' "$target" >> ${writeLog}\nexec /usr/bin/base64 "$@"\n`,
        { mode: 0o755 },
    );
});

after(() => rmSync(root, { recursive: true, force: true }));

interface Run {
    readonly code: number | null;
    readonly stdout: string;
    readonly stderr: string;
    readonly result: ReturnType<typeof parseStepResult>;
}

/** Runs a step's apply script as the transports do: bash with the script on stdin. */
function apply(step: Step): Run {
    const r = spawnSync("sh", ["-c", RUN_SCRIPT_FROM_STDIN], {
        input: withStateDir(renderApplyScript(step), join(root, "state")),
        encoding: "utf8",
        timeout: 10_000,
        env: { ...process.env, PATH: `${fakeBin}:${process.env.PATH}` },
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr, result: parseStepResult(r.stdout) };
}

function step(name: string, files: StepFile[], script = "", more: Partial<Step> = {}): Step {
    return { name, description: `test step ${name}`, files, script, after: [], ...more };
}

function statOf(path: string): { mode: string; uid: number; gid: number; ino: number; mtimeNs: bigint } {
    const s = statSync(path, { bigint: true });
    return { mode: (Number(s.mode) & 0o7777).toString(8), uid: Number(s.uid), gid: Number(s.gid), ino: Number(s.ino), mtimeNs: s.mtimeNs };
}

/** The apply script gives every file its owner and group (root:root unless the step says otherwise). */
const INSTALLS_AS_ROOT = needsRoot("the apply script installs files with their owner (chown root:root, root:daemon)");

const readLines = (path: string) => (existsSync(path) ? readFileSync(path, "utf8").trim().split("\n").filter(Boolean) : []);

describe("steps: the apply script installs files idempotently", { skip: INSTALLS_AS_ROOT }, () => {
    let dir: string;
    let files: StepFile[];
    let mainCf: string, daemonConf: string, secretFile: string;
    const script = [
        // What a service step does: reload only for what changed.
        `if changed ${"$MAIN_CF"}; then reload fake-postfix; fi`,
        `if changed ${"$CONF_DIR"}; then restart fake-daemon; fi`,
    ].join("\n");

    before(() => {
        dir = join(root, "install");
        mainCf = join(dir, "etc/postfix/main.cf");
        daemonConf = join(dir, "etc/fake/conf.d/10-daemon.conf");
        secretFile = join(dir, "etc/ispmail/secrets/db.mailreader");
        files = [
            { path: mainCf, content: "myhostname = mx1.example.org\n" },
            { path: daemonConf, content: "listen = *\n", owner: "root", group: "daemon", mode: "0640" },
            { path: secretFile, content: "s3cr3t-value\n", secret: true },
        ];
    });

    const theStep = () => step("install", files, script.replace("$MAIN_CF", mainCf).replace("$CONF_DIR", join(dir, "etc/fake")));

    test("steps: a file's content reaches base64 in blocks, not one read(2) per byte in the shell", () => {
        // ~54 KB of base64: a here-document that size is a pipe, which bash's `read` takes byte by byte.
        const big = join(dir, "etc/big.conf");
        const content = "x".repeat(40_000) + "\n";
        const s = step("bigfile", [{ path: big, content }], 'log "read calls $(sed -n "s/^syscr: //p" /proc/$$/io)"');
        const run = apply(s);
        assert.equal(run.code, 0, run.stderr);
        assert.equal(readFileSync(big, "utf8"), content);
        const calls = Number(/read calls (\d+)/.exec(run.stderr)?.[1]);
        assert.ok(calls < 5_000, `${calls} read(2) calls in the shell for a ${content.length}-byte file`);
    });

    test("steps: a root file in a setgid directory of another group still gets group root (a new file takes the directory's group), and stays unchanged", () => {
        const shared = join(dir, "etc/shared");
        mkdirSync(shared, { recursive: true });
        chmodSync(shared, 0o2775);
        spawnSync("chown", ["root:1", shared]);
        const conf = join(shared, "app.conf");
        const s = step("setgid", [{ path: conf, content: "a = 1\n" }]);
        const first = apply(s);
        assert.equal(first.code, 0, first.stderr);
        assert.deepEqual([statOf(conf).mode, statOf(conf).uid, statOf(conf).gid], ["644", 0, 0]);
        assert.equal(apply(s).result?.result, "unchanged");
    });

    test("steps: the first run installs every file with its owner, group, mode and content", () => {
        const run = apply(theStep());
        assert.equal(run.code, 0, run.stderr);
        assert.equal(run.result?.result, "changed");
        assert.deepEqual(run.result?.changedFiles, [mainCf, daemonConf, secretFile]);
        assert.deepEqual(run.result?.actions, ["reloaded fake-postfix", "restarted fake-daemon"]);
        assert.deepEqual(readLines(systemctlLog), ["reload-or-restart fake-postfix", "restart fake-daemon"]);
        assert.deepEqual([statOf(mainCf).mode, statOf(mainCf).uid, statOf(mainCf).gid], ["644", 0, 0]);
        assert.deepEqual([statOf(daemonConf).mode, statOf(daemonConf).uid, statOf(daemonConf).gid], ["640", 0, 1]);
        assert.deepEqual([statOf(secretFile).mode, statOf(secretFile).uid], ["600", 0]);
        for (const f of files) assert.equal(readFileSync(f.path, "utf8"), f.content);
        // The step's log names the files it wrote, never their content.
        assert.match(run.stderr, /\[install\] wrote .*main\.cf/);
        assert.doesNotMatch(run.stderr + run.stdout, /s3cr3t-value/);
    });

    test("steps: a second run reports unchanged, rewrites nothing and reloads nothing", () => {
        const before = files.map((f) => statOf(f.path));
        writeFileSync(systemctlLog, "");
        const run = apply(theStep());
        assert.equal(run.code, 0, run.stderr);
        assert.deepEqual(run.result, { result: "unchanged", changedFiles: [], actions: [] });
        assert.deepEqual(readLines(systemctlLog), [], "no reload, no restart");
        assert.deepEqual(files.map((f) => statOf(f.path)), before, "same inode and mtime: nothing rewritten");
        assert.deepEqual(readdirHidden(dir), [], "no temporary file left behind");
    });

    test("steps: a changed file is reported, and only it; only its service reloads", () => {
        files = files.map((f) => (f.path === daemonConf ? { ...f, content: "listen = 127.0.0.1\n" } : f));
        const untouched = [mainCf, secretFile].map(statOf);
        writeFileSync(systemctlLog, "");
        const run = apply(theStep());
        assert.equal(run.code, 0, run.stderr);
        assert.deepEqual(run.result, { result: "changed", changedFiles: [daemonConf], actions: ["restarted fake-daemon"] });
        assert.deepEqual(readLines(systemctlLog), ["restart fake-daemon"]);
        assert.deepEqual([mainCf, secretFile].map(statOf), untouched);
        assert.equal(readFileSync(daemonConf, "utf8"), "listen = 127.0.0.1\n");
    });

    test("steps: a file whose mode or owner drifted on the server is put back", () => {
        chmodSync(mainCf, 0o666);
        const run = apply(theStep());
        assert.deepEqual(run.result?.changedFiles, [mainCf]);
        assert.equal(statOf(mainCf).mode, "644");
        spawnSync("chown", ["daemon", secretFile]);
        assert.deepEqual(apply(theStep()).result?.changedFiles, [secretFile]);
        assert.equal(statOf(secretFile).uid, 0);
    });

    function readdirHidden(d: string): string[] {
        const r = spawnSync("find", [d, "-name", ".ispmail.*"], { encoding: "utf8" });
        return r.stdout.trim().split("\n").filter(Boolean);
    }
});

describe("steps: secrets", () => {
    test("steps: a secret file has its final private mode before any content is written", { skip: INSTALLS_AS_ROOT }, () => {
        const dir = join(root, "secret-mode");
        writeFileSync(writeLog, "");
        const s = step("secret-mode", [
            { path: join(dir, "a/secret"), content: "value-one", secret: true },
            { path: join(dir, "b/dovecot-sql.conf"), content: "password = value-two", secret: true, owner: "root", group: "daemon", mode: "0640" },
        ]);
        assert.equal(apply(s).code, 0);
        // One line per file, taken while base64 writes into the (still empty) temporary file.
        const seen = readLines(writeLog);
        assert.equal(seen.length, 2, seen.join("\n"));
        assert.match(seen[0], /^600 root:root 0 .*\/a\/\.ispmail\./);
        assert.match(seen[1], /^640 root:daemon 0 .*\/b\/\.ispmail\./);
    });

    test("steps: a world-readable secret file is refused when the script is rendered", () => {
        for (const mode of ["0644", "0604", "0601", "755"]) {
            assert.throws(() => renderApplyScript(step("bad", [{ path: "/etc/ispmail/secrets/x", content: "x", secret: true, mode }])), /must not be world-readable/, mode);
        }
        assert.doesNotThrow(() => renderApplyScript(step("ok", [{ path: "/etc/ispmail/secrets/x", content: "x", secret: true, mode: "0640" }])));
    });

    const VALUE = "Zq9vT3kLmW2pX8rN4cJ7hB1fD6sY0aE5";
    const withSecret = (): Step =>
        step("sql", [
            { path: join(root, "sql/reader.cf"), content: `user = mailreader\npassword = ${secretRef("db.mailreader")}\n`, secret: true, group: "daemon", mode: "0640" },
            { path: join(root, "sql/admin"), content: `${secretRef("db.mailadmin")}\n`, secret: true },
            { path: join(root, "sql/plain.cf"), content: "no secret here\n" },
        ]);

    test("steps: secrets are placeholders until resolveSecrets, and never a word of the script", () => {
        const s = withSecret();
        assert.deepEqual(secretsOf(s), ["db.mailadmin", "db.mailreader"]);
        const unresolved = renderApplyScript(s);
        assert.ok(!unresolved.includes(VALUE));
        assert.ok(!unresolved.includes(Buffer.from(VALUE).toString("base64").slice(0, 20)));
        const resolved = resolveSecrets(s, { "db.mailreader": VALUE, "db.mailadmin": `${VALUE}-admin` });
        assert.equal(resolved.files[0].content, `user = mailreader\npassword = ${VALUE}\n`);
        assert.equal(resolved.files[1].content, `${VALUE}-admin\n`);
        assert.equal(s.files[0].content.includes(secretRef("db.mailreader")), true, "the rendered step itself is not changed");
        assert.equal(stepHash(s), stepHash(withSecret()), "the hash is taken of placeholders, so it can be shown in a preview");
        const script = renderApplyScript(resolved);
        assert.ok(!script.includes(VALUE), "the value travels base64-encoded inside the script on stdin, never as a word of it");
    });

    test("steps: a step with resolved secrets installs them and never prints them", { skip: INSTALLS_AS_ROOT }, () => {
        const resolved = resolveSecrets(withSecret(), { "db.mailreader": VALUE, "db.mailadmin": `${VALUE}-admin` });
        const run = apply(resolved);
        assert.equal(run.code, 0, run.stderr);
        assert.equal(readFileSync(join(root, "sql/reader.cf"), "utf8"), resolved.files[0].content);
        assert.ok(!(run.stdout + run.stderr).includes(VALUE));
    });

    test("steps: a step input reaches the script exactly, through step_input, without a file and without showing its value", { skip: INSTALLS_AS_ROOT }, () => {
        const out = join(root, "input-seen");
        const content = `key ${secretRef("db.mailreader", "base64")}\nraw ${secretRef("db.mailadmin")}\n`;
        const s = step("input", [], `step_input passwords | sha256sum > ${out}`, { inputs: [{ name: "passwords", content }] });
        assert.deepEqual(secretsOf(s), ["db.mailadmin", "db.mailreader"]);
        const resolved = resolveSecrets(s, { "db.mailreader": `${VALUE} "quoted"`, "db.mailadmin": VALUE });
        const expected = `key ${Buffer.from(`${VALUE} "quoted"`).toString("base64")}\nraw ${VALUE}\n`;
        assert.equal(resolved.inputs![0].content, expected);
        assert.ok(!renderApplyScript(resolved).includes(VALUE));
        const run = apply(resolved);
        assert.equal(run.code, 0, run.stderr);
        assert.equal(readFileSync(out, "utf8").split(" ")[0], createHash("sha256").update(expected).digest("hex"));
        assert.ok(!(run.stdout + run.stderr).includes(VALUE));
        assert.equal(run.result?.result, "unchanged", "an input is not a file: nothing was installed");
        assert.throws(() => renderApplyScript(step("bad", [], "", { inputs: [{ name: "pass-words", content: "" }] })), /input name "pass-words" is not/);
    });

    test("steps: resolveSecrets refuses unknown secret names and secrets in non-secret files", () => {
        assert.throws(() => resolveSecrets(withSecret(), { "db.mailreader": VALUE }), /references unknown secret "db\.mailadmin"/);
        const leaky = step("leaky", [{ path: "/etc/postfix/pgsql.cf", content: `password = ${secretRef("db.mailreader")}` }]);
        assert.throws(() => resolveSecrets(leaky, { "db.mailreader": VALUE }), /\/etc\/postfix\/pgsql\.cf references a secret but is not marked secret/);
        // Twice in a row, to catch a global regex that keeps state between calls.
        assert.throws(() => resolveSecrets(leaky, { "db.mailreader": VALUE }), /not marked secret/);
    });
});

describe("steps: ordering", () => {
    const s = (name: string, after: string[] = []) => step(name, [], "", { after });

    test("steps: orderSteps puts every step after the steps it names, and keeps the given order otherwise", () => {
        const ordered = orderSteps([s("postfix", ["directory", "tls", "dovecot", "rspamd"]), s("base"), s("dovecot", ["directory", "tls"]), s("tls", ["base"]), s("rspamd", ["base"]), s("directory", ["postgresql"]), s("postgresql", ["base"]), s("web", ["base", "tls"])]);
        const names = ordered.map((x) => x.name);
        for (const x of ordered) for (const dep of x.after) assert.ok(names.indexOf(dep) < names.indexOf(x.name), `${dep} before ${x.name}`);
        assert.deepEqual(names, ["base", "postgresql", "directory", "tls", "dovecot", "rspamd", "postfix", "web"]);
        assert.deepEqual(orderSteps([s("a"), s("b"), s("c")]).map((x) => x.name), ["a", "b", "c"]);
    });

    test("steps: orderSteps refuses cycles, unknown names and duplicates", () => {
        assert.throws(() => orderSteps([s("a", ["c"]), s("b", ["a"]), s("c", ["b"])]), /step cycle: a -> c -> b -> a/);
        assert.throws(() => orderSteps([s("a", ["a"])]), /step cycle: a -> a/);
        assert.throws(() => orderSteps([s("dovecot", ["directroy"]), s("directory")]), /step dovecot: unknown step "directroy"/);
        assert.throws(() => orderSteps([s("a"), s("a")]), /unique/);
    });
});

describe("steps: results and failures", () => {
    test("steps: mark_changed alone makes the result changed", () => {
        const run = apply(step("marker", [], "mark_changed"));
        assert.deepEqual(run.result, { result: "changed", changedFiles: [], actions: [] });
        assert.deepEqual(apply(step("marker", [], "true")).result?.result, "unchanged");
    });


    test("steps: parseStepResult finds the result line among other output", () => {
        const out = `some log\n${RESULT_PREFIX}{"result":"changed","files":["/etc/a b","/etc/\\"q\\""],"actions":["reloaded x"]}\ntrailing\n`;
        assert.deepEqual(parseStepResult(out), { result: "changed", changedFiles: ["/etc/a b", '/etc/"q"'], actions: ["reloaded x"] });
        assert.equal(parseStepResult("no result here\n"), undefined);
    });

    test("steps: a failing step script exits non-zero, stops at the error and prints no result", () => {
        const marker = join(root, "after-failure");
        const run = apply(step("fails", [], `log "about to fail"\nfalse\ntouch ${marker}`));
        assert.equal(run.code, 1);
        assert.equal(run.result, undefined);
        assert.match(run.stderr, /\[fails\] about to fail/);
        assert.equal(existsSync(marker), false, "set -e: nothing after the failing command runs");
        assert.equal(apply(step("exits", [], "exit 3")).code, 3);
        // An unset variable is an error too (set -u), not an empty string.
        assert.notEqual(apply(step("unset", [], 'echo "$NO_SUCH_VARIABLE"')).code, 0);
    });

    test("steps: ispmail_packages does nothing when the packages are installed", () => {
        const run = apply(step("pkgs", [], "", { packages: ["bash", "coreutils"] }));
        assert.equal(run.code, 0, run.stderr);
        assert.deepEqual(run.result, { result: "unchanged", changedFiles: [], actions: [] });
    });

    test("steps: ispmail_packages asks dpkg once, installs only what is missing in one apt run, and takes any of a|b|c as installed", () => {
        const aptLog = join(root, "apt-get.log");
        const dpkgLog = join(root, "dpkg-query.log");
        const bin = join(root, "pkgbin");
        mkdirSync(bin, { recursive: true });
        writeFileSync(join(bin, "apt-get"), `#!/bin/bash\necho "$*" >> ${aptLog}\n`, { mode: 0o755 });
        writeFileSync(join(bin, "dpkg-query"), `#!/bin/bash\necho "$*" >> ${dpkgLog}\nexec /usr/bin/dpkg-query "$@"\n`, { mode: 0o755 });
        const packages = ["bash", "ispmail-no-such-a|coreutils", "ispmail-no-such-b|ispmail-no-such-c", "ispmail-no-such-d"];
        const r = spawnSync("bash", ["-s"], { input: withStateDir(renderApplyScript(step("pkgs-missing", [], "", { packages })), join(root, "state")), encoding: "utf8", timeout: 10_000, env: { ...process.env, PATH: `${bin}:${fakeBin}:${process.env.PATH}` } });
        assert.equal(r.status, 0, r.stderr);
        assert.deepEqual(parseStepResult(r.stdout)?.actions, ["installed ispmail-no-such-b ispmail-no-such-d"]);
        assert.equal(readLines(dpkgLog).length, 1, "one dpkg-query for every package");
        const installs = readLines(aptLog).filter((l) => / install /.test(` ${l} `));
        assert.equal(installs.length, 1);
        assert.match(installs[0], /--no-install-recommends .* ispmail-no-such-b ispmail-no-such-d$/);
    });

    test("steps: ispmail_packages does not ask dpkg again until dpkg's status file changes or the list does", () => {
        const dpkgLog = join(root, "dpkg-query-stamp.log");
        const bin = join(root, "stampbin");
        mkdirSync(bin, { recursive: true });
        writeFileSync(join(bin, "dpkg-query"), `#!/bin/bash\necho "$*" >> ${dpkgLog}\nexec /usr/bin/dpkg-query "$@"\n`, { mode: 0o755 });
        const stateDir = join(root, "stamp-state");
        const run = (packages: string[]) => {
            const r = spawnSync("sh", ["-c", RUN_SCRIPT_FROM_STDIN], { input: withStateDir(renderApplyScript(step("stamped", [], "", { packages })), stateDir), encoding: "utf8", timeout: 10_000, env: { ...process.env, PATH: `${bin}:${fakeBin}:${process.env.PATH}` } });
            assert.equal(r.status, 0, r.stderr);
            assert.equal(parseStepResult(r.stdout)?.result, "unchanged");
            return readLines(dpkgLog).length;
        };
        assert.equal(run(["bash", "coreutils"]), 1);
        assert.equal(run(["bash", "coreutils"]), 1, "the stamp answers: nothing changed in dpkg since");
        assert.equal(run(["bash"]), 2, "another list is asked for");
        // dpkg changed something after the stamp was written: its status file is newer.
        utimesSync(join(stateDir, "packages", "stamped"), new Date(0), new Date(0));
        assert.equal(run(["bash"]), 3);
        assert.equal(run(["bash"]), 3);
    });

    test("steps: is_active asks systemd once for the step's units (ensure_enabled's and the one asked), and the step's own restart keeps the answer", () => {
        const log = join(root, "systemctl-units.log");
        const bin = join(root, "unitbin");
        mkdirSync(bin, { recursive: true });
        writeFileSync(
            join(bin, "systemctl"),
            `#!/bin/bash\necho "$*" >> ${log}\ncase $1 in\n  is-enabled) shift; for u; do echo enabled; done ;;\n  is-active) shift; [ "$1" != -- ] || shift; for u; do case $u in down*) echo inactive ;; *) echo active ;; esac; done ;;\nesac\n`,
            { mode: 0o755 },
        );
        const script = ["ensure_enabled up1 down1 up2", "is_active up1", "is_active down1 || restart down1", "is_active down1", "is_active up2", "is_active other || true"].join("\n");
        const r = spawnSync("sh", ["-c", RUN_SCRIPT_FROM_STDIN], { input: withStateDir(renderApplyScript(step("units-asked", [], script)), join(root, "units-state")), encoding: "utf8", timeout: 10_000, env: { ...process.env, PATH: `${bin}:${fakeBin}:${process.env.PATH}` } });
        assert.equal(r.status, 0, r.stderr);
        assert.deepEqual(parseStepResult(r.stdout)?.actions, ["restarted down1"]);
        assert.deepEqual(readLines(log), ["is-enabled up1 down1 up2", "is-active -- up1 down1 up2", "restart down1", "is-active -- other"]);
    });

    test("steps: started_before says whether a unit's process started before a file last changed (the same second counts as before), or runs at all", () => {
        const bin = join(root, "startbin");
        mkdirSync(bin, { recursive: true });
        // systemd's answer for ExecMainStartTimestamp --timestamp=unix: "@<seconds>", empty when not running.
        writeFileSync(join(bin, "systemctl"), `#!/bin/bash
case "$*" in *" -- running"*) echo @1000 ;; *) echo ;; esac
`, { mode: 0o755 });
        const conf = join(root, "started-before.conf");
        writeFileSync(conf, "x");
        const ask = (unit: string, mtime: number) => {
            utimesSync(conf, mtime, mtime);
            const script = `if started_before ${unit} ${conf}; then ispmail_action before; else ispmail_action after; fi`;
            const r = spawnSync("sh", ["-c", RUN_SCRIPT_FROM_STDIN], { input: withStateDir(renderApplyScript(step("started-before", [], script)), join(root, "started-state")), encoding: "utf8", timeout: 10_000, env: { ...process.env, PATH: `${bin}:${fakeBin}:${process.env.PATH}` } });
            assert.equal(r.status, 0, r.stderr);
            return parseStepResult(r.stdout)?.actions[0];
        };
        assert.equal(ask("running", 999), "after", "written the second before the process started: it read this content");
        assert.equal(ask("running", 1000), "before", "the same second: it may have read the old content");
        assert.equal(ask("running", 1001), "before");
        assert.equal(ask("stopped", 10), "before", "no start time: not running with this content");
    });

    test("steps: files marked beforePackages are installed before the packages, the others after; they must belong to root", () => {
        const s = step("early", [{ path: "/etc/late.conf", content: "late" }, { path: "/etc/early.conf", content: "early", beforePackages: true }], "", { packages: ["bash"], debconf: ["bash bash/q boolean true"] });
        const script = renderApplyScript(s);
        const at = (text: string) => script.indexOf(text);
        assert.ok(at("ispmail_debconf <<") < at("ispmail_file /etc/early.conf"), "debconf first");
        assert.ok(at("ispmail_file /etc/early.conf") < at("ispmail_packages bash"));
        assert.ok(at("ispmail_packages bash") < at("ispmail_file /etc/late.conf"));
        assert.match(stepSummary(s).find((l) => l.startsWith("file /etc/early.conf"))!, / before-packages /);
        assert.throws(() => renderApplyScript(step("early", [{ path: "/etc/early.conf", content: "", owner: "postgres", beforePackages: true }])), /before the packages and must belong to root/);
    });

    test("steps: renderApplyScript refuses unsafe names, paths, modes, owners and package names", () => {
        const file = (f: Partial<StepFile>): StepFile => ({ path: "/etc/x.conf", content: "", ...f });
        const bad: Array<[string, Step, RegExp]> = [
            ["step name with a space", step("two words", []), /not a safe name/],
            ["relative path", step("s", [file({ path: "etc/x.conf" })]), /unsafe path/],
            ["path with a space", step("s", [file({ path: "/etc/x y.conf" })]), /unsafe path/],
            ["path with ..", step("s", [file({ path: "/etc/../root/.ssh/authorized_keys" })]), /unsafe path/],
            ["path with $()", step("s", [file({ path: "/etc/$(reboot)" })]), /unsafe path/],
            ["mode that is not octal", step("s", [file({ mode: "rw-r--r--" })]), /bad mode/],
            ["owner with a colon", step("s", [file({ owner: "root:root" })]), /bad owner\/group/],
            ["package with an option", step("s", [], "", { packages: ["--allow-unauthenticated"] }), /bad package name/],
            ["empty alternative", step("s", [], "", { packages: ["chrony|"] }), /bad package name/],
            ["alternative with an option", step("s", [], "", { packages: ["chrony|--purge"] }), /bad package name/],
        ];
        for (const [what, s, error] of bad) assert.throws(() => renderApplyScript(s), error, what);
    });
});

describe("steps: reload_when_changed (files/common/prelude.sh), the one reload convention of postfix, dovecot, rspamd and dkim-signer", { skip: INSTALLS_AS_ROOT }, () => {
    let dir: string, conf: string, checkLog: string, stateDir: string;
    before(() => {
        dir = join(root, "reload");
        conf = join(dir, "etc/fake/fake.conf");
        checkLog = join(dir, "checks.log");
        stateDir = join(dir, "state");
    });
    const marker = () => join(stateDir, "pending-reload/fake");
    /** A step whose check records that it ran and passes unless CHECK_FAILS exists. */
    const reloadStep = (content: string, helper: "reload_when_changed" | "restart_when_changed" = "reload_when_changed") =>
        step("reloader", [{ path: conf, content }], [
            // The state directory of the test, not the host's /var/lib/ispmail.
            `ISPMAIL_STATE_DIR=${stateDir}`,
            `fake_check() { echo check >> ${checkLog}; [ ! -e ${join(dir, "CHECK_FAILS")} ]; }`,
            `${helper} fake ${join(dir, "etc/fake")} -- fake_check`,
        ].join("\n"));
    const calls = () => readLines(systemctlLog).filter((l) => !l.startsWith("is-active"));
    const checks = () => readLines(checkLog).length;

    test("reload: a changed file is checked, then its daemon reloads, once", () => {
        writeFileSync(systemctlLog, "");
        const run = apply(reloadStep("a = 1\n"));
        assert.equal(run.code, 0, run.stderr);
        assert.deepEqual(run.result?.actions, ["reloaded fake"]);
        assert.deepEqual(calls(), ["reload-or-restart fake"]);
        assert.equal(checks(), 1);
        assert.equal(existsSync(marker()), false, "nothing left pending");
    });

    test("reload: no change, daemon up: no check, no reload, unchanged", () => {
        writeFileSync(systemctlLog, "");
        const run = apply(reloadStep("a = 1\n"));
        assert.equal(run.code, 0, run.stderr);
        assert.deepEqual(run.result, { result: "unchanged", changedFiles: [], actions: [] });
        assert.deepEqual(calls(), []);
        assert.equal(checks(), 1, "the check ran only in the first run");
    });

    test("reload: a failing check stops the step before the reload and keeps it pending; the next run reloads without a file change", () => {
        writeFileSync(systemctlLog, "");
        writeFileSync(join(dir, "CHECK_FAILS"), "");
        const failed = apply(reloadStep("a = 2\n"));
        assert.notEqual(failed.code, 0);
        assert.deepEqual(calls(), [], "no reload into a configuration the check refused");
        assert.equal(existsSync(marker()), true, "the change stays pending");
        rmSync(join(dir, "CHECK_FAILS"));
        const retried = apply(reloadStep("a = 2\n"));
        assert.equal(retried.code, 0, retried.stderr);
        assert.deepEqual(retried.result?.changedFiles, [], "the file was already in place");
        assert.deepEqual(retried.result?.actions, ["reloaded fake"]);
        assert.equal(existsSync(marker()), false);
    });

    test("reload: without a change a stopped daemon is started (restart), not reloaded", () => {
        // systemctl's recorder answers is-active with failure for this run only.
        const recorder = readFileSync(join(fakeBin, "systemctl"), "utf8");
        writeFileSync(join(fakeBin, "systemctl"), `#!/bin/bash\necho "$*" >> ${systemctlLog}\n[ "$1" != is-active ]\n`, { mode: 0o755 });
        try {
            writeFileSync(systemctlLog, "");
            const run = apply(reloadStep("a = 2\n"));
            assert.equal(run.code, 0, run.stderr);
            assert.deepEqual(calls(), ["restart fake"]);
        } finally {
            writeFileSync(join(fakeBin, "systemctl"), recorder, { mode: 0o755 });
        }
    });

    test("restart_when_changed: the same convention, with a restart: a changed file is checked, then its daemon restarts, once", () => {
        writeFileSync(systemctlLog, "");
        const before = checks();
        const run = apply(reloadStep("a = 3\n", "restart_when_changed"));
        assert.equal(run.code, 0, run.stderr);
        assert.deepEqual(run.result?.actions, ["restarted fake"]);
        assert.deepEqual(calls(), ["restart fake"]);
        assert.equal(checks(), before + 1);
        assert.equal(existsSync(marker()), false, "nothing left pending");
    });
});

describe("steps: ensure_enabled and daemon_reload_when_changed (files/common/prelude.sh): at most one daemon-reload per step", { skip: INSTALLS_AS_ROOT }, () => {
    let dir: string, unit: string, stateDir: string;
    before(() => {
        dir = join(root, "units");
        unit = join(dir, "etc/systemd/system/fake.timer");
        stateDir = join(dir, "state");
    });
    /**
     * systemctl's recorder answers `is-enabled` as a systemd would for these units: one state per
     * line, in order, nothing (only stderr) for one it cannot find; its exit status says whether ANY
     * of them is enabled, as systemctl's does.
     */
    const withUnits = (states: Record<string, string>, fn: () => void) => {
        const recorder = readFileSync(join(fakeBin, "systemctl"), "utf8");
        const table = Object.entries(states).map(([u, s]) => `[${u}]=${s}`).join(" ");
        writeFileSync(
            join(fakeBin, "systemctl"),
            `#!/bin/bash\necho "$*" >> ${systemctlLog}\nif [ "$1" = is-enabled ]; then\n  declare -A s=(${table}); shift; any=1\n` +
                `  for u in "$@"; do [ "$u" = --quiet ] && continue; if [ -n "\${s[$u]+x}" ]; then echo "\${s[$u]}"; [ "\${s[$u]}" != enabled ] || any=0; else echo "Failed to get unit file state for $u" >&2; fi; done\n  exit $any\nfi\n`,
            { mode: 0o755 },
        );
        try {
            writeFileSync(systemctlLog, "");
            fn();
        } finally {
            writeFileSync(join(fakeBin, "systemctl"), recorder, { mode: 0o755 });
        }
    };
    const unitStep = (content: string, units: string) =>
        step("units", [{ path: unit, content }], [`ISPMAIL_STATE_DIR=${stateDir}`, `ensure_enabled ${units}`, `daemon_reload_when_changed ${unit}`].join("\n"));

    test("units: a new unit file that is not enabled yet: enabled without a reload of its own, then one daemon-reload", () => {
        withUnits({ "fake.timer": "disabled", "other.service": "enabled" }, () => {
            const run = apply(unitStep("[Timer]\nOnCalendar=daily\n", "fake.timer other.service"));
            assert.equal(run.code, 0, run.stderr);
            assert.deepEqual(readLines(systemctlLog), ["is-enabled fake.timer other.service", "enable --quiet --no-reload fake.timer", "daemon-reload"]);
            assert.deepEqual(run.result?.actions, ["enabled fake.timer"]);
        });
    });

    test("units: enabled_now names the units this run enabled (a first start), not those enabled before", () => {
        const startIfEnabledNow = (u: string) => `if enabled_now ${u}; then systemctl start ${u}; fi`;
        const script = [`ensure_enabled fake.timer other.service`, startIfEnabledNow("fake.timer"), startIfEnabledNow("other.service"), startIfEnabledNow("never.asked")].join("\n");
        withUnits({ "fake.timer": "disabled", "other.service": "enabled" }, () => {
            const run = apply(step("units", [], script));
            assert.equal(run.code, 0, run.stderr);
            assert.deepEqual(readLines(systemctlLog), ["is-enabled fake.timer other.service", "enable --quiet --no-reload fake.timer", "start fake.timer"]);
        });
        withUnits({ "fake.timer": "enabled", "other.service": "enabled" }, () => {
            const run = apply(step("units", [], script));
            assert.equal(run.code, 0, run.stderr);
            assert.deepEqual(readLines(systemctlLog), ["is-enabled fake.timer other.service"]);
        });
    });

    test("units: one is-enabled for all of them, its lines deciding (its exit status is true when any is enabled); all enabled and nothing changed: no reload, unchanged", () => {
        // One enabled unit would make `is-enabled a b` succeed: the lines, not the exit status, decide.
        withUnits({ "fake.timer": "enabled", "other.service": "disabled" }, () => {
            const run = apply(unitStep("[Timer]\nOnCalendar=daily\n", "fake.timer other.service"));
            assert.equal(run.code, 0, run.stderr);
            assert.deepEqual(readLines(systemctlLog), ["is-enabled fake.timer other.service", "enable --quiet --no-reload other.service", "daemon-reload"]);
        });
        withUnits({ "fake.timer": "enabled", "other.service": "static" }, () => {
            const run = apply(unitStep("[Timer]\nOnCalendar=daily\n", "fake.timer other.service"));
            assert.equal(run.code, 0, run.stderr);
            assert.deepEqual(readLines(systemctlLog), ["is-enabled fake.timer other.service"]);
            assert.deepEqual(run.result, { result: "unchanged", changedFiles: [], actions: [] });
        });
    });

    test("units: a changed unit file of an enabled unit: one daemon-reload", () => {
        withUnits({ "fake.timer": "enabled" }, () => {
            const run = apply(unitStep("[Timer]\nOnCalendar=weekly\n", "fake.timer"));
            assert.equal(run.code, 0, run.stderr);
            assert.deepEqual(readLines(systemctlLog), ["is-enabled fake.timer", "daemon-reload"]);
            assert.deepEqual(run.result?.changedFiles, [unit]);
        });
    });

    test("units: a unit systemctl cannot find leaves the lines unpaired: each unit is asked alone", () => {
        withUnits({ "fake.timer": "disabled" }, () => {
            const run = apply(unitStep("[Timer]\nOnCalendar=weekly\n", "missing.service fake.timer"));
            // enable of the missing unit is where it fails on a real systemd; the recorder lets it pass.
            assert.equal(run.code, 0, run.stderr);
            assert.deepEqual(readLines(systemctlLog), [
                "is-enabled missing.service fake.timer",
                "is-enabled missing.service",
                "enable --quiet --no-reload missing.service",
                "is-enabled fake.timer",
                "enable --quiet --no-reload fake.timer",
                "daemon-reload",
            ]);
        });
    });
});

describe("steps: the readable summary (a command's triggers)", () => {
    const base: Step = {
        name: "demo",
        description: "a demo step",
        packages: ["postfix", "postfix-pgsql"],
        files: [
            { path: "/etc/demo/main.cf", content: "a = 1\n" },
            { path: "/etc/demo/secret.cf", content: `password = ${secretRef("db.demo")}\n`, owner: "root", group: "postfix", mode: "0640", secret: true },
        ],
        inputs: [{ name: "passwords", content: `user a@example.org ${secretRef("user:a@example.org", "base64")}\n` }],
        script: "reload postfix",
        after: [],
    };

    test("steps: one line per part: packages, the secrets' names, each file with owner, mode and a short hash, each input, the script", () => {
        const lines = stepSummary(base);
        assert.equal(lines.length, 6);
        assert.equal(lines[0], "packages postfix postfix-pgsql");
        assert.equal(lines[1], "secrets db.demo user:a@example.org", "the names of the secrets it uses, never their values");
        assert.match(lines[2], /^file \/etc\/demo\/main\.cf root:root 0644 [0-9a-f]{12}$/);
        assert.match(lines[3], /^file \/etc\/demo\/secret\.cf root:postfix 0640 secret [0-9a-f]{12}$/);
        assert.match(lines[4], /^input passwords [0-9a-f]{12}$/);
        assert.match(lines[5], /^script [0-9a-f]{12}$/);
    });

    test("steps: a changed file changes its line only; the secret's value never reaches the summary", () => {
        const changed: Step = { ...base, files: [{ ...base.files[0], content: "a = 2\n" }, base.files[1]] };
        const [a, b] = [stepSummary(base), stepSummary(changed)];
        assert.deepEqual(a.map((l, i) => (l === b[i] ? "=" : l.split(" ").slice(0, 2).join(" "))), ["=", "=", "file /etc/demo/main.cf", "=", "=", "="]);
        // Hashed with the placeholder, so a new secret value leaves the summary as it was.
        const secret = "s3cr3t-value-of-db-demo";
        const resolved = resolveSecrets(base, { "db.demo": secret, "user:a@example.org": "pw" });
        assert.notDeepEqual(stepSummary(resolved), a, "the resolved step differs (the check can fail)");
        assert.ok(!stepSummary(base).join("\n").includes(secret));
    });
});

describe("steps: every service's script leaves systemd's reloads to the prelude", () => {
    const raw = validRawConfig();
    raw.nextcloud = { enabled: true, version: "31.0.9", sha256: "cd".repeat(32) };
    const m = parseConfig(raw, { stack: "test" }).model;
    const steps = renderServerSteps(m, { dkimSigner: m.dkimSelectors[0] });

    test("units: no step reloads systemd or enables a unit itself; each unit file it writes is named where it reloads", () => {
        assert.ok(steps.some((s) => s.name === "nextcloud"), "Nextcloud's step is among them");
        for (const s of steps) {
            // `systemctl enable` without --no-reload, or an explicit daemon-reload, is one more
            // reload of the whole manager (ensure_enabled, daemon_reload_when_changed), unless the
            // line says why it cannot wait.
            for (const line of s.script.split("\n").filter((l) => /systemctl (daemon-reload|enable)\b/.test(l))) {
                assert.match(line, /# own reload: \S/, `${s.name}: ${line.trim()}`);
            }
            const reloads = [...s.script.matchAll(/^\s*daemon_reload_when_changed\b(.*)$/gm)];
            // The paths as the shell sees them: quotes off, the script's own NAME=value assignments expanded.
            const vars = new Map([...s.script.matchAll(/^\s*([A-Za-z_][A-Za-z0-9_]*)=(\S+)$/gm)].map((a) => [a[1], a[2].replace(/^['"]|['"]$/g, "")]));
            const named = reloads
                .flatMap((r) => r[1].trim().split(/\s+/))
                .filter(Boolean)
                .map((p) => p.replace(/"/g, "").replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (v, name: string) => vars.get(name) ?? v));
            const lastEnable = s.script.lastIndexOf("ensure_enabled ");
            if (lastEnable >= 0) assert.ok(reloads.some((r) => r.index! > lastEnable), `${s.name}: ensure_enabled with no daemon_reload_when_changed after it`);
            for (const f of s.files.filter((f) => f.path.startsWith("/etc/systemd/system/"))) {
                // Named as itself or as its directory.
                const ok = named.some((p) => f.path === p || f.path.startsWith(`${p.replace(/\/$/, "")}/`));
                assert.ok(ok, `${s.name}: ${f.path} is not named in a daemon_reload_when_changed (${named.join(" ") || "none"})`);
            }
        }
    });
});
