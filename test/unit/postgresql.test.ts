/**
 * The postgresql step as rendered: config files that say what the conventions require, role
 * passwords only as secret placeholders in root-only files, and an order that keeps the cluster
 * off the root disk. (The SQL side runs against a real server in directory-sql.test.ts.)
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, it } from "node:test";
import { DB_ROLES } from "../../components/secrets";
import { secretSpecs } from "../../components/services";
import { ISPMAIL_DB_MODULE, ISPMAIL_DB_TOOL, PG_DATA_DIR, rolePasswordFile } from "../../components/services/postgresql";
import { renderApplyScript, resolveSecrets, secretsOf } from "../../components/steps";
import { FILES_DIR } from "../../components/templates";
import { fixtureModel } from "../fixtures/config";
import { runWithStubs, shellFunction } from "../harness/shell";
import { SERVICE, stepsOf } from "../../components/services";

const model = fixtureModel();
const [step] = stepsOf(SERVICE.postgresql, model);
const fileAt = (path: string) => {
    const f = step.files.find((x) => x.path === path);
    assert.ok(f, `postgresql step has no file ${path}`);
    return f;
};
/** Non-comment lines of a pg_hba.conf, whitespace-normalised. */
const hbaRules = (text: string) =>
    text
        .split("\n")
        .map((l) => l.replace(/#.*/, "").trim().split(/\s+/).join(" "))
        .filter(Boolean);
/** key = 'value' settings of a postgresql.conf-style file. */
const confSettings = (text: string) =>
    new Map(
        [...text.matchAll(/^\s*([a-z_]+)\s*=\s*'?([^'\n#]*?)'?\s*(#.*)?$/gm)].map((m) => [m[1], m[2]] as [string, string]),
    );

describe("postgresql: rendering", () => {
    it("postgresql: comes after base and installs PostgreSQL 17 only after the createcluster drop-in", () => {
        assert.equal(step.name, "postgresql");
        assert.deepEqual(step.after, ["base"]);
        // Declared, so the packages step installs them with everything else; the drop-in is
        // installed before any package (here and in the packages step).
        assert.deepEqual(step.packages, ["postgresql-17", "postgresql-client-17", "python3-psycopg2"]);
        assert.equal(fileAt("/etc/postgresql-common/createcluster.d/ispmail.conf").beforePackages, true);
        const script = renderApplyScript(resolveSecrets(step, Object.fromEntries(secretsOf(step).map((n) => [n, "x"]))));
        const dropIn = script.indexOf("ispmail_file /etc/postgresql-common/createcluster.d/ispmail.conf");
        assert.match(script, /^PG_MAJOR=17$/m);
        const install = script.indexOf("ispmail_packages postgresql-17 postgresql-client-17 python3-psycopg2");
        assert.ok(dropIn > 0 && install > dropIn, "drop-in written before the package is installed");
        assert.ok(script.indexOf("ispmail_file /etc/ispmail/postgresql/postgresql.conf") > install, "the other files after the packages");
        assert.doesNotMatch(step.script, /ispmail_packages/, "the script installs nothing itself");
    });

    it("postgresql: no cluster outside the volume, and new clusters include our settings", () => {
        const c = confSettings(fileAt("/etc/postgresql-common/createcluster.d/ispmail.conf").content);
        assert.equal(c.get("create_main_cluster"), "off");
        assert.equal(c.get("data_directory"), "/srv/ispmail/postgresql/%v/%c");
        assert.equal("/srv/ispmail/postgresql/%v/%c".replace("%v", "17").replace("%c", "main"), PG_DATA_DIR);
        assert.equal(c.get("add_include"), "/etc/ispmail/postgresql/postgresql.conf");
    });

    it("postgresql: listens on localhost, SCRAM only, our pg_hba", () => {
        const s = confSettings(fileAt("/etc/ispmail/postgresql/postgresql.conf").content);
        assert.equal(s.get("listen_addresses"), "localhost");
        assert.equal(s.get("password_encryption"), "scram-sha-256");
        assert.equal(s.get("hba_file"), "/etc/ispmail/postgresql/pg_hba.conf");
    });

    it("pg_hba: peer for postgres, scram-sha-256 for everyone else, nothing beyond loopback", () => {
        const rules = hbaRules(fileAt("/etc/ispmail/postgresql/pg_hba.conf").content);
        assert.equal(rules[0], "local all postgres peer");
        assert.ok(rules.includes("host all all 127.0.0.1/32 scram-sha-256"));
        assert.ok(rules.includes("host all all ::1/128 scram-sha-256"));
        assert.ok(rules.includes("local all all scram-sha-256"));
        for (const r of rules) {
            assert.doesNotMatch(r, / (trust|md5|password)$/, `weak method: ${r}`);
            const [type, , , address] = r.split(" ");
            if (type === "host") assert.ok(["127.0.0.1/32", "::1/128"].includes(address), `non-loopback rule: ${r}`);
            assert.notEqual(type, "hostnossl", r);
        }
    });

    it("postgresql: role passwords are secret placeholders in root-only files, one per role", () => {
        for (const role of Object.values(DB_ROLES)) {
            const f = fileAt(rolePasswordFile(role));
            assert.equal(f.content, `@@secret:db.${role}@@`);
            assert.equal(f.secret, true);
            assert.equal(f.mode, "0600");
            assert.equal(f.owner, "root");
        }
        // Every secret the step uses is one the stack generates.
        const known = new Set(secretSpecs(model).map((s) => s.name));
        for (const name of secretsOf(step)) assert.ok(known.has(name), name);
        // Nothing secret anywhere else.
        assert.doesNotMatch(step.script, /@@secret:/);
        for (const f of step.files) if (!f.secret) assert.doesNotMatch(f.content, /@@secret:/, f.path);
    });

    it("postgresql: ispmail-db is a launcher that runs the module installed beside its compiled form", () => {
        const launcher = fileAt(ISPMAIL_DB_TOOL);
        assert.equal(launcher.mode, "0755");
        assert.equal(fileAt(ISPMAIL_DB_MODULE).content, readFileSync(join(FILES_DIR, "postgresql", "ispmail_db.py"), "utf8"));
        assert.ok(launcher.content.includes(`sys.path.insert(0, "${dirname(ISPMAIL_DB_MODULE)}")`), "the launcher looks where the module is installed");
        // directory-sql.test.ts runs every ispmail-db command through this launcher (the template
        // rendered for the test's own module directory) against a real PostgreSQL.
        // Compiled when it changes, checked by a hash of the source.
        assert.match(step.script, /if changed "\$ISPMAIL_DB_MODULE"; then\n\s+python3 -m compileall -q -f --invalidation-mode checked-hash "\$ISPMAIL_DB_MODULE"/);
    });

    it("postgresql: the script reloads only when our config changed, and restarts only if PostgreSQL asks", () => {
        assert.match(step.script, /elif \[ \$settings_added = 1 \] \|\| changed \/etc\/ispmail\/postgresql; then/);
        assert.match(step.script, /pending_restart/);
        assert.doesNotMatch(step.script, /\brestart postgresql\b/);
    });

    it("postgresql: a start returns once the server accepts connections (not after pg_ctlcluster's 2 s of test connections), and fails, with the log, when systemd's start job fails", () => {
        const script = readFileSync(join(FILES_DIR, "postgresql", "apply.sh"), "utf8");
        const start = ["PG_MAJOR=17", "PG_CLUSTER=main", "PG_UNIT=postgresql@17-main", shellFunction(script, "pg_start"), "pg_start", "echo started"].join("\n");
        // The server accepts connections at the third pg_isready.
        const ready = runWithStubs(start, {
            systemctl: '[ "$1" != is-failed ] || exit 1',
            pg_isready: 'n=$(cat "$STUB_DIR/n" 2>/dev/null || echo 0); echo $((n + 1)) > "$STUB_DIR/n"; [ "$n" -ge 2 ]',
            sleep: "",
        });
        assert.equal(ready.code, 0, ready.stderr);
        assert.equal(ready.stdout, "started\n");
        assert.deepEqual(ready.calls.filter((c) => !c.startsWith("sleep")), [
            "systemctl reset-failed postgresql@17-main",
            "systemctl start --no-block postgresql@17-main",
            "pg_isready -q -p 5432",
            "systemctl is-failed --quiet postgresql@17-main",
            "pg_isready -q -p 5432",
            "systemctl is-failed --quiet postgresql@17-main",
            "pg_isready -q -p 5432",
        ]);
        assert.ok(!ready.calls.some((c) => c.startsWith("pg_ctlcluster")), "not through pg_ctlcluster's own waiting");
        // The unit fails (a broken setting): the step ends at once, saying where to look.
        const failed = runWithStubs(start, { systemctl: "exit 0", pg_isready: "exit 2", sleep: "", tail: "echo 'FATAL:  invalid value for parameter'" });
        assert.notEqual(failed.code, 0);
        assert.equal(failed.stdout, "");
        assert.match(failed.stderr, /postgresql 17\/main did not start: journalctl -u postgresql@17-main/);
        assert.match(failed.stderr, /FATAL: {2}invalid value/);
        assert.equal(failed.calls.filter((c) => c.startsWith("pg_isready")).length, 1);
    });
    it("postgresql: the running check reads postmaster.pid as pg_ctl status does (a live PID, a dead one, none), and data_directory as pg_createcluster writes it", () => {
        const script = readFileSync(join(FILES_DIR, "postgresql", "apply.sh"), "utf8");
        const dir = mkdtempSync("/tmp/ispmail-pg-running-");
        try {
            const running = (pid: string | undefined) => {
                if (pid === undefined) rmSync(join(dir, "postmaster.pid"), { force: true });
                else writeFileSync(join(dir, "postmaster.pid"), `${pid}\n${dir}\n1764000000\n5432\n`);
                const r = runWithStubs([`PG_DATA=${dir}`, shellFunction(script, "pg_running"), "if pg_running; then echo running; else echo stopped; fi"].join("\n"), {});
                assert.equal(r.code, 0, r.stderr);
                return r.stdout.trim();
            };
            assert.equal(running(String(process.pid)), "running");
            const gone = spawnSync("true").pid!;
            assert.equal(running(String(gone)), "stopped");
            assert.equal(running(undefined), "stopped");
            assert.equal(running("garbage"), "stopped");
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
        // The data_directory line of the script's sed: quoted with a comment (pg_createcluster), or bare.
        const sed = /current=\$\((sed -nE ".*?" )"\$PG_CONF"/.exec(script)?.[1];
        assert.ok(sed, "the script reads data_directory with sed");
        const read = (conf: string) => spawnSync("bash", ["-c", `${sed} | tail -n 1`], { input: conf, encoding: "utf8" }).stdout.trim();
        assert.equal(read("#data_directory = 'ConfigDir'\ndata_directory = '/srv/ispmail/postgresql/17/main'\t\t# use data in another directory\n"), "/srv/ispmail/postgresql/17/main");
        assert.equal(read("data_directory=/var/lib/postgresql/17/main\n"), "/var/lib/postgresql/17/main");
        assert.equal(read("# nothing set\n"), "");
    });
});
