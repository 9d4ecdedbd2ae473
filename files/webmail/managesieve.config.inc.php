<?php
// Written by ispmail (the webmail step) as /etc/roundcube/plugins/managesieve/config.inc.php.
$config = [];
// Dovecot's ManageSieve on this server, over loopback (which Dovecot counts as secured).
$config['managesieve_host'] = 'localhost';
$config['managesieve_port'] = 4190;
$config['managesieve_usetls'] = false;
// Filters, and vacation replies as their own settings section (one reply per sender and week,
// Sieve's default).
$config['managesieve_vacation'] = 1;
