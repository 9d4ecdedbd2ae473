/**
 * The `dkim-signer` step: which DKIM selector Rspamd signs our users' mail with
 * (/etc/rspamd/local.d/dkim_signing.conf) and seals arriving mail with (ARC, local.d/arc.conf, so
 * that what aliases and Sieve redirects forward carries our verdict), and a reload of Rspamd when
 * that changes.
 *
 * It is the one step whose content depends on a deployment fact: the signer is the first listed
 * selector once its record has been public for its TTL (components/dkim.ts planDkimSigning, from
 * Cloudflare's record times in Pulumi and the lab DNS's serving times in the lab). Keeping it apart
 * from the rspamd step (packages, keys, everything else) means only this small step waits for the
 * DNS records during `pulumi up`, and a rotation's switch shows in a preview as a change of this
 * step alone.
 *
 * Config files: files/dkim-signer (the template and apply.sh).
 */
import type { Model } from "../config";
import { renderTemplate, readStatic } from "../templates";
import { STEP } from "./names";
import { dkimKeyPath } from "./rspamd";
import type { RenderContext, Service, StepBody } from "./service";

export const DKIM_SIGNING_CONF = "/etc/rspamd/local.d/dkim_signing.conf";
export const ARC_CONF = "/etc/rspamd/local.d/arc.conf";

/** The view of both templates; `signer`: the selector that signs now. */
function signingView(model: Pick<Model, "domains" | "dkimSelectors">, signer: string) {
    if (!model.dkimSelectors.includes(signer)) throw new Error(`DKIM signer "${signer}" is not one of ispmail:dkimSelectors (${model.dkimSelectors.join(", ")})`);
    return { selector: signer, domains: model.domains.map((domain) => ({ domain, selector: signer, keyPath: dkimKeyPath(signer) })) };
}

export function renderDkimSigningConf(model: Pick<Model, "domains" | "dkimSelectors">, signer: string): string {
    return renderTemplate("dkim-signer/dkim_signing.conf.mustache", signingView(model, signer));
}

/** ARC seals use the DKIM signer's key: a rotation switches both at once. */
export function renderArcConf(model: Pick<Model, "domains" | "dkimSelectors">, signer: string): string {
    return renderTemplate("dkim-signer/arc.conf.mustache", signingView(model, signer));
}

function render(model: Model, { facts }: RenderContext): StepBody {
    return {
        description: `DKIM signing and ARC sealing: selector ${facts.dkimSigner} signs mail from ${model.domains.length} domain(s)`,
        files: [
            { path: DKIM_SIGNING_CONF, content: renderDkimSigningConf(model, facts.dkimSigner), mode: "0644" },
            { path: ARC_CONF, content: renderArcConf(model, facts.dkimSigner), mode: "0644" },
        ],
        script: readStatic("dkim-signer/apply.sh"),
    };
}

// Nothing waits for it: Rspamd signs with the chosen selector from the reload this step does.
export const dkimSigner: Service = { name: STEP.dkimSigner, after: [STEP.rspamd], usesFacts: true, background: true, render };
