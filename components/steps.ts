/**
 * Steps: the unit of remote configuration, as plain data.
 *
 * A service module renders `Model -> Step[]` with pure functions. Two transports apply the very same
 * steps: the Pulumi components (`command.remote.Command`, see components/remote.ts) and the lab (SSH
 * runs, see lab/). Both send the script from {@link renderApplyScript} to bash on the server's standard
 * input ({@link remoteApplyCommand}), so no file content and no secret ever appears on a command line.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { SECRETS_DIR, STATE_DIR } from "./paths";
import { shellQuote } from "./shell";

export interface StepFile {
    /** Absolute path on the server. */
    readonly path: string;
    /** Content; may hold {@link secretRef} placeholders, which are resolved just before transport. */
    readonly content: string;
    readonly owner?: string;
    readonly group?: string;
    /** Octal mode, e.g. "0640". */
    readonly mode?: string;
    /** The content holds secrets: never logged, never world-readable, created with its final mode. */
    readonly secret?: boolean;
    /**
     * Installed before the step's packages, because a package's maintainer script reads it at
     * install time (postgresql-common's createcluster drop-in). Owned by root: the packages make
     * the other accounts. The packages step installs these files too (components/services/packages.ts).
     */
    readonly beforePackages?: boolean;
}

/**
 * Data for a step's script that is never written to a file on the server: the script reads it with
 * `step_input NAME` (e.g. mailbox passwords on their way to being hashed into the database). It may
 * hold {@link secretRef} placeholders and is always treated as secret.
 */
export interface StepInput {
    /** A shell-safe name ([a-z0-9_]). */
    readonly name: string;
    readonly content: string;
}

