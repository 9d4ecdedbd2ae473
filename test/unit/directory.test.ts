/**
 * The directory step as rendered: the desired state that directory_sync() receives, the password
 * files, and the migrations it ships. (The same data runs against PostgreSQL in directory-sql.test.ts.)
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseConfig } from "../../components/config";
import { DESIRED_DIRECTORY_FILE, migrationFiles, renderDesiredDirectory } from "../../components/services/directory";
import { renderServerSteps } from "../../components/services";
import { renderApplyScript, resolveSecrets, secretsOf } from "../../components/steps";
import { fixtureModel, validRawConfig } from "../fixtures/config";
import { SERVICE, secretSpecs, stepsOf } from "../../components/services";

const model = fixtureModel();
const [step] = stepsOf(SERVICE.directory, model);

describe("directory: rendering", () => {
    it("directory: runs after postgresql; the whole server orders base -> postgresql -> directory", () => {
        assert.deepEqual(step.after, ["postgresql"]);
        const names = renderServerSteps(model, { dkimSigner: model.dkimSelectors[0] }).map((s) => s.name);
        assert.ok(names.indexOf("base") < names.indexOf("postgresql") && names.indexOf("postgresql") < names.indexOf("directory"), names.join(" "));
    });

    it("directory: the desired state is the model's, split for SQL, with the catch-all as an empty local part", () => {
        const d = renderDesiredDirectory(model);
        assert.deepEqual(d.domains, ["example.com", "example.org"]);
        assert.deepEqual(
            d.users.map((u) => [u.address, u.local, u.domain, u.display_name, u.quota_mb]),
            [
                ["alice@example.org", "alice", "example.org", "Alice", 2048],
                ["bob@example.org", "bob", "example.org", null, 1024],
                ["carol@example.com", "carol", "example.com", null, 2048],
            ],
        );
        assert.deepEqual(d.aliases.find((a) => a.source_domain === "example.com" && a.source_local === ""), { source_local: "", source_domain: "example.com", destination: "carol@example.com" });
        assert.equal(d.aliases.length, model.aliases.length);
        assert.deepEqual(d.shares, [{ shared_mailbox_local: "alice", shared_mailbox_domain: "example.org", shared_to_local: "bob", shared_to_domain: "example.org", rights: "lrws" }]);
    });

    it("directory: a renamed mailbox tells the sync its old address, and its generated password its former secret name", () => {
        const raw = validRawConfig();
        Object.assign(raw.users[1], { address: "robert@example.org", renamedFrom: "bob@example.org" });
        raw.aliases[1].destination = "robert@example.org";
        raw.sharedMailboxes[0].sharedTo = "robert@example.org";
        const renamed = parseConfig(raw, { stack: "test" }).model;
        const d = renderDesiredDirectory(renamed);
        assert.deepEqual(d.users.find((u) => u.address === "robert@example.org"), { address: "robert@example.org", local: "robert", domain: "example.org", display_name: null, quota_mb: 1024, renamed_from: "bob@example.org" });
        assert.equal(d.users.filter((u) => "renamed_from" in u).length, 1, "only the renamed mailbox says renamed_from");
        const spec = secretSpecs(renamed).find((s) => s.name === "user:robert@example.org");
        assert.equal(spec?.formerName, "user:bob@example.org");
    });

    it("directory: the config's order does not matter (no spurious change of directory.json)", () => {
        const raw = validRawConfig();
        raw.users.reverse();
        raw.aliases.reverse();
        raw.domains.reverse();
        const shuffled = parseConfig(raw, { stack: "test" }).model;
        assert.deepEqual(renderDesiredDirectory(shuffled), renderDesiredDirectory(model));
    });

    it("directory: no password in any file; the configured passwords and the digest key reach the sync as a step input", () => {
        const json = step.files.find((f) => f.path === DESIRED_DIRECTORY_FILE);
        assert.ok(json);
        assert.equal(json.mode, "0600");
        assert.doesNotMatch(json.content, /@@secret|password/);
        for (const f of step.files) assert.doesNotMatch(f.content, /@@secret/, `${f.path} holds no secret`);
        const secrets = secretsOf(step);
        assert.deepEqual(secrets, ["directory.digest-key", "user:alice@example.org", "user:bob@example.org", "user:carol@example.com"]);
        assert.deepEqual(step.inputs?.map((i) => i.name), ["passwords"]);
        // Values base64-encoded: a configured password may hold spaces, quotes or newlines.
        const values = Object.fromEntries(secrets.map((n) => [n, n === "user:bob@example.org" ? "a b\n'c\"" : "pw"]));
        const resolved = resolveSecrets(step, values);
        assert.equal(
            resolved.inputs![0].content,
            ["digest-key cHc=", "user alice@example.org cHc=", `user bob@example.org ${Buffer.from("a b\n'c\"").toString("base64")}`, "user carol@example.com cHc=", ""].join("\n"),
        );
        const script = renderApplyScript(resolved);
        assert.match(script, /^ispmail_input passwords <<'ISPMAIL_B64'$/m);
        assert.doesNotMatch(script, /ispmail_file \/etc\/ispmail\/secrets\/user/);
        assert.match(step.script, /step_input passwords \| \/usr\/local\/sbin\/ispmail-db sync --migrate --passwords -/);
    });

    it("migrations: numbered 001..n without gaps and shipped in order", () => {
        const files = migrationFiles();
        assert.ok(files.length >= 4);
        files.forEach((m, i) => assert.equal(m.name.slice(0, 3), String(i + 1).padStart(3, "0"), m.name));
        const shipped = step.files.filter((f) => f.path.startsWith("/usr/local/share/ispmail/migrations/")).map((f) => f.path.split("/").pop());
        assert.deepEqual(shipped, files.map((m) => m.name));
    });

    it("migrations: the contract's views exist with the agreed columns", () => {
        const all = migrationFiles().map((m) => m.sql).join("\n");
        for (const view of ["virtual_domains", "virtual_mailboxes", "virtual_aliases", "sender_logins", "shared_mailboxes_view", "public_mailboxes_view", "nextcloud_users"]) {
            assert.match(all, new RegExp(`CREATE VIEW ${view} AS`), view);
        }
        assert.match(all, /GRANT SELECT ON virtual_domains, virtual_mailboxes, virtual_aliases, sender_logins,\s+shared_mailboxes_view, public_mailboxes_view\s+TO mailreader;/);
        assert.match(all, /GRANT SELECT ON nextcloud_users TO nextcloudauth;/);
    });
});
