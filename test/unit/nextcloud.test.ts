/**
 * The nextcloud step as rendered data: present only when enabled, secrets only in secret files,
 * the user backend's queries read-only against the directory's login view, the archive pinned.
 * The queries themselves run against the real directory in the lab (test/e2e/web.test.ts).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { parseConfig, type Model } from "../../components/config";
import { NEXTCLOUD_CONFIG_PATH, NEXTCLOUD_INSTALL_SECRETS, nextcloudArchiveUrl, renderNextcloudConfig, SQL_RAW_QUERIES } from "../../components/services/nextcloud";
import { secretSpecs } from "../../components/services";
import { renderApplyScript, resolveSecrets, secretRef, secretsOf, type Step } from "../../components/steps";
import { validRawConfig } from "../fixtures/config";
import { SERVICE, stepsOf } from "../../components/services";
import { FILES_DIR } from "../../components/templates";

function model(nextcloud?: Record<string, unknown>): Model {
    const raw = validRawConfig();
    if (nextcloud) raw.nextcloud = nextcloud;
    return parseConfig(raw, { stack: "test" }).model;
}

const enabled = (extra: Record<string, unknown> = {}) => model({ enabled: true, version: "31.0.9", sha256: "cd".repeat(32), ...extra });

function step(m: Model): Step {
    const steps = stepsOf(SERVICE.nextcloud, m);
    assert.equal(steps.length, 1);
    return steps[0];
}

describe("nextcloud: step", () => {
    it("is not rendered while nextcloud is disabled", () => {
        assert.deepEqual(stepsOf(SERVICE.nextcloud, model()), []);
        assert.deepEqual(stepsOf(SERVICE.nextcloud, model({ enabled: false, version: "31.0.9" })), []);
    });

    it("runs after web and directory (it needs Apache/PHP and the login view)", () => {
        const s = step(enabled());
        assert.equal(s.name, "nextcloud");
        assert.deepEqual([...s.after].sort(), ["directory", "web"]);
    });

    it("fetches the pinned archive from the configured URL, else from Nextcloud's release server", () => {
        assert.equal(nextcloudArchiveUrl(enabled().nextcloud), "https://download.nextcloud.com/server/releases/nextcloud-31.0.9.tar.bz2");
        const mirrored = enabled({ url: "https://mirror.example.org/nc/nextcloud-31.0.9.tar.bz2" });
        assert.equal(nextcloudArchiveUrl(mirrored.nextcloud), "https://mirror.example.org/nc/nextcloud-31.0.9.tar.bz2");
        const vars = execFileSync("bash", ["-c", `${step(mirrored).script.split("\n").filter((l) => /^[A-Z_0-9]+='/.test(l)).join("\n")}\nprintf '%s\\n' "$NC_URL" "$NC_SHA256" "$NC_VERSION" "$NC_DATA"`], { encoding: "utf8" });
        assert.deepEqual(vars.trim().split("\n"), ["https://mirror.example.org/nc/nextcloud-31.0.9.tar.bz2", "cd".repeat(32), "31.0.9", "/srv/ispmail/nextcloud"]);
    });

    it("its apply script is valid bash once secrets are resolved", () => {
        const s = step(enabled());
        const values = Object.fromEntries(secretsOf(s).map((n) => [n, "x".repeat(32)]));
        execFileSync("bash", ["-n"], { input: renderApplyScript(resolveSecrets(s, values)) });
    });

    it("uses only secrets the stack generates", () => {
        const m = enabled();
        const known = new Set(secretSpecs(m).map((x) => x.name));
        assert.deepEqual(secretsOf(step(m)), ["db.nextcloud", "db.nextcloudauth", "nextcloud.admin"]);
        for (const name of secretsOf(step(m))) assert.ok(known.has(name), `${name} is not in secretSpecs`);
    });

    it("keeps every secret in secret files, never in the script", () => {
        const s = step(enabled());
        assert.doesNotMatch(s.script, /@@secret:/);
        for (const f of s.files) {
            if (!/@@secret:/.test(f.content)) continue;
            assert.equal(f.secret, true, `${f.path} holds a secret but is not marked secret`);
            assert.match(f.mode ?? "", /^0?[0-7][0-7]0$/, `${f.path} must not be world-readable`);
        }
        const install = s.files.find((f) => f.path === NEXTCLOUD_INSTALL_SECRETS)!;
        // occ asks for the database password first, then the admin password.
        assert.equal(install.content, `${secretRef("db.nextcloud")}\n${secretRef("nextcloud.admin")}\n`);
        assert.deepEqual([install.owner, install.mode], ["root", "0600"]);
        const config = s.files.find((f) => f.path === NEXTCLOUD_CONFIG_PATH)!;
        assert.deepEqual([config.owner, config.group, config.mode], ["www-data", "www-data", "0640"]);
    });

    it("never passes a password as a command-line option to occ", () => {
        const s = step(enabled());
        assert.doesNotMatch(s.script, /--(database|admin)-pass/);
        assert.match(s.script, /occ maintenance:install [^<]*< "\$NC_INSTALL_SECRETS"/);
    });

    it("enables the SQL user backend first, then Mail, Calendar and Contacts", () => {
        const s = step(enabled());
        const apps = execFileSync("bash", ["-c", `${s.script.split("\n").filter((l) => /^NC_APPS='/.test(l)).join("\n")}\nprintf '%s\\n' $NC_APPS`], { encoding: "utf8" });
        assert.deepEqual(apps.trim().split("\n"), ["user_backend_sql_raw", "mail", "calendar", "contacts"]);
        assert.match(s.script, /for app in \$NC_APPS; do/, "enabled in that order");
    });
});

describe("nextcloud: config file", () => {
    const config = renderNextcloudConfig(enabled({ host: "cloud.example.org" }));

    it("trusts the groupware host and localhost, and stores data on the data volume", () => {
        assert.match(config, /'trusted_domains' => \[\n\s+'cloud\.example\.org',\n\s+'localhost',\n\s+\]/);
        assert.match(config, /'overwrite\.cli\.url' => 'https:\/\/cloud\.example\.org\/'/);
        assert.match(config, /'datadirectory' => '\/srv\/ispmail\/nextcloud'/);
        assert.match(config, /'memcache\.local' => '\\OC\\Memcache\\APCu'/);
    });

    it("connects the user backend as nextcloudauth to the mail directory with its secret", () => {
        assert.match(config, /'db_name' => 'mailserver'/);
        assert.match(config, /'db_user' => 'nextcloudauth'/);
        assert.match(config, new RegExp(`'db_password' => '${secretRef("db.nextcloudauth").replace(/[.]/g, "\\.")}'`));
    });

    it("carries exactly the queries the e2e test runs", () => {
        const rendered = Object.fromEntries([...config.matchAll(/^\s+'([a-z_]+)' => '(SELECT [^']*)',$/gm)].map((m) => [m[1], m[2]]));
        assert.deepEqual(rendered, SQL_RAW_QUERIES);
    });
});

/** What the directory's migrations let role nextcloudauth select (their GRANT SELECT statements). */
function grantedToNextcloudauth(): string[] {
    const dir = join(FILES_DIR, "postgresql", "migrations");
    const sql = readdirSync(dir)
        .filter((f) => f.endsWith(".sql"))
        .map((f) => readFileSync(join(dir, f), "utf8").replace(/--.*$/gm, ""))
        .join("\n");
    return [...sql.matchAll(/\bGRANT\s+SELECT\s+ON\s+([^;]+?)\s+TO\s+([^;]+);/gi)]
        .filter((m) => m[2].split(",").some((role) => role.trim() === "nextcloudauth"))
        .flatMap((m) => m[1].split(",").map((t) => t.trim()));
}

