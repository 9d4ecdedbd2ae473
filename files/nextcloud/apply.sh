# nextcloud step. Set by the step before this: NC_VERSION, NC_URL, NC_SHA256, NC_ROOT, NC_DATA,
# NC_CONFIG, NC_DB_NAME, NC_DB_USER, NC_ADMIN_USER, NC_INSTALL_SECRETS (a root-only file: the database
# password, then the admin password, one per line), NC_APPS, NC_RULES_APP (our own app, written by
# the step into $NC_ROOT/apps/), NC_PASSWORD_MIN_LENGTH, PLACEHOLDER_HTML.
#
# The release archive comes from a configurable URL and must match the pinned sha256. When it
# cannot be fetched (no internet, e.g. the lab) the step is skipped with a clear message and the
# groupware host serves a placeholder page; nothing else is touched.

occ() { runuser -u www-data -- php "$NC_ROOT/occ" --no-ansi "$@"; }
installed_version() { php -r 'include $argv[1]; echo implode(".", array_slice($OC_Version, 0, 3));' "$NC_ROOT/version.php" 2>/dev/null || true; }

nextcloud_fetch() {
  # Prints the path of the verified archive. Returns 1 when it cannot be fetched (skip), 2 when it
  # does not match the pinned hash (fail: the pin or the download is wrong).
  local cache=/var/cache/ispmail archive
  archive=$cache/nextcloud-$NC_VERSION.tar.bz2
  install -d -m 0700 "$cache"
  if [ ! -f "$archive" ]; then
    if ! curl -fsSL --connect-timeout 15 --max-time 600 --retry 2 -o "$archive.part" "$NC_URL" 2>"$cache/curl.err"; then
      log "SKIPPED: the Nextcloud archive $NC_URL cannot be fetched ($(tr '\n' ' ' < "$cache/curl.err")); the groupware host shows a placeholder page until it can"
      rm -f "$archive.part"
      return 1
    fi
    mv -f "$archive.part" "$archive"
  fi
  if ! printf '%s  %s\n' "$NC_SHA256" "$archive" | sha256sum -c --quiet - >/dev/null 2>&1; then
    rm -f "$archive"
    log "the Nextcloud archive from $NC_URL does not match the pinned sha256 $NC_SHA256 (ispmail:nextcloud.sha256)"
    return 2
  fi
  printf '%s' "$archive"
}

