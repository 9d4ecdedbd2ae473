# IMAPSieve: a user moved or copied a message out of Junk -> teach Rspamd it is ham,
# unless the destination is Trash (deleting spam is not a verdict of "good mail").
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables"];

if environment :matches "imap.mailbox" "*" {
  set "mailbox" "${1}";
}
if string "${mailbox}" "Trash" {
  stop;
}
pipe :copy "learn-ham";
