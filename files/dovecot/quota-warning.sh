#!/bin/sh
# Quota warning mail (conf.d/90-quota.conf, service quota-warning): run by Dovecot's script service
# as vmail when a save crosses a warning level, with the percentage and the user's address:
#   quota-warning.sh 80 alice@example.org
# Delivers one short message straight into the user's INBOX with dovecot-lda. Quota enforcement
# is off for this delivery (quota_enforce=no): the user is nearly full and must still get it.
# Envelope sender <> and -e (a refusal goes to the log, not into a bounce): nothing loops back.
set -eu
# The script service starts us with an empty environment.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

percent=$1
user=$2
# A percentage and one address, as conf.d/90-quota.conf passes them; anything else is refused.
case $percent in
  '' | *[!0-9]*) echo "quota-warning: unexpected percentage '$percent'" >&2; exit 64 ;;
esac
case $user in
  *@*.*) ;;
  *) echo "quota-warning: unexpected user '$user'" >&2; exit 64 ;;
esac
domain=${user#*@}

# stdout is the connection to Dovecot: dovecot-lda's output goes to stderr (Dovecot's log).
/usr/lib/dovecot/dovecot-lda -e -f "" -d "$user" -o quota_enforce=no >&2 <<EOF
From: Mail system <postmaster@$domain>
To: <$user>
Subject: Your mailbox is $percent% full
Date: $(LC_ALL=C date -R)
Message-ID: <quota-warning.$(date +%s).$$@$domain>
Auto-Submitted: auto-generated
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

Your mailbox $user has reached $percent% of its storage quota.

When it is full, new mail to you is refused and returned to its senders.
To make room, delete old messages (large attachments first) and empty
the Trash and Junk folders.

This message was generated automatically; please do not reply.
EOF
