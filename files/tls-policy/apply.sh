# tls-policy step script (after the files are in place): starts both policy tables and waits until
# they listen, so that the postfix step (after this one) never sends with a table that is not there
# (Postfix would keep the mail queued: "TLS policy lookup ... failed").
unit=ispmail-dane-first-policy.service
ensure_enabled $unit postfix-mta-sts-resolver.service
daemon_reload_when_changed /etc/systemd/system/$unit
if changed /etc/systemd/system/$unit /usr/local/lib/ispmail/dane-first-policy || ! is_active $unit; then
  restart $unit
fi
# Neither daemon reloads its settings: a changed file means a restart.
if changed /etc/mta-sts-daemon.yml || ! is_active postfix-mta-sts-resolver.service; then
  restart postfix-mta-sts-resolver.service
fi

listening() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
for port in 8462 8461; do
  up=
  for _ in {1..30}; do
    if listening $port; then up=1; break; fi
    sleep 1
  done
  if [ -z "$up" ]; then
    echo "nothing listens on 127.0.0.1:$port (see: journalctl -u $unit -u postfix-mta-sts-resolver)" >&2
    exit 1
  fi
done
