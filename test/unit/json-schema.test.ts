/**
 * The stack files' JSON Schema (schema/stack.schema.json, generated from the zod contract by `npm run
 * schema`): up to date, the example and lab stack files pass it, and the mistakes an editor should
 * flag (a misspelt key, a wrong type, a value out of range, a plaintext where the CLI writes a
 * secret is fine but a number is not) fail it, checked with Ajv (JSON Schema 2020-12).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import Ajv2020 from "ajv/dist/2020";
import { parse } from "yaml";
import { PROJECT_FILE_PATH, projectConfigDeclarations, renderProjectFile, renderStackFileJsonSchema, STACK_SCHEMA_PATH } from "../../components/config/json-schema";
import { configSchema } from "../../components/config/schema";
import { REPO_ROOT } from "../fixtures/config";

const STACK_FILES = ["Pulumi.prod.yaml", "Pulumi.staging.yaml", "lab/stack.yaml"];
const validator = () => new Ajv2020({ strict: false, allErrors: true }).compile(JSON.parse(readFileSync(STACK_SCHEMA_PATH, "utf8")));
const stackFile = (file: string) => parse(readFileSync(join(REPO_ROOT, file), "utf8")) as { config: Record<string, unknown> };

describe("json schema of the stack files", () => {
    it("schema: the committed schema is what `npm run schema` generates from the contract", () => {
        assert.equal(readFileSync(STACK_SCHEMA_PATH, "utf8"), renderStackFileJsonSchema(), "run `npm run schema`");
    });

    it("schema: the example and lab stack files pass it, and name it for the editor on their first line", () => {
        const validate = validator();
        for (const file of STACK_FILES) {
            assert.equal(validate(stackFile(file)), true, `${file}: ${JSON.stringify(validate.errors)}`);
            if (file.startsWith("Pulumi.")) assert.match(readFileSync(join(REPO_ROOT, file), "utf8").split("\n")[0], /^# yaml-language-server: \$schema=\.\/schema\/stack\.schema\.json$/);
        }
    });

    it("schema: a misspelt ispmail key, a wrong type, a value out of range and a missing required key fail; a secret written by the CLI passes", () => {
        const validate = validator();
        const base = stackFile("Pulumi.prod.yaml");
        const variant = (change: (c: Record<string, any>) => void) => {
            const copy = structuredClone(base);
            change(copy.config);
            return validate(copy) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
        };
        assert.notDeepEqual(variant((c) => (c["ispmail:mailhost"] = "mx1.example.org")), []);
        assert.notDeepEqual(variant((c) => (c["ispmail:defaultQuotaMb"] = "big")), []);
        assert.notDeepEqual(variant((c) => (c["ispmail:defaultQuotaMb"] = 0)), []);
        assert.notDeepEqual(variant((c) => delete c["ispmail:mailHost"]), []);
        assert.notDeepEqual(variant((c) => (c["ispmail:dbAdmin"] = "pgadmin4")), []);
        assert.deepEqual(variant((c) => ((c["ispmail:users"] as any[])[0].password = { secure: "v1:abcdef" })), []);
        assert.deepEqual(variant((c) => (c["hcloud:endpoint"] = "https://api.hetzner.cloud/v1")), [], "another namespace is the CLI's business");
    });
    it("project config: Pulumi.yaml declares the required and the defaulted scalar keys as `npm run schema` generates them, with the contract's defaults, and every stack file sets each required one", () => {
        assert.equal(readFileSync(PROJECT_FILE_PATH, "utf8"), renderProjectFile(), "run `npm run schema`");
        const declared = (parse(readFileSync(PROJECT_FILE_PATH, "utf8")) as { config: Record<string, { type: string; default?: unknown; value?: unknown; description: string }> }).config;
        assert.deepEqual(Object.keys(declared).sort(), ["ispmail:adminEmail", "ispmail:dbAdmin", "ispmail:defaultQuotaMb", "ispmail:mailHost"]);
        assert.deepEqual(declared, JSON.parse(JSON.stringify(projectConfigDeclarations())));
        for (const [key, d] of Object.entries(declared)) {
            // The CLI's own rules for project config (sdk/go/common/workspace/project.go Validate):
            // a key of the project's namespace, never both default and value, a default of its type.
            assert.match(key, /^ispmail:[a-zA-Z]+$/);
            assert.equal(d.value, undefined, key);
            assert.ok(d.description.length > 10, key);
            if (d.default !== undefined) {
                assert.equal(typeof d.default, d.type === "integer" ? "number" : d.type, key);
                const name = key.slice("ispmail:".length) as keyof typeof configSchema.shape;
                assert.deepEqual(configSchema.shape[name].parse(undefined), d.default, `${key}: the same default as the program's`);
            }
        }
        // A declared key without a default is required by the CLI: every stack file must set it.
        for (const file of STACK_FILES) {
            const config = stackFile(file).config;
            for (const [key, d] of Object.entries(declared)) if (d.default === undefined) assert.ok(key in config, `${file} sets ${key}`);
        }
    });
});
