-- 005: logins under a password-guessing attack (fail2ban's ispmail-login jail counts failed logins
-- per account, from every address together). While a row is here, Dovecot accepts that account's
-- password only from allow_nets: the addresses it logged in from successfully before, and
-- loopback. The owner keeps working from known places; a guesser on any other address is refused
-- even with the right password. fail2ban removes the row when the ban ends. Not part of the
-- declarative directory (directory_sync never touches it).
CREATE TABLE login_guards (
    address        text        PRIMARY KEY,
    allow_nets     text        NOT NULL,
    guarded_since  timestamptz NOT NULL DEFAULT now()
);

-- Dovecot's passdb: the password, and allow_nets when the account is guarded (NULL, which Dovecot
-- ignores, otherwise).
CREATE VIEW passdb_logins AS
    SELECT m.address, m.password_hash, g.allow_nets
      FROM virtual_mailboxes m
      LEFT JOIN login_guards g ON g.address = m.address;

GRANT SELECT ON passdb_logins TO mailreader, mailadmin;
GRANT SELECT, INSERT, UPDATE, DELETE ON login_guards TO mailadmin;
