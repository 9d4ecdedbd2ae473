/**
 * Every service module renders `Model -> Step[]`. This list is the whole server configuration,
 * applied by Pulumi (components/remote.ts) and by the lab (lab/) alike.
 */
import type { Model } from "../config";
import type { Step } from "../steps";
import { orderSteps } from "../steps";
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

/** One entry per service module (files/<service>/ holds its config files). */
const SERVICES: ReadonlyArray<(model: Model) => Step[]> = [
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
    // base, postgresql, postfix, dovecot, rspamd, web, nextcloud, ... are added here by their modules
];

/**
 * Day-two services that come after whatever else is registered (fail2ban watches the daemons'
 * logins, backup dumps their data). They get the names of the steps above, so that they can
 * name in `after` exactly the ones that exist.
 */
const FOLLOWERS: ReadonlyArray<(model: Model, registeredSteps: readonly string[]) => Step[]> = [renderFail2banSteps, renderBackupSteps];

/** All steps for the server, ordered so that `after` is respected. */
export function renderServerSteps(model: Model): Step[] {
    const steps = SERVICES.flatMap((render) => render(model));
    const registered = steps.map((s) => s.name);
    return orderSteps([...steps, ...FOLLOWERS.flatMap((render) => render(model, registered))]);
}
