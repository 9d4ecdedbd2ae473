-- 004: the declarative sync. directory_sync(desired) makes the managed rows equal to `desired` in
-- the caller's transaction and returns what it did. Rows with managed = false (added by hand) are
-- never changed or deleted; a desired row that already exists by hand is adopted (managed = true).
--
-- desired = {
--   "domains": ["example.org", ...],
--   "users":   [{"local", "domain", "display_name", "quota_mb", "password_hash"}, ...],
--   "aliases": [{"source_local" ('' = catch-all), "source_domain", "destination"}, ...],
--   "shares":  [{"shared_mailbox_local", "shared_mailbox_domain", "shared_to_local", "shared_to_domain", "rights"}, ...]
-- }
-- Rows are written only where they differ (IS DISTINCT FROM), so applying the same state twice
-- writes nothing the second time.
--
-- Order matters: obsolete rows go first, so that an address can move from alias to mailbox (or
-- back) in one run without tripping the ownership triggers; domains go last, and only when empty.

CREATE FUNCTION directory_sync(desired jsonb) RETURNS jsonb
    LANGUAGE plpgsql
    SECURITY INVOKER  -- runs with the caller's (mailadmin's) rights, nothing more
    AS $$
DECLARE
    n_ins integer;
    n_upd integer;
    n_del integer;
    removed_mailboxes text[];
    kept_domains text[];
    report jsonb := '{}';
