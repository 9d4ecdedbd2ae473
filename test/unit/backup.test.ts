/**
 * The backup step: rendered only with `ispmail:backup`, password only in a root-only secret file,
 * repository and retention from the stack config, valid shell, and ordered after the database.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parseConfig, type Model } from "../../components/config";
import { renderServerSteps, SERVICE, secretSpecs, stepsOf } from "../../components/services";
import { renderApplyScript, resolveSecrets, secretsOf } from "../../components/steps";
import { FILES_DIR } from "../../components/templates";
import { labModel, labRawConfig } from "../fixtures/config";

const model = labModel;
const withoutBackup = (): Model => {
    const raw = labRawConfig();
    delete raw.backup;
    return parseConfig(raw, { stack: "lab" }).model;
};
const file = (m: Model, path: string) => {
    const f = stepsOf(SERVICE.backup, m)[0].files.find((x) => x.path === path);
    assert.ok(f, `no file ${path}`);
    return f;
};

describe("backup step", () => {
    test("backup: no step without ispmail:backup, and no restic secret either", () => {
        const m = withoutBackup();
        assert.deepEqual(stepsOf(SERVICE.backup, m), []);
        assert.ok(!secretSpecs(m).some((s) => s.name === "backup.restic"));
    });

    test("backup: the restic password is only in a root-only secret file", () => {
        const m = model();
        const [step] = stepsOf(SERVICE.backup, m);
        assert.deepEqual(secretsOf(step), ["backup.restic"]);
        const pw = file(m, "/etc/ispmail/secrets/backup.restic");
        assert.equal(pw.secret, true);
        assert.equal(pw.mode, "0600");
        assert.equal(pw.owner, "root");
        // Resolved, the value appears in that file and nowhere else in the script.
        const script = renderApplyScript(resolveSecrets(step, { "backup.restic": "s3cr3tS3cr3tS3cr3t" }));
        const b64 = Buffer.from("s3cr3tS3cr3tS3cr3t").toString("base64");
        assert.ok(script.includes(b64));
        assert.ok(!script.includes("s3cr3tS3cr3tS3cr3t"));
        assert.ok(!file(m, "/etc/ispmail/backup.env").content.includes("@@secret"));
    });

    test("backup: repository, host and retention come from the stack config", () => {
        const m = model({ backup: { repository: "sftp:backup@backup.example.net:/srv/restic/mx1", keepDaily: 10, keepWeekly: 5, keepMonthly: 12 } });
        const env = file(m, "/etc/ispmail/backup.env").content;
        assert.match(env, /^RESTIC_REPOSITORY='sftp:backup@backup\.example\.net:\/srv\/restic\/mx1'$/m);
        assert.match(env, /^RESTIC_PASSWORD_FILE=\/etc\/ispmail\/secrets\/backup\.restic$/m);
        assert.match(env, /^RESTIC_HOST=mx1\.example\.org$/m);
        assert.match(env, /^ISPMAIL_KEEP_DAILY=10$/m);
        assert.match(env, /^ISPMAIL_KEEP_WEEKLY=5$/m);
        assert.match(env, /^ISPMAIL_KEEP_MONTHLY=12$/m);
        assert.equal(file(m, "/etc/ispmail/backup.env").mode, "0600");
    });

    test("backup: a repository string is quoted for the shell that sources it", () => {
        const m = model({ backup: { repository: "/srv/ispmail/backup/it's $HOME" } });
        const env = file(m, "/etc/ispmail/backup.env").content;
        const r = spawnSync("bash", ["-c", 'set -a; eval "$(cat)"; printf %s "$RESTIC_REPOSITORY"'], { input: env, encoding: "utf8" });
        assert.equal(r.stdout, "/srv/ispmail/backup/it's $HOME");
    });

    test("backup: the timer runs daily and catches up after downtime", () => {
        const timer = readFileSync(join(FILES_DIR, "backup", "ispmail-backup.timer"), "utf8");
        assert.match(timer, /^OnCalendar=daily$/m);
        assert.match(timer, /^Persistent=true$/m);
    });

    test("backup: a failed ispmail-backup.service mails the administrator (OnFailure= drop-in)", () => {
        const m = model();
        const dropIn = file(m, "/etc/systemd/system/ispmail-backup.service.d/ispmail-alert.conf");
        assert.equal(dropIn.mode, "0644");
        assert.match(dropIn.content, /^\[Unit\]\nOnFailure=ispmail-alert@%n\.service$/m);
        // systemd reads a new drop-in only after daemon-reload, which the script runs when it changed.
        assert.match(stepsOf(SERVICE.backup, m)[0].script, /^daemon_reload_when_changed [^\n]*\/etc\/systemd\/system\/ispmail-backup\.service\.d( |$)/m);
    });

    test("backup: the scripts dump with pg_dump -Fc as postgres and prune with the retention", () => {
        const backup = readFileSync(join(FILES_DIR, "backup", "ispmail-backup.sh"), "utf8");
        assert.match(backup, /as_postgres pg_dump -Fc "\$db"/);
        assert.match(backup, /restic forget .*--prune/);
        assert.match(backup, /--keep-daily "\$ISPMAIL_KEEP_DAILY"/);
        const restore = readFileSync(join(FILES_DIR, "backup", "ispmail-restore.sh"), "utf8");
        assert.match(restore, /pg_restore --create/);
    });

    test("backup: the apply script and both tools are valid bash", () => {
        const [step] = stepsOf(SERVICE.backup, model());
        for (const [name, text] of [["apply", renderApplyScript(resolveSecrets(step, { "backup.restic": "x".repeat(32) }))], ...step.files.filter((f) => f.path.startsWith("/usr/local/sbin/")).map((f) => [f.path, f.content])]) {
            const r = spawnSync("bash", ["-n"], { input: text, encoding: "utf8" });
            assert.equal(r.status, 0, `${name}: ${r.stderr}`);
        }
    });

    test("backup: comes after the database steps that exist, and is in the server's steps", () => {
        const m = model();
        assert.deepEqual(stepsOf(SERVICE.backup, m)[0].after, ["base", "postgresql", "directory"]);
        // Only the steps the server has: a server of base and backup alone.
        assert.deepEqual(stepsOf(SERVICE.backup, m, { services: [SERVICE.base, SERVICE.backup] })[0].after, ["base"]);
        const names = renderServerSteps(m, { dkimSigner: m.dkimSelectors[0] }).map((s) => s.name);
        assert.ok(names.includes("backup"));
        for (const dep of ["postgresql", "directory"]) if (names.includes(dep)) assert.ok(names.indexOf(dep) < names.indexOf("backup"));
    });
});
