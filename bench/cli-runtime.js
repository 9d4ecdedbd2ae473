/**
 * Preloaded (`node -r bench/cli-runtime.js ...`) by the program-scale benchmark: loads TypeScript the
 * way `pulumi up` / `pulumi preview` do for this project, so that the evaluation measured is the one
 * the CLI runs. Mirrors @pulumi/pulumi's own run script for a CommonJS project with
 * `typescript: true` (node_modules/@pulumi/pulumi/cmd/run/index.js and run.js, 3.270.0):
 * source-map-support registered first, then ts-node (the project's, else the vendored 7.0.1) with the
 * project's TypeScript, tsconfig.json, type checking unless tsconfig's `noCheck` or
 * PULUMI_NODEJS_TRANSPILE_ONLY says otherwise, and the same compiler options. Both install a
 * source-mapping Error.prepareStackTrace, which is what formats the stack @pulumi/pulumi captures
 * for every promise (tsx, which the rest of the repository runs on, maps stacks differently and more
 * cheaply).
 *
 * Plain JavaScript because it registers the TypeScript compiler itself.
 */
"use strict";
const path = require("node:path");

const pulumiDir = path.dirname(require.resolve("@pulumi/pulumi/package.json", { paths: [process.cwd()] }));
const semver = require(require.resolve("semver", { paths: [pulumiDir] }));
// cmd/run/index.js: `require("source-map-support/register")` (its own dependency).
require(require.resolve("source-map-support/register", { paths: [pulumiDir] }));

// cmd/run/run.js, the `typeScript` branch for a project that is not an ES module.
const tsutils = require(path.join(pulumiDir, "tsutils.js"));
const tsConfigPath = process.env.PULUMI_NODEJS_TSCONFIG_PATH ?? "tsconfig.json";
const skipProject = !require("node:fs").existsSync(tsConfigPath);
const compilerOptions = tsutils.loadTypeScriptCompilerOptions(tsConfigPath);
const transpileOnlyEnv = process.env.PULUMI_NODEJS_TRANSPILE_ONLY;
const transpileOnly = transpileOnlyEnv ? transpileOnlyEnv === "true" : compilerOptions.noCheck;
const { tsnodeRequire, typescriptRequire } = tsutils.typeScriptRequireStrings();
const tsVersion = semver.parse(require(typescriptRequire).version);
const useNodeNext = tsVersion && tsVersion.compare(new semver.SemVer("4.7.0")) >= 0;
require(tsnodeRequire).register({
    compiler: typescriptRequire,
    transpileOnly,
    project: tsConfigPath,
    skipProject,
    compilerOptions: {
        target: "ES2020",
        module: useNodeNext ? "nodenext" : "commonjs",
        moduleResolution: useNodeNext ? "nodenext" : "node",
        sourceMap: "true",
        ...compilerOptions,
    },
});
