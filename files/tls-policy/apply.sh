# tls-policy step script (after the files are in place): starts both policy tables and waits until
# they listen, so that the postfix step (after this one) never sends with a table that is not there
# (Postfix would keep the mail queued: "TLS policy lookup ... failed").
unit=ispmail-dane-first-policy.service
ensure_enabled $unit postfix-mta-sts-resolver.service
daemon_reload_when_changed /etc/systemd/system/$unit
if changed /etc/systemd/system/$unit /usr/local/lib/ispmail/dane-first-policy || ! is_active $unit; then
  restart $unit
fi
# Neither daemon reloads its settings: a changed file means a restart. /etc/mta-sts-daemon.yml is
# in place before the packages step installs the resolver (whose postinst starts it), and that step
# rewrites it when it changes: restart when the running daemon started before its last change.
mta_sts=postfix-mta-sts-resolver.service
if changed /etc/mta-sts-daemon.yml || ! is_active $mta_sts || started_before $mta_sts /etc/mta-sts-daemon.yml; then
  restart $mta_sts
fi

listening() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
# Every 0.1 s for up to 30 s: a table just (re)started listens after Python's start, a few tenths
# of a second; waiting whole seconds added most of one to every fresh converge.
for port in 8462 8461; do
  up=
  deadline=$((SECONDS + 30))
  while [ $SECONDS -lt $deadline ]; do
    if listening $port; then up=1; break; fi
    sleep 0.1
  done
  if [ -z "$up" ]; then
    echo "nothing listens on 127.0.0.1:$port (see: journalctl -u $unit -u postfix-mta-sts-resolver)" >&2
    exit 1
  fi
done
