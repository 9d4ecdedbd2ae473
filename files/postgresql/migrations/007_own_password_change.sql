-- 007: users change their own password (Roundcube's password plugin, after it confirmed the
-- current one). Role mailpassword may do exactly this and nothing else: no SELECT on any table or
-- view, only EXECUTE on this function, which runs with mailadmin's rights (SECURITY DEFINER) and
-- writes one column of one managed-or-not mailbox, and only an Argon2id hash in Dovecot's form (a
-- webmail bug or a compromised webmail cannot store a plaintext or weak scheme). The sync keeps
-- what it stores (006: only a changed configured password replaces it).
CREATE FUNCTION change_own_password(address text, new_hash text) RETURNS boolean
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = public, pg_temp
    AS $$
BEGIN
    IF new_hash IS NULL OR new_hash !~ '^\{ARGON2ID\}\$argon2id\$v=19\$m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$' THEN
        RAISE EXCEPTION 'change_own_password: not an {ARGON2ID} hash';
    END IF;
    UPDATE users SET password_hash = new_hash WHERE local || '@' || domain = lower(address);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'change_own_password: no mailbox %', address;
    END IF;
    RETURN true;
END
$$;

ALTER FUNCTION change_own_password(text, text) OWNER TO mailadmin;
REVOKE EXECUTE ON FUNCTION change_own_password(text, text) FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO mailpassword;
GRANT EXECUTE ON FUNCTION change_own_password(text, text) TO mailpassword;
