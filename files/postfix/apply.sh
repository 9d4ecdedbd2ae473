# ispmail postfix step script (after the files are in place).
# Every Postfix program reads main.cf again and again, 0.3 s apart, until its modification time is
# two seconds old, in case an editor is still writing it (util/dict.c, dict_load_file_xt: "pausing
# to let main.cf cool down"). Ours was renamed into place whole, so it is dated two seconds back:
# otherwise newaliases and the start or reload below each wait for it, up to 2 s.
main_cf_cooled() {
  if changed /etc/postfix/main.cf; then touch -d "@$((EPOCHSECONDS - 2))" /etc/postfix/main.cf; fi
}
main_cf_cooled
ensure_enabled postfix postsrsd
daemon_reload_when_changed
# Local mail (cron, root, failed units) goes through /etc/aliases, to ispmail:adminEmail.
if [ ! -e /etc/aliases.db ] || changed /etc/aliases || [ /etc/aliases -nt /etc/aliases.db ]; then
  newaliases
  ispmail_action "rebuilt /etc/aliases.db"
fi
# PostSRSd answers Postfix's canonical lookups; it must run (with the current domains) before
# Postfix uses it, or mail is deferred (a tcp: table that does not answer is a temporary error).
reload_when_changed postsrsd /etc/default/postsrsd
# Never reload into a configuration Postfix itself finds broken (it prints what is wrong). A
# stopped Postfix needs no check of ours: postfix.service runs `postfix check` before every start
# (1.6 s on a small server; a new server would pay it twice).
postfix_check_unless_stopped() { ! is_active postfix || postfix check; }
reload_when_changed postfix /etc/postfix -- postfix_check_unless_stopped
