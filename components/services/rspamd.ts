/**
 * The `rspamd` step: Rspamd 3.12 from Debian with Valkey (Debian's Redis) for Bayes and
 * greylisting, the milter on localhost:11332 for Postfix, the controller on loopback with a hashed
 * password, and DKIM signing of our users' mail for every managed domain with the selector that
 * signs now (components/dkim.ts: the first listed once its record has been public for its TTL).
 *
 * Config files: files/rspamd/local.d (merged into Rspamd's defaults), lua.local.d (the From-header
 * ownership rule), apply.sh (controller password hash, configtest, reload).
 */
import type { Model } from "../config";
import { dkimKeySecret } from "../secrets";
import type { Step, StepFile } from "../steps";
import type { DeploymentFacts } from "./index";
import { secretRef } from "../steps";
import { readStatic, renderTemplate } from "../templates";

export const RSPAMD_STEP = "rspamd";
/** DKIM private keys live on the data volume: they are state (their public halves are in DNS). */
export const DKIM_DIR = "/srv/ispmail/dkim";
export const MILTER_ADDRESS = "inet:localhost:11332";

export const dkimKeyPath = (selector: string) => `${DKIM_DIR}/${selector}.key`;

/** local.d files copied as they are. */
const LOCAL_D = [
    "worker-proxy.inc",
    "worker-normal.inc",
    "worker-controller.inc",
    "redis.conf",
    "classifier-bayes.conf",
    "greylist.conf",
    "actions.conf",
    "milter_headers.conf",
    "options.inc",
] as const;

/** `signer`: the selector that signs now (components/dkim.ts planDkimSigning decides). */
export function renderDkimSigningConf(model: Model, signer: string): string {
    if (!model.dkimSelectors.includes(signer)) throw new Error(`DKIM signer "${signer}" is not one of ispmail:dkimSelectors (${model.dkimSelectors.join(", ")})`);
    return renderTemplate("rspamd/local.d/dkim_signing.conf.mustache", {
        selector: signer,
        domains: model.domains.map((domain) => ({ domain, selector: signer, keyPath: dkimKeyPath(signer) })),
    });
}

export function renderRspamdSteps(model: Model, facts: DeploymentFacts): Step[] {
    const files: StepFile[] = [
        ...LOCAL_D.map((name) => ({ path: `/etc/rspamd/local.d/${name}`, content: readStatic(`rspamd/local.d/${name}`), mode: "0644" })),
        { path: "/etc/rspamd/local.d/dkim_signing.conf", content: renderDkimSigningConf(model, facts.dkimSigner), mode: "0644" },
        { path: "/etc/rspamd/lua.local.d/ispmail_from_header.lua", content: readStatic("rspamd/lua.local.d/ispmail_from_header.lua"), mode: "0644" },
        // Every selector's key stays installed (rotation switches the signer), readable by Rspamd
        // only; sorted, so that reordering the list (the rotation's switch) changes only the signer.
        ...[...model.dkimSelectors].sort().map((s) => ({ path: dkimKeyPath(s), content: secretRef(dkimKeySecret(s)), owner: "_rspamd", group: "_rspamd", mode: "0600", secret: true })),
        { path: "/etc/ispmail/secrets/rspamd.controller", content: secretRef("rspamd.controller"), mode: "0600", secret: true },
    ];
    return [
        {
            name: RSPAMD_STEP,
            description: "Rspamd: spam filter milter, Bayes/greylisting in Valkey, DKIM signing, controller on loopback",
            packages: ["rspamd", "valkey-server"],
            files,
            script: readStatic("rspamd/apply.sh"),
            after: ["base"],
        },
    ];
}
