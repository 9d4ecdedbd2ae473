/**
 * The list of services: the whole server configuration, and the one place everything about the
 * services is derived from (steps, secrets, public ports, web names). Applied by Pulumi
 * (components/remote.ts) and by the lab (lab/) alike.
 *
 * Adding a service: components/services/<name>.ts exporting one {@link Service}, its config files
 * in files/<name>/ (with apply.sh), its name in ./names.ts and one entry in SERVICE below
 * (docs/ARCHITECTURE.md, "How to add a service").
 */
import type { Model } from "../config";
import type { SecretSpec } from "../secrets";
import type { Step } from "../steps";
import { orderSteps } from "../steps";
import { backup } from "./backup";
import { base } from "./base";
import { certbot } from "./certbot";
import { directory } from "./directory";
import { dkimSigner } from "./dkim-signer";
import { dovecot } from "./dovecot";
import { fail2ban } from "./fail2ban";
import { nextcloud } from "./nextcloud";
import { afterPackages, withPackagesStep } from "./packages";
import { postfix } from "./postfix";
import { postgresql } from "./postgresql";
import { resolver } from "./resolver";
import { rspamd } from "./rspamd";
import { PACKAGES_STEP } from "./names";
import { isEnabled, type DeploymentFacts, type PublicPort, type RenderContext, type Service } from "./service";
import { tls } from "./tls";
import { tlsPolicy } from "./tls-policy";
import { web } from "./web";
import { webmail } from "./webmail";

export type { DeploymentFacts, PublicPort, RenderContext, Service, StepBody } from "./service";
export { PACKAGES_STEP, STEP } from "./names";

/** Every service by its module's name (tests and tools pick one: `stepsOf(SERVICE.postfix, model)`). */
export const SERVICE = { base, resolver, tlsPolicy, postgresql, directory, tls, rspamd, dkimSigner, dovecot, postfix, web, certbot, webmail, nextcloud, fail2ban, backup } as const;

/** Every service, in a stable order (the steps are then ordered by their `after` and `follows`). */
export const SERVICES: readonly Service[] = Object.values(SERVICE);

/** The services of this stack (optional ones only when enabled). */
export function enabledServices(model: Model, services: readonly Service[] = SERVICES): Service[] {
    return services.filter((s) => isEnabled(s, model));
}

/** The facts of a settled deployment: the first listed DKIM selector signs. */
export const settledFacts = (model: Pick<Model, "dkimSelectors">): DeploymentFacts => ({ dkimSigner: model.dkimSelectors[0] });

/** Every name the server serves over HTTP(S): mailHost first, then each service's web names, each once. */
export function webHosts(model: Model, services: readonly Service[] = SERVICES): string[] {
    return [...new Set([model.mailHost, ...enabledServices(model, services).flatMap((s) => s.webNames?.(model) ?? [])])];
}

/** The public TCP ports of the stack's services, by port number. */
export function publicPorts(model: Model, services: readonly Service[] = SERVICES): PublicPort[] {
    const ports = enabledServices(model, services).flatMap((s) => s.publicPorts ?? []);
    const seen = new Set<number>();
    for (const p of ports) {
        if (seen.has(p.port)) throw new Error(`port ${p.port} is opened by more than one service`);
        seen.add(p.port);
    }
    return ports.sort((a, b) => a.port - b.port);
}

/** Every secret the stack's services need; Pulumi generates each once (components/generated-secrets.ts). */
export function secretSpecs(model: Model, services: readonly Service[] = SERVICES): SecretSpec[] {
    const specs = enabledServices(model, services).flatMap((s) => s.secrets?.(model) ?? []);
    const names = specs.map((s) => s.name);
    const twice = names.filter((n, i) => names.indexOf(n) !== i);
    if (twice.length) throw new Error(`secrets named by more than one service: ${[...new Set(twice)].join(", ")}`);
    return specs;
}

export interface RenderOptions {
    /** Deployment facts; those of a settled deployment when left out. */
    readonly facts?: DeploymentFacts;
    /** The service list (a test may add its own); the real one when left out. */
    readonly services?: readonly Service[];
}

/** What every step of one server is rendered with: its context, and the names of its services (for `follows`). */
function serverView(model: Model, facts: DeploymentFacts, services: readonly Service[]): { context: RenderContext; present: readonly string[] } {
    return { context: { facts, webHosts: webHosts(model, services) }, present: enabledServices(model, services).map((s) => s.name) };
}

function renderStep(service: Service, model: Model, view: ReturnType<typeof serverView>): Step {
    const follows = (service.follows ?? []).filter((name) => view.present.includes(name));
    return { name: service.name, ...service.render(model, view.context), after: [...service.after, ...follows], ...(service.background ? { background: true } : {}) };
}

/**
 * One service's step with the context of the whole server, or none when it is disabled. For tests
 * and single-step tools; a deployment uses {@link renderServerSteps}.
 */
export function stepsOf(service: Service, model: Model, opts: RenderOptions = {}): Step[] {
    if (!isEnabled(service, model)) return [];
    return [renderStep(service, model, serverView(model, opts.facts ?? settledFacts(model), opts.services ?? SERVICES))];
}

/**
 * All steps of the server, ordered so that `after` is respected: first the packages step (every
 * step's packages in one apt run, ./packages.ts), which every other step comes after.
 */
export function renderServerSteps(model: Model, facts: DeploymentFacts, services: readonly Service[] = SERVICES): Step[] {
    const view = serverView(model, facts, services);
    const steps = orderSteps(withPackagesStep(orderSteps(enabledServices(model, services).map((s) => renderStep(s, model, view)))));
    // A step at background priority must not hold up one that is not (it would slow the mail path).
    const background = new Set(steps.filter((s) => s.background).map((s) => s.name));
    for (const s of steps) {
        const waitsFor = s.background ? [] : s.after.filter((dep) => background.has(dep));
        if (waitsFor.length) throw new Error(`step ${s.name} runs after the background step(s) ${waitsFor.join(", ")}: make it background too, or them not`);
    }
    return steps;
}

/**
 * The steps whose content depends on the deployment facts (the DKIM signer), each rendered for
 * every selector that may sign: Pulumi checks all of them up front and applies the one the DNS
 * records' ages choose (components/mail-server.ts). By step name, in selector order.
 */
export function factStepCandidates(model: Model, services: readonly Service[] = SERVICES): ReadonlyMap<string, ReadonlyMap<string, Step>> {
    const out = new Map<string, ReadonlyMap<string, Step>>();
    // As in renderServerSteps: after the packages step, which installs what the settled rendering
    // lists (so a candidate must not list other packages).
    const settled = renderServerSteps(model, settledFacts(model), services);
    const installFirst = settled[0]?.name === PACKAGES_STEP;
    for (const service of enabledServices(model, services).filter((s) => s.usesFacts)) {
        const candidate = (signer: string) => {
            const step = stepsOf(service, model, { facts: { dkimSigner: signer }, services })[0];
            const listed = settled.find((s) => s.name === step.name)?.packages ?? [];
            if ((step.packages ?? []).join() !== listed.join()) throw new Error(`step ${step.name}: its packages must not depend on the deployment facts`);
            return installFirst ? afterPackages(step) : step;
        };
        out.set(service.name, new Map(model.dkimSelectors.map((signer) => [signer, candidate(signer)] as const)));
    }
    return out;
}
