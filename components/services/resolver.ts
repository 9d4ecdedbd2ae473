/**
 * The `resolver` step: unbound from Debian on 127.0.0.1 and ::1, validating DNSSEC, as the system's
 * resolver (/etc/resolv.conf) and so Postfix's and Rspamd's. Its own, because DNS blocklists
 * refuse the large shared resolvers of hosters (Rspamd's lists would silently never match), and
 * validating, because Postfix's DANE may only trust TLSA answers that were.
 *
 * Full recursion from the root by default; `ispmail:resolver.forwardTo` sends the questions to
 * other servers instead and `ispmail:resolver.trustAnchors` adds trust anchors beside the root's
 * (the lab does both: its signed zones live on the lab DNS, which has no signed root above them).
 *
 * Config files: files/resolver (the unbound drop-in, apply.sh, which points /etc/resolv.conf at
 * unbound once it answers).
 */
import type { Model } from "../config";
import { shellAssignments } from "../shell";
import { readStatic, renderTemplate } from "../templates";
import { STEP } from "./names";
import type { Service, StepBody } from "./service";

export const UNBOUND_CONF = "/etc/unbound/unbound.conf.d/ispmail.conf";

export function renderUnboundConf(resolver: Model["resolver"]): string {
    return renderTemplate("resolver/ispmail.conf.mustache", {
        anchoredZones: resolver.trustAnchors.map((anchor) => ({ anchor, zone: anchor.split(" ")[0] })),
        hasForwarders: resolver.forwardTo.length > 0,
        forwardTo: resolver.forwardTo,
    });
}

/**
 * The step for any machine: the lab's foreign MTA validates through the very same resolver.
 * `probeZone`: a zone the step asks for once unbound runs, before it becomes the system's resolver.
 */
export function renderResolverStep(resolver: Model["resolver"], probeZone: string): StepBody {
    return {
        description: resolver.forwardTo.length
            ? `Resolver: unbound on loopback, validating, forwarding to ${resolver.forwardTo.join(", ")}`
            : "Resolver: unbound on loopback, validating, recursing from the root",
        // dns-root-data: the root's DNSSEC key, from which unbound's helper starts the anchor file it
        // keeps current (RFC 5011); only a Recommends of unbound, and steps install without those.
        // bind9-dnsutils: dig and delv, for the step's own check and for the admin.
        packages: ["unbound", "dns-root-data", "bind9-dnsutils"],
        files: [{ path: UNBOUND_CONF, content: renderUnboundConf(resolver), mode: "0644" }],
        script: [shellAssignments({ PROBE_ZONE: probeZone }), readStatic("resolver/apply.sh")].join("\n"),
    };
}

const render = (model: Model): StepBody => renderResolverStep(model.resolver, model.domains[0]);

export const resolver: Service = { name: STEP.resolver, after: [STEP.base], render };
