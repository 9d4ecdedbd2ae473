/**
 * The webmail step (Roundcube from Debian) as data: its packages and debconf answers, the config
 * files and who may read them, the password plugin's path into the directory, its vhost, name and
 * certificate; and that `ispmail:webmail` switches all of it off or moves it. Roundcube itself is
 * driven in a browser in the lab (test/e2e/webmail.test.ts).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseConfig, type Model } from "../../components/config";
import { renderDnsRecords } from "../../components/dns/records";
import { SERVICE, secretSpecs, stepsOf, webHosts } from "../../components/services";
import { renderApacheSites } from "../../components/services/web";
import { MINIMUM_PASSWORD_LENGTH, WEBMAIL_ROOT } from "../../components/services/webmail";
import { secretsOf } from "../../components/steps";
import { validRawConfig } from "../fixtures/config";

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
