/**
 * The one shape of a service: everything the rest of the program needs to know about it, in one
 * value exported by its module (components/services/<name>.ts, config files in files/<name>/).
 *
 * The server's steps, the secrets Pulumi generates, the firewall, the ports `npm run check` probes,
 * the SRV records and the web names (DNS A/AAAA, certificate, vhosts) are all derived from the list
 * of services in ./index.ts; nothing else lists them. docs/ARCHITECTURE.md has the recipe.
 */
import type { Model } from "../config";
import type { SecretSpec } from "../secrets";
import type { Step } from "../steps";

/**
 * What a deployment knows besides the stack config: facts known only while it runs. Pulumi and the
 * lab derive them with the same pure functions (components/dkim.ts planDkimSigning).
 */
export interface DeploymentFacts {
    /** The DKIM selector that signs now. */
    readonly dkimSigner: string;
}

/** What a service's render sees of the rest of the server (./index.ts derives it from the list). */
export interface RenderContext {
    readonly facts: DeploymentFacts;
    /** Every name served over HTTP(S): mailHost first, then each service's `webNames`, each once. */
    readonly webHosts: readonly string[];
}

/** A TCP port the server offers to the whole internet (firewall rule, `check` probe). */
export interface PublicPort {
    readonly port: number;
    /** Short name for reports ("submissions"). */
    readonly name: string;
    /** What it is for: the firewall rule's description. */
    readonly description: string;
    /** The systemd unit that listens on it (named when `check` finds it closed). */
    readonly daemon: string;
    /** TLS from the first byte: `check` reads the certificate there. */
    readonly implicitTls?: boolean;
    /** The RFC 6186 / RFC 8314 SRV service announcing it in every mail domain ("_submissions._tcp"). */
    readonly srv?: string;
}

/** A step as a service renders it; its name and order come from the service. */
export type StepBody = Omit<Step, "name" | "after" | "background">;

export interface Service {
    /** The step's name: the Pulumi resource name, so renaming needs an alias. Use {@link STEP}. */
    readonly name: string;
    /** Services that must be applied before this one (each must be part of the server). */
    readonly after: readonly string[];
    /** Services this one is applied after when the server has them (day-two services: fail2ban, backup). */
    readonly follows?: readonly string[];
    /** Part of the server only when this holds (default: always). */
    readonly enabled?: (model: Model) => boolean;
    /** The secrets its files reference (`secretRef(name)`), generated once and kept by Pulumi. */
    readonly secrets?: (model: Model) => readonly SecretSpec[];
    /** Ports it serves to the internet. */
    readonly publicPorts?: readonly PublicPort[];
    /** Host names it serves over HTTP(S): they get A/AAAA records and go on the certificate. */
    readonly webNames?: (model: Model) => readonly string[];
    /**
     * True when the step's content depends on {@link DeploymentFacts}: Pulumi then renders it once
     * per possible fact and waits for the real one, while every other step stays plain data.
     */
    readonly usesFacts?: boolean;
    /** Nothing on the mail path waits for it: its step runs at a lower CPU priority ({@link Step.background}). */
    readonly background?: boolean;
    readonly render: (model: Model, context: RenderContext) => StepBody;
}

export const isEnabled = (service: Service, model: Model): boolean => service.enabled?.(model) ?? true;