describe("nextcloud: user backend queries", () => {
    it("only read, and only from the login view nextcloudauth may select", () => {
        const granted = grantedToNextcloudauth();
        assert.deepEqual(granted, ["nextcloud_users"], "the migrations grant nextcloudauth the login view alone");
        for (const [name, sql] of Object.entries(SQL_RAW_QUERIES)) {
            assert.match(sql, /^SELECT /, name);
            assert.doesNotMatch(sql, /\b(INSERT|UPDATE|DELETE|DROP|ALTER|CREATE|GRANT)\b/i, name);
            const tables = [...sql.matchAll(/\bFROM\s+([a-z_]+)/gi)].map((m) => m[1]);
            assert.deepEqual([...new Set(tables)], granted, name);
        }
    });

    it("offer no write actions to Nextcloud (users are owned by the stack config)", () => {
        for (const write of ["set_password_hash_for_user", "delete_user", "set_display_name", "create_user"]) {
            assert.ok(!(write in SQL_RAW_QUERIES), write);
        }
    });

    it("use the parameter names the app binds", () => {
        for (const [name, sql] of Object.entries(SQL_RAW_QUERIES)) {
            const params = new Set([...sql.matchAll(/:([a-z_]+)/g)].map((m) => m[1]));
            const expected = name === "get_users" ? ["search"] : name === "count_users" ? [] : ["username"];
            assert.deepEqual([...params], expected, name);
        }
    });
});
