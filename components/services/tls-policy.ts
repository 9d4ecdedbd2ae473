/**
 * The `tls-policy` step: how Postfix decides, per destination, what TLS it must get when sending
 * (smtp_tls_policy_maps), in the order RFC 8461 (section 2) asks for:
 *  1. DANE: a destination whose DNSSEC-signed MX hosts publish TLSA records gets "dane" from
 *     ispmail-dane-first-policy (a small socketmap table of ours on 127.0.0.1:8462), so that an
 *     MTA-STS policy the same domain may publish never overrides (and never weakens) DANE;
 *  2. MTA-STS: every other destination is looked up by postfix-mta-sts-resolver (Debian) on
 *     127.0.0.1:8461, which fetches and caches the domain's policy and answers "secure match=..."
 *     for a policy in enforce mode (a certificate from a public CA for a listed MX, or no mail);
 *  3. neither: main.cf's smtp_tls_security_level = dane (opportunistic TLS).
 * postfix-mta-sts-resolver has no DANE lookup of its own and its README asks for one before it;
 * Debian 13 ships none (postfix-tlspol is not packaged), hence the table of ours.
 *
 * Config files: files/tls-policy (the resolver's settings, our table and its unit, apply.sh).
 */
import type { Model } from "../config";
import type { StepFile } from "../steps";
import { readStatic } from "../templates";
import { STEP } from "./names";
import type { Service, StepBody } from "./service";

/** The tables, in lookup order (main.cf's smtp_tls_policy_maps is rendered from this). */
export const TLS_POLICY_MAPS = ["socketmap:inet:127.0.0.1:8462:dane-first", "socketmap:inet:127.0.0.1:8461:postfix"] as const;

export const DANE_FIRST_SCRIPT = "/usr/local/lib/ispmail/dane-first-policy";
const DANE_FIRST_UNIT = "/etc/systemd/system/ispmail-dane-first-policy.service";

function render(_model: Model): StepBody {
    const file = (path: string, content: string, mode = "0644"): StepFile => ({ path, content, owner: "root", group: "root", mode });
    return {
        description: "Outbound TLS policy: DANE first (ispmail-dane-first-policy), then MTA-STS (postfix-mta-sts-resolver)",
        // python3-dnspython: our table's DNS lookups (through the server's validating unbound).
        packages: ["postfix-mta-sts-resolver", "python3-dnspython"],
        files: [
            // In place before the packages step installs the resolver, so that its postinst starts
            // it with these settings (dpkg's --force-confold keeps this file; the package's own
            // stays beside it as .dpkg-dist) and a fresh server's step need not restart it.
            { ...file("/etc/mta-sts-daemon.yml", readStatic("tls-policy/mta-sts-daemon.yml")), beforePackages: true },
            file(DANE_FIRST_SCRIPT, readStatic("tls-policy/dane-first-policy.py"), "0755"),
            file(DANE_FIRST_UNIT, readStatic("tls-policy/ispmail-dane-first-policy.service")),
        ],
        script: readStatic("tls-policy/apply.sh"),
    };
}

// After the resolver: both tables ask it, and only its validated answers make DANE apply.
export const tlsPolicy: Service = { name: STEP.tlsPolicy, after: [STEP.resolver], render };
