#!/bin/bash
# Installed by ispmail as /usr/local/sbin/ispmail-certificate. The certbot step runs it on every
# apply, ispmail-certificate.timer twice a day; `ispmail-certificate --force` renews now.
#
# The server's one certificate (mailHost and every web name) for the key the stack generated
# (/etc/ispmail/certificate/key.pem): its TLSA record (DANE, _25._tcp.<mailHost>) is published from
# that key before the server exists, so the certificate must carry exactly that key, on every
# issuance, renewal and new server. certbot cannot be given a key for a lineage it manages, so this
# asks for a certificate for a CSR made from our key (certbot certonly --csr, http-01 through the
# webroot) and does the renewal itself: a new certificate when there is none from this ACME server,
# the names or the key changed, or it expires within 30 days. It installs it where every daemon
# reads it (/etc/ispmail/tls) and reloads Postfix, Dovecot and Apache. Quiet when nothing is due;
# otherwise one line on stdout saying what it did.
set -euo pipefail
umask 077

conf=${ISPMAIL_CERTIFICATE_CONF:-/etc/ispmail/certificate.conf}
# CERT_CN, CERT_DOMAINS (space separated, sorted), ACME_SERVER, ACME_EMAIL, ACME_WEBROOT, KEY,
# RELOADS (unit=lock file, space separated).
# shellcheck source=/dev/null
. "$conf"
tls=${ISPMAIL_TLS_DIR:-/etc/ispmail/tls}
state=${ISPMAIL_CERTIFICATE_STATE:-/var/lib/ispmail/certificate}
force=no
[ "${1:-}" = --force ] && force=yes

# Renew this long before expiry (Let's Encrypt's own advice for 90-day certificates: a third left).
RENEW_BEFORE_SECONDS=$((30 * 86400))

pubkey_of_key() { openssl pkey -in "$1" -pubout 2>/dev/null; }
pubkey_of_cert() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
names_of_cert() {
  openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null \
    | grep -o 'DNS:[^,[:space:]]*' | sed 's/^DNS://' | sort -u | tr '\n' ' ' | sed 's/ $//' || true
}

# Why a certificate must be requested now; empty when the installed one is what we want.
why_issue() {
  local cert=$tls/fullchain.pem
  if [ ! -s "$cert" ] || [ ! -s "$state/server" ]; then echo "no ACME certificate yet"; return; fi
  if [ "$(cat "$state/server")" != "$ACME_SERVER" ]; then echo "ACME server changed (was $(cat "$state/server"))"; return; fi
  local have; have=$(names_of_cert "$cert")
  if [ "$have" != "$CERT_DOMAINS" ]; then echo "names changed (have: $have)"; return; fi
  if [ "$(pubkey_of_cert "$cert")" != "$(pubkey_of_key "$KEY")" ]; then echo "the configured key changed"; return; fi
  if ! openssl x509 -in "$cert" -noout -checkend "$RENEW_BEFORE_SECONDS" >/dev/null; then echo "expires within 30 days"; return; fi
  if [ "$force" = yes ]; then echo "renewal forced"; return; fi
}

# What the last full check found right, kept in $state/verified: the date renewal is due, the ACME
# server and names asked for, and the checksums of the certificate and the key. While all of them
# still hold, the certificate is as wanted without a dozen openssl and text tools (0.2 s of a small
# server's CPU on every apply and timer run).
checked_state() { # RENEW_AT: prints the stamp for the files as they are now
  printf '%s\n%s %s\n' "$1" "$ACME_SERVER" "$CERT_DOMAINS"
  sha256sum -- "$tls/fullchain.pem" "$KEY" 2>/dev/null || true
}
remember_checked() {
  local end
  end=$(openssl x509 -in "$tls/fullchain.pem" -noout -enddate)
  end=$(date -d "${end#notAfter=}" +%s)
  install -d -m 0755 "$state"
  checked_state "$((end - RENEW_BEFORE_SECONDS))" > "$state/verified"
}
if [ "$force" = no ] && [ -s "$state/verified" ]; then
  IFS= read -r renew_at < "$state/verified" || true
  if [[ "$renew_at" =~ ^[0-9]+$ ]] && [ "$EPOCHSECONDS" -lt "$renew_at" ] \
     && [ "$(checked_state "$renew_at")" = "$(< "$state/verified")" ]; then
    exit 0
  fi
fi

reason=$(why_issue)
if [ -z "$reason" ]; then
  remember_checked
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sans=$(printf 'DNS:%s,' $CERT_DOMAINS); sans=${sans%,}
openssl req -new -key "$KEY" -subj "/CN=$CERT_CN" -addext "subjectAltName=$sans" -out "$work/csr.pem"
if ! certbot certonly --non-interactive --agree-tos --no-eff-email --email "$ACME_EMAIL" \
    --server "$ACME_SERVER" --webroot --webroot-path "$ACME_WEBROOT" --csr "$work/csr.pem" \
    --cert-path "$work/cert.pem" --chain-path "$work/chain.pem" --fullchain-path "$work/fullchain.pem" >&2; then
  echo "ispmail-certificate: certbot could not obtain a certificate for: $CERT_DOMAINS ($reason)" >&2
  echo "ispmail-certificate: every name must resolve to this server and port 80 must be reachable from the ACME server; see /var/log/letsencrypt/letsencrypt.log" >&2
  exit 1
fi
if [ "$(pubkey_of_cert "$work/fullchain.pem")" != "$(pubkey_of_key "$KEY")" ]; then
  echo "ispmail-certificate: the issued certificate does not carry the configured key; not installed" >&2
  exit 1
fi

# Each file goes to a temporary name with its final owner and mode, then is renamed over the old
# one: a daemon never reads a half-written file, and the key is never readable by others.
install -d -m 0755 -o root -g root "$tls"
keygroup=root
getent group ssl-cert >/dev/null && keygroup=ssl-cert
put() { # SOURCE TARGET MODE GROUP
  local tmp; tmp=$(mktemp "$tls/.ispmail-tls.XXXXXX")
  chown "root:$4" "$tmp"
  chmod "$3" "$tmp"
  cat "$1" > "$tmp"
  mv -f "$tmp" "$2"
}
put "$KEY" "$tls/privkey.pem" 0640 "$keygroup"
put "$work/fullchain.pem" "$tls/fullchain.pem" 0644 root
install -d -m 0755 "$state"
printf '%s\n' "$ACME_SERVER" > "$state/server"

# Reload (not restart): running sessions go on, new connections get the new certificate. Only
# daemons that run here, each under the lock of the step that configures it (RELOADS: unit=lock):
# a step applying that daemon's configuration right now (the engine runs this script's step beside
# the dovecot and postfix steps on a new server) finishes first, so the daemon never reloads into a
# configuration written halfway. Exit status: 0 reloaded, 1 not running, 2 failed.
reload_under_lock() { # UNIT LOCK
  mkdir -p "${2%/*}"
  (
    if ! flock -w 1800 9; then
      echo "ispmail-certificate: $2 stayed locked for 1800 s; $1 not reloaded" >&2
      exit 2
    fi
    systemctl is-active --quiet "$1" || exit 1
    systemctl reload "$1" || exit 2
  ) 9>"$2"
}
reloaded=()
for reload in $RELOADS; do
  service=${reload%%=*}
  status=0
  reload_under_lock "$service" "${reload#*=}" || status=$?
  case $status in
    0) reloaded+=("$service") ;;
    1) ;;
    *) exit 1 ;;
  esac
done
remember_checked
echo "installed a certificate for $CERT_DOMAINS ($reason); reloaded: ${reloaded[*]:-none}"
