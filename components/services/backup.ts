/**
 * Backups with restic from Debian: a daily systemd timer runs /usr/local/sbin/ispmail-backup
 * (pg_dump -Fc of the databases + the data directories of the volume, then retention), and
 * /usr/local/sbin/ispmail-restore brings a snapshot back. Rendered only when the stack config has
 * `ispmail:backup`.
 *
 * The repository is `backup.repository` (a local path in the lab; sftp:... or s3:... for real
 * stacks); its password is the stateful secret `backup.restic` (generated once, kept in the Pulumi
 * state: losing it makes the repository unreadable, so it is never replaced).
 *
 * Config files: files/backup/ (the two scripts, the systemd units, the environment file).
 */
import type { Model } from "../config";
import { secretPath } from "../paths";
import { BACKUP_PASSWORD_SECRET } from "../secrets";
import { shellQuote } from "../shell";
import { secretRef } from "../steps";
import { readStatic, renderTemplate } from "../templates";
import { ALERT_ON_FAILURE } from "./base";
import { STEP } from "./names";
import type { Service, StepBody } from "./service";

export { BACKUP_PASSWORD_SECRET };

const UNIT_DIR = "/etc/systemd/system";

function render(model: Model): StepBody {
    const backup = model.backup;
    if (!backup) throw new Error("the backup step is rendered only with ispmail:backup set");
    return {
        description: `backup: daily restic backup of the databases, mailboxes and DKIM keys to ${backup.repository}`,
        packages: ["restic"],
        files: [
            // restic reads the password from this file (RESTIC_PASSWORD_FILE): never an env var
            // or an argument.
            { path: secretPath(BACKUP_PASSWORD_SECRET), content: secretRef(BACKUP_PASSWORD_SECRET), owner: "root", group: "root", mode: "0600", secret: true },
            {
                path: "/etc/ispmail/backup.env",
                content: renderTemplate("backup/backup.env.mustache", {
                    // The scripts source this file with bash: quote what the stack config gives.
                    repository: shellQuote(backup.repository),
                    mailHost: model.mailHost,
                    keepDaily: backup.keepDaily,
                    keepWeekly: backup.keepWeekly,
                    keepMonthly: backup.keepMonthly,
                }),
                owner: "root",
                group: "root",
                mode: "0600",
            },
            { path: "/usr/local/sbin/ispmail-backup", content: readStatic("backup/ispmail-backup.sh"), mode: "0755" },
            { path: "/usr/local/sbin/ispmail-restore", content: readStatic("backup/ispmail-restore.sh"), mode: "0755" },
            { path: `${UNIT_DIR}/ispmail-backup.service`, content: readStatic("backup/ispmail-backup.service"), mode: "0644" },
            { path: `${UNIT_DIR}/ispmail-backup.timer`, content: readStatic("backup/ispmail-backup.timer"), mode: "0644" },
            // A failed backup mails the administrator.
            { path: `${UNIT_DIR}/ispmail-backup.service.d/ispmail-alert.conf`, content: ALERT_ON_FAILURE, mode: "0644" },
        ],
        script: readStatic("backup/apply.sh"),
    };
}

export const backup: Service = {
    name: STEP.backup,
    after: [],
    background: true,
    // What a backup reads: the database (and the directory's schema), and the base system.
    follows: [STEP.base, STEP.postgresql, STEP.directory],
    enabled: (model) => Boolean(model.backup),
    secrets: () => [{ name: BACKUP_PASSWORD_SECRET, kind: "password", description: "restic repository password", stateful: true }],
    render,
};
