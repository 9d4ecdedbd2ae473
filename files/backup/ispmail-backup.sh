#!/bin/bash
# Installed by ispmail as /usr/local/sbin/ispmail-backup; run daily by ispmail-backup.timer.
#
# One backup of everything that cannot be rebuilt from the stack config:
#   - the databases, dumped with pg_dump -Fc (a consistent snapshot taken while mail keeps flowing;
#     the live data directory /srv/ispmail/postgresql is never copied, a file copy of a running
#     cluster is not restorable);
#   - the mailboxes (/srv/ispmail/vmail = /var/vmail), the DKIM keys (/srv/ispmail/dkim) and any
#     other data directory on the volume. Maildir is safe to copy live: messages are written to
#     tmp/ and renamed into new/, so a snapshot holds whole messages; Dovecot rebuilds its indexes.
# then restic forget --prune with the retention of the stack config.
# Repository, host name, retention: /etc/ispmail/backup.env. Password: RESTIC_PASSWORD_FILE there.
set -euo pipefail
umask 077
cd /

set -a
# shellcheck source=/dev/null
. /etc/ispmail/backup.env
set +a

DATA=/srv/ispmail
DUMPS=$DATA/backup/dumps
log() { printf 'ispmail-backup: %s\n' "$*" >&2; }
as_postgres() { runuser -u postgres -- "$@"; }

# The repository is created on first use. Exit code 10 means "no repository there" (restic >=
# 0.17); anything else (wrong password: 12, unreachable) must fail loudly, never re-initialise.
rc=0
restic cat config >/dev/null 2>&1 || rc=$?
if [ "$rc" -eq 10 ]; then
  case "$RESTIC_REPOSITORY" in
    /*) install -d -m 0700 "$(dirname "$RESTIC_REPOSITORY")" ;;
  esac
  log "initialising repository $RESTIC_REPOSITORY"
  restic init
elif [ "$rc" -ne 0 ]; then
  restic cat config >/dev/null # repeats the error on stderr
  exit "$rc"
fi

install -d -m 0700 "$DUMPS"
# roundcube: the webmail users' settings, identities and address books.
for db in mailserver nextcloud roundcube; do
  if [ "$(as_postgres psql -XAtq -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" = 1 ]; then
    # Written next to the old dump and renamed, so a failed dump never replaces a good one.
    as_postgres pg_dump -Fc "$db" > "$DUMPS/$db.dump.tmp"
    mv -f "$DUMPS/$db.dump.tmp" "$DUMPS/$db.dump"
    log "dumped database $db ($(stat -c %s "$DUMPS/$db.dump") bytes)"
  else
    rm -f "$DUMPS/$db.dump"
  fi
done
# Roles, for reference on a new cluster (without passwords: those are stack secrets, and the
# directory step sets them again).
as_postgres pg_dumpall --globals-only --no-role-passwords > "$DUMPS/globals.sql"

# Every directory on the data volume except the live database files and the backup area itself.
mapfile -t paths < <(find "$DATA" -mindepth 1 -maxdepth 1 -type d \
  ! -name postgresql ! -name backup ! -name lost+found | sort)
restic backup --tag ispmail "$DUMPS" "${paths[@]}"

restic forget --tag ispmail --group-by host,tags --prune \
  --keep-daily "$ISPMAIL_KEEP_DAILY" --keep-weekly "$ISPMAIL_KEEP_WEEKLY" --keep-monthly "$ISPMAIL_KEEP_MONTHLY"
log "done"
