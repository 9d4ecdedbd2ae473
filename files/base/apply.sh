# The `base` step (components/services/base.ts). Runs first on a fresh Debian 13; everything here
# is checked before it is changed, so a second run changes nothing.
# Set by base.ts before this file: MAIL_HOST (a validated FQDN).
# Already in place: /etc/hostname, /etc/mailname, /etc/timezone, /etc/locale.conf, the sshd,
# journald and unattended-upgrades drop-ins.
SHORT_HOST=${MAIL_HOST%%.*}
DATA_DIR=/srv/ispmail

# --- Host name ------------------------------------------------------------------------------
# /etc/hostname holds the FQDN (a step file); set the running name too. Postfix's myhostname
# and the SMTP greeting default to it.
if [ "$(< /proc/sys/kernel/hostname)" != "$MAIL_HOST" ]; then
  hostname "$MAIL_HOST"
  ispmail_action "set the host name to $MAIL_HOST"
fi
# Debian's convention: the host's own name on 127.0.1.1, so `hostname --fqdn` works without DNS.
# Only that one line is ours; other lines (cloud-init's, the admin's) stay as they are.
hosts_tmp=$(mktemp)
awk -v line="127.0.1.1\t$MAIL_HOST $SHORT_HOST" '
  $1 == "127.0.1.1" { if (!done) print line; done = 1; next }
  { print }
  END { if (!done) print line }' /etc/hosts > "$hosts_tmp"
if ! cmp -s "$hosts_tmp" /etc/hosts; then
  # Rewrite in place rather than rename: a container may have /etc/hosts bind-mounted.
  cat "$hosts_tmp" > /etc/hosts
  ispmail_action "set 127.0.1.1 $MAIL_HOST in /etc/hosts"
fi
rm -f "$hosts_tmp"

# --- Time zone and locale -------------------------------------------------------------------
# UTC: log lines, Received: headers and backups compare across machines without arithmetic.
if [ "$(readlink /etc/localtime)" != /usr/share/zoneinfo/Etc/UTC ]; then
  ln -sfn /usr/share/zoneinfo/Etc/UTC /etc/localtime
  ispmail_action "set the time zone to UTC"
fi
# /etc/default/locale is Debian 13's symlink to ../locale.conf (tmpfiles.d/debian.conf makes it at
# boot); make it now too, so that programs reading either path see LANG=C.UTF-8 before a reboot.
if [ "$(readlink /etc/default/locale)" != ../locale.conf ]; then
  ln -sfn ../locale.conf /etc/default/locale
  ispmail_action "linked /etc/default/locale to ../locale.conf"
fi
# C.UTF-8 is built in (the system default via /etc/locale.conf); en_US.UTF-8 is generated for
# programs and admins that ask for it by name (an SSH client that sends LANG=en_US.UTF-8).
# (Output captured first: with pipefail, `grep -q` closing the pipe early would fail the pipeline.)
locales=$(locale -a 2>/dev/null || true)
locale_gen=
if ! grep -qix 'en_US.utf8' <<< "$locales"; then
  sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen
  grep -qx 'en_US.UTF-8 UTF-8' /etc/locale.gen || echo 'en_US.UTF-8 UTF-8' >> /etc/locale.gen
  # localedef keeps one core busy for ~2 s; nothing below needs the locale, and most of the rest
  # waits on systemd: it runs alongside and is waited for at the end of the step.
  locale-gen >&2 < /dev/null &
  locale_gen=$!
fi

# --- Journal --------------------------------------------------------------------------------
if changed /etc/systemd/journald.conf.d/ispmail.conf; then
  # journald has no reload for these settings; a restart keeps the logs (they are flushed).
  restart systemd-journald
fi

# --- SSH ------------------------------------------------------------------------------------
SSHD_DROPIN=/etc/ssh/sshd_config.d/00-ispmail.conf
if changed "$SSHD_DROPIN" && [ -x /usr/sbin/sshd ]; then
  # Never reload into a configuration sshd rejects: that would lock us out on the next restart.
  if ! /usr/sbin/sshd -t; then
    mv -f "$SSHD_DROPIN" "$SSHD_DROPIN.rejected"
    log "sshd -t rejected $SSHD_DROPIN (moved to $SSHD_DROPIN.rejected)"
    exit 1
  fi
  # Debian runs ssh.service; with socket activation (ssh.socket) each connection reads the file.
  if is_active ssh; then reload ssh; fi
fi

