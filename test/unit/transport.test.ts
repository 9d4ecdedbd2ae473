/**
 * The transport both paths use (components/steps.ts remoteApplyCommand + renderApplyScript), run
 * for real with sh and bash the way sshd runs it: the command string, the apply script on stdin.
 * What `pulumi up` does and the sequential lab did not show: a child that reads stdin, a script cut
 * short in transport, the output of a failing step that holds secrets, and package operations of
 * steps that the engine runs at the same time.
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parseStepResult, remoteApplyCommand, renderApplyScript, stepLockPath, type Step } from "../../components/steps";
import { withStateDir } from "../harness/shell";

let root: string;
let fakeBin: string;
let logDir: string;
let lockDir: string;

before(() => {
    root = mkdtempSync("/tmp/ispmail-transport-test-");
    fakeBin = join(root, "bin");
    logDir = join(root, "log", "steps");
    lockDir = join(root, "run");
    mkdirSync(lockDir);
    mkdirSync(fakeBin);
    // A package database where nothing is installed, and an apt-get that fails at once, as the real
    // one does, when another apt-get holds the lock (here: a directory only one can create).
    writeFileSync(join(fakeBin, "dpkg-query"), "#!/bin/sh\nexit 1\n", { mode: 0o755 });
    writeFileSync(
        join(fakeBin, "apt-get"),
        `#!/bin/sh\nif ! mkdir ${root}/apt-running 2>/dev/null; then echo "E: Could not get lock /var/lib/dpkg/lock-frontend" >&2; exit 100; fi\nsleep 0.4\necho "apt-get $*" >> ${root}/apt.log\nrmdir ${root}/apt-running\n`,
        { mode: 0o755 },
    );
});

after(() => rmSync(root, { recursive: true, force: true }));

const step = (name: string, script: string, more: Partial<Step> = {}): Step => ({ name, description: `test step ${name}`, files: [], script, after: [], ...more });

interface Sent {
    readonly code: number | null;
    readonly stdout: string;
    readonly stderr: string;
}

const env = () => ({ ...process.env, PATH: `${fakeBin}:${process.env.PATH}` });

/** What sshd does with a command resource: `sh -c COMMAND`, the script on stdin. */
function send(s: Step, input = withStateDir(renderApplyScript(s), join(root, "state")), holdsSecrets = false): Sent {
    const r = spawnSync("sh", ["-c", remoteApplyCommand(s, { holdsSecrets, logDir, lockDir })], { input, encoding: "utf8", timeout: 20_000, env: env() });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function sendAsync(s: Step): Promise<Sent> {
    return new Promise((resolve, reject) => {
        const child = spawn("sh", ["-c", remoteApplyCommand(s, { holdsSecrets: false, logDir, lockDir })], { env: env() });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
        child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
        child.on("error", reject);
        child.on("close", (code) => resolve({ code, stdout, stderr }));
        child.stdin.end(withStateDir(renderApplyScript(s), join(root, "state")));
    });
}

describe("transport: the apply script cannot be cut short unseen", () => {
    const reader = step("reader", ['cat >/dev/null || true', 'log "after the reader"', "mark_changed"].join("\n"));

    it("transport: a child that reads stdin does not eat the rest of the script (it gets /dev/null)", () => {
        const r = send(reader);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stderr, /\[reader\] after the reader/);
        assert.equal(parseStepResult(r.stdout)?.result, "changed");
        // Positive control of the hazard itself: plain `bash -s` of a script without the wrapper
        // loses everything after the reader and still exits 0.
        const naked = ["set -euo pipefail", "cat >/dev/null", 'echo "after the reader" >&2', 'echo "ispmail-step-result:{}"'].join("\n");
        const plain = spawnSync("bash", ["-s"], { input: naked, encoding: "utf8" });
        assert.equal(plain.status, 0);
        assert.doesNotMatch(plain.stdout + plain.stderr, /after the reader|ispmail-step-result/);
    });

    it("transport: a script cut in the middle fails the step (a syntax error, not a shorter script)", () => {
        const script = renderApplyScript(step("cut", 'log "the end"'));
        const r = send(step("cut", ""), script.slice(0, Math.floor(script.length * 0.8)));
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /step cut failed \(exit \d+\)/);
        assert.equal(parseStepResult(r.stdout), undefined);
    });

    it("transport: a script that ends 0 without its result line fails the step", () => {
        // Cut right after the function: bash exits 0 having run nothing.
        const script = renderApplyScript(step("short", 'log "the end"'));
        const r = send(step("short", ""), script.slice(0, script.lastIndexOf("ispmail_main </dev/null")));
        assert.equal(r.code, 70);
        assert.match(r.stderr, /step short printed no result line/);
        assert.match(r.stderr, /failed \(exit 70\)/);
    });

    it("transport: bash takes a large script in blocks, not one read(2) per byte", () => {
        // A step input of ~1 MB, as the directory's password input is for 5,000 mailboxes. The
        // shell that runs the script reports its own read(2) calls (/proc/$$/io): `bash -s` on a
        // pipe makes one per byte of the script.
        const input = { name: "bulk", content: "x".repeat(1_000_000) };
        const s = step("bulk", 'log "read calls $(sed -n "s/^syscr: //p" /proc/$$/io), input length ${#ISPMAIL_INPUTS[bulk]}"', { inputs: [input] });
        const script = renderApplyScript(s);
        const r = send(s, script);
        assert.equal(r.code, 0, r.stderr);
        const m = /read calls (\d+), input length (\d+)/.exec(r.stderr);
        assert.ok(m, r.stderr);
        assert.ok(Number(m[2]) > 1_300_000, "the input arrived whole (base64)");
        assert.ok(Number(m[1]) < script.length / 100, `${m[1]} read(2) calls for a script of ${script.length} bytes`);
    });

    it("transport: a background step's script runs at nice 10, every other at the priority sshd gave the session", () => {
        const own = Number(spawnSync("nice", { encoding: "utf8" }).stdout.trim());
        const niceness = (background: boolean) => {
            const r = send(step("prio", 'log "niceness $(nice)"', { background }));
            assert.equal(r.code, 0, r.stderr);
            return Number(/niceness (-?\d+)/.exec(r.stderr)?.[1]);
        };
        assert.equal(niceness(false), own);
        assert.equal(niceness(true), Math.min(own + 10, 19));
    });

    it("transport: stdout carries only the result line; a whole step's output stays root-only on the server", () => {
        const r = send(step("chatty", ['echo "to stdout"', 'log "to stderr"'].join("\n")));
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(r.stdout.trim().split("\n").length, 1);
        assert.ok(r.stdout.startsWith("ispmail-step-result:"));
        assert.match(readFileSync(join(logDir, "chatty.out"), "utf8"), /to stdout/);
        assert.equal((statSync(logDir).mode & 0o777).toString(8), "700");
        assert.equal((statSync(join(logDir, "chatty.log")).mode & 0o777).toString(8), "600");
    });

    it("transport: a failing step that holds secrets shows only its own log lines and where the rest is", () => {
        const s = step("dbsecret", ['log "connecting"', 'echo "psql: FATAL: password for role x was Hunter2-0123456789" >&2', "exit 3"].join("\n"));
        const r = send(s, renderApplyScript(s), true);
        assert.equal(r.code, 3);
        assert.match(r.stderr, /\[dbsecret\] connecting/);
        assert.doesNotMatch(r.stderr, /Hunter2/, "the provider puts a failing command's stderr into its error, logging or not");
        assert.match(r.stderr, new RegExp(`failed \\(exit 3\\); its whole output is on the server in ${logDir}/dbsecret\\.log`));
        assert.match(readFileSync(join(logDir, "dbsecret.log"), "utf8"), /Hunter2/, "the detail stays on the server");
        // The same failure in a step without secrets shows the output itself.
        const open = send(step("plain", ['echo "psql: FATAL: no such role" >&2', "exit 3"].join("\n")));
        assert.match(open.stderr, /psql: FATAL: no such role/);
    });
});

