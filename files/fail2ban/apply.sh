# ispmail fail2ban step script (after the files are in place).
if changed /etc/fail2ban; then
  # Refuse a configuration fail2ban cannot load before it replaces the running one.
  fail2ban-client --test >/dev/null
fi
if ! systemctl is-enabled --quiet fail2ban; then
  systemctl enable --quiet fail2ban
  mark_changed
fi
if ! systemctl is-active --quiet fail2ban; then
  restart fail2ban
elif changed /etc/fail2ban; then
  reload fail2ban
fi
