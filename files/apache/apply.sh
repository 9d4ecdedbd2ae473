# Web step: Apache 2.4 + PHP-FPM. Runs after the step's files are installed (components/steps.ts).
# Set by the step before this: WEB_SITES (the ispmail-* site names to enable), ACME_WEBROOT,
# DB_ADMIN_CONFS (the database admins' own Apache confs, which Debian enables for every vhost).
# Everything below acts only when something is not yet as wanted, so a second run changes nothing.

# Apache is reloaded only when its configuration changed (files under /etc/apache2 or a2en*/a2dis*).
apache_changed=0
changed /etc/apache2 && apache_changed=1
apache_action() { ispmail_action "$1"; apache_changed=1; }

# a2enmod and friends are Perl scripts: each change kind is one call with every name it needs
# (a fresh server enables and disables some twenty of them; one call each cost seconds).
# apache_toggle COMMAND WHAT DIR SUFFIX WANT NAME...: run COMMAND on the NAMEs whose DIR/NAME.SUFFIX
# exists (WANT=absent) or does not (WANT=present) yet.
apache_toggle() {
  local command=$1 what=$2 dir=$3 suffix=$4 want=$5 name todo=()
  shift 5
  for name in "$@"; do
    if [ "$want" = present ] && [ ! -e "$dir/$name.$suffix" ]; then todo+=("$name"); fi
    if [ "$want" = absent ] && [ -e "$dir/$name.$suffix" ]; then todo+=("$name"); fi
  done
  [ ${#todo[@]} -gt 0 ] || return 0
  $command "${todo[@]}" >/dev/null
  for name in "${todo[@]}"; do apache_action "$what $name"; done
}

# Modules: TLS, headers (HSTS), rewrite (redirects), HTTP/2, PHP through FastCGI, setenvif (PHP-FPM's
# Authorization pass-through), the TLS session cache. mpm_event: PHP runs in FPM, not in Apache.
# The other MPMs go first: a2enmod refuses mpm_event while another MPM is enabled.
apache_toggle "a2dismod -q -f" "disabled apache module" /etc/apache2/mods-enabled load absent mpm_prefork mpm_worker php8.4
apache_toggle "a2enmod -q" "enabled apache module" /etc/apache2/mods-enabled load present ssl socache_shmcb headers rewrite http2 proxy proxy_fcgi setenvif alias mpm_event

# Global configuration: our TLS/hardening and PHP-FPM on; the catch-all access log (we keep none),
# Debian's security.conf (ours replaces it), cgi-bin, and the database admins' global aliases
# (/phppgadmin, /adminer on every vhost) off, whichever admin is chosen: the loopback vhost includes
# the chosen one's conf itself, so a switch leaves nothing of the other reachable.
apache_toggle "a2enconf -q" "enabled apache conf" /etc/apache2/conf-enabled conf present ispmail php8.4-fpm
# shellcheck disable=SC2086 # DB_ADMIN_CONFS is a list of names
apache_toggle "a2disconf -q" "disabled apache conf" /etc/apache2/conf-enabled conf absent other-vhosts-access-log security serve-cgi-bin $DB_ADMIN_CONFS

# Sites: Debian's defaults off, ours on, ours that are no longer rendered removed.
apache_toggle "a2dissite -q" "disabled apache site" /etc/apache2/sites-enabled conf absent 000-default default-ssl
# shellcheck disable=SC2086 # WEB_SITES is a list of names
apache_toggle "a2ensite -q" "enabled apache site" /etc/apache2/sites-enabled conf present $WEB_SITES
for path in /etc/apache2/sites-available/ispmail-*.conf; do
  [ -e "$path" ] || continue
  site=${path##*/}; site=${site%.conf}
  case " $WEB_SITES " in *" $site "*) continue ;; esac
  [ -e "/etc/apache2/sites-enabled/$site.conf" ] && a2dissite -q "$site" >/dev/null
  rm -f "$path"
  apache_action "removed apache site $site"
done

# The ACME webroot: certbot (as root) writes challenge files, Apache (www-data) reads them.
if [ ! -d "$ACME_WEBROOT/.well-known/acme-challenge" ]; then
  install -d -m 0755 "$ACME_WEBROOT" "$ACME_WEBROOT/.well-known" "$ACME_WEBROOT/.well-known/acme-challenge"
  ispmail_action "created $ACME_WEBROOT"
fi

# Always validate, even when nothing changed here: a broken config would otherwise only show at the
# next restart. The error output names the file and line.
if ! configtest=$(apache2ctl configtest 2>&1); then
  printf '%s\n' "$configtest" >&2
  log "apache2ctl configtest failed; Apache was not reloaded"
  exit 1
fi

if changed /etc/php/8.4/fpm; then
  reload php8.4-fpm
elif ! is_active php8.4-fpm; then
  restart php8.4-fpm
fi
if [ "$apache_changed" -eq 1 ] || ! is_active apache2; then
  # Graceful: running requests finish; new modules, ports and vhosts take effect.
  reload apache2
fi
