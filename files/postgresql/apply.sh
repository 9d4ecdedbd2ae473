# The `postgresql` step (components/services/postgresql.ts): PostgreSQL 17 with its data on the
# volume, our settings and pg_hba, the login roles and the two databases.
# Already in place when this runs: the createcluster drop-in (installed before the packages, so
# no cluster is made outside the volume), PostgreSQL 17 and psycopg, /etc/ispmail/postgresql/*,
# the db.<role> secret files, /usr/local/sbin/ispmail-db and its module ($ISPMAIL_DB_MODULE).
PG_MAJOR=17
PG_CLUSTER=main
PG_DATA=/srv/ispmail/postgresql/$PG_MAJOR/$PG_CLUSTER
PG_CONF=/etc/postgresql/$PG_MAJOR/$PG_CLUSTER/postgresql.conf
ISPMAIL_PG_CONF=/etc/ispmail/postgresql/postgresql.conf

# The data volume must be there, or the directory would land on the root disk and be lost with
# the server.
mountpoint -q /srv/ispmail || { log "/srv/ispmail is not a mountpoint; the base step mounts the data volume there"; exit 1; }

PG_UNIT=postgresql@$PG_MAJOR-$PG_CLUSTER
# pg_running [DATA_DIR]: is the postmaster of that data directory alive? What `pg_ctlcluster
# status` finds through pg_ctl (the PID in postmaster.pid answers kill -0), without a Perl start
# (90 ms of a small server's CPU) on every apply.
pg_running() {
  local pid
  [ -r "${1:-$PG_DATA}/postmaster.pid" ] && read -r pid < "${1:-$PG_DATA}/postmaster.pid" && [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}
# Starts the cluster and returns once it accepts connections. `pg_ctlcluster start` returns only
# after three successful test connections half a second apart (over 2 s in all, every time), long
# after the server is ready: systemd runs that start as its job while this waits for pg_isready.
pg_start() {
  local try
  # (A unit that failed before would read as failed until the new job begins.)
  systemctl reset-failed "$PG_UNIT" 2>/dev/null || true
  systemctl start --no-block "$PG_UNIT"
  for try in $(seq 600); do
    pg_isready -q -p 5432 && return 0
    systemctl is-failed --quiet "$PG_UNIT" && break
    sleep 0.1
  done
  log "postgresql $PG_MAJOR/$PG_CLUSTER did not start: journalctl -u $PG_UNIT, /var/log/postgresql/postgresql-$PG_MAJOR-$PG_CLUSTER.log"
  tail -n 20 "/var/log/postgresql/postgresql-$PG_MAJOR-$PG_CLUSTER.log" >&2 || true
  exit 1
}
as_postgres_psql() { runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 "$@"; }

# A cluster that is not on the volume was created before our drop-in existed (PostgreSQL was
# installed by hand). An empty one is recreated on the volume; one holding databases is an
# operator's decision, not ours.
if [ -f "$PG_CONF" ]; then
  # data_directory as pg_createcluster writes it (quoted, a comment after it); what `pg_conftool
  # show data_directory` reads from the same file, without its Perl start (70 ms) on every apply.
  current=$(sed -nE "s/^[[:space:]]*data_directory[[:space:]]*=[[:space:]]*('([^']*)'|([^[:space:]#']+)).*/\2\3/p" "$PG_CONF" | tail -n 1)
  if [ -z "$current" ]; then log "$PG_CONF sets no data_directory"; exit 1; fi
  if [ "$current" != "$PG_DATA" ]; then
    pg_running "$current" || pg_ctlcluster $PG_MAJOR $PG_CLUSTER start
    user_dbs=$(as_postgres_psql -d postgres -c "SELECT count(*) FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')")
    if [ "$user_dbs" != 0 ]; then
      log "cluster $PG_MAJOR/$PG_CLUSTER lives in $current and holds $user_dbs database(s); move it to $PG_DATA by hand (pg_dropcluster/pg_createcluster or pg_upgradecluster), then re-run"
      exit 1
    fi
    pg_dropcluster --stop $PG_MAJOR $PG_CLUSTER
    ispmail_action "dropped the empty cluster $PG_MAJOR/$PG_CLUSTER in $current"
  fi
fi

if [ ! -f "$PG_CONF" ]; then
  if [ -f "$PG_DATA/PG_VERSION" ]; then
    # The volume carries the cluster of an earlier server (a replaced machine). pg_createcluster
    # adopts a data directory only when it holds its config files: give it the stock ones (our
    # settings are included after them), and the files this machine's postgres user.
    if [ "$(stat -c %u "$PG_DATA")" != "$(id -u postgres)" ]; then
      chown -R postgres:postgres /srv/ispmail/postgresql
    fi
    for f in postgresql.conf pg_hba.conf pg_ident.conf; do
      [ -e "$PG_DATA/$f" ] || install -o postgres -g postgres -m 0600 "/usr/share/postgresql/$PG_MAJOR/$f.sample" "$PG_DATA/$f"
    done
    pg_createcluster -p 5432 $PG_MAJOR $PG_CLUSTER -d "$PG_DATA" >&2
    ispmail_action "adopted the cluster on the data volume ($PG_DATA)"
  else
    install -d -o postgres -g postgres -m 0700 /srv/ispmail/postgresql
    pg_createcluster -p 5432 $PG_MAJOR $PG_CLUSTER -d "$PG_DATA" >&2
    ispmail_action "created cluster $PG_MAJOR/$PG_CLUSTER in $PG_DATA"
  fi
fi

# Clusters made by pg_createcluster with our drop-in include our settings; an adopted or older
# one may not.
settings_added=0
# (pg_createcluster writes the line with a trailing comment.)
if ! grep -qE "^include = '${ISPMAIL_PG_CONF//./\\.}'([[:space:]]|\$)" "$PG_CONF"; then
  printf "include = '%s'\n" "$ISPMAIL_PG_CONF" >> "$PG_CONF"
  ispmail_action "included $ISPMAIL_PG_CONF in $PG_CONF"
  settings_added=1
fi

if ! pg_running; then
  pg_start
  ispmail_action "started postgresql $PG_MAJOR/$PG_CLUSTER"
elif [ $settings_added = 1 ] || changed /etc/ispmail/postgresql; then
  # Most settings (pg_hba, password_encryption, logging) take a reload; listen_addresses and
  # hba_file need a restart, which PostgreSQL reports as pending_restart after the reload.
  pg_ctlcluster $PG_MAJOR $PG_CLUSTER reload
  ispmail_action "reloaded postgresql $PG_MAJOR/$PG_CLUSTER"
  sleep 1
  if [ "$(as_postgres_psql -d postgres -c 'SELECT count(*) FROM pg_settings WHERE pending_restart')" != 0 ]; then
    pg_ctlcluster $PG_MAJOR $PG_CLUSTER restart
    ispmail_action "restarted postgresql $PG_MAJOR/$PG_CLUSTER (a setting needs it)"
  fi
fi

# ispmail-db's module, compiled when it changed: the launcher then loads it without compiling it
# on every start. Checked against a hash of the source rather than its mtime, which a rewrite in
# the same second with the same size would leave as it was.
if changed "$ISPMAIL_DB_MODULE"; then
  python3 -m compileall -q -f --invalidation-mode checked-hash "$ISPMAIL_DB_MODULE" >&2
fi

# Roles, passwords (only when the stored verifier does not match) and databases.
changes=$(/usr/local/sbin/ispmail-db roles)
while IFS= read -r line; do [ -z "$line" ] || ispmail_action "$line"; done <<< "$changes"
