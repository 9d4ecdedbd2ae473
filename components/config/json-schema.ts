/**
 * A JSON Schema of `Pulumi.<stack>.yaml`, generated from the config contract (./schema.ts, zod), so
 * that editors complete and check the `ispmail:` keys as the program will (the YAML language server
 * reads the `# yaml-language-server: $schema=...` line at the top of the stack files). The program
 * itself still validates with zod at start; this schema only brings the same rules into the editor.
 *
 *   npm run schema    writes schema/stack.schema.json (a unit test fails while it is out of date)
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { configSchema } from "./schema";

export const STACK_SCHEMA_PATH = join(__dirname, "..", "..", "schema", "stack.schema.json");

/** What `pulumi config set --secret` writes in place of a value. */
const SECURE_VALUE = { type: "object", properties: { secure: { type: "string" } }, required: ["secure"], additionalProperties: false, description: "a value encrypted by pulumi config set --secret" };

type JsonSchema = Record<string, any>;

export function stackFileJsonSchema(): JsonSchema {
    // io "input": what the file may hold (defaults make keys optional); transforms (lowercasing) and
    // refinements cannot be expressed and are left to the program's own validation.
    const contract = z.toJSONSchema(configSchema, { io: "input", unrepresentable: "any" }) as JsonSchema;
    const properties: JsonSchema = {};
    for (const [key, schema] of Object.entries(contract.properties as JsonSchema)) properties[`ispmail:${key}`] = schema;
    // The values that may (or must) be secrets are written encrypted by the CLI.
    const password = properties["ispmail:users"].items.properties.password;
    properties["ispmail:users"].items.properties.password = { anyOf: [password, SECURE_VALUE] };
    properties["ispmail:spamhausDqsKey"] = { anyOf: [properties["ispmail:spamhausDqsKey"], SECURE_VALUE] };
    return {
        $schema: "https://json-schema.org/draft/2020-12/schema",
        title: "ispmail stack file (Pulumi.<stack>.yaml)",
        description: "Generated from components/config/schema.ts by `npm run schema`; do not edit.",
        type: "object",
        properties: {
            config: {
                type: "object",
                properties,
                required: (contract.required as string[]).map((k) => `ispmail:${k}`),
                // Other namespaces (a provider's settings) are the CLI's business.
                propertyNames: { not: { pattern: "^ispmail:(?!(" + Object.keys(contract.properties).join("|") + ")$)" } },
            },
        },
        required: ["config"],
    };
}

export function renderStackFileJsonSchema(): string {
    return `${JSON.stringify(stackFileJsonSchema(), null, 2)}\n`;
}

if (require.main === module) {
    writeFileSync(STACK_SCHEMA_PATH, renderStackFileJsonSchema());
    console.log(`wrote ${STACK_SCHEMA_PATH}`);
}
