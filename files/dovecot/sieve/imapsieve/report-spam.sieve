# IMAPSieve: a user moved or copied a message into Junk -> teach Rspamd it is spam.
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables"];

# Flag changes on a message already in Junk are not a verdict.
if environment :is "imap.cause" "COPY" {
  pipe :copy "learn-spam";
}
