# ispmail global filter, run before every user's own Sieve script on delivery (LMTP).
# Rspamd's milter adds "X-Spam: Yes" when a message scores above add_header (but below reject).
require ["fileinto", "mailbox"];
if header :contains "X-Spam" "Yes" {
  # :create: Junk is an auto-subscribed folder, but a brand-new account may not have opened it yet.
  fileinto :create "Junk";
  # Keep user rules from moving spam back into a normal folder.
  stop;
}
