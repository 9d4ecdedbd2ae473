/**
 * Every service module renders `Model -> Step[]`. This list is the whole server configuration,
 * applied by Pulumi (components/remote.ts) and by the lab (lab/) alike.
 */
import type { Model } from "../config";
import type { Step } from "../steps";
import { orderSteps, stepHash } from "../steps";
import { renderBackupSteps } from "./backup";
import { renderBaseSteps } from "./base";
import { renderCertbotSteps } from "./certbot";
import { renderDirectorySteps } from "./directory";
import { renderDovecotSteps } from "./dovecot";
import { renderFail2banSteps } from "./fail2ban";
import { renderNextcloudSteps } from "./nextcloud";
import { renderPostfixSteps } from "./postfix";
import { renderPostgresqlSteps } from "./postgresql";
import { renderRspamdSteps } from "./rspamd";
import { renderTlsSteps } from "./tls";
import { renderWebSteps } from "./web";

/**
 * What the server's configuration depends on besides the stack config: facts that are known only
 * during a deployment. Pulumi and the lab both derive them with the same pure functions.
 */
export interface DeploymentFacts {
    /** The DKIM selector that signs now (components/dkim.ts planDkimSigning). */
    readonly dkimSigner: string;
}

/** One entry per service module (files/<service>/ holds its config files). */
const SERVICES: ReadonlyArray<(model: Model, facts: DeploymentFacts) => Step[]> = [
    renderBaseSteps,
    renderPostgresqlSteps,
    renderDirectorySteps,
    renderTlsSteps,
    renderRspamdSteps,
    renderDovecotSteps,
    renderPostfixSteps,
    renderWebSteps,
    renderCertbotSteps,
    renderNextcloudSteps,
];

/**
 * Day-two services that come after whatever else is registered (fail2ban watches the daemons'
 * logins, backup dumps their data). They get the names of the steps above, so that they can
 * name in `after` exactly the ones that exist.
 */
const FOLLOWERS: ReadonlyArray<(model: Model, registeredSteps: readonly string[]) => Step[]> = [renderFail2banSteps, renderBackupSteps];

/** All steps for the server, ordered so that `after` is respected. */
export function renderServerSteps(model: Model, facts: DeploymentFacts): Step[] {
    const steps = SERVICES.flatMap((render) => render(model, facts));
    const registered = steps.map((s) => s.name);
    return orderSteps([...steps, ...FOLLOWERS.flatMap((render) => render(model, registered))]);
}

/**
 * The steps rendered once per selector that may sign. `steps` is the rendering for the first listed
 * selector (names, order and every step that is the same whichever signs: plain data known at
 * preview); `bySigner` holds, per selector, only the steps that differ between signers. A
 * deployment waits for the DNS publication times only for those, so a new selector shows as a
 * change of the rspamd step alone, not of every step.
 */
export function renderServerStepVariants(model: Model): { steps: Step[]; bySigner: ReadonlyMap<string, Readonly<Record<string, Step>>> } {
    const renders = model.dkimSelectors.map((signer) => [signer, renderServerSteps(model, { dkimSigner: signer })] as const);
    const [[, first]] = renders;
    const order = (steps: readonly Step[]) => steps.map((s) => s.name).join(" ");
    for (const [signer, steps] of renders) {
        if (order(steps) !== order(first)) throw new Error(`the steps differ in name or order when ${signer} signs: ${order(steps)}`);
    }
    const varies = new Set(first.filter((step, i) => renders.some(([, steps]) => stepHash(steps[i]) !== stepHash(step))).map((s) => s.name));
    const bySigner = new Map(renders.map(([signer, steps]) => [signer, Object.fromEntries(steps.filter((s) => varies.has(s.name)).map((s) => [s.name, s]))] as const));
    return { steps: first, bySigner };
}
