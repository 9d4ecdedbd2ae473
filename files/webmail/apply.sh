# webmail step script (components/services/webmail.ts), after the config files are in place.
# Roundcube's schema goes into its own database once, as its role (the database's owner); the
# package's dbconfig-common, which would make a database of its own, is switched off (debconf).
schema_loaded() {
  [ "$(runuser -u postgres -- psql -X -A -t -q -d roundcube -c "SELECT to_regclass('public.system') IS NOT NULL")" = t ]
}
if ! schema_loaded; then
  runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d roundcube -c 'SET ROLE roundcube' \
    -f /usr/share/dbconfig-common/data/roundcube/install/pgsql >&2
  ispmail_action "loaded Roundcube's database schema"
fi
# A newer package may bring schema updates: Roundcube's own tool applies those the database lacks
# (it prints nothing when there are none).
updates=$(/usr/share/roundcube/bin/updatedb.sh --package=roundcube --dir=/usr/share/roundcube/SQL 2>&1)
if [ -n "$updates" ]; then
  log "$updates"
  ispmail_action "updated Roundcube's database schema"
fi
