# ispmail backup step script (after the files are in place).
# The backup area on the data volume: dumps, restore staging, and the repository in the lab.
if [ ! -d /srv/ispmail/backup ]; then
  install -d -m 0700 /srv/ispmail/backup
  mark_changed
fi
ensure_enabled ispmail-backup.timer
daemon_reload_when_changed /etc/systemd/system/ispmail-backup.service /etc/systemd/system/ispmail-backup.service.d /etc/systemd/system/ispmail-backup.timer
if ! is_active ispmail-backup.timer || changed /etc/systemd/system/ispmail-backup.timer; then
  restart ispmail-backup.timer
fi
