-- 001: the mail directory's tables, after the tutorial's "Create database, tables and views",
-- with the gaps it names closed where a constraint can do it.
--
-- Every row carries `managed`: true for rows the declarative sync (ispmail-db sync) owns, false for
-- rows an admin added by hand. The sync inserts, changes and deletes only managed rows.

-- Domains instead of hard-coded column types: the rules live in one place (as in the tutorial).
-- Everything is lowercase: Postfix and Dovecot look addresses up lowercased, and two rows that
-- differ only in case would be two owners of one address.
CREATE DOMAIN local_part AS text
    CHECK (VALUE = lower(VALUE)
           AND char_length(VALUE) BETWEEN 1 AND 64                      -- RFC 5321 4.5.3.1.1
           AND VALUE ~ '^[a-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&''*+/=?^_`{|}~-]+)*$');  -- dot-atom

CREATE DOMAIN domain_part AS text
    CHECK (VALUE = lower(VALUE)
           AND char_length(VALUE) BETWEEN 3 AND 253                     -- RFC 1035
           AND VALUE ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$');

-- A full address (alias destinations may be outside our domains).
CREATE DOMAIN email_address AS text
    CHECK (VALUE = lower(VALUE)
           AND char_length(VALUE) <= 254                                -- RFC 3696 errata 1690
           AND split_part(VALUE, '@', 1)::text ~ '^[a-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&''*+/=?^_`{|}~-]+)*$'
           AND VALUE ~ '^[^@]{1,64}@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$');

-- Text that users or admins type (display names): bounded so nobody stores 10 GiB in a name.
CREATE DOMAIN user_input AS text CHECK (char_length(VALUE) <= 256);

CREATE TABLE domains (
    domain  domain_part PRIMARY KEY,
    managed boolean NOT NULL DEFAULT false
);

CREATE TABLE users (
    local         local_part  NOT NULL,
    -- ON DELETE RESTRICT: a domain that still has mailboxes cannot be deleted.
    domain        domain_part NOT NULL REFERENCES domains (domain) ON UPDATE RESTRICT ON DELETE RESTRICT,
    -- Dovecot's "{SCHEME}hash" form; the sync writes {ARGON2ID}$argon2id$v=19$m=...,t=...,p=...$salt$hash.
    password_hash user_input  NOT NULL CHECK (password_hash ~ '^\{[A-Z0-9.-]+\}.'),
    display_name  user_input,
    -- NULL: no quota for this mailbox.
    quota_mb      integer     CHECK (quota_mb > 0),
    managed       boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (local, domain),
    CHECK (char_length(local) + 1 + char_length(domain) <= 254)
);

CREATE TABLE aliases (
    -- '' is the catch-all of source_domain ("@example.org" in the views).
    source_local  text          NOT NULL CHECK (source_local = '' OR source_local::local_part IS NOT NULL),
    source_domain domain_part   NOT NULL REFERENCES domains (domain) ON UPDATE RESTRICT ON DELETE RESTRICT,
    -- A full address, local or foreign. One source may have several destinations (one row each),
    -- which is why the key includes the destination (the tutorial allowed only one).
    destination   email_address NOT NULL,
    managed       boolean       NOT NULL DEFAULT false,
    PRIMARY KEY (source_local, source_domain, destination),
    CHECK (char_length(source_local) + 1 + char_length(source_domain) <= 254),
    CHECK (destination <> source_local || '@' || source_domain)
);

CREATE TABLE shared_mailboxes (
    shared_mailbox_local  local_part  NOT NULL,
    shared_mailbox_domain domain_part NOT NULL,
    shared_to_local       local_part  NOT NULL,
    shared_to_domain      domain_part NOT NULL,
    -- IMAP ACL rights (RFC 4314 letters) the owner grants; the Dovecot step turns them into ACLs.
    rights                text        NOT NULL DEFAULT 'lrws' CHECK (rights ~ '^[lrwsteipkxa]+$'),
    managed               boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (shared_mailbox_local, shared_mailbox_domain, shared_to_local, shared_to_domain),
    FOREIGN KEY (shared_mailbox_local, shared_mailbox_domain) REFERENCES users (local, domain) ON DELETE CASCADE,
    FOREIGN KEY (shared_to_local, shared_to_domain) REFERENCES users (local, domain) ON DELETE CASCADE,
    -- The tutorial's gap "a mailbox can be shared to itself".
    CHECK ((shared_mailbox_local, shared_mailbox_domain) <> (shared_to_local, shared_to_domain))
);
