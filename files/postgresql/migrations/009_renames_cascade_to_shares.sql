-- 009: a renamed mailbox keeps its shares. `ispmail-db sync` renames a mailbox's row in place
-- (users.local, users.domain) when the stack config says `renamedFrom`; the shares that name it,
-- as owner or as grantee, follow with ON UPDATE CASCADE instead of blocking the rename (001 made
-- both foreign keys NO ACTION on update).
DO $$
DECLARE
    fk record;
BEGIN
    FOR fk IN
        SELECT c.conname, pg_get_constraintdef(c.oid) AS definition
          FROM pg_constraint c
         WHERE c.conrelid = 'shared_mailboxes'::regclass AND c.contype = 'f'
    LOOP
        EXECUTE format('ALTER TABLE shared_mailboxes DROP CONSTRAINT %I', fk.conname);
        EXECUTE format('ALTER TABLE shared_mailboxes ADD CONSTRAINT %I %s ON UPDATE CASCADE', fk.conname, fk.definition);
    END LOOP;
END
$$;
