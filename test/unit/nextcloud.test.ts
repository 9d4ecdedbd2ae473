/**
 * The nextcloud step as rendered data: present only when enabled, secrets only in secret files,
 * the user backend's queries against the directory's login view (reads, and the two writes of a
 * user's own password and display name), the archive pinned, the password policy's minimum length,
 * our app ispmail_password_rules shipped and enabled. The queries themselves run against the real
 * directory in the lab (test/e2e/web.test.ts); the app's PHP is checked with Debian 13's PHP in the
 * trixie tools chroot, its decisions against stand-ins of Nextcloud's classes (Nextcloud itself
 * cannot run in the lab).
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { describe, it } from "node:test";
import { parse as parseYaml } from "yaml";
import { parseConfig, type Model } from "../../components/config";
import { NEXTCLOUD_ROOT } from "../../components/paths";
import {
    NEXTCLOUD_APPS,
    NEXTCLOUD_CONFIG_PATH,
    NEXTCLOUD_INSTALL_SECRETS,
    nextcloudArchiveUrl,
    PASSWORD_RULES_APP,
    PASSWORD_RULES_APP_FILES,
    renderNextcloudConfig,
    SQL_RAW_QUERIES,
} from "../../components/services/nextcloud";
import { MINIMUM_PASSWORD_LENGTH } from "../../components/services/webmail";
import { secretSpecs } from "../../components/services";
import { renderApplyScript, resolveSecrets, secretRef, secretsOf, type Step } from "../../components/steps";
import { validRawConfig } from "../fixtures/config";
import { SERVICE, stepsOf } from "../../components/services";
import { FILES_DIR } from "../../components/templates";
import { CHROOT, chrootSkipReason } from "./mail-chroot";

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

    it("enables the SQL user backend first, then Mail, Calendar and Contacts, the bundled password policy and our password rules", () => {
        const s = step(enabled());
        const apps = execFileSync("bash", ["-c", `${s.script.split("\n").filter((l) => /^NC_APPS='/.test(l)).join("\n")}\nprintf '%s\\n' $NC_APPS`], { encoding: "utf8" });
        assert.deepEqual(apps.trim().split("\n"), ["user_backend_sql_raw", "mail", "calendar", "contacts", "password_policy", "ispmail_password_rules"]);
        assert.match(s.script, /for app in \$NC_APPS; do/, "enabled in that order");
    });

    /**
     * Runs the script's password policy block with `occ` replaced by a stub whose
     * `config:app:get password_policy minLength` prints `current`; returns the occ calls made and
     * the actions reported.
     */
    function passwordPolicy(current: string | undefined): { calls: string[]; actions: string[] } {
        const s = step(enabled());
        const block = /^  # The bundled password policy[\s\S]*?^  fi$/m.exec(s.script)?.[0];
        assert.ok(block, "the script has the password policy block");
        const assignments = s.script.split("\n").filter((l) => /^[A-Z_0-9]+='/.test(l)).join("\n");
        const stub = `occ() { echo "occ $*" >> "$CALLS"; if [ "$1" = config:app:get ]; then ${current === undefined ? "return 1" : `echo ${current}`}; fi; }
ispmail_action() { echo "$1" >> "$ACTIONS"; }`;
        const out = execFileSync("bash", ["-euo", "pipefail", "-c", `CALLS=$(mktemp); ACTIONS=$(mktemp)\n${assignments}\n${stub}\n${block}\necho ---; cat "$CALLS"; echo ---; cat "$ACTIONS"; rm -f "$CALLS" "$ACTIONS"`], { encoding: "utf8" });
        const [, calls, actions] = out.split("---\n");
        return { calls: calls.trim().split("\n").filter(Boolean), actions: actions.trim().split("\n").filter(Boolean) };
    }

    it("sets the password policy's minimum length to the webmail's, only when it differs", () => {
        assert.equal(MINIMUM_PASSWORD_LENGTH, 12);
        assert.match(step(enabled()).script, new RegExp(`^NC_PASSWORD_MIN_LENGTH='${MINIMUM_PASSWORD_LENGTH}'$`, "m"));
        const set = `occ config:app:set password_policy minLength --value=${MINIMUM_PASSWORD_LENGTH} --type=integer --no-interaction`;
        // The app's default (10 in Nextcloud 31), and a key never set: set, and said so.
        for (const current of ["10", undefined]) {
            assert.deepEqual(passwordPolicy(current), {
                calls: ["occ config:app:get password_policy minLength", set],
                actions: [`Nextcloud password policy: at least ${MINIMUM_PASSWORD_LENGTH} characters`],
            });
        }
        // Already set: only read (a second apply changes nothing).
        assert.deepEqual(passwordPolicy(String(MINIMUM_PASSWORD_LENGTH)), { calls: ["occ config:app:get password_policy minLength"], actions: [] });
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
        // Version 2 of user_backend_sql_raw connects with the DSN only.
        assert.match(config, /'dsn' => 'pgsql:host=localhost;port=5432;dbname=mailserver'/);
        assert.match(config, /'db_user' => 'nextcloudauth'/);
        assert.match(config, new RegExp(`'db_password' => '${secretRef("db.nextcloudauth").replace(/[.]/g, "\\.")}'`));
    });

    it("carries exactly the queries the e2e test runs", () => {
        const rendered = Object.fromEntries([...config.matchAll(/^\s+'([a-z_]+)' => '((?:SELECT|UPDATE) [^']*)',$/gm)].map((m) => [m[1], m[2]]));
        assert.deepEqual(rendered, SQL_RAW_QUERIES);
    });

    it("hashes new passwords with Argon2id (the one scheme the directory takes from Nextcloud)", () => {
        assert.match(config, /^\s+'hash_algorithm_for_new_passwords' => 'argon2id',$/m);
    });
});