nextcloud_apply() {
  local have archive fetched=0
  have=$(installed_version)
  if [ -z "$have" ]; then
    archive=$(nextcloud_fetch) || fetched=$?
    [ "$fetched" -eq 2 ] && exit 1
    if [ "$fetched" -ne 0 ]; then
      # Placeholder only where no Nextcloud code is (never over an installed one).
      if [ ! -f "$NC_ROOT/occ" ] && ! cmp -s "$PLACEHOLDER_HTML" "$NC_ROOT/index.html"; then
        install -d -m 0755 "$NC_ROOT"
        install -m 0644 "$PLACEHOLDER_HTML" "$NC_ROOT/index.html"
        ispmail_action "Nextcloud skipped: archive unreachable, placeholder page in $NC_ROOT"
      fi
      return 0
    fi
    # The archive holds nextcloud/; unpack beside the target, keep our config file and our app
    # (both written by the step before this script), swap in.
    local staging
    staging=$(mktemp -d /var/www/.nextcloud-unpack.XXXXXX)
    tar -xjf "$archive" -C "$staging"
    cp -a "$NC_ROOT/config/ispmail.config.php" "$staging/nextcloud/config/"
    cp -a "$NC_ROOT/apps/$NC_RULES_APP" "$staging/nextcloud/apps/"
    rm -rf "$NC_ROOT"
    mv "$staging/nextcloud" "$NC_ROOT"
    rmdir "$staging"
    chown -R www-data:www-data "$NC_ROOT"
    chmod -R o-rwx "$NC_ROOT"
    ispmail_action "unpacked Nextcloud $NC_VERSION into $NC_ROOT"
  elif [ "$have" != "$NC_VERSION" ]; then
    # Upgrades change the database schema and need a backup first: an admin's decision.
    log "Nextcloud $have is installed but ispmail:nextcloud.version is $NC_VERSION; upgrade by hand (occ upgrade) or pin $have"
    exit 1
  fi

  install -d -m 0750 -o www-data -g www-data "$NC_DATA"

  if ! occ status --output=json 2>/dev/null | grep -q '"installed":true'; then
    # occ asks for both passwords when they are not given as options (never put on a command
    # line): they come from a root-only file on standard input. SHELL_INTERACTIVE keeps Symfony's
    # console asking even though standard input is not a terminal (checked with Symfony Console
    # 6.4: hidden questions then read the answers line by line from the redirected input).
    if ! SHELL_INTERACTIVE=1 occ maintenance:install --database pgsql --database-host localhost \
        --database-name "$NC_DB_NAME" --database-user "$NC_DB_USER" \
        --admin-user "$NC_ADMIN_USER" --data-dir "$NC_DATA" < "$NC_INSTALL_SECRETS" >&2; then
      log "occ maintenance:install failed"
      exit 1
    fi
    occ maintenance:update:htaccess >&2
    ispmail_action "installed Nextcloud $NC_VERSION on PostgreSQL database $NC_DB_NAME"
  fi

  # Apps: the mail directory as user backend, the groupware the tutorial sets up, the password
  # policy and our own app (from its directory, never from the app store), each enabled only when
  # it is not yet.
  local app enabled
  enabled=$(occ app:list --output=json | php -r '$a = json_decode(stream_get_contents(STDIN), true); echo implode(" ", array_keys($a["enabled"] ?? []));')
  for app in $NC_APPS; do
    case " $enabled " in *" $app "*) continue ;; esac
    if [ -d "$NC_ROOT/apps/$app" ] || [ -d "$NC_ROOT/custom_apps/$app" ]; then
      occ app:enable "$app" >&2
    else
      occ app:install "$app" >&2
    fi
    ispmail_action "enabled Nextcloud app $app"
  done

  # The bundled password policy: the webmail's minimum length (components/services/webmail.ts).
  # The app stores it as an integer (PasswordPolicyConfig::setMinLength); --type says so for a key
  # that does not exist yet. Nextcloud asks it about its own accounts (the admin) and share
  # passwords; user_backend_sql_raw does not ask it when a mail user changes the password, so our
  # app $NC_RULES_APP does (files/nextcloud/apps/), and refuses the current password too.
  if [ "$(occ config:app:get password_policy minLength 2>/dev/null || true)" != "$NC_PASSWORD_MIN_LENGTH" ]; then
    occ config:app:set password_policy minLength --value="$NC_PASSWORD_MIN_LENGTH" --type=integer --no-interaction >&2
    ispmail_action "Nextcloud password policy: at least $NC_PASSWORD_MIN_LENGTH characters"
  fi

  if [ "$(occ config:app:get core backgroundjobs_mode 2>/dev/null || true)" != "cron" ]; then
    occ background:cron >&2
    ispmail_action "Nextcloud background jobs: cron (systemd timer)"
  fi
}

# Our config file must parse before Nextcloud (or the installer) reads it. Only the line number is
# shown: PHP's parse errors quote tokens, and this file holds a password.
if ! php -l "$NC_CONFIG" >/dev/null 2>&1; then
  log "$NC_CONFIG does not parse ($(php -l "$NC_CONFIG" 2>&1 | grep -o 'on line [0-9]*' | head -n1))"
  exit 1
fi

nextcloud_apply

if changed /etc/php/8.4/fpm; then
  reload php8.4-fpm
fi
# The cron timer once Nextcloud is installed (occ is there).
[ ! -f "$NC_ROOT/occ" ] || ensure_enabled nextcloud-cron.timer
daemon_reload_when_changed /etc/systemd/system/nextcloud-cron.service /etc/systemd/system/nextcloud-cron.timer
if [ -f "$NC_ROOT/occ" ] && ! is_active nextcloud-cron.timer; then
  restart nextcloud-cron.timer
fi
