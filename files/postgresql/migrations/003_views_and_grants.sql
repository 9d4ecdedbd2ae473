-- 003: the views of the directory contract and who may read them.
--
-- Postfix and Dovecot read only views, through the role mailreader; the views run with their
-- owner's rights, so mailreader needs (and gets) no right on any table.

-- Postfix virtual_mailbox_domains.
CREATE VIEW virtual_domains AS
    SELECT domain FROM domains;

-- Postfix virtual_mailbox_maps and Dovecot passdb/userdb. quota_bytes is NULL for "no quota".
CREATE VIEW virtual_mailboxes AS
    SELECT local || '@' || domain           AS address,
           local,
           domain,
           password_hash,
           quota_mb::bigint * 1024 * 1024   AS quota_bytes,
           display_name
      FROM users;

-- Postfix virtual_alias_maps; "@domain" is a catch-all (Postfix looks it up after user@domain).
CREATE VIEW virtual_aliases AS
    SELECT CASE WHEN source_local = '' THEN '@' || source_domain
                ELSE source_local || '@' || source_domain END AS source,
           destination
      FROM aliases;

-- Postfix smtpd_sender_login_maps: a login may send as its own address and as every alias source
-- that delivers to it (a catch-all included: its owner receives that whole domain's unclaimed mail).
CREATE VIEW sender_logins AS
    SELECT address AS sender, address AS login FROM virtual_mailboxes
    UNION
    SELECT a.source AS sender, m.address AS login
      FROM virtual_aliases a
      JOIN virtual_mailboxes m ON m.address = a.destination;

-- Dovecot's acl sharing dict (pattern shared/shared-boxes/user/$to/$from): who shares to whom.
-- dummy is the dict's value (always 1); rights is extra information for the Dovecot step.
CREATE VIEW shared_mailboxes_view AS
    SELECT shared_mailbox_local || '@' || shared_mailbox_domain AS shared_mailbox,
           shared_to_local || '@' || shared_to_domain           AS shared_to,
           1                                                    AS dummy,
           rights
      FROM shared_mailboxes;

-- Dovecot's dict also maps shared/shared-boxes/anyone/$from; we have no public mailboxes, so this
-- view is always empty (as in the tutorial).
CREATE VIEW public_mailboxes_view AS
    SELECT NULL::text AS public_mailbox, NULL::integer AS dummy
     LIMIT 0;

-- Nextcloud's user_backend_sql_raw verifies with PHP's password_verify(), which wants the bare
-- "$argon2id$..." or "$2y$..." string, not Dovecot's "{SCHEME}" prefix; rows in other schemes
-- cannot log in to Nextcloud and are left out.
CREATE VIEW nextcloud_users AS
    SELECT local || '@' || domain                                   AS username,
           regexp_replace(password_hash, '^\{[A-Z0-9.-]+\}', '')    AS password_hash,
           display_name
      FROM users
     WHERE password_hash ~ '^\{(ARGON2ID|ARGON2I|BLF-CRYPT)\}';

-- Nobody but the roles below may use the schema (PUBLIC has USAGE by default).
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO mailreader, mailadmin, nextcloudauth;

-- Postfix and Dovecot: exactly the views they query.
GRANT SELECT ON virtual_domains, virtual_mailboxes, virtual_aliases, sender_logins,
                shared_mailboxes_view, public_mailboxes_view
             TO mailreader;

-- Nextcloud logins: the one view it needs.
GRANT SELECT ON nextcloud_users TO nextcloudauth;

-- The sync (and an admin by hand) edits the rows; the schema stays postgres's.
GRANT SELECT, INSERT, UPDATE, DELETE ON domains, users, aliases, shared_mailboxes TO mailadmin;
GRANT SELECT ON virtual_domains, virtual_mailboxes, virtual_aliases, sender_logins,
                shared_mailboxes_view, public_mailboxes_view, nextcloud_users
             TO mailadmin;

-- Functions are executable by PUBLIC by default; none of ours is meant for mailreader.
REVOKE EXECUTE ON FUNCTION lock_address(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION lock_address(text) TO mailadmin;