/** The directory's migrations without comments, in order. */
function migrationsSql(): string {
    const dir = join(FILES_DIR, "postgresql", "migrations");
    return readdirSync(dir)
        .filter((f) => f.endsWith(".sql"))
        .sort()
        .map((f) => readFileSync(join(dir, f), "utf8").replace(/--.*$/gm, ""))
        .join("\n");
}

/** What the migrations grant role nextcloudauth: GRANT <privilege> ON <objects> TO ...nextcloudauth. */
function grantedToNextcloudauth(privilege: "SELECT" | "UPDATE"): string[] {
    return [...migrationsSql().matchAll(/\bGRANT\s+(SELECT|UPDATE)(\s*\([^)]*\))?\s+ON\s+([^;]+?)\s+TO\s+([^;]+);/gi)]
        .filter((m) => m[1].toUpperCase() === privilege && m[4].split(",").some((role) => role.trim() === "nextcloudauth"))
        .flatMap((m) => m[3].split(",").map((t) => `${t.trim()}${m[2] ? ` ${m[2].trim().replace(/\s+/g, " ")}` : ""}`));
}

describe("nextcloud: user backend queries", () => {
    const reads = Object.entries(SQL_RAW_QUERIES).filter(([name]) => !name.startsWith("set_"));
    const writes = Object.entries(SQL_RAW_QUERIES).filter(([name]) => name.startsWith("set_"));

    it("read only from the login view nextcloudauth may select", () => {
        assert.deepEqual(grantedToNextcloudauth("SELECT"), ["nextcloud_users"], "the migrations grant nextcloudauth the login view alone");
        for (const [name, sql] of reads) {
            assert.match(sql, /^SELECT /, name);
            assert.doesNotMatch(sql, /\b(INSERT|UPDATE|DELETE|DROP|ALTER|CREATE|GRANT)\b/i, name);
            const tables = [...sql.matchAll(/\bFROM\s+([a-z_]+)/gi)].map((m) => m[1]);
            assert.deepEqual([...new Set(tables)], ["nextcloud_users"], name);
        }
    });

    it("write exactly a user's own password hash and display name, the two columns nextcloudauth may update", () => {
        assert.deepEqual(grantedToNextcloudauth("UPDATE"), ["nextcloud_users (password_hash, display_name)"]);
        assert.deepEqual(Object.fromEntries(writes), {
            set_password_hash_for_user: "UPDATE nextcloud_users SET password_hash = :new_password_hash WHERE username = :username",
            set_display_name: "UPDATE nextcloud_users SET display_name = :new_display_name WHERE username = :username",
        });
    });

    it("offer Nextcloud no query to create or delete users, nor to set their home or groups (those stay with the stack config)", () => {
        for (const absent of ["delete_user", "create_user", "get_home", "get_groups"]) {
            assert.ok(!(absent in SQL_RAW_QUERIES), absent);
        }
    });

    it("use the parameter names the app binds", () => {
        // lib/UserBackend.php: :username everywhere; getUsers binds :search; setPassword
        // :new_password_hash; setDisplayName :new_display_name.
        const expected: Record<string, string[]> = {
            get_users: ["search"],
            count_users: [],
            set_password_hash_for_user: ["new_password_hash", "username"],
            set_display_name: ["new_display_name", "username"],
        };
        for (const [name, sql] of Object.entries(SQL_RAW_QUERIES)) {
            const params = new Set([...sql.matchAll(/:([a-z_]+)/g)].map((m) => m[1]));
            assert.deepEqual([...params], expected[name] ?? ["username"], name);
        }
    });
});

