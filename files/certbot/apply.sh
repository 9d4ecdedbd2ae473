# certbot step. The files are in place: /usr/local/sbin/ispmail-certificate, its settings
# (/etc/ispmail/certificate.conf), the key (/etc/ispmail/certificate/key.pem) and the timer units.
# Obtains or renews the certificate only when due (see ispmail-certificate); a second run does nothing.

if ! result=$(/usr/local/sbin/ispmail-certificate); then
  log "no certificate: see the lines above"
  exit 1
fi
[ -n "$result" ] && ispmail_action "$result"

# Until issue 14 the certificate was a lineage certbot managed itself (its own key, renewed by
# Debian's certbot.timer with a deploy hook): once ours is installed, that lineage would replace it
# with a certificate for another key at its next renewal, breaking DANE.
if [ -f /etc/letsencrypt/renewal/ispmail.conf ]; then
  certbot delete --non-interactive --cert-name ispmail >&2
  ispmail_action "deleted certbot's old self-managed lineage ispmail"
fi
for old in /etc/letsencrypt/renewal-hooks/deploy/ispmail /etc/systemd/system/certbot.service.d/ispmail-alert.conf; do
  if [ -e "$old" ]; then
    rm -f "$old"
    ispmail_action "removed $old (the old lineage's)"
  fi
done

ensure_enabled ispmail-certificate.timer
daemon_reload_when_changed /etc/systemd/system/ispmail-certificate.service /etc/systemd/system/ispmail-certificate.timer
if ! is_active ispmail-certificate.timer || changed /etc/systemd/system/ispmail-certificate.timer; then
  restart ispmail-certificate.timer
fi