/** The steps' package lock is the host's own (files/common/prelude.sh): root's once a root run used it. */
const APT_LOCK = "/run/lock/ispmail-apt.lock";
function aptLockSkip(): string | undefined {
    try {
        accessSync(existsSync(APT_LOCK) ? APT_LOCK : dirname(APT_LOCK), constants.W_OK);
        return undefined;
    } catch {
        return `needs write access to ${APT_LOCK}, the steps' package lock on this host (a root run leaves it root's): run as root`;
    }
}

describe("transport: steps the engine runs at the same time", () => {
    /** The step's run as "start end" pairs of $EPOCHREALTIME from its log lines. */
    const span = (r: Sent) => (/span (\d+\.\d+) (\d+\.\d+)/.exec(r.stderr) ?? []).slice(1).map(Number);

    it("transport: two runs of one step wait for each other (the step's lock); two steps do not", async () => {
        const script = 'begin=$EPOCHREALTIME; sleep 0.5; log "span $begin $EPOCHREALTIME"';
        const [a, b] = await Promise.all([sendAsync(step("twice", script)), sendAsync(step("twice", script))]);
        assert.equal(a.code, 0, a.stderr);
        assert.equal(b.code, 0, b.stderr);
        const [first, second] = [span(a), span(b)].sort((x, y) => x[0] - y[0]);
        assert.ok(second[0] >= first[1], `the second run began ${(first[1] - second[0]).toFixed(3)} s before the first ended`);
        // Positive control: two different steps overlap.
        const [c, d] = await Promise.all([sendAsync(step("one", script)), sendAsync(step("other", script))]);
        const [x, y] = [span(c), span(d)].sort((p, q) => p[0] - q[0]);
        assert.ok(y[0] < x[1], "two different steps ran one after the other");
    });

    it("transport: a reload that holds the step's lock (the certificate's) delays the step; a daemon the step started does not hold it", async () => {
        // What ispmail-certificate does around a reload: the lock file of the step that configures the daemon.
        const holder = spawn("flock", [stepLockPath("held", lockDir), "sleep", "0.6"]);
        const released = new Promise((resolve) => holder.once("close", resolve));
        await new Promise((resolve) => setTimeout(resolve, 150));
        const started = Date.now();
        const r = await sendAsync(step("held", 'log "ran"'));
        assert.equal(r.code, 0, r.stderr);
        assert.ok(Date.now() - started >= 350, `the step ran ${Date.now() - started} ms after it was sent, while the lock was held`);
        await released;
        // A step that leaves a process running (as `postfix start` leaves its master): the next run
        // does not wait for it, because flock -o keeps the lock out of the script's children.
        const daemon = step("daemon", 'setsid sleep 3 </dev/null >/dev/null 2>&1 & log "started"');
        assert.equal((await sendAsync(daemon)).code, 0);
        const again = Date.now();
        assert.equal((await sendAsync(daemon)).code, 0);
        assert.ok(Date.now() - again < 2500, `the second run waited ${Date.now() - again} ms for the first run's daemon`);
    });

    it("transport: package operations of concurrent steps wait for each other instead of failing on apt's lock", { skip: aptLockSkip() }, async () => {
        const steps = ["pkg-a", "pkg-b", "pkg-c"].map((name) => step(name, "", { packages: [`fake-${name}`] }));
        const results = await Promise.all(steps.map(sendAsync));
        for (const [i, r] of results.entries()) {
            assert.equal(r.code, 0, `${steps[i].name}: ${r.stderr}`);
            assert.deepEqual(parseStepResult(r.stdout)?.actions, [`installed fake-${steps[i].name}`]);
        }
        const calls = readFileSync(join(root, "apt.log"), "utf8");
        for (const s of steps) assert.match(calls, new RegExp(`install .*fake-${s.name}`));
        assert.match(calls, /-o DPkg::Lock::Timeout=\d+/, "apt itself waits for apt-daily/unattended-upgrades");
    });
});
