# ispmail dkim-signer step script (after dkim_signing.conf and arc.conf are in place).
# The selector that signs changes only here (components/services/dkim-signer.ts): a rotation's
# switch reloads Rspamd once, after checking that it can load the new configuration.
reload_when_changed rspamd /etc/rspamd/local.d/dkim_signing.conf /etc/rspamd/local.d/arc.conf -- rspamadm configtest -q
