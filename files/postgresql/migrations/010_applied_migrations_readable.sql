-- 010: mailadmin may read which migrations are applied. `ispmail-db sync --migrate` (the directory
-- step, on every apply) compares them with the shipped files over its own connection and starts
-- the migrator (a second process as postgres, a second server connection) only when one is
-- pending. The versions and checksums are no secret; mailadmin can change nothing here.
GRANT SELECT ON schema_migrations TO mailadmin;
