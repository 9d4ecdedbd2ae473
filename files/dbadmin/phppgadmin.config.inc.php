<?php
/*
 * phpPgAdmin's configuration (/etc/phppgadmin/config.inc.php), written by the web step
 * (components/services/dbadmin.ts). Debian's file with the settings of this server; each setting
 * that differs from Debian's says why. https://github.com/phppgadmin/phppgadmin (conf/config.inc.php-dist)
 *
 * phpPgAdmin is served only on the loopback vhost (127.0.0.1:8080, [::1]:8080): open an SSH
 * tunnel (ssh -L 8080:127.0.0.1:8080 root@<server>) and http://127.0.0.1:8080/phppgadmin/.
 * One logs in as a database role with its own password, e.g. mailadmin (db.mailadmin in the stack
 * output adminSecrets), which may change the mail directory's rows in database mailserver.
 */

// The one server: this machine's PostgreSQL 17 cluster.
$conf['servers'][0]['desc'] = 'PostgreSQL (ispmail)';
// Over TCP on loopback, where pg_hba.conf asks every role for its password (SCRAM-SHA-256). The
// Unix socket ('') would work as well; 127.0.0.1 keeps the login the same as the other clients'.
$conf['servers'][0]['host'] = '127.0.0.1';
$conf['servers'][0]['port'] = 5432;
// Loopback never leaves the machine: TLS would add nothing (and the cluster has no certificate).
$conf['servers'][0]['sslmode'] = 'disable';
// The database phpPgAdmin connects to first: 'postgres', which every role may enter, instead of
// Debian's template1 (a connection to a template database blocks CREATE DATABASE from it).
$conf['servers'][0]['defaultdb'] = 'postgres';
$conf['servers'][0]['pg_dump_path'] = '/usr/bin/pg_dump';
$conf['servers'][0]['pg_dumpall_path'] = '/usr/bin/pg_dumpall';

$conf['default_lang'] = 'auto';

// SameSite session cookies (CSRF protection).
$conf['extra_session_security'] = true;

$conf['autocomplete'] = 'default on';

// On (the tutorial turns it off to log in as postgres): logins without a password and as postgres,
// pgsql, root or administrator are refused. The superuser has no password and pg_hba.conf rejects
// it on TCP anyway; admins log in as a role with a password, such as mailadmin.
$conf['extra_login_security'] = true;

// Off: database mailserver belongs to postgres, so "owned only" would hide it from mailadmin. The
// list is no access control either way: CONNECT grants decide which database a role may enter.
$conf['owned_only'] = false;

$conf['show_comments'] = true;
$conf['show_advanced'] = false;
$conf['show_system'] = false;

// A password set in phpPgAdmin has at least 12 characters (Debian: 1), like a mailbox's. (The
// stack's own roles, such as mailadmin, get their generated password back at every apply.)
$conf['min_password_length'] = 12;

$conf['left_width'] = 200;
$conf['theme'] = 'default';
$conf['show_oids'] = false;
$conf['max_rows'] = 30;
// As in the tutorial: more of each value in browse mode (addresses, hashes), default 50.
$conf['max_chars'] = 120;
$conf['use_xhtml_strict'] = false;
// Over HTTPS (Debian's file still says http://).
$conf['help_base'] = 'https://www.postgresql.org/docs/%s/interactive/';
$conf['ajax_refresh'] = 3;
$conf['plugins'] = array();

// The version of this file's format (phpPgAdmin 7.14 refuses to run below its base_version 16).
$conf['version'] = 19;
