# webmail step script (components/services/webmail.ts), after the config files are in place.
# Roundcube's schema goes into its own database once, as its role (the database's owner); the
# package's dbconfig-common, which would make a database of its own, is switched off (debconf).
RC_SQL=/usr/share/roundcube/SQL
as_postgres_psql() { runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -d roundcube "$@"; }
# The schema version the database is at, where Roundcube's updatedb.sh reads it. Fails while the
# schema is not loaded (no `system` table yet).
schema_version() { as_postgres_psql -c "SELECT value FROM system WHERE name = 'roundcube-version'"; }
schema_loaded() { [ "$(as_postgres_psql -c "SELECT to_regclass('public.system') IS NOT NULL")" = t ]; }

if ! version=$(schema_version 2>/dev/null); then
  if ! schema_loaded; then
    runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d roundcube -c 'SET ROLE roundcube' \
      -f /usr/share/dbconfig-common/data/roundcube/install/pgsql >&2
    ispmail_action "loaded Roundcube's database schema"
  fi
  version=$(schema_version)
fi
# A newer package may bring schema updates: numbered files in $RC_SQL/postgres, of which updatedb.sh
# applies those newer than the database's version. Run it (PHP, a few hundred ms of CPU) only when
# there is such a file.
newest=0
for f in "$RC_SQL"/postgres/[0-9]*.sql; do
  n=${f##*/}; n=${n%.sql}
  if [[ $n =~ ^[0-9]+$ ]] && (( 10#$n > newest )); then newest=$((10#$n)); fi
done
if ! [[ $version =~ ^[0-9]+$ ]] || (( 10#$version < newest )); then
  updates=$(/usr/share/roundcube/bin/updatedb.sh --package=roundcube --dir="$RC_SQL" 2>&1)
  if [ -n "$updates" ]; then
    log "$updates"
    ispmail_action "updated Roundcube's database schema"
  fi
fi
