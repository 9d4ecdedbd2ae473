# ispmail postfix step script (after the files are in place).
if ! systemctl is-enabled --quiet postfix; then systemctl enable --quiet postfix; mark_changed; fi
# Local mail (cron, root) goes through /etc/aliases; the postinst did not create it because the
# package was installed with "No configuration".
if [ ! -e /etc/aliases ]; then
  printf 'postmaster: root\n' > /etc/aliases; chmod 0644 /etc/aliases
  ispmail_action "created /etc/aliases"
fi
if [ ! -e /etc/aliases.db ] || [ /etc/aliases -nt /etc/aliases.db ]; then
  newaliases
  ispmail_action "rebuilt /etc/aliases.db"
fi
# Never reload into a configuration Postfix itself finds broken (it prints what is wrong).
reload_when_changed postfix /etc/postfix -- postfix check
