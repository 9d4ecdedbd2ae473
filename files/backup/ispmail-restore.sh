#!/bin/bash
# Installed by ispmail as /usr/local/sbin/ispmail-restore.
#
#   ispmail-restore [--snapshot ID] --yes
#
# Restores a snapshot made by ispmail-backup (default: the latest of this mail host): the
# databases (mailserver, nextcloud, roundcube) from their pg_dump files, and the data directories on the
# volume (mailboxes, DKIM keys, ...). Postfix and Dovecot are stopped meanwhile, so that no mail is
# delivered into a half-restored mailbox, and started again afterwards.
#
# Nothing is thrown away: the current content of each restored directory is moved to
# /srv/ispmail/backup/pre-restore-<time>/ first (delete it once the restore is verified).
# The PostgreSQL roles must exist (on a new server: run `pulumi up` first, its directory step
# creates them with the stack's passwords).
set -euo pipefail
umask 077
cd /

snapshot=latest
confirmed=no
while [ $# -gt 0 ]; do
  case "$1" in
    --snapshot) snapshot=${2:?--snapshot needs an ID}; shift 2 ;;
    --yes) confirmed=yes; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "ispmail-restore: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

set -a
# shellcheck source=/dev/null
. /etc/ispmail/backup.env
set +a

DATA=/srv/ispmail
DUMPS=$DATA/backup/dumps
log() { printf 'ispmail-restore: %s\n' "$*" >&2; }
as_postgres() { runuser -u postgres -- "$@"; }

restic snapshots --tag ispmail "$snapshot" >&2
if [ "$confirmed" != yes ]; then
  log "this replaces the databases and mailboxes with snapshot '$snapshot' shown above; run again with --yes"
  exit 2
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
# Staging and set-aside areas on the data volume itself, so that moving data in is a rename.
stage=$DATA/backup/restore-$stamp
aside=$DATA/backup/pre-restore-$stamp
install -d -m 0700 "$stage" "$aside"
restic restore --tag ispmail "$snapshot" --target "$stage"

stopped=()
for svc in postfix dovecot; do
  if systemctl is-active --quiet "$svc"; then
    systemctl stop "$svc"
    stopped+=("$svc")
  fi
done
trap 'for s in "${stopped[@]+"${stopped[@]}"}"; do systemctl start "$s" || true; done' EXIT

# Data directories: swap the *content*, not the directory itself. /var/vmail may be a bind mount
# of /srv/ispmail/vmail, which would keep pointing at a directory moved away.
for restored in "$stage$DATA"/*/; do
  restored=${restored%/}
  name=$(basename "$restored")
  case "$name" in backup|postgresql|lost+found) continue ;; esac
  target=$DATA/$name
  install -d -m 0700 "$aside/$name"
  if [ -d "$target" ]; then
    find "$target" -mindepth 1 -maxdepth 1 -exec mv -t "$aside/$name" {} +
  else
    install -d "$target"
  fi
  find "$restored" -mindepth 1 -maxdepth 1 -exec mv -t "$target" {} +
  chown --reference="$restored" "$target"
  chmod --reference="$restored" "$target"
  log "restored $target (previous content in $aside/$name)"
done

for dump in "$stage$DUMPS"/*.dump; do
  [ -e "$dump" ] || continue
  db=$(basename "$dump" .dump)
  # --force ends the sessions still using it (Nextcloud, a leftover lookup).
  as_postgres dropdb --if-exists --force "$db"
  # The dump is root-only; pg_restore reads it on stdin. --create makes the database with its
  # owner and settings as they were.
  as_postgres pg_restore --create --exit-on-error --dbname=postgres < "$dump"
  log "restored database $db"
done

rm -rf "$stage"
log "done; previous content kept in $aside"
