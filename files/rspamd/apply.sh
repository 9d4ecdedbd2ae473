# ispmail rspamd step script (after the files are in place).

# The DKIM key directory on the data volume (created root-only by the base step): Rspamd must be
# able to enter it; the keys themselves are _rspamd 0600.
# (DKIM_DIR and CONTROLLER_SECRET are set in front of this script by components/services/rspamd.ts.)
if [ "$(stat -c '%U:%G %a' "$DKIM_DIR")" != "root:_rspamd 750" ]; then
  chown root:_rspamd "$DKIM_DIR"; chmod 0750 "$DKIM_DIR"
  ispmail_action "set owner root:_rspamd and mode 0750 on $DKIM_DIR"
  mark_pending rspamd
fi
CONTROLLER_HASH=/etc/rspamd/override.d/worker-controller.inc

# The milter socket's directory in Postfix's chroot: Rspamd (owner) creates the socket in it,
# Postfix (group) connects, nobody else may enter.
# (MILTER_SOCKET_DIR, MILTER_SOCKET and PROXY_CONF are set in front of this script too.)
if [ "$(stat -c '%U:%G %a' "$MILTER_SOCKET_DIR" 2>/dev/null)" != "_rspamd:postfix 750" ]; then
  install -d -o _rspamd -g postfix -m 0750 "$MILTER_SOCKET_DIR"
  ispmail_action "made $MILTER_SOCKET_DIR (_rspamd:postfix 0750)"
fi

# The controller password, hashed (PBKDF, random salt) by Rspamd's own Lua binding. The password
# is read from the root-only secret file, never passed as an argument; a new hash is derived only
# when the secret changed, so a second apply leaves the file (and Rspamd) alone.
# </dev/null: `rspamadm lua` reads stdin, which is this very script (bash -s).
if changed "$CONTROLLER_SECRET" || [ ! -s "$CONTROLLER_HASH" ]; then
  install -d -m 0755 /etc/rspamd/override.d
  tmp=$(mktemp /etc/rspamd/override.d/.ispmail.XXXXXX)
  chgrp _rspamd "$tmp"; chmod 0640 "$tmp"
  ISPMAIL_SECRET_PATH=$CONTROLLER_SECRET rspamadm lua -e '
    local f = assert(io.open(os.getenv("ISPMAIL_SECRET_PATH")))
    local password = f:read("*a"):gsub("%s+$", "")
    f:close()
    io.write("# Written by the ispmail rspamd step from the secret rspamd.controller; do not edit.\n")
    io.write(string.format("password = \"%s\";\n", require("rspamd_cryptobox").pbkdf(password)))
  ' </dev/null > "$tmp"
  # Exactly the comment and one hash line, or stop before Rspamd reads it.
  if [ "$(grep -c . "$tmp")" -ne 2 ] || ! grep -Eq '^password = "\$[0-9]\$[a-z0-9]+\$[a-z0-9]+";$' "$tmp"; then
    rm -f "$tmp"; log "could not hash the controller password"; exit 1
  fi
  mv -f "$tmp" "$CONTROLLER_HASH"
  ISPMAIL_CHANGED_FILES+=("$CONTROLLER_HASH")
  ispmail_action "hashed the controller password"
fi

ensure_enabled valkey-server rspamd
daemon_reload_when_changed
is_active valkey-server || restart valkey-server

# Never replace a running configuration with one Rspamd cannot load.
# A reload keeps every socket Rspamd listens on and reuses them (seen in the lab: after a reload
# from localhost:11332 onto the Unix socket the TCP port still listened; after one with the socket
# file deleted, no new file was made). So a changed worker-proxy.inc, or a running Rspamd whose
# milter socket is gone, takes a restart; any other change a reload.
if changed "$PROXY_CONF" || { is_active rspamd && [ ! -S "$MILTER_SOCKET" ]; }; then
  mark_pending rspamd
  restart_when_changed rspamd -- rspamadm configtest -q
else
  reload_when_changed rspamd /etc/rspamd "$DKIM_DIR" -- rspamadm configtest -q
fi
