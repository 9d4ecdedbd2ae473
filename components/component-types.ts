/**
 * The type tokens of our component resources, in the `package:index:Type` form Pulumi documents,
 * and the token each had before (version 0.3 and earlier used `ispmail:<module>:Type`, and one
 * `ispmail:Type`). A component's type is part of its URN and of every child's, so a changed token
 * alone would make `pulumi up` delete and recreate the whole stack — server, volume and keys
 * included. The alias to the former token tells the engine they are the same resources; Pulumi
 * derives the children's aliases from their parent's.
 */
import type * as pulumi from "@pulumi/pulumi";

export const COMPONENT_TYPES = {
    MailServer: { type: "ispmail:index:MailServer", formerly: "ispmail:MailServer" },
    Host: { type: "ispmail:index:Host", formerly: "ispmail:cloud:Host" },
    MailDns: { type: "ispmail:index:MailDns", formerly: "ispmail:dns:MailDns" },
    GeneratedSecrets: { type: "ispmail:index:GeneratedSecrets", formerly: "ispmail:secrets:GeneratedSecrets" },
    ServerConfig: { type: "ispmail:index:ServerConfig", formerly: "ispmail:server:ServerConfig" },
} as const;

export type ComponentKind = keyof typeof COMPONENT_TYPES;

/** The component's type token and its options with the alias to the former token added. */
export function componentType(kind: ComponentKind, opts?: pulumi.ComponentResourceOptions): [string, pulumi.ComponentResourceOptions] {
    const { type, formerly } = COMPONENT_TYPES[kind];
    return [type, { ...opts, aliases: [...(opts?.aliases ?? []), { type: formerly }] }];
}
