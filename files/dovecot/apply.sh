# ispmail dovecot step script (after the files are in place).

# vmail (uid/gid 5000) owns every mailbox. The base step normally creates it with /var/vmail on
# the data volume; create what is missing so this step also stands on its own.
if ! getent group vmail >/dev/null; then groupadd --system --gid 5000 vmail; mark_changed; fi
if ! getent passwd vmail >/dev/null; then
  useradd --system --uid 5000 --gid vmail --home-dir /var/vmail --no-create-home --shell /usr/sbin/nologin vmail
  mark_changed
fi
if [ ! -d /var/vmail ]; then install -d -o vmail -g vmail -m 0770 /var/vmail; mark_changed; fi

# A configuration Dovecot warns about (or cannot parse) never replaces the running one.
dovecot_config_ok() {
  local check
  check=$(mktemp)
  if ! doveconf -n >/dev/null 2>"$check" || [ -s "$check" ]; then
    log "doveconf -n is not clean:"; cat "$check" >&2; rm -f "$check"
    exit 1
  fi
  rm -f "$check"
  # The LMTP and SASL sockets in Postfix's spool belong to the postfix user (conf.d/10-master.conf).
  # Without it Dovecot's reload fails inside the running master while systemctl reports success.
  if ! getent passwd postfix >/dev/null; then
    log "the postfix user does not exist: the packages step installs postfix before this step runs"
    exit 1
  fi
}
# Those sockets go in the spool's private/ directory, which Postfix makes at its first start: make
# it as Postfix does (postfix:root 0700) if this step comes first, so that it need not wait for the
# postfix step (the engine runs the two at the same time).
if [ ! -d /var/spool/postfix/private ] && getent passwd postfix >/dev/null; then
  install -d -o postfix -g root -m 0700 /var/spool/postfix/private
  ispmail_action "created /var/spool/postfix/private for Dovecot's sockets"
fi
ensure_enabled dovecot
daemon_reload_when_changed
reload_when_changed dovecot /etc/dovecot -- dovecot_config_ok

# Sieve scripts run as vmail, which cannot write next to them: compile as root now (after the
# reload: Dovecot's tools take their settings from the running config service). sievec treats
# a script as a user's, so the administrator-only plugins and extensions that conf.d/90-sieve.conf
# enables for these scripts (IMAPSieve, pipe, environment) are named here explicitly.
SIEVEC=(sievec -P sieve_imapsieve -P sieve_extprograms -x "+vnd.dovecot.pipe +vnd.dovecot.environment")
for script in /etc/dovecot/sieve/before/spam-to-junk.sieve \
              /etc/dovecot/sieve/imapsieve/report-spam.sieve \
              /etc/dovecot/sieve/imapsieve/report-ham.sieve; do
  if [ ! -s "${script%.sieve}.svbin" ] || [ "$script" -nt "${script%.sieve}.svbin" ]; then
    "${SIEVEC[@]}" "$script" </dev/null
    ispmail_action "compiled $script"
  fi
done

# Shared mailboxes: each configured share becomes an ACL on the owner's INBOX
# (/etc/ispmail/dovecot/shares: "owner grantee rights..." lines). The directory's
# shared_mailboxes_view tells Dovecot who shares with whom; this sets what the grantee may do.
# Only shares this step applied before are ever removed, so ACLs users set themselves stay.
# doveadm would also try to write the "who shares with whom" map, but that map is the
# directory's read-only view (filled from the same config), so its dict is switched off here.
DOVEADM_ACL=(doveadm -o "acl_sharing_map/dict_driver=" acl)
SHARES=/etc/ispmail/dovecot/shares
APPLIED=$ISPMAIL_STATE_DIR/dovecot-shares.applied
if ! { [ -f "$APPLIED" ] && cmp -s "$SHARES" "$APPLIED"; }; then
  if [ -f "$APPLIED" ]; then
    while read -r owner grantee _rights; do
      [ -n "$owner" ] || continue
      if ! awk -v o="$owner" -v g="$grantee" '$1 == o && $2 == g { found = 1 } END { exit !found }' "$SHARES"; then
        # An owner that is no mailbox any more (removed, or renamed: its ACL file moved with its
        # home and the new name's line below sets it again) has no ACL here to remove.
        if ! doveadm user "$owner" >/dev/null 2>&1; then
          log "not removing the share of $owner with $grantee: $owner is no longer a mailbox"
          continue
        fi
        "${DOVEADM_ACL[@]}" delete -u "$owner" INBOX "user=$grantee" </dev/null
        ispmail_action "removed the share of $owner with $grantee"
      fi
    done < "$APPLIED"
  fi
  while read -r owner grantee rights; do
    [ -n "$owner" ] || continue
    # shellcheck disable=SC2086 # rights are separate words
    "${DOVEADM_ACL[@]}" set -u "$owner" INBOX "user=$grantee" $rights </dev/null
    ispmail_action "shared INBOX of $owner with $grantee ($rights)"
  done < "$SHARES"
  install -d -m 0700 "$ISPMAIL_STATE_DIR"
  cp "$SHARES" "$APPLIED"
fi
