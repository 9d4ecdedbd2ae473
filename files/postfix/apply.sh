# ispmail postfix step script (after the files are in place).
if ! systemctl is-enabled --quiet postfix; then systemctl enable --quiet postfix; mark_changed; fi
# Local mail (cron, root, failed units) goes through /etc/aliases, to ispmail:adminEmail.
if [ ! -e /etc/aliases.db ] || changed /etc/aliases || [ /etc/aliases -nt /etc/aliases.db ]; then
  newaliases
  ispmail_action "rebuilt /etc/aliases.db"
fi
# PostSRSd answers Postfix's canonical lookups; it must run (with the current domains) before
# Postfix uses it, or mail is deferred (a tcp: table that does not answer is a temporary error).
if ! systemctl is-enabled --quiet postsrsd; then systemctl enable --quiet postsrsd; mark_changed; fi
reload_when_changed postsrsd /etc/default/postsrsd
# Never reload into a configuration Postfix itself finds broken (it prints what is wrong).
reload_when_changed postfix /etc/postfix -- postfix check
