/**
 * The webmail step (Roundcube from Debian) as data: its packages and debconf answers, the config
 * files and who may read them, the password plugin's path into the directory, its vhost, name and
 * certificate; and that `ispmail:webmail` switches all of it off or moves it. Roundcube itself is
 * driven in a browser in the lab (test/e2e/webmail.test.ts).
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parseConfig, type Model } from "../../components/config";
import { renderDnsRecords } from "../../components/dns/records";
import { SERVICE, secretSpecs, stepsOf, webHosts } from "../../components/services";
import { renderApacheSites } from "../../components/services/web";
import { MINIMUM_PASSWORD_LENGTH, WEBMAIL_ROOT } from "../../components/services/webmail";
import { secretsOf } from "../../components/steps";
import { FILES_DIR } from "../../components/templates";
import { validRawConfig } from "../fixtures/config";
import { runWithStubs } from "../harness/shell";

const modelWith = (webmail?: Record<string, unknown>): Model => parseConfig({ ...validRawConfig(), ...(webmail ? { webmail } : {}) }, { stack: "test" }).model;

describe("webmail step", () => {
    const model = modelWith();
    const [step] = stepsOf(SERVICE.webmail, model);
    const file = (path: string) => {
        const f = step.files.find((x) => x.path === path);
        assert.ok(f, `the step writes ${path}`);
        return f;
    };

    test("webmail: Roundcube from Debian, after the web server and the directory, without dbconfig-common's own database", () => {
        assert.deepEqual([...step.after].sort(), ["directory", "web"]);
        assert.deepEqual([...(step.packages ?? [])].sort(), ["php8.4-intl", "php8.4-pgsql", "roundcube-core", "roundcube-pgsql", "roundcube-plugins"]);
        assert.ok(step.debconf?.includes("roundcube-core roundcube/dbconfig-install boolean false"));
    });

    test("webmail: the files holding passwords are readable by PHP (www-data) and root only; its secrets are the two roles' and des_key", () => {
        for (const path of ["/etc/roundcube/config.inc.php", "/etc/roundcube/plugins/password/config.inc.php"]) {
            const f = file(path);
            assert.deepEqual([f.owner, f.group, f.mode, f.secret], ["root", "www-data", "0640", true], path);
        }
        assert.deepEqual(secretsOf(step), ["db.mailpassword", "db.roundcube", "webmail.des-key"]);
        assert.ok(secretSpecs(model).some((s) => s.name === "webmail.des-key" && s.kind === "password"));
    });

    test("webmail: IMAP, SMTP and ManageSieve on this server with the user's own login; the three plugins", () => {
        const config = file("/etc/roundcube/config.inc.php").content;
        assert.match(config, /^\$config\['db_dsnw'\] = 'pgsql:\/\/roundcube:@@secret:db\.roundcube@@@127\.0\.0\.1\/roundcube';$/m);
        assert.match(config, /^\$config\['imap_host'\] = 'ssl:\/\/localhost:993';$/m);
        assert.match(config, /^\$config\['smtp_host'\] = 'tls:\/\/localhost:587';$/m);
        assert.match(config, /^\$config\['smtp_user'\] = '%u';$/m);
        assert.match(config, /^\$config\['des_key'\] = '@@secret:webmail\.des-key@@';$/m);
        assert.match(config, /^\$config\['cipher_method'\] = 'AES-256-CBC';$/m, "a 32-character key is an AES-256 key");
        assert.match(config, /^\$config\['plugins'\] = \['password', 'managesieve', 'markasjunk'\];$/m);
        const sieve = file("/etc/roundcube/plugins/managesieve/config.inc.php").content;
        assert.match(sieve, /^\$config\['managesieve_host'\] = 'localhost';$/m);
        assert.match(sieve, /^\$config\['managesieve_vacation'\] = 1;$/m);
    });

    test("webmail: a new password is checked against the current one, long enough, hashed as Dovecot's Argon2id and stored through change_own_password()", () => {
        const password = file("/etc/roundcube/plugins/password/config.inc.php").content;
        assert.match(password, /^\$config\['password_confirm_current'\] = true;$/m);
        assert.match(password, new RegExp(`^\\$config\\['password_minimum_length'\\] = ${MINIMUM_PASSWORD_LENGTH};$`, "m"));
        assert.match(password, /^\$config\['password_db_dsn'\] = 'pgsql:\/\/mailpassword:@@secret:db\.mailpassword@@@127\.0\.0\.1\/mailserver';$/m);
        assert.match(password, /^\$config\['password_query'\] = 'SELECT change_own_password\(%u, %P\)';$/m);
        assert.match(password, /^\$config\['password_algorithm'\] = 'hash-argon2id';$/m);
        assert.match(password, /^\$config\['password_algorithm_prefix'\] = '\{ARGON2ID\}';$/m);
    });

    test("webmail: its own vhost serves only Roundcube's public_html, under webmail.<first domain>, with DNS and the certificate", () => {
        const site = renderApacheSites(model, webHosts(model)).find((s) => s.name === "ispmail-15-webmail");
        assert.ok(site);
        assert.match(site.content, /^\s+ServerName webmail\.example\.org$/m);
        assert.match(site.content, new RegExp(`^\\s+DocumentRoot ${WEBMAIL_ROOT}$`, "m"));
        assert.ok(webHosts(model).includes("webmail.example.org"));
        const records = renderDnsRecords({ model, ipv4: "203.0.113.25", ipv6: "2001:db8::25", dkimPublicKeys: Object.fromEntries(model.dkimSelectors.map((s) => [s, "MIIB"])), tlsa: { tls1: `3 1 1 ${"ab".repeat(32)}` } }).filter((r) => r.name === "webmail.example.org");
        assert.deepEqual(records.map((r) => r.type).sort(), ["A", "AAAA"]);
    });

    test("webmail: ispmail:webmail.host moves it, enabled: false removes step, vhost, name and secret", () => {
        const moved = modelWith({ host: "mail.example.com" });
        assert.ok(webHosts(moved).includes("mail.example.com") && !webHosts(moved).includes("webmail.example.org"));
        const off = modelWith({ enabled: false });
        assert.deepEqual(stepsOf(SERVICE.webmail, off), []);
        assert.ok(!webHosts(off).includes("webmail.example.org"));
        assert.ok(!renderApacheSites(off, webHosts(off)).some((s) => s.name === "ispmail-15-webmail"));
        assert.ok(!secretSpecs(off).some((s) => s.name === "webmail.des-key"));
        assert.throws(() => modelWith({ host: "webmail.elsewhere.example" }), /ispmail:webmail\.host: "webmail\.elsewhere\.example" must be mailHost or a name in one of ispmail:domains/);
    });
});

describe("webmail step: Roundcube's schema", () => {
    const script = readFileSync(join(FILES_DIR, "webmail", "apply.sh"), "utf8");
    /**
     * The step's script against a database at `dbVersion` (undefined: no schema loaded yet), with
     * migration files `files` in Roundcube's SQL directory. runuser stands in for psql as postgres.
     */
    const run = (dbVersion: string | undefined, files: readonly string[]) => {
        const sql = mkdtempSync("/tmp/ispmail-roundcube-sql-");
        try {
            mkdirSync(join(sql, "postgres"));
            for (const f of files) writeFileSync(join(sql, "postgres", f), "-- a migration\n");
            const loaded = join(sql, "loaded");
            if (dbVersion !== undefined) writeFileSync(loaded, dbVersion);
            const runuser = [
                `case "$*" in`,
                `  *"FROM system"*) [ -f ${loaded} ] || { echo 'ERROR:  relation "system" does not exist' >&2; exit 1; }; cat ${loaded} ;;`,
                `  *to_regclass*) [ -f ${loaded} ] && echo t || echo f ;;`,
                // The schema file as dbconfig-common ships it: the newest version it knows.
                `  *install/pgsql*) echo 2022081200 > ${loaded} ;;`,
                `esac`,
            ].join("\n");
            const body = ["ispmail_action() { echo \"action: $1\"; }", script.replace(/^RC_SQL=.*$/m, `RC_SQL=${sql}`).replace("/usr/share/roundcube/bin/updatedb.sh", "updatedb.sh")].join("\n");
            return runWithStubs(body, { runuser, "updatedb.sh": "echo 'Updating database schema (2099010100)... [OK]'" });
        } finally {
            rmSync(sql, { recursive: true, force: true });
        }
    };
    const updatedb = (r: ReturnType<typeof run>) => r.calls.filter((c) => c.startsWith("updatedb.sh"));

    test("webmail: a database at the newest migration the package ships: updatedb.sh (PHP) does not run", () => {
        const r = run("2022081200", ["2021100300.sql", "2022081200.sql"]);
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual(updatedb(r), []);
        assert.equal(r.stdout, "");
    });

    test("webmail: a package with a newer migration than the database: updatedb.sh applies it", () => {
        const r = run("2022081200", ["2022081200.sql", "2099010100.sql"]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(updatedb(r).length, 1);
        assert.match(updatedb(r)[0], /^updatedb\.sh --package=roundcube --dir=\/tmp\/ispmail-roundcube-sql-/);
        assert.match(r.stdout, /^action: updated Roundcube's database schema$/m);
    });

    test("webmail: no schema yet: loaded once, then compared like any other", () => {
        const r = run(undefined, ["2022081200.sql"]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^action: loaded Roundcube's database schema$/m);
        assert.equal(r.calls.filter((c) => c.includes("install/pgsql")).length, 1);
        assert.deepEqual(updatedb(r), []);
        // A database whose version cannot be read runs the tool, which knows what to do.
        const odd = run("unknown", ["2022081200.sql"]);
        assert.equal(updatedb(odd).length, 1);
    });
});
