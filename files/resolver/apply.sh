# ispmail resolver step script (after unbound's config is in place).
# The root's trust anchor file, as unbound's own start would create it (the package could not start
# it at install time); unbound-checkconf needs it. Once there, unbound keeps it current itself
# (RFC 5011), and its every start runs this helper too.
[ -s /var/lib/unbound/root.key ] || /usr/libexec/unbound-helper root_trust_anchor_update
ensure_enabled unbound
daemon_reload_when_changed
# A configuration unbound-checkconf refuses never replaces the running one; a reload that did not
# happen (a failed run) is still pending on the next run (prelude: reload_when_changed).
reload_when_changed unbound /etc/unbound/unbound.conf.d/ispmail.conf -- unbound-checkconf

# Only an answering resolver becomes the system's: ask it for a zone that exists before anything
# else of this stack (the first mail domain's SOA), for up to 30 s while it starts.
answered=
for _ in {1..30}; do
  if [ -n "$(dig +short +time=2 +tries=1 @127.0.0.1 "$PROBE_ZONE" SOA 2>/dev/null)" ]; then answered=1; break; fi
  sleep 1
done
if [ -z "$answered" ]; then
  echo "unbound on 127.0.0.1 does not answer for $PROBE_ZONE SOA; /etc/resolv.conf left as it was" >&2
  exit 1
fi

# /etc/resolv.conf names it (written here, not as a step file, so that it never points at a
# resolver that does not answer). trust-ad: glibc passes the resolver's "authenticated data" bit on
# only with it, and Postfix's DANE needs that bit.
want=$'# ispmail: the server\'s own validating resolver (unbound, /etc/unbound/unbound.conf.d/ispmail.conf).\nnameserver 127.0.0.1\nnameserver ::1\noptions edns0 trust-ad\n'
if [ -L /etc/resolv.conf ] || [ ! -f /etc/resolv.conf ] || [ "$(< /etc/resolv.conf)"$'\n' != "$want" ]; then
  rm -f /etc/resolv.conf
  printf '%s' "$want" > /etc/resolv.conf
  chmod 0644 /etc/resolv.conf
  ispmail_action "pointed /etc/resolv.conf at unbound"
  # Postfix's chrooted processes read a copy (/var/spool/postfix/etc/resolv.conf); Debian's
  # `postfix check` refreshes it (as Postfix's own start does), and new processes pick it up.
  # Only a configured Postfix: the packages step installs it long before the postfix step writes
  # main.cf, and `postfix check` without a main.cf fails.
  if command -v postfix >/dev/null && [ -f /etc/postfix/main.cf ] && [ -d /var/spool/postfix/etc ]; then
    postfix check
  fi
fi
