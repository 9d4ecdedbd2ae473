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
import { renderStackFileJsonSchema, STACK_SCHEMA_PATH } from "../../components/config/json-schema";
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
});
