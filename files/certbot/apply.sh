# certbot step. Set by the step before this: CERT_NAME, CERT_DOMAINS (space separated, sorted),
# ACME_SERVER, ACME_EMAIL, ACME_WEBROOT, DEPLOY_HOOK.
# Obtains one certificate for every web name only when there is no valid one with exactly these
# names from this ACME server; then makes sure /etc/ispmail/tls holds it. A second run does nothing.

live=/etc/letsencrypt/live/$CERT_NAME
renewal=/etc/letsencrypt/renewal/$CERT_NAME.conf

# Why a certificate must be requested now; empty when the current one is what we want.
why_issue() {
  if [ ! -f "$live/cert.pem" ] || [ ! -f "$renewal" ]; then
    echo "no certificate yet"; return
  fi
  local have server
  have=$(openssl x509 -in "$live/cert.pem" -noout -ext subjectAltName \
    | grep -o 'DNS:[^,[:space:]]*' | sed 's/^DNS://' | sort -u | tr '\n' ' ' | sed 's/ $//' || true)
  if [ "$have" != "$CERT_DOMAINS" ]; then
    echo "names changed (have: $have)"; return
  fi
  server=$(sed -n 's/^server *= *//p' "$renewal")
  if [ "$server" != "$ACME_SERVER" ]; then
    echo "ACME server changed (was $server)"; return
  fi
  # Expired (or expiring within a day: the timer renews 30 days ahead, so this means it failed).
  if ! openssl x509 -in "$live/cert.pem" -noout -checkend 86400 >/dev/null; then
    echo "certificate expires within a day"; return
  fi
}

reason=$(why_issue)
if [ -n "$reason" ]; then
  args=(certonly --non-interactive --agree-tos --no-eff-email --email "$ACME_EMAIL"
        --server "$ACME_SERVER" --webroot --webroot-path "$ACME_WEBROOT" --cert-name "$CERT_NAME")
  for domain in $CERT_DOMAINS; do args+=(--domain "$domain"); done
  # certbot keeps an existing, still valid lineage unless told to replace it.
  [ -f "$live/cert.pem" ] && args+=(--force-renewal)
  log "requesting a certificate from $ACME_SERVER: $reason"
  if ! certbot "${args[@]}" >&2; then
    log "certbot could not obtain a certificate for: $CERT_DOMAINS"
    log "every name must resolve to this server and port 80 must be reachable from the ACME server; see /var/log/letsencrypt/letsencrypt.log"
    exit 1
  fi
  ispmail_action "obtained certificate $CERT_NAME ($reason)"
fi

# Install into /etc/ispmail/tls when that is not (yet) this certificate: the first issuance, or
# after the tls step's self-signed pair was put back by hand.
if ! cmp -s "$live/fullchain.pem" /etc/ispmail/tls/fullchain.pem || ! cmp -s "$live/privkey.pem" /etc/ispmail/tls/privkey.pem; then
  RENEWED_LINEAGE=$live "$DEPLOY_HOOK"
  ispmail_action "installed certificate $CERT_NAME into /etc/ispmail/tls and reloaded its daemons"
fi

if changed /etc/systemd/system/certbot.service.d; then
  systemctl daemon-reload
  mark_changed
fi
# Renewal: Debian's certbot.timer runs `certbot renew` twice a day; it must stay enabled.
if ! systemctl is-enabled --quiet certbot.timer; then
  systemctl enable --now certbot.timer
  ispmail_action "enabled certbot.timer"
fi
