/**
 * fail2ban from Debian: bans an address on the mail and SSH ports after repeated failed logins
 * (sshd, Postfix SMTP AUTH, Dovecot IMAP/POP3/ManageSieve). Debian 13 logs to the journal only, so
 * every jail uses the systemd backend; bans are nftables sets (Debian's default banaction). One
 * more jail counts failures per account instead of per address, and its ban limits where that
 * account may log in from (the login_guards table, which Dovecot's passdb reads). With the webmail
 * or Nextcloud, their failed logins ban the address from the web ports too.
 *
 * Config files: files/fail2ban/jail.d/ispmail.conf.mustache (jails, limits, exempt admin networks),
 * files/fail2ban/filter.d/dovecot.local (Dovecot 2.4's "Login aborted" wording), the per-account
 * filter.d/ispmail-login.conf, action.d/ispmail-login-guard.conf with its script
 * ispmail-login-guard, Nextcloud's filter.d/ispmail-nextcloud.conf (its JSON log file) with
 * fail2ban.service.d/ispmail-nextcloud-log.conf.mustache, and apply.sh.
 */
import type { Model } from "../config";
import { shellAssignments } from "../shell";
import type { StepFile } from "../steps";
import { readStatic, renderTemplate } from "../templates";
import { STEP } from "./names";
import { NEXTCLOUD_DATA, NEXTCLOUD_LOG } from "./nextcloud";
import type { Service, StepBody } from "./service";

const JAIL = "/etc/fail2ban/jail.d/ispmail.conf";
const DOVECOT_FILTER = "/etc/fail2ban/filter.d/dovecot.local";
const SSHD_FILTER = "/etc/fail2ban/filter.d/sshd.local";
const LOGIN_FILTER = "/etc/fail2ban/filter.d/ispmail-login.conf";
const LOGIN_ACTION = "/etc/fail2ban/action.d/ispmail-login-guard.conf";
const NEXTCLOUD_FILTER = "/etc/fail2ban/filter.d/ispmail-nextcloud.conf";
/** Creates Nextcloud's log file before fail2ban starts, when it is missing (see the file). */
export const NEXTCLOUD_LOG_DROPIN = "/etc/systemd/system/fail2ban.service.d/ispmail-nextcloud-log.conf";
export const LOGIN_GUARD = "/usr/local/sbin/ispmail-login-guard";

/** The admin networks the SSH jail never bans: all of adminCidrs except "everyone" (/0). */
export function sshExemptNetworks(model: Pick<Model, "server">): string[] {
    return model.server.adminCidrs.filter((c) => !c.endsWith("/0"));
}

function render(model: Model): StepBody {
    // The nextcloud jail reads Nextcloud's own log file (it does not log to the journal).
    const nextcloud = model.nextcloud.enabled;
    const view = { nextcloudLog: NEXTCLOUD_LOG, nextcloudData: NEXTCLOUD_DATA };
    const nextcloudFiles: StepFile[] = nextcloud
        ? [
              { path: NEXTCLOUD_FILTER, content: readStatic("fail2ban/filter.d/ispmail-nextcloud.conf"), mode: "0644" },
              { path: NEXTCLOUD_LOG_DROPIN, content: renderTemplate("fail2ban/fail2ban.service.d/ispmail-nextcloud-log.conf.mustache", view), mode: "0644" },
          ]
        : [];
    return {
        description: "fail2ban: ban addresses after repeated failed logins on SSH, SMTP AUTH and IMAP/POP3/ManageSieve; guard accounts that many addresses guess at",
        // python3-systemd is the journal backend; nftables is what Debian's banaction runs.
        // Both are only Recommends of fail2ban, and steps install without recommends.
        packages: ["fail2ban", "python3-systemd", "nftables"],
        files: [
            { path: JAIL, content: renderTemplate("fail2ban/jail.d/ispmail.conf.mustache", { sshExempt: sshExemptNetworks(model), webmail: model.webmail.enabled, nextcloud, ...view }), mode: "0644" },
            { path: DOVECOT_FILTER, content: readStatic("fail2ban/filter.d/dovecot.local"), mode: "0644" },
            { path: SSHD_FILTER, content: readStatic("fail2ban/filter.d/sshd.local"), mode: "0644" },
            // Failed logins per account (the ispmail-login jail), and what its ban does.
            { path: LOGIN_FILTER, content: readStatic("fail2ban/filter.d/ispmail-login.conf"), mode: "0644" },
            { path: LOGIN_ACTION, content: readStatic("fail2ban/action.d/ispmail-login-guard.conf"), mode: "0644" },
            { path: LOGIN_GUARD, content: readStatic("fail2ban/ispmail-login-guard"), mode: "0755" },
            ...nextcloudFiles,
        ],
        script: [shellAssignments({ NEXTCLOUD_LOG: nextcloud ? NEXTCLOUD_LOG : "", NEXTCLOUD_LOG_DROPIN }), readStatic("fail2ban/apply.sh")].join("\n"),
    };
}

export const fail2ban: Service = {
    name: STEP.fail2ban,
    after: [],
    // The steps whose daemons fail2ban watches. fail2ban works without them (a jail on an empty
    // journal stream just waits), but applying it last means the ports it protects are already in
    // use and a first `up` does not restart it twice.
    // The guard writes the directory's login_guards table (migration 005, directory step).
    follows: [STEP.base, STEP.postfix, STEP.dovecot, STEP.directory],
    render,
};
