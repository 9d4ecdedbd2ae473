/**
 * A JSON Schema of `Pulumi.<stack>.yaml`, generated from the config contract (./schema.ts, zod), so
 * that editors complete and check the `ispmail:` keys as the program will (the YAML language server
 * reads the `# yaml-language-server: $schema=...` line at the top of the stack files). The program
 * itself still validates with zod at start; this schema only brings the same rules into the editor.
 *
 * The same contract declares the scalar keys in Pulumi.yaml's `config:` section (project config,
 * Pulumi >= 3.44), so the CLI itself names a missing or mistyped key before the program runs.
 *
 *   npm run schema    writes schema/stack.schema.json and Pulumi.yaml's `config:` section (a unit
 *                     test fails while either is out of date)
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseDocument } from "yaml";
import { z } from "zod";
import { configSchema } from "./schema";

export const STACK_SCHEMA_PATH = join(__dirname, "..", "..", "schema", "stack.schema.json");
export const PROJECT_FILE_PATH = join(__dirname, "..", "..", "Pulumi.yaml");

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

/** One key of Pulumi.yaml's `config:` section (https://www.pulumi.com/docs/iac/concepts/projects/project-file/). */
export interface ProjectConfigDeclaration {
    readonly type: "string" | "integer" | "boolean";
    readonly description: string;
    readonly default?: string | number | boolean;
}

/**
 * The `ispmail:` keys Pulumi.yaml declares: the scalar ones that are required (no default) or have
 * a fixed default. The CLI treats every declared key without a default as required and fills in a
 * declared default, so optional keys whose default is not one value (`protect`: by the stack's
 * name; `spamhausDqsKey`: absent unless given) stay undeclared, as do lists and mappings (the CLI
 * types only strings, numbers, booleans and lists of them); the program checks all of them.
 */
export function projectConfigDeclarations(): Record<string, ProjectConfigDeclaration> {
    const config = stackFileJsonSchema().properties.config as JsonSchema;
    const declared: Record<string, ProjectConfigDeclaration> = {};
    for (const [key, schema] of Object.entries(config.properties as Record<string, JsonSchema>)) {
        if (!["string", "integer", "boolean"].includes(schema.type)) continue;
        const required = (config.required as string[]).includes(key);
        if (!required && schema.default === undefined) continue;
        declared[key] = { type: schema.type, description: schema.description, ...(schema.default !== undefined ? { default: schema.default } : {}) };
    }
    return declared;
}

/** Pulumi.yaml with its `config:` section made from the contract; everything else kept as written. */
export function renderProjectFile(current: string = readFileSync(PROJECT_FILE_PATH, "utf8")): string {
    const doc = parseDocument(current);
    const section = doc.createNode(projectConfigDeclarations());
    section.commentBefore = " Generated from components/config/schema.ts by `npm run schema`; the other ispmail: keys are checked by the program.";
    doc.set("config", section);
    return doc.toString({ lineWidth: 0 });
}

export function renderStackFileJsonSchema(): string {
    return `${JSON.stringify(stackFileJsonSchema(), null, 2)}\n`;
}

if (require.main === module) {
    writeFileSync(STACK_SCHEMA_PATH, renderStackFileJsonSchema());
    writeFileSync(PROJECT_FILE_PATH, renderProjectFile());
    console.log(`wrote ${STACK_SCHEMA_PATH} and the config section of ${PROJECT_FILE_PATH}`);
}
