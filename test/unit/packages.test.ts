/**
 * The packages step (components/services/packages.ts): every package of every step in one apt run,
 * first, derived from the steps themselves — with their debconf answers and the files their packages
 * read at install time — and every other step after it. (The edges as Pulumi registers them:
 * graph.test.ts; the apply script's order and ispmail_packages run for real: steps.test.ts.)
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { factStepCandidates, PACKAGES_STEP, renderServerSteps, settledFacts, type Service } from "../../components/services";
import { renderPackagesStep, withPackagesStep } from "../../components/services/packages";
import { renderApplyScript, type Step } from "../../components/steps";
import { fixtureModel, labModel, validRawConfig } from "../fixtures/config";
import { parseConfig } from "../../components/config";

const stepOf = (name: string, more: Partial<Step> = {}): Step => ({ name, description: name, files: [], script: "", after: [], ...more });

describe("packages: the one apt run of the whole server", () => {
    for (const [what, model] of [
        ["the lab stack", labModel()],
        ["the fixture stack", fixtureModel()],
    ] as const) {
        it(`packages: ${what}: first, every other step after it, every step's package once`, () => {
            const steps = renderServerSteps(model, settledFacts(model));
            const [install, ...others] = steps;
            assert.equal(install.name, PACKAGES_STEP);
            assert.deepEqual(install.after, []);
            for (const s of others) assert.equal(s.after[0], PACKAGES_STEP, `${s.name} comes after the packages step`);
            const listed = others.flatMap((s) => s.packages ?? []);
            assert.deepEqual(install.packages, [...new Set(listed)], "each package of each step, once, in the steps' order");
            // What the step scripts used to install themselves is declared now.
            for (const p of ["postgresql-17", "postgresql-client-17", "python3-psycopg2", "postfix", "dovecot-core", "rspamd", "apache2", "systemd-timesyncd|chrony|ntpsec|openntpd"]) {
                assert.ok(install.packages?.includes(p), p);
            }
            for (const s of others) assert.doesNotMatch(s.script, /ispmail_packages/, `${s.name}: the script installs nothing itself`);
            // Every step's debconf answers (Postfix's "No configuration" above all), set first.
            assert.deepEqual(install.debconf, [...new Set(others.flatMap((s) => s.debconf ?? []))]);
            assert.ok(install.debconf?.includes("postfix postfix/main_mailer_type select No configuration"));
            // postgresql-common's createcluster drop-in and the MTA-STS resolver's settings are in place before the one apt run.
            assert.deepEqual(install.files.map((f) => f.path).sort(), ["/etc/mta-sts-daemon.yml", "/etc/postgresql-common/createcluster.d/ispmail.conf"]);
            const script = renderApplyScript(install);
            const at = (line: RegExp) => script.search(line);
            assert.ok(at(/^ispmail_debconf <</m) > 0 && at(/^ispmail_debconf <</m) < at(/^ispmail_file \/etc\/postgresql-common\//m));
            assert.ok(at(/^ispmail_file \/etc\/postgresql-common\//m) < at(/^ispmail_packages /m));
            assert.equal(script.match(/^ispmail_packages /gm)?.length, 1, "one apt run");
            assert.deepEqual(install.inputs, undefined);
        });
    }

    it("packages: web's own order is kept (php8.4-fpm before the database admin that needs an FPM)", () => {
        const raw = validRawConfig();
        const { model } = parseConfig(raw, { stack: "test" });
        const pkgs = renderServerSteps(model, settledFacts(model))[0].packages ?? [];
        assert.ok(pkgs.indexOf("php8.4-fpm") < pkgs.indexOf("phppgadmin"));
    });

    it("packages: the DKIM signer's candidates have the same edges as the step that is applied", () => {
        const raw = validRawConfig();
        const { model } = parseConfig(raw, { stack: "test" });
        const settled = renderServerSteps(model, settledFacts(model));
        for (const [name, bySigner] of factStepCandidates(model)) {
            const applied = settled.find((s) => s.name === name)!;
            for (const candidate of bySigner.values()) assert.deepEqual(candidate.after, applied.after);
        }
    });

    it("packages: no step with packages, no packages step and no edge", () => {
        const steps = [stepOf("a"), stepOf("b", { after: ["a"] })];
        assert.equal(renderPackagesStep(steps), undefined);
        assert.deepEqual(withPackagesStep(steps), steps);
        const services: Service[] = [{ name: "only", after: [], render: () => ({ description: "x", files: [], script: "" }) }];
        assert.deepEqual(renderServerSteps(fixtureModel(), settledFacts(fixtureModel()), services).map((s) => [s.name, s.after]), [["only", []]]);
    });

    it("packages: two steps answering one debconf question differently, or shipping one install-time file twice differently, are refused", () => {
        const a = stepOf("a", { packages: ["x"], debconf: ["x x/q select one"] });
        assert.throws(() => renderPackagesStep([a, stepOf("b", { packages: ["y"], debconf: ["x x/q select two"] })]), /answered twice, differently/);
        assert.deepEqual(renderPackagesStep([a, stepOf("b", { packages: ["x"], debconf: ["x x/q select one"] })])?.debconf, ["x x/q select one"]);
        const early = (content: string) => ({ path: "/etc/x.conf", content, beforePackages: true });
        assert.throws(() => renderPackagesStep([stepOf("a", { packages: ["x"], files: [early("1")] }), stepOf("b", { files: [early("2")] })]), /installed before the packages by two steps/);
        assert.equal(renderPackagesStep([stepOf("a", { packages: ["x"], files: [early("1"), { path: "/etc/late", content: "" }] }), stepOf("b", { files: [early("1")] })])?.files.length, 1);
    });
});
