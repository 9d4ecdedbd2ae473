/**
 * Every service module renders `Model -> Step[]`. This list is the whole server configuration,
 * applied by Pulumi (components/remote.ts) and by the lab (lab/) alike.
 */
import type { Model } from "../config";
import type { Step } from "../steps";
import { orderSteps } from "../steps";

/** One entry per service module (files/<service>/ holds its config files). */
const SERVICES: ReadonlyArray<(model: Model) => Step[]> = [
    // base, postgresql, postfix, dovecot, rspamd, web, nextcloud, ... are added here by their modules
];

/** All steps for the server, ordered so that `after` is respected. */
export function renderServerSteps(model: Model): Step[] {
    return orderSteps(SERVICES.flatMap((render) => render(model)));
}
