# The `directory` step (components/services/directory.ts): schema migrations, then the declarative
# sync of domains, mailboxes, aliases and shares from /etc/ispmail/directory.json.
# Both run on every apply: they write nothing when nothing differs, and a sync also puts back
# managed rows someone changed by hand (but never a password the mailbox's user set).
# One process for both (the migrations in a child that drops root for postgres): a Python start
# and psycopg import less per apply. The configured passwords go from this script's memory to the
# sync's standard input: no file.
changes=$(step_input passwords | /usr/local/sbin/ispmail-db sync --migrate --passwords -)
while IFS= read -r line; do [ -z "$line" ] || ispmail_action "$line"; done <<< "$changes"
