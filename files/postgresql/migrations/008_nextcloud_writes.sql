-- 008: Nextcloud users change their own password and display name (user_backend_sql_raw's
-- set_password_hash_for_user and set_display_name queries, components/services/nextcloud.ts).
--
-- Role nextcloudauth keeps SELECT on the view nextcloud_users only, and gets UPDATE on two of its
-- columns: password_hash and display_name, never username (a user cannot become another mailbox)
-- and nothing on the users table. The view is not simply updatable (username and password_hash are
-- expressions), so an INSTEAD OF trigger does the write, with mailadmin's rights (SECURITY
-- DEFINER), on the one row whose address is the view row's username, and only in the forms the
-- other readers of users expect:
--  - password_hash: Nextcloud sends PHP's bare "$argon2id$v=19$m=..,t=..,p=..$salt$hash"
--    (password_hash(..., PASSWORD_ARGON2ID), the app's hash_algorithm_for_new_passwords = argon2id);
--    it is stored with Dovecot's "{ARGON2ID}" prefix, the form the sync and 007 write. Anything
--    else (bcrypt, a plaintext, a Dovecot-prefixed value) is refused, so a bug or a compromised
--    Nextcloud cannot store a weak scheme that Dovecot would then accept.
--  - display_name: stored as given; the column's domain user_input bounds its length.
-- As with 007, the sync keeps what users store: the password through config_password_digest (006),
-- the display name through config_display_name below.

-- Who owns a display name: the stack config gives the initial one; after that the user's own
-- change (Nextcloud) is kept until the configured display name itself changes. The sync
-- (ispmail-db sync) recognizes that change by keeping the configured display name it last applied.
-- Until now the sync always wrote the configured name, so for managed rows that is the stored one.
-- NULL on a managed row: no display name configured; on a hand-added row: never configured.
ALTER TABLE users ADD COLUMN config_display_name user_input;
UPDATE users SET config_display_name = display_name WHERE managed;

CREATE FUNCTION nextcloud_users_update() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
BEGIN
    -- The column grant already keeps nextcloudauth from this; the trigger keeps everyone else
    -- (an admin updating the view by hand) from renaming a mailbox through it.
    IF NEW.username IS DISTINCT FROM OLD.username THEN
        RAISE EXCEPTION 'nextcloud_users: username cannot be changed' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.password_hash IS DISTINCT FROM OLD.password_hash THEN
        IF NEW.password_hash IS NULL OR NEW.password_hash !~ '^\$argon2id\$v=19\$m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$' THEN
            RAISE EXCEPTION 'nextcloud_users: not an argon2id hash' USING ERRCODE = 'check_violation';
        END IF;
        -- Local parts cannot contain "@" (domain local_part), so split_part finds the row's key.
        UPDATE users SET password_hash = '{ARGON2ID}' || NEW.password_hash
         WHERE local = split_part(OLD.username, '@', 1) AND domain = split_part(OLD.username, '@', 2);
    END IF;
    IF NEW.display_name IS DISTINCT FROM OLD.display_name THEN
        UPDATE users SET display_name = NEW.display_name
         WHERE local = split_part(OLD.username, '@', 1) AND domain = split_part(OLD.username, '@', 2);
    END IF;
    RETURN NEW;
END
$$;

ALTER FUNCTION nextcloud_users_update() OWNER TO mailadmin;
REVOKE EXECUTE ON FUNCTION nextcloud_users_update() FROM PUBLIC;

CREATE TRIGGER nextcloud_users_update
    INSTEAD OF UPDATE ON nextcloud_users
    FOR EACH ROW EXECUTE FUNCTION nextcloud_users_update();

-- Column privileges: UPDATE ... SET username (or any other column) stays "permission denied".
GRANT UPDATE (password_hash, display_name) ON nextcloud_users TO nextcloudauth;
