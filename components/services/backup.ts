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
import type { Step } from "../steps";
import { secretRef } from "../steps";
import { readStatic, renderTemplate } from "../templates";

export const BACKUP_STEP = "backup";
export const BACKUP_PASSWORD_SECRET = "backup.restic";

/** What a backup reads: the database (and the directory's schema), and the base system. */
export const BACKUP_FOLLOWS = ["base", "postgresql", "directory"] as const;

const UNIT_DIR = "/etc/systemd/system";

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** `registeredSteps`: the names of the other steps of this server (see services/index.ts). */
export function renderBackupSteps(model: Model, registeredSteps: readonly string[]): Step[] {
    const backup = model.backup;
    if (!backup) return [];
    return [
        {
            name: BACKUP_STEP,
            description: `backup: daily restic backup of the databases, mailboxes and DKIM keys to ${backup.repository}`,
            packages: ["restic"],
            files: [
                // restic reads the password from this file (RESTIC_PASSWORD_FILE): never an env var
                // or an argument.
                { path: `/etc/ispmail/secrets/${BACKUP_PASSWORD_SECRET}`, content: secretRef(BACKUP_PASSWORD_SECRET), owner: "root", group: "root", mode: "0600", secret: true },
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
            ],
            script: SCRIPT,
            after: BACKUP_FOLLOWS.filter((s) => registeredSteps.includes(s)),
        },
    ];
}

const SCRIPT = String.raw`
# The backup area on the data volume: dumps, restore staging, and the repository in the lab.
if [ ! -d /srv/ispmail/backup ]; then
  install -d -m 0700 /srv/ispmail/backup
  mark_changed
fi
if changed /etc/systemd/system/ispmail-backup.service /etc/systemd/system/ispmail-backup.timer; then
  systemctl daemon-reload
  mark_changed
fi
if ! systemctl is-enabled --quiet ispmail-backup.timer; then
  systemctl enable --quiet ispmail-backup.timer
  mark_changed
fi
if ! systemctl is-active --quiet ispmail-backup.timer || changed /etc/systemd/system/ispmail-backup.timer; then
  restart ispmail-backup.timer
fi
`;
