/**
 * fail2ban from Debian: bans an address on the mail and SSH ports after repeated failed logins
 * (sshd, Postfix SMTP AUTH, Dovecot IMAP/POP3/ManageSieve). Debian 13 logs to the journal only, so
 * every jail uses the systemd backend; bans are nftables sets (Debian's default banaction).
 *
 * Config files: files/fail2ban/jail.d/ispmail.conf.mustache (jails, limits, exempt admin networks) and
 * files/fail2ban/filter.d/dovecot.local (Dovecot 2.4's "Login aborted" wording).
 */
import type { Model } from "../config";
import type { Step } from "../steps";
import { readStatic, renderTemplate } from "../templates";

export const FAIL2BAN_STEP = "fail2ban";

/**
 * The steps whose daemons fail2ban watches. fail2ban works without them (a jail on an empty journal
 * stream just waits), but applying it last means the ports it protects are already in use and a
 * first `up` does not restart it twice. Only registered steps may be named in `after` (orderSteps
 * rejects unknown names), so the step lists those of these that exist.
 */
export const FAIL2BAN_WATCHES = ["base", "postfix", "dovecot"] as const;

const JAIL = "/etc/fail2ban/jail.d/ispmail.conf";
const DOVECOT_FILTER = "/etc/fail2ban/filter.d/dovecot.local";
const SSHD_FILTER = "/etc/fail2ban/filter.d/sshd.local";

/** The admin networks the SSH jail never bans: all of adminCidrs except "everyone" (/0). */
export function sshExemptNetworks(model: Pick<Model, "server">): string[] {
    return model.server.adminCidrs.filter((c) => !c.endsWith("/0"));
}

/** `registeredSteps`: the names of the other steps of this server (see services/index.ts). */
export function renderFail2banSteps(model: Model, registeredSteps: readonly string[]): Step[] {
    return [
        {
            name: FAIL2BAN_STEP,
            description: "fail2ban: ban addresses after repeated failed logins on SSH, SMTP AUTH and IMAP/POP3/ManageSieve",
            // python3-systemd is the journal backend; nftables is what Debian's banaction runs.
            // Both are only Recommends of fail2ban, and steps install without recommends.
            packages: ["fail2ban", "python3-systemd", "nftables"],
            files: [
                { path: JAIL, content: renderTemplate("fail2ban/jail.d/ispmail.conf.mustache", { sshExempt: sshExemptNetworks(model) }), mode: "0644" },
                { path: DOVECOT_FILTER, content: readStatic("fail2ban/filter.d/dovecot.local"), mode: "0644" },
                { path: SSHD_FILTER, content: readStatic("fail2ban/filter.d/sshd.local"), mode: "0644" },
            ],
            script: SCRIPT,
            after: FAIL2BAN_WATCHES.filter((s) => registeredSteps.includes(s)),
        },
    ];
}

const SCRIPT = String.raw`
if changed /etc/fail2ban; then
  # Refuse a configuration fail2ban cannot load before it replaces the running one.
  fail2ban-client --test >/dev/null
fi
if ! systemctl is-enabled --quiet fail2ban; then
  systemctl enable --quiet fail2ban
  mark_changed
fi
if ! systemctl is-active --quiet fail2ban; then
  restart fail2ban
elif changed /etc/fail2ban; then
  reload fail2ban
fi
`;
