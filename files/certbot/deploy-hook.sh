#!/bin/sh
# certbot deploy hook (installed as /etc/letsencrypt/renewal-hooks/deploy/ispmail by the certbot step).
# certbot runs it after every successful issuance or renewal, with RENEWED_LINEAGE set to the
# lineage's live directory. It installs the certificate where every daemon reads it
# (/etc/ispmail/tls, the team's convention) and reloads the daemons that use it, so a renewed
# certificate is served on 443, 465, 587 and 993 at once. The certbot step also calls it directly
# after `certbot certonly`, because certbot only runs renewal-hooks/ on `renew`.
set -eu

lineage=${RENEWED_LINEAGE:-}
case "$lineage" in
  */live/ispmail) ;;
  *) exit 0 ;;  # some other certificate on this machine: not ours to install
esac

# The target can be overridden for tests only; the daemons read /etc/ispmail/tls.
dir=${ISPMAIL_TLS_DIR:-/etc/ispmail/tls}
install -d -m 0755 -o root -g root "$dir"
keygroup=root
getent group ssl-cert >/dev/null && keygroup=ssl-cert

# Each file is written to a temporary name with its final owner and mode, then renamed over the
# old one: a daemon never reads a half-written file, and the key is never readable by others.
put() { # SOURCE TARGET MODE GROUP
  tmp=$(mktemp "$dir/.ispmail-tls.XXXXXX")
  chown "root:$4" "$tmp"
  chmod "$3" "$tmp"
  cat "$1" > "$tmp"
  mv -f "$tmp" "$2"
}
put "$lineage/privkey.pem" "$dir/privkey.pem" 0640 "$keygroup"
put "$lineage/fullchain.pem" "$dir/fullchain.pem" 0644 root

# Reload (not restart): running sessions go on, new connections get the new certificate.
# Only daemons that run here: the hook must not fail on a host without one of them.
for service in postfix dovecot apache2; do
  if systemctl is-active --quiet "$service"; then
    systemctl reload "$service"
    echo "ispmail deploy hook: reloaded $service" >&2
  fi
done
