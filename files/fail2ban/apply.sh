# ispmail fail2ban step script (after the files are in place). Set by the step before this:
# NEXTCLOUD_LOG (Nextcloud's log file when Nextcloud is enabled, else empty) and
# NEXTCLOUD_LOG_DROPIN (fail2ban.service.d/ispmail-nextcloud-log.conf).
ensure_enabled fail2ban
daemon_reload_when_changed "$NEXTCLOUD_LOG_DROPIN"
# The nextcloud jail's log file must exist, or fail2ban refuses the whole configuration; the
# drop-in does the same at each start of fail2ban. Nextcloud writes to it from then on.
if [ -n "$NEXTCLOUD_LOG" ] && [ ! -e "$NEXTCLOUD_LOG" ]; then
  install -d -m 0750 -o www-data -g www-data "${NEXTCLOUD_LOG%/*}"
  install -m 0640 -o www-data -g www-data /dev/null "$NEXTCLOUD_LOG"
  ispmail_action "created $NEXTCLOUD_LOG for the nextcloud jail"
fi
if changed /etc/fail2ban; then
  # Refuse a configuration fail2ban cannot load before it replaces the running one.
  fail2ban-client --test >/dev/null
fi
if ! is_active fail2ban; then
  restart fail2ban
elif changed /etc/fail2ban; then
  reload fail2ban
fi
