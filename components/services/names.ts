/**
 * Step names, one constant each. A name is a Pulumi resource name (renaming one needs an alias) and
 * the `after` of other services; code and tests refer to steps only through these.
 */
export const STEP = {
    base: "base",
    resolver: "resolver",
    tlsPolicy: "tls-policy",
    postgresql: "postgresql",
    directory: "directory",
    tls: "tls",
    rspamd: "rspamd",
    dkimSigner: "dkim-signer",
    dovecot: "dovecot",
    postfix: "postfix",
    web: "web",
    certbot: "certbot",
    webmail: "webmail",
    nextcloud: "nextcloud",
    fail2ban: "fail2ban",
    backup: "backup",
} as const;

/**
 * The step that installs every package of every other step in one apt run, before all of them
 * (./packages.ts). Not a service: it is derived from the others' steps.
 */
export const PACKAGES_STEP = "packages";
