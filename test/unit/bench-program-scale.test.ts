/**
 * The program-scale benchmark evaluates with the node arguments Pulumi.yaml gives the language host
 * (bench/program-scale.ts projectNodeArgs): read from the project file, split into words as the host
 * splits `runtime.options.nodeargs`, and refused where the host would refuse them or where the
 * benchmark would split them differently (shell quoting).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { marginalMsPerResource, projectNodeArgs } from "../../bench/program-scale";

const project = (runtime: string) => `name: p\n${runtime}\n`;

describe("bench: program-scale node arguments", () => {
    test("bench: Pulumi.yaml's own nodeargs are the ones the benchmark evaluates with", () => {
        assert.deepEqual(projectNodeArgs(), ["--stack-trace-limit=0"]);
    });
    test("bench: nodeargs split into words; none when the runtime has no options or no nodeargs", () => {
        assert.deepEqual(projectNodeArgs(project("runtime:\n  name: nodejs\n  options:\n    nodeargs: \"--a=1   --b\"")), ["--a=1", "--b"]);
        assert.deepEqual(projectNodeArgs(project("runtime:\n  name: nodejs\n  options:\n    typescript: true")), []);
        assert.deepEqual(projectNodeArgs(project("runtime: nodejs")), []);
    });
    test("bench: a nodeargs that is no string, or uses shell quoting, is refused", () => {
        assert.throws(() => projectNodeArgs(project("runtime:\n  name: nodejs\n  options:\n    nodeargs: [--a]")), /must be a string/);
        assert.throws(() => projectNodeArgs(project("runtime:\n  name: nodejs\n  options:\n    nodeargs:")), /must be a string/);
        assert.throws(() => projectNodeArgs(project("runtime:\n  name: nodejs\n  options:\n    nodeargs: --title='a b'")), /quoting/);
    });
    test("bench: ms per added resource is the marginal cost between two stacks", () => {
        assert.equal(marginalMsPerResource({ seconds: 1, resources: 71 }, { seconds: 5.183, resources: 4254 }), 1);
        assert.throws(() => marginalMsPerResource({ seconds: 1, resources: 71 }, { seconds: 2, resources: 71 }));
    });
});
