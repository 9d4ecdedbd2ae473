#!/bin/bash
# Builds the Debian 13 (trixie) tools chroot that the unit tests use to check rendered config files
# with the real daemons' own tools (postconf, doveconf, sievec, rspamadm, fail2ban-regex, python3
# with the modules our scripts import, php for our Nextcloud app's code) and to run a throwaway
# PostgreSQL 17. Cached: rebuilt only when this script (its package list) changes.
# Usage: test/harness/build-trixie-chroot.sh [TARGET]   (default: .lab/trixie-tools)
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${1:-.lab/trixie-tools}
mirror=${ISPMAIL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=ca-certificates,procps,openssl,postfix,postfix-pgsql,dovecot-imapd,dovecot-pgsql,dovecot-lmtpd,dovecot-sieve,dovecot-managesieved,rspamd,postgresql-17,python3-argon2,python3-psycopg2,python3-dnspython,fail2ban,php8.4-cli
stamp=$(sha256sum "$0" | cut -c1-16)
if [ -f "$target/.ispmail-stamp" ] && [ "$(cat "$target/.ispmail-stamp")" = "$stamp" ]; then
  echo "trixie tools chroot up to date: $target"
  exit 0
fi
rm -rf "$target.new"
mkdir -p "$(dirname "$target")"
# Daemons are not started in a chroot build (mmdebstrap's policy-rc.d); postfix is preseeded.
mmdebstrap --variant=apt --include="$packages" \
  --customize-hook='echo "postfix postfix/main_mailer_type select No configuration" | chroot "$1" debconf-set-selections || true' \
  trixie "$target.new" "$mirror"
echo "$stamp" > "$target.new/.ispmail-stamp"
rm -rf "$target"
mv "$target.new" "$target"
echo "built trixie tools chroot: $target"
