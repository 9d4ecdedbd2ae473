/**
 * The directory step as rendered: the desired state that directory_sync() receives, the password
 * files, and the migrations it ships. (The same data runs against PostgreSQL in directory-sql.test.ts.)
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseConfig } from "../../components/config";
import { DESIRED_DIRECTORY_FILE, migrationFiles, renderDesiredDirectory, userPasswordFile } from "../../components/services/directory";
import { renderServerSteps } from "../../components/services";
import { renderApplyScript, resolveSecrets, secretsOf } from "../../components/steps";
import { fixtureModel, validRawConfig } from "../fixtures/config";
import { SERVICE, stepsOf } from "../../components/services";

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

    it("directory: the config's order does not matter (no spurious change of directory.json)", () => {
        const raw = validRawConfig();
        raw.users.reverse();
        raw.aliases.reverse();
        raw.domains.reverse();
        const shuffled = parseConfig(raw, { stack: "test" }).model;
        assert.deepEqual(renderDesiredDirectory(shuffled), renderDesiredDirectory(model));
    });

    it("directory: directory.json holds no password, and each mailbox password is a root-only secret file", () => {
        const json = step.files.find((f) => f.path === DESIRED_DIRECTORY_FILE);
        assert.ok(json);
        assert.equal(json.mode, "0600");
        assert.ok(!json.secret);
        assert.doesNotMatch(json.content, /@@secret:|password"\s*:/);
        const secrets = secretsOf(step);
        assert.deepEqual(secrets, ["user:alice@example.org", "user:bob@example.org", "user:carol@example.com"]);
        for (const u of model.users) {
            const f = step.files.find((x) => x.path === `/etc/ispmail/secrets/${userPasswordFile(u.address)}`);
            assert.ok(f, u.address);
            assert.equal(f.content, `@@secret:user:${u.address}@@`);
            assert.equal(f.mode, "0600");
            assert.equal(f.secret, true);
        }
        // Resolvable and renderable (paths pass the apply script's safety checks).
        const resolved = resolveSecrets(step, Object.fromEntries(secrets.map((n) => [n, "pw"])));
        assert.match(renderApplyScript(resolved), /ispmail_file \/etc\/ispmail\/secrets\/user\/alice@example\.org root root 0600/);
    });

    it("directory: password file names are the address when path-safe, a stable hash otherwise", () => {
        assert.equal(userPasswordFile("alice@example.org"), "user/alice@example.org");
        assert.equal(userPasswordFile("first.last+tag@example.org"), "user/first.last+tag@example.org");
        const odd = userPasswordFile("o'brien@example.org");
        assert.match(odd, /^user\/sha256-[0-9a-f]{32}$/);
        assert.equal(userPasswordFile("o'brien@example.org"), odd);
        assert.notEqual(userPasswordFile("o&brien@example.org"), odd);
        const raw = validRawConfig();
        raw.users.push({ address: "o'brien@example.org" });
        const [withOdd] = stepsOf(SERVICE.directory, parseConfig(raw, { stack: "test" }).model);
        const resolved = resolveSecrets(withOdd, Object.fromEntries(secretsOf(withOdd).map((n) => [n, "pw"])));
        assert.doesNotThrow(() => renderApplyScript(resolved));
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
