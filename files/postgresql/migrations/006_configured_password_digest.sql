-- 006: who owns a mailbox's password. The stack config gives the initial one; after that the user
-- may change it (webmail, Nextcloud) and the sync must leave it alone, unless the configured
-- password itself changes (an admin reset). The sync recognizes that without keeping the
-- configured password anywhere on the server: it keeps a keyed digest of the last one it applied
-- (HMAC-SHA-256 of address and password under secret directory.digest-key, hex). NULL: a row from
-- before this migration, or one added by hand.
ALTER TABLE users ADD COLUMN config_password_digest text CHECK (config_password_digest ~ '^[0-9a-f]{64}$');