export interface Step {
    /** Unique, stable name: it becomes the Pulumi resource name, so renaming needs an alias. */
    readonly name: string;
    readonly description: string;
    /**
     * Debian packages this step needs; installed (noninteractive) only when missing. An entry
     * `a|b|c` is satisfied by any one of them and installs `a` when none is installed (as in a
     * Debian Depends line), e.g. a time daemon when the image may already have another.
     */
    readonly packages?: readonly string[];
    /** debconf selections (`pkg question type value` lines) set before the packages are installed. */
    readonly debconf?: readonly string[];
    readonly files: readonly StepFile[];
    /** Script input kept in memory only ({@link StepInput}). */
    readonly inputs?: readonly StepInput[];
    /**
     * Bash run after the files are in place, with `set -euo pipefail`. It must be idempotent and act
     * only on what changed. Available helpers:
     *   changed PATH...          true if any of these files (or files under these dirs) changed in this run
     *   mark_changed             record that the script changed something on the server
     *   reload SERVICE           `systemctl reload-or-restart` + mark_changed + a log line
     *   restart SERVICE          `systemctl restart` + mark_changed + a log line
     *   secret_file NAME         path of a root-only file holding secret NAME (written by the step)
     *   step_input NAME          prints input NAME (never a file; pipe it into the command that needs it)
     *   log MESSAGE              a line on stderr, prefixed with the step name
     * A script never echoes secrets and never puts them into a command's arguments.
     */
    readonly script: string;
    /** Names of steps that must be applied before this one. */
    readonly after: readonly string[];
    /**
     * Nothing on the mail path waits for this step (the web, the certificate, webmail, backups):
     * its script runs at a lower CPU priority (nice 10), so that on a new server, where the engine
     * starts many steps at once on a few cores, the ones the mail path waits for get the CPU.
     */
    readonly background?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Secret placeholders
// ---------------------------------------------------------------------------------------------
// Lazy: a placeholder may be followed by "@" (a DSN's user:password@host), and names hold "@".
const SECRET_REF = /@@secret(-base64)?:([a-zA-Z0-9_.:@+-]+?)@@/g;

/**
 * A placeholder for a secret value in file or input content; resolved by {@link resolveSecrets}.
 * `base64`: the value base64-encoded, for formats in which any character could end the value.
 */
export function secretRef(name: string, encoding?: "base64"): string {
    return encoding ? `@@secret-${encoding}:${name}@@` : `@@secret:${name}@@`;
}

/** Secret names that a step's files and inputs reference. */
export function secretsOf(step: Step): string[] {
    const names = new Set<string>();
    for (const { content } of [...step.files, ...(step.inputs ?? [])]) for (const m of content.matchAll(SECRET_REF)) names.add(m[2]);
    return [...names].sort();
}

function resolveIn(content: string, values: Readonly<Record<string, string>>, where: string): string {
    return content.replace(SECRET_REF, (_, base64: string | undefined, name: string) => {
        const v = values[name];
        if (v === undefined) throw new Error(`${where} references unknown secret "${name}"`);
        return base64 ? Buffer.from(v, "utf8").toString("base64") : v;
    });
}

/** Replaces the placeholders with values. Refuses a secret in a file that is not marked secret. */
export function resolveSecrets(step: Step, values: Readonly<Record<string, string>>): Step {
    const files = step.files.map((f) => {
        if (!SECRET_REF.test(f.content)) return f;
        SECRET_REF.lastIndex = 0;
        if (!f.secret) throw new Error(`step ${step.name}: ${f.path} references a secret but is not marked secret`);
        return { ...f, content: resolveIn(f.content, values, `step ${step.name}: ${f.path}`) };
    });
    const inputs = step.inputs?.map((i) => ({ ...i, content: resolveIn(i.content, values, `step ${step.name}: input ${i.name}`) }));
    return { ...step, files, ...(inputs ? { inputs } : {}) };
}

// ---------------------------------------------------------------------------------------------
// Ordering
// ---------------------------------------------------------------------------------------------
/** Steps in an order that respects `after`; throws on unknown names or cycles. Stable otherwise. */
export function orderSteps(steps: readonly Step[]): Step[] {
    const byName = new Map(steps.map((s) => [s.name, s]));
    if (byName.size !== steps.length) throw new Error("step names must be unique");
    const out: Step[] = [];
    const state = new Map<string, "visiting" | "done">();
    const visit = (s: Step, chain: string[]) => {
        const st = state.get(s.name);
        if (st === "done") return;
        if (st === "visiting") throw new Error(`step cycle: ${[...chain, s.name].join(" -> ")}`);
        state.set(s.name, "visiting");
        for (const dep of s.after) {
            const d = byName.get(dep);
            if (!d) throw new Error(`step ${s.name}: unknown step "${dep}" in after`);
            visit(d, [...chain, s.name]);
        }
        state.set(s.name, "done");
        out.push(s);
    };
    for (const s of steps) visit(s, []);
    return out;
}

// ---------------------------------------------------------------------------------------------
// The apply script: the one implementation of "apply a step"
// ---------------------------------------------------------------------------------------------
/** The line the apply script ends with; both transports parse it. */
export const RESULT_PREFIX = "ispmail-step-result:";

export type StepResult = "changed" | "unchanged";

/** Parses the result line from an apply script's output. */
export function parseStepResult(output: string): { result: StepResult; changedFiles: string[]; actions: string[] } | undefined {
    const line = output.split("\n").find((l) => l.startsWith(RESULT_PREFIX));
    if (!line) return undefined;
    const parsed = JSON.parse(line.slice(RESULT_PREFIX.length)) as { result: StepResult; files: string[]; actions: string[] };
    return { result: parsed.result, changedFiles: parsed.files, actions: parsed.actions };
}

const SAFE_NAME = /^[a-z0-9][a-z0-9_.-]*$/i;
/** User and group names: Debian's system accounts may start with "_" (e.g. _rspamd). */
const SAFE_ACCOUNT = /^[a-z_][a-z0-9_.-]*$/i;
const SAFE_PATH = /^\/[A-Za-z0-9_.@+/-]+$/;
/** A Debian package name, or alternatives `a|b|c` ({@link Step.packages}). */
export const PACKAGE_ENTRY = /^[a-z0-9][a-z0-9+.:-]*(\|[a-z0-9][a-z0-9+.:-]*)*$/;

/** sha256 (hex) of a step's rendered data, placeholders unresolved: safe to show in a preview. */
/** A file's owner, group and mode as installed: root's, 0644 (0600 for a secret) unless given. */
function fileAttributes(f: StepFile): { owner: string; group: string; mode: string } {
    const owner = f.owner ?? "root";
    return { owner, group: f.group ?? owner, mode: f.mode ?? (f.secret ? "0600" : "0644") };
}

export function stepHash(step: Step): string {
    return createHash("sha256").update(JSON.stringify(step)).digest("hex");
}

/**
 * What a step installs, one readable line per part: the command's `triggers`, so that `pulumi
 * preview --diff` names what changed ("file /etc/postfix/main.cf root:root 0644 3f2a1b2c9d0e")
 * instead of one hash of everything. Together the lines cover every part of the step that the
 * server acts on (not its description, which is prose). The short hashes are of the content with its secret placeholders unresolved: neither
 * a secret nor a secret's hash.
 */
export function stepSummary(step: Step): string[] {
    const short = (text: string) => createHash("sha256").update(text).digest("hex").slice(0, 12);
    const secrets = secretsOf(step);
    return [
        ...(step.packages?.length ? [`packages ${step.packages.join(" ")}`] : []),
        // The names of the secrets the step installs (never a value): a reviewer sees a step take
        // up a secret, and the policy pack holds such a command to logging nothing.
        ...(secrets.length ? [`secrets ${secrets.join(" ")}`] : []),
        ...(step.debconf?.length ? [`debconf ${short(step.debconf.join("\n"))}`] : []),
        ...step.files.map((f) => {
            const { owner, group, mode } = fileAttributes(f);
            return `file ${f.path} ${owner}:${group} ${mode}${f.secret ? " secret" : ""}${f.beforePackages ? " before-packages" : ""} ${short(f.content)}`;
        }),
        ...(step.inputs ?? []).map((i) => `input ${i.name} ${short(i.content)}`),
        `script ${short(step.script)}`,
    ];
}

/** A command reading `content` base64-encoded from a here-document (76-character lines). */
function base64HereDocument(command: string, content: string): string[] {
    const b64 = Buffer.from(content, "utf8").toString("base64").replace(/.{1,76}/g, "$&\n");
    return [`${command} <<'ISPMAIL_B64'`, b64.trimEnd(), "ISPMAIL_B64"];
}

/**
 * Renders a self-contained bash script that installs a step's packages and files and runs its
 * script. Send it on stdin to {@link remoteApplyCommand}; it prints one `ispmail-step-result:{json}` line at the end.
 * The step must already have its secrets resolved.
 */
export function renderApplyScript(step: Step): string {
    if (!SAFE_NAME.test(step.name)) throw new Error(`step name ${JSON.stringify(step.name)} is not a safe name`);
    const lines: string[] = [];
    lines.push(
        "#!/bin/bash",
        "set -euo pipefail",
        // Anything this script creates is private until given its final owner and mode.
        "umask 077",
        "export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8",
        `ISPMAIL_STEP=${shellQuote(step.name)}`,
        `ISPMAIL_SECRETS_DIR=${shellQuote(SECRETS_DIR)}`,
        `ISPMAIL_STATE_DIR=${shellQuote(STATE_DIR)}`,
        // bash keeps a large here-document (file content, inputs) in a temporary file while it
        // runs: in memory (tmpfs), root only, never on a disk.
        "[ -d /run/ispmail ] || install -d -m 0700 /run/ispmail",
        "TMPDIR=/run/ispmail",
        PRELUDE,
        // Everything below is one function, called on the last line with stdin from /dev/null:
        // bash parses the whole body before running any of it, so a child that reads stdin (were
        // the script run with `bash -s`, the rest of it) cannot eat the script, and a script cut short in
        // transport is a syntax error instead of a shorter script that exits 0.
        "ispmail_main() {",
    );
    if (step.debconf?.length) {
        lines.push(`ispmail_debconf <<'ISPMAIL_DEBCONF'`, ...step.debconf, "ISPMAIL_DEBCONF");
    }
    const checked = (f: StepFile) => {
        if (!SAFE_PATH.test(f.path) || f.path.includes("/../")) throw new Error(`step ${step.name}: unsafe path ${f.path}`);
        const { owner, group, mode } = fileAttributes(f);
        if (!/^0?[0-7]{3,4}$/.test(mode)) throw new Error(`step ${step.name}: bad mode ${mode} for ${f.path}`);
        if (f.secret && /[0-7]{2}[1-7]$/.test(mode)) throw new Error(`step ${step.name}: secret file ${f.path} must not be world-readable (mode ${mode})`);
        if (!SAFE_ACCOUNT.test(owner) || !SAFE_ACCOUNT.test(group)) throw new Error(`step ${step.name}: bad owner/group for ${f.path}`);
        if (f.beforePackages && (owner !== "root" || group !== "root")) throw new Error(`step ${step.name}: ${f.path} is installed before the packages and must belong to root:root`);
        return { owner, group, mode };
    };
    const files = (group: readonly StepFile[]) => {
        if (group.length === 0) return;
        // What each file should be, as `stat -c '%U:%G %a'` and sha256sum print it: one stat and one
        // sha256sum for the whole group find the files that are already right (instead of two forks
        // per file), and ispmail_file skips those without even reading their content.
        const attributed = group.map((f) => ({ f, ...checked(f) }));
        lines.push("ispmail_files_check <<'ISPMAIL_SUMS'");
        for (const { f, owner, group: g, mode } of attributed) {
            lines.push(`${createHash("sha256").update(f.content, "utf8").digest("hex")} ${owner}:${g} ${parseInt(mode, 8).toString(8)} ${f.path}`);
        }
        lines.push("ISPMAIL_SUMS");
        for (const { f, owner, group: g, mode } of attributed) {
            lines.push(...base64HereDocument(`ispmail_file ${f.path} ${owner} ${g} ${mode}`, f.content));
        }
    };
    // Files a package reads while it is installed go first; all others after the packages, which
    // make the accounts and directories they belong to.
    files(step.files.filter((f) => f.beforePackages));
    if (step.packages?.length) {
        for (const p of step.packages) if (!PACKAGE_ENTRY.test(p)) throw new Error(`step ${step.name}: bad package name ${p}`);
        // Alternatives (a|b) quoted: a bare | would be a pipe.
        lines.push(`ispmail_packages ${step.packages.map((p) => (p.includes("|") ? shellQuote(p) : p)).join(" ")}`);
    }
    files(step.files.filter((f) => !f.beforePackages));
    for (const i of step.inputs ?? []) {
        if (!/^[a-z0-9_]+$/.test(i.name)) throw new Error(`step ${step.name}: input name ${JSON.stringify(i.name)} is not [a-z0-9_]+`);
        lines.push(...base64HereDocument(`ispmail_input ${i.name}`, i.content));
    }
    lines.push("# --- step script ---", step.script.trim(), "# --- end of step script ---", "ispmail_result", "}", "ispmail_main </dev/null");
    return lines.join("\n") + "\n";
}

/**
 * How the server runs the apply script that arrives on stdin. Not `bash -s`: bash reads a script
 * from a pipe one byte per read(2) (it must not take input meant for a command in the script),
 * which cost ~0.1 s for a 50 KB step and seconds for a directory of 5,000 mailboxes. `$(cat)` takes
 * it in blocks, into memory only (no file, no argv), and eval runs it as bash would have.
 */
export const RUN_SCRIPT_FROM_STDIN = `bash -c 'eval "$(cat)"'`;

/** Where a step's whole output stays on the server (root only), whatever the transport shows. */
export const STEP_LOG_DIR = "/var/log/ispmail/steps";

/**
 * Every run of a step holds an exclusive lock on its own file in this directory (root only, in
 * memory: a lock outlives no boot). Whoever reloads a daemon that another step configures takes that
 * step's lock first, so the daemon never reloads into a configuration written halfway: on a new
 * server the engine starts the certbot step beside the dovecot step, and the certificate's reload
 * of Dovecot came while /etc/dovecot named sockets in a directory the step had not made yet (Dovecot
 * 2.4.1 aborts on that reload). Two runs of one step wait for each other the same way.
 */
export const STEP_LOCK_DIR = "/run/ispmail";

/** The lock file a run of the step holds ({@link STEP_LOCK_DIR}). */
export function stepLockPath(stepName: string, lockDir = STEP_LOCK_DIR): string {
    if (!SAFE_NAME.test(stepName)) throw new Error(`step name ${JSON.stringify(stepName)} is not a safe name`);
    return `${lockDir}/step-${stepName}.lock`;
}

/** How long a run waits for its step's lock before it fails (a step's own timeout is 40 minutes). */
const STEP_LOCK_WAIT_SECONDS = 1800;
/** flock's exit code when the wait ran out: EX_TEMPFAIL, as nothing ran. */
const STEP_LOCK_BUSY = 75;

/**
 * The command both transports run over SSH, with the apply script on its stdin. It is constant per
 * step (never a secret in it: a failing command's error quotes it) and POSIX sh (root's login shell
 * runs it). It
 * - keeps the script's whole stdout and stderr on the server, root only, in {@link STEP_LOG_DIR};
 * - passes on stdout only the result line, and on stderr the script's output, or for a step that
 *   holds secrets only the step's own `log` lines (`[name] ...`, which never carry a secret): the
 *   Pulumi provider puts a failing command's stdout and stderr into its error message even with
 *   logging off (pulumi-command#260);
 * - runs the script holding the step's lock ({@link stepLockPath}; flock -o: the script and the
 *   daemons it starts do not inherit the lock, flock itself holds it until the script ends);
 * - fails when the result line is missing (a script cut short, or one that exited 0 early), since
 *   a truncated script would otherwise look like success;
 * - on failure, ends with the exit code and the last lines, and says where the rest is.
 */
export function remoteApplyCommand(step: Pick<Step, "name" | "background">, opts: { holdsSecrets: boolean; logDir?: string; lockDir?: string }): string {
    const lock = stepLockPath(step.name, opts.lockDir);
    const logDir = opts.logDir ?? STEP_LOG_DIR;
    for (const dir of [logDir, opts.lockDir ?? STEP_LOCK_DIR]) if (!SAFE_PATH.test(dir)) throw new Error(`unsafe directory ${dir}`);
    const base = `${logDir}/${step.name}`;
    const show = opts.holdsSecrets ? `grep -E '^\\[${step.name.replace(/\./g, "\\.")}\\] ' "$log"` : `cat "$log"`;
    return [
        `umask 077; d=${logDir}; log=${base}.log; out=${base}.out; lock=${lock}`,
        // Made root-only once; the test builtins spare two forks on every later run.
        `{ [ -d "$d" ] && [ -d "\${lock%/*}" ]; } || { mkdir -p "$d" "\${lock%/*}" && chmod 0700 "$d" "\${lock%/*}"; } || exit 1`,
        `flock -o -w ${STEP_LOCK_WAIT_SECONDS} -E ${STEP_LOCK_BUSY} "$lock" ${step.background ? "nice -n 10 " : ""}${RUN_SCRIPT_FROM_STDIN} >"$out" 2>"$log"; rc=$?`,
        `if [ "$rc" -eq ${STEP_LOCK_BUSY} ] && [ ! -s "$out" ] && [ ! -s "$log" ]; then echo "ispmail: step ${step.name} did not run: $lock stayed locked for ${STEP_LOCK_WAIT_SECONDS} s (another run of this step, or a reload of its daemon, holds it)" >&2; fi`,
        // The result line, found by the shell itself (out holds little more on success): with the
        // test below, two forks fewer per step than grep and cat (each ~5 ms of a small server's CPU).
        `result=; while IFS= read -r line; do case $line in '${RESULT_PREFIX}'*) result=$line ;; esac; done <"$out"`,
        `if [ -n "$result" ]; then printf '%s\n' "$result"; else [ "$rc" -ne 0 ] || rc=70; echo "ispmail: step ${step.name} printed no result line: its script did not run to the end" >&2; fi`,
        `if [ "$rc" -eq 0 ]; then [ ! -s "$log" ] || ${show} >&2; else ${show} | tail -n 30 >&2; echo "ispmail: step ${step.name} failed (exit $rc); its whole output is on the server in $log and $out (root only)" >&2; fi`,
        `exit "$rc"`,
    ].join("\n");
}

/** Helpers shared by every apply script; a real shell file so it can be read and linted. */
const PRELUDE = readFileSync(join(__dirname, "..", "files", "common", "prelude.sh"), "utf8");
