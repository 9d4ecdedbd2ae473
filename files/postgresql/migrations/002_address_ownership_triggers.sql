-- 002: an address is either a mailbox or an alias source, never both (the tutorial's
-- "Referential Constraints Can Not Prevent All Misconfiguration"). A UNIQUE constraint cannot span
-- two tables, so both tables get a trigger that looks into the other one.
--
-- Concurrency: two transactions could each insert one half of a conflict and both pass the check.
-- Each trigger first takes a transaction-scoped advisory lock on the address, so the second one
-- waits for the first to commit; under READ COMMITTED its check then sees the committed row.

CREATE FUNCTION lock_address(address text) RETURNS void
    LANGUAGE sql VOLATILE
    AS $$ SELECT pg_advisory_xact_lock(hashtextextended('ispmail-address:' || address, 0)) $$;

CREATE FUNCTION refuse_mailbox_that_is_alias_source() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM lock_address(NEW.local || '@' || NEW.domain);
    IF EXISTS (SELECT 1 FROM aliases WHERE source_local = NEW.local AND source_domain = NEW.domain) THEN
        RAISE EXCEPTION 'mailbox %@% is already an alias source; an address is either a mailbox or an alias', NEW.local, NEW.domain
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION refuse_alias_source_that_is_mailbox() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.source_local = '' THEN
        RETURN NEW;  -- a catch-all catches what no mailbox and no other alias takes
    END IF;
    PERFORM lock_address(NEW.source_local || '@' || NEW.source_domain);
    IF EXISTS (SELECT 1 FROM users WHERE local = NEW.source_local AND domain = NEW.source_domain) THEN
        RAISE EXCEPTION 'alias source %@% is already a mailbox; an address is either a mailbox or an alias', NEW.source_local, NEW.source_domain
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER users_address_is_not_an_alias
    BEFORE INSERT OR UPDATE OF local, domain ON users
    FOR EACH ROW EXECUTE FUNCTION refuse_mailbox_that_is_alias_source();

CREATE TRIGGER aliases_source_is_not_a_mailbox
    BEFORE INSERT OR UPDATE OF source_local, source_domain ON aliases
    FOR EACH ROW EXECUTE FUNCTION refuse_alias_source_that_is_mailbox();

-- "A domain with users cannot be deleted" is the users.domain foreign key (ON DELETE RESTRICT);
-- the same holds for aliases. This trigger runs before the foreign-key check only to give the
-- refusal a message an admin understands (which domain, how many rows are in the way).
CREATE FUNCTION refuse_deleting_domain_in_use() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    mailbox_count integer;
    alias_count   integer;
BEGIN
    SELECT count(*) INTO mailbox_count FROM users WHERE domain = OLD.domain;
    SELECT count(*) INTO alias_count FROM aliases WHERE source_domain = OLD.domain;
    IF mailbox_count > 0 OR alias_count > 0 THEN
        RAISE EXCEPTION 'domain % still has % mailbox(es) and % alias(es); delete them first', OLD.domain, mailbox_count, alias_count
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN OLD;
END
$$;

CREATE TRIGGER domains_delete_only_when_unused
    BEFORE DELETE ON domains
    FOR EACH ROW EXECUTE FUNCTION refuse_deleting_domain_in_use();