BEGIN
    IF jsonb_typeof(desired) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'directory_sync: desired state must be a JSON object';
    END IF;

    -- 1. Obsolete managed rows, children first.
    DELETE FROM shared_mailboxes s
     WHERE s.managed
       AND NOT EXISTS (SELECT 1 FROM jsonb_to_recordset(coalesce(desired->'shares', '[]'))
                                  AS w(shared_mailbox_local text, shared_mailbox_domain text, shared_to_local text, shared_to_domain text)
                        WHERE (w.shared_mailbox_local, w.shared_mailbox_domain, w.shared_to_local, w.shared_to_domain)
                            = (s.shared_mailbox_local, s.shared_mailbox_domain, s.shared_to_local, s.shared_to_domain));
    GET DIAGNOSTICS n_del = ROW_COUNT;
    report := report || jsonb_build_object('shares', jsonb_build_object('deleted', n_del));

    DELETE FROM aliases a
     WHERE a.managed
       AND NOT EXISTS (SELECT 1 FROM jsonb_to_recordset(coalesce(desired->'aliases', '[]'))
                                  AS w(source_local text, source_domain text, destination text)
                        WHERE (w.source_local, w.source_domain, w.destination) = (a.source_local, a.source_domain, a.destination));
    GET DIAGNOSTICS n_del = ROW_COUNT;
    report := report || jsonb_build_object('aliases', jsonb_build_object('deleted', n_del));

    -- A removed mailbox's Maildir stays on disk; the caller logs these addresses.
    WITH gone AS (
        DELETE FROM users u
         WHERE u.managed
           AND NOT EXISTS (SELECT 1 FROM jsonb_to_recordset(coalesce(desired->'users', '[]')) AS w(local text, domain text)
                            WHERE (w.local, w.domain) = (u.local, u.domain))
        RETURNING u.local || '@' || u.domain AS address)
    SELECT coalesce(array_agg(address ORDER BY address), '{}') INTO removed_mailboxes FROM gone;
    report := report || jsonb_build_object('users', jsonb_build_object('deleted', cardinality(removed_mailboxes)),
                                           'removed_mailboxes', to_jsonb(removed_mailboxes));

    -- 2. Domains: adopt, then add.
    UPDATE domains d SET managed = true
      FROM jsonb_array_elements_text(coalesce(desired->'domains', '[]')) AS w(domain)
     WHERE d.domain = w.domain AND NOT d.managed;
    GET DIAGNOSTICS n_upd = ROW_COUNT;
    INSERT INTO domains (domain, managed)
        SELECT w.domain, true FROM jsonb_array_elements_text(coalesce(desired->'domains', '[]')) AS w(domain)
        ON CONFLICT (domain) DO NOTHING;
    GET DIAGNOSTICS n_ins = ROW_COUNT;
    report := report || jsonb_build_object('domains', jsonb_build_object('inserted', n_ins, 'updated', n_upd));

    -- 3. Mailboxes: change what differs, then add.
    UPDATE users u
       SET display_name = w.display_name, quota_mb = w.quota_mb, password_hash = w.password_hash, managed = true
      FROM jsonb_to_recordset(coalesce(desired->'users', '[]'))
           AS w(local text, domain text, display_name text, quota_mb integer, password_hash text)
     WHERE (u.local, u.domain) = (w.local, w.domain)
       AND (u.display_name IS DISTINCT FROM w.display_name
            OR u.quota_mb IS DISTINCT FROM w.quota_mb
            OR u.password_hash IS DISTINCT FROM w.password_hash
            OR NOT u.managed);
    GET DIAGNOSTICS n_upd = ROW_COUNT;
    INSERT INTO users (local, domain, display_name, quota_mb, password_hash, managed)
        SELECT w.local, w.domain, w.display_name, w.quota_mb, w.password_hash, true
          FROM jsonb_to_recordset(coalesce(desired->'users', '[]'))
               AS w(local text, domain text, display_name text, quota_mb integer, password_hash text)
        ON CONFLICT (local, domain) DO NOTHING;
    GET DIAGNOSTICS n_ins = ROW_COUNT;
    report := jsonb_set(report, '{users}', report->'users' || jsonb_build_object('inserted', n_ins, 'updated', n_upd));

    -- 4. Aliases: a row is its whole key, so "changed" can only mean adopted.
    UPDATE aliases a SET managed = true
      FROM jsonb_to_recordset(coalesce(desired->'aliases', '[]')) AS w(source_local text, source_domain text, destination text)
     WHERE (a.source_local, a.source_domain, a.destination) = (w.source_local, w.source_domain, w.destination)
       AND NOT a.managed;
    GET DIAGNOSTICS n_upd = ROW_COUNT;
    INSERT INTO aliases (source_local, source_domain, destination, managed)
        SELECT w.source_local, w.source_domain, w.destination, true
          FROM jsonb_to_recordset(coalesce(desired->'aliases', '[]')) AS w(source_local text, source_domain text, destination text)
        ON CONFLICT (source_local, source_domain, destination) DO NOTHING;
    GET DIAGNOSTICS n_ins = ROW_COUNT;
    report := jsonb_set(report, '{aliases}', report->'aliases' || jsonb_build_object('inserted', n_ins, 'updated', n_upd));

    -- 5. Shares: rights may change.
    UPDATE shared_mailboxes s SET rights = w.rights, managed = true
      FROM jsonb_to_recordset(coalesce(desired->'shares', '[]'))
           AS w(shared_mailbox_local text, shared_mailbox_domain text, shared_to_local text, shared_to_domain text, rights text)
     WHERE (s.shared_mailbox_local, s.shared_mailbox_domain, s.shared_to_local, s.shared_to_domain)
         = (w.shared_mailbox_local, w.shared_mailbox_domain, w.shared_to_local, w.shared_to_domain)
       AND (s.rights IS DISTINCT FROM w.rights OR NOT s.managed);
    GET DIAGNOSTICS n_upd = ROW_COUNT;
    INSERT INTO shared_mailboxes (shared_mailbox_local, shared_mailbox_domain, shared_to_local, shared_to_domain, rights, managed)
        SELECT w.shared_mailbox_local, w.shared_mailbox_domain, w.shared_to_local, w.shared_to_domain, w.rights, true
          FROM jsonb_to_recordset(coalesce(desired->'shares', '[]'))
               AS w(shared_mailbox_local text, shared_mailbox_domain text, shared_to_local text, shared_to_domain text, rights text)
        ON CONFLICT (shared_mailbox_local, shared_mailbox_domain, shared_to_local, shared_to_domain) DO NOTHING;
    GET DIAGNOSTICS n_ins = ROW_COUNT;
    report := jsonb_set(report, '{shares}', report->'shares' || jsonb_build_object('inserted', n_ins, 'updated', n_upd));

    -- 6. Obsolete managed domains, unless hand-added rows still live in them (then they stay and
    --    are reported; deleting them would fail on the foreign keys anyway).
    DELETE FROM domains d
     WHERE d.managed
       AND d.domain NOT IN (SELECT jsonb_array_elements_text(coalesce(desired->'domains', '[]')))
       AND NOT EXISTS (SELECT 1 FROM users u WHERE u.domain = d.domain)
       AND NOT EXISTS (SELECT 1 FROM aliases a WHERE a.source_domain = d.domain);
    GET DIAGNOSTICS n_del = ROW_COUNT;
    SELECT coalesce(array_agg(d.domain ORDER BY d.domain), '{}') INTO kept_domains
      FROM domains d
     WHERE d.managed AND d.domain NOT IN (SELECT jsonb_array_elements_text(coalesce(desired->'domains', '[]')));
    report := jsonb_set(report, '{domains}', report->'domains' || jsonb_build_object('deleted', n_del));
    report := report || jsonb_build_object('kept_domains', to_jsonb(kept_domains));

    RETURN report;
END
$$;

REVOKE EXECUTE ON FUNCTION directory_sync(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION directory_sync(jsonb) TO mailadmin;
