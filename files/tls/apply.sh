# ispmail tls step: a self-signed certificate for the stack's key until the certbot step installs
# the ACME one. Runs with ISPMAIL_TLS_SUBJECT (CN), ISPMAIL_TLS_SANS ("DNS:a,DNS:b") and
# ISPMAIL_TLS_CONFIGURED_KEY (the key file the step wrote) set by the step.
# Every daemon (Postfix, Dovecot, Apache) reads these two files; they are never overwritten here,
# so a certificate installed by ispmail-certificate (the certbot step) stays.
TLS_DIR=/etc/ispmail/tls
CERT=$TLS_DIR/fullchain.pem
KEY=$TLS_DIR/privkey.pem

install -d -o root -g root -m 0755 "$TLS_DIR"
if [ ! -s "$CERT" ] || [ ! -s "$KEY" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # For the stack's key (RSA 2048: some MTAs still cannot do ECDSA), whose TLSA record is
  # published: DANE senders check the key, not the issuer, so they accept even this stopgap.
  cp "$ISPMAIL_TLS_CONFIGURED_KEY" "$work/privkey.pem"
  openssl req -x509 -new -key "$work/privkey.pem" -sha256 -days 825 -out "$work/fullchain.pem" \
    -subj "/CN=$ISPMAIL_TLS_SUBJECT" -addext "subjectAltName=$ISPMAIL_TLS_SANS" 2>/dev/null
  # The key: readable by root and the ssl-cert group only (daemons load it as root).
  install -o root -g ssl-cert -m 0640 "$work/privkey.pem" "$KEY"
  install -o root -g root -m 0644 "$work/fullchain.pem" "$CERT"
  ispmail_action "created a self-signed certificate for $ISPMAIL_TLS_SANS"
else
  # Keep the key's permissions right even when someone copied a certificate in by hand.
  if [ "$(stat -c '%U:%G %a' "$KEY")" != "root:ssl-cert 640" ]; then
    chown root:ssl-cert "$KEY"; chmod 0640 "$KEY"
    ispmail_action "fixed owner/mode of $KEY"
  fi
fi