/** files/nextcloud/apps/ispmail_password_rules, and every file below it (relative paths). */
const APP_DIR = join(FILES_DIR, "nextcloud", "apps", PASSWORD_RULES_APP);
function appFiles(dir = APP_DIR): string[] {
    return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? appFiles(join(dir, e.name)) : [relative(APP_DIR, join(dir, e.name))]));
}
const appFile = (rel: string) => readFileSync(join(APP_DIR, rel), "utf8");

/**
 * Runs the script's apps block with `occ` and `php` replaced by stubs: `occ app:list` (piped
 * through php) reports `alreadyEnabled`, and the only app directory is ours. Returns the occ calls.
 */
function enableApps(alreadyEnabled: readonly string[]): string[] {
    const s = step(enabled());
    const block = /^  # Apps:[\s\S]*?^  done$/m.exec(s.script)?.[0];
    assert.ok(block, "the script has the apps block");
    const assignments = s.script.split("\n").filter((l) => /^[A-Z_0-9]+='/.test(l)).join("\n");
    const root = mkdtempSync(join(tmpdir(), "nextcloud-root-"));
    try {
        mkdirSync(join(root, "apps", PASSWORD_RULES_APP), { recursive: true });
        const stub = `NC_ROOT=${root}
occ() { echo "occ $*" >> "$CALLS"; }
php() { cat > /dev/null; echo ${alreadyEnabled.join(" ")}; }
ispmail_action() { :; }`;
        const out = execFileSync("bash", ["-euo", "pipefail", "-c", `CALLS=$(mktemp)\n${assignments}\n${stub}\nnextcloud_apps() {\n  local app\n${block}\n}\nnextcloud_apps\ncat "$CALLS"; rm -f "$CALLS"`], { encoding: "utf8" });
        return out.trim().split("\n").filter(Boolean);
    } finally {
        rmSync(root, { recursive: true, force: true });
    }
}

describe("nextcloud: our app ispmail_password_rules (mail users' own passwords)", () => {
    it("ships every file of files/nextcloud/apps/ispmail_password_rules into Nextcloud's apps directory, for the web server only", () => {
        assert.deepEqual(appFiles().sort(), [...PASSWORD_RULES_APP_FILES].sort(), "the step lists exactly the app's files");
        const shipped = step(enabled()).files.filter((f) => f.path.startsWith(`${NEXTCLOUD_ROOT}/apps/`));
        assert.deepEqual(
            shipped.map((f) => f.path),
            PASSWORD_RULES_APP_FILES.map((rel) => `/var/www/nextcloud/apps/ispmail_password_rules/${rel}`),
        );
        for (const f of shipped) {
            assert.equal(f.content, appFile(f.path.slice(`${NEXTCLOUD_ROOT}/apps/${PASSWORD_RULES_APP}/`.length)), f.path);
            assert.deepEqual([f.owner, f.group, f.mode, f.secret], ["www-data", "www-data", "0640", undefined], f.path);
        }
        // Nextcloud's default apps directory: our config file names no other.
        assert.doesNotMatch(renderNextcloudConfig(enabled()), /apps_paths/);
    });

    it("enables it with occ from its directory, only while it is not enabled", () => {
        const others = NEXTCLOUD_APPS.filter((a) => a !== PASSWORD_RULES_APP);
        assert.deepEqual(enableApps(others), ["occ app:list --output=json", `occ app:enable ${PASSWORD_RULES_APP}`]);
        assert.deepEqual(enableApps([...NEXTCLOUD_APPS]), ["occ app:list --output=json"], "a second apply changes nothing");
    });

    it("keeps the app when the archive is unpacked in place of the placeholder", () => {
        const script = step(enabled()).script;
        assert.match(script, /^NC_RULES_APP='ispmail_password_rules'$/m);
        const keep = script.indexOf(`cp -a "$NC_ROOT/apps/$NC_RULES_APP" "$staging/nextcloud/apps/"`);
        assert.ok(keep > 0, "the app is copied into the unpacked tree");
        assert.ok(keep < script.indexOf(`rm -rf "$NC_ROOT"`), "before the old tree is removed");
    });

    it("info.xml names the app, its PHP namespace, and exactly the Nextcloud major the prod stack pins", () => {
        const info = appFile("appinfo/info.xml");
        assert.match(info, /<id>ispmail_password_rules<\/id>/);
        assert.match(info, /<namespace>IspmailPasswordRules<\/namespace>/);
        for (const rel of PASSWORD_RULES_APP_FILES.filter((f) => f.endsWith(".php"))) {
            assert.match(appFile(rel), /^namespace OCA\\IspmailPasswordRules\\/m, rel);
        }
        assert.match(appFile("lib/AppInfo/Application.php"), /public const APP_ID = 'ispmail_password_rules';/);
        const prod = parseYaml(readFileSync(join(__dirname, "..", "..", "Pulumi.prod.yaml"), "utf8")) as { config: Record<string, { version?: string }> };
        const major = String(prod.config["ispmail:nextcloud"].version).split(".")[0];
        assert.match(info, new RegExp(`<nextcloud min-version="${major}" max-version="${major}"/>`));
    });

    /** The app and the PHP test copied below the chroot's /tmp; returns the chroot path of that copy. */
    function inChrootCopy<T>(body: (inside: string) => T): T {
        const host = mkdtempSync(join(CHROOT, "tmp", "nextcloud-app-"));
        try {
            cpSync(APP_DIR, join(host, "app"), { recursive: true });
            writeFileSync(join(host, "standins.php"), readFileSync(join(__dirname, "php", "password-rules-standins.php")));
            return body(host.slice(CHROOT.length));
        } finally {
            rmSync(host, { recursive: true, force: true });
        }
    }
    const php = (args: string[]) => spawnSync("chroot", [CHROOT, "php8.4", ...args], { encoding: "utf8", timeout: 60_000 });
    const skipPhp = chrootSkipReason("usr/bin/php8.4");

    it("every PHP file of the app parses with Debian 13's PHP 8.4 (php -l)", { skip: skipPhp }, () => {
        inChrootCopy((inside) => {
            for (const rel of [...PASSWORD_RULES_APP_FILES.filter((f) => f.endsWith(".php")).map((f) => `app/${f}`), "standins.php"]) {
                const r = php(["-l", `${inside}/${rel}`]);
                assert.equal(r.status, 0, `${rel}: ${r.stdout}${r.stderr}`);
            }
        });
    });

    it("the listener's decisions, run with PHP 8.4 against stand-ins of Nextcloud 31's classes (not Nextcloud itself)", { skip: skipPhp }, () => {
        const r = inChrootCopy((inside) => php([`${inside}/standins.php`, `${inside}/app`]));
        assert.equal(r.stderr, "");
        assert.deepEqual(r.stdout.trim().split("\n"), [
            "ok the app registers its listener for BeforePasswordUpdatedEvent",
            "ok mail user: a password shorter than 12 characters is refused with the policy's hint, nothing stored",
            "ok mail user: the current password again is refused with our hint, nothing stored",
            "ok mail user: a new password of 12 characters is stored after one policy check of it",
            "ok mail user: after a change the old password counts as a new one again",
            "ok Nextcloud's own users (backend Database, which asks the policy itself) are left alone",
            "ok without password_policy enabled only the current-password rule holds (a short one passes)",
            "ok other events are ignored",
        ]);
        assert.equal(r.status, 0);
    });
});