# --- Data volume ----------------------------------------------------------------------------
ensure_data_volume "$DATA_DIR" ispmail-data '/dev/disk/by-id/scsi-0HC_Volume_*' /etc/fstab

# --- vmail: the one system user that owns every mailbox ------------------------------------
if ! getent group vmail >/dev/null; then
  groupadd --gid 5000 vmail
  ispmail_action "created group vmail (5000)"
fi
if ! getent passwd vmail >/dev/null; then
  useradd --uid 5000 --gid vmail --home-dir /var/vmail --no-create-home --shell /usr/sbin/nologin --comment "ispmail mailboxes" vmail
  ispmail_action "created user vmail (5000)"
fi
# (name:password:uid:gid:... as getent prints it; what `id -u` and `id -g` would say, one fork in all.)
IFS=: read -r _ _ vmail_uid vmail_gid _ <<< "$(getent passwd vmail)"
if [ "$vmail_uid:$vmail_gid" != "5000:5000" ]; then
  log "user vmail exists with uid:gid $vmail_uid:$vmail_gid, not 5000:5000; fix it by hand (files on the volume are owned by 5000)"
  exit 1
fi

# Mailboxes live on the volume; /var/vmail (where Dovecot and the tutorial look) is a symlink.
# A symlink rather than a bind mount: when the volume is missing, the link dangles and delivery
# fails (Postfix keeps the mail queued) instead of filling a fresh, empty directory on the root disk.
if [ ! -d "$DATA_DIR/vmail" ]; then
  install -d -o vmail -g vmail -m 0770 "$DATA_DIR/vmail"
  ispmail_action "created $DATA_DIR/vmail"
elif [ "$(stat -c '%u:%g %a' "$DATA_DIR/vmail")" != "5000:5000 770" ]; then
  chown vmail:vmail "$DATA_DIR/vmail"
  chmod 0770 "$DATA_DIR/vmail"
  ispmail_action "set owner vmail and mode 0770 on $DATA_DIR/vmail"
fi
if [ "$(readlink /var/vmail || true)" != "$DATA_DIR/vmail" ]; then
  if [ -L /var/vmail ] || { [ -d /var/vmail ] && rmdir /var/vmail 2>/dev/null; }; then
    rm -f /var/vmail
  elif [ -e /var/vmail ]; then
    log "/var/vmail exists and is not empty; move its content to $DATA_DIR/vmail and remove it, then re-run"
    exit 1
  fi
  ln -s "$DATA_DIR/vmail" /var/vmail
  ispmail_action "linked /var/vmail to $DATA_DIR/vmail"
fi
# The other stateful directories belong to later steps, which set their owners; create them only.
for dir in backup dkim; do
  if [ ! -d "$DATA_DIR/$dir" ]; then
    install -d -m 0700 "$DATA_DIR/$dir"
    ispmail_action "created $DATA_DIR/$dir"
  fi
done

# --- systemd units: alerts (failed units mail the administrator, ispmail-alert@.service), ---
# --- the metadata service for root only, time sync -------------------------------------------
# The user data (SSH host private key) stays readable by root alone: see metadata-guard.nft.
GUARD_UNIT=/etc/systemd/system/ispmail-metadata-guard.service
# Time sync: systemd-timesyncd, unless the image already had another NTP client (the step's
# packages: "systemd-timesyncd|chrony|ntpsec|openntpd"). Asked about in the same is-enabled as
# the guard (each systemctl is ~25 ms of a small server's CPU, on every apply).
TIME_SYNC=()
[ ! -f /usr/lib/systemd/system/systemd-timesyncd.service ] || TIME_SYNC=(systemd-timesyncd)
ensure_enabled ispmail-metadata-guard "${TIME_SYNC[@]}"
daemon_reload_when_changed /etc/systemd/system/ispmail-alert@.service "$GUARD_UNIT"
# Started when this run enabled it (an image that had it off); systemd starts it at every boot
# after that. In a container it does not start (ConditionVirtualization=!container): the host
# keeps the clock.
if enabled_now systemd-timesyncd; then
  systemctl start systemd-timesyncd
fi
if changed /etc/ispmail/metadata-guard.nft "$GUARD_UNIT" || ! is_active ispmail-metadata-guard; then
  nft -c -f /etc/ispmail/metadata-guard.nft
  restart ispmail-metadata-guard
fi

if [ -n "$locale_gen" ]; then
  wait "$locale_gen"
  ispmail_action "generated the en_US.UTF-8 locale"
fi
