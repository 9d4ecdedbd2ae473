/**
 * The database admin (ispmail:dbAdmin, issue 15): phpPgAdmin as in the tutorial (the default), on
 * the mail server's loopback interface only, reached the way the tutorial reaches it — an SSH
 * tunnel from the admin's machine — and used in a real browser: Debian's chromium on the lab host
 * through playwright-core, as test/e2e/webmail.test.ts does. The tunnel's local port lives in the
 * lab's network namespace, like the tests. Screenshots of what a person sees are kept in
 * .lab/artifacts/dbadmin/.
 *
 * Then the other choices, applied to the lab's web step and undone at the end: Adminer, and none.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Browser, FrameLocator, Page } from "playwright-core";
import { launchChromium, screenshot } from "./browser";
import type { DbAdmin, Model } from "../../components/config";
import { SERVICE, stepsOf, webHosts } from "../../components/services";
import { DB_ADMIN_APPS, DB_ADMIN_PORT } from "../../components/services/dbadmin";
import { DB_ROLES, dbPasswordSecret } from "../../components/secrets";
import { STATE_DIR } from "../../lab/lab";
import { sshArgs } from "../../lab/ssh";
import { applyOnGuest, guest, LAB, labModel, labModelWith, labSession } from "../../lab/testkit";
import { eventually, sleep, tcpOutcome } from "./clients";

const ARTIFACTS = join(STATE_DIR, "artifacts", "dbadmin");
const MAIL = LAB.mail;
const mail = guest("mail");
/** Where Apache logs the loopback vhost's errors, PHP's among them (PHP-FPM passes them on). */
const ERROR_LOG = "/var/log/apache2/dbadmin.error.log";
/** phpPgAdmin's one server, as its config.inc.php names it. */
const SERVER_DESC = "PostgreSQL (ispmail)";



interface Answer {
    readonly status: number;
    readonly body: string;
}

/**
 * One GET. `https://<web host>/...` goes to the mail guest's address with SNI and Host set (the
 * content matters here, not the certificate, which test/e2e/web.test.ts checks).
 */
function get(url: string): Promise<Answer> {
    const u = new URL(url);
    const secure = u.protocol === "https:";
    const lib = secure ? https : http;
    return new Promise((resolve, reject) => {
        const req = lib.request(
            {
                host: secure ? MAIL.ipv4 : u.hostname.replace(/^\[|\]$/g, ""),
                port: u.port || (secure ? 443 : 80),
                path: u.pathname + u.search,
                headers: { Host: u.host },
                ...(secure ? { servername: u.hostname, rejectUnauthorized: false } : {}),
                timeout: 15_000,
            },
            (res) => {
                const chunks: Buffer[] = [];
                res.on("data", (c: Buffer) => chunks.push(c));
                res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
            },
        );
        req.on("timeout", () => req.destroy(new Error(`${url}: timed out`)));
        req.on("error", reject);
        req.end();
    });
}

/** A TCP port on 127.0.0.1 that nothing listens on now. */
function freePort(): Promise<number> {
    return new Promise((resolve, reject) => {
        const server = createServer();
        server.on("error", reject);
        server.listen(0, "127.0.0.1", () => {
            const { port } = server.address() as { port: number };
            server.close(() => resolve(port));
        });
    });
}

interface Tunnel {
    /** The local end: http://127.0.0.1:<port>/ is the server's loopback vhost. */
    readonly port: number;
    readonly base: string;
    close(): Promise<void>;
}

/**
 * What an admin runs on their own machine: `ssh -N -L 127.0.0.1:<port>:127.0.0.1:8080 root@<server>`
 * (here with the lab's deploy key and the guest's pinned host key), until the local port accepts.
 */
async function openTunnel(): Promise<Tunnel> {
    const port = await freePort();
    const child = spawn("ssh", ["-N", "-o", "ExitOnForwardFailure=yes", "-L", `127.0.0.1:${port}:127.0.0.1:${DB_ADMIN_PORT}`, ...sshArgs(MAIL)], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    let exited: number | null = null;
    const gone = new Promise<void>((resolve) =>
        child.on("exit", (code) => {
            exited = code ?? -1;
            resolve();
        }),
    );
    const close = async () => {
        if (exited === null) {
            child.kill();
            await gone;
        }
    };
    for (let i = 0; i < 150; i++) {
        if (exited !== null) throw new Error(`ssh tunnel exited (${exited}): ${stderr}`);
        if ((await tcpOutcome("127.0.0.1", port)) === "connected") return { port, base: `http://127.0.0.1:${port}`, close };
        await sleep(100);
    }
    await close();
    throw new Error(`ssh tunnel to ${MAIL.ipv4}: local port ${port} never accepted: ${stderr}`);
}

/** The web step as the lab deploys it for a model, applied to the mail guest; what it did. */
async function applyWeb(m: Model, secrets: Record<string, string>): Promise<{ actions: readonly string[]; changedFiles: readonly string[] }> {
    const [applied] = await applyOnGuest("mail", stepsOf(SERVICE.web, m), secrets);
    return { actions: applied.actions, changedFiles: applied.changedFiles };
}

/** The error log's size now: {@link errorsSince} reads what came after. */
async function errorLogOffset(): Promise<number> {
    return Number((await mail.execOk(`stat -c %s ${ERROR_LOG} 2>/dev/null || echo 0`)).trim());
}
async function errorsSince(offset: number): Promise<string> {
    return (await mail.execOk(`tail -c +${offset + 1} ${ERROR_LOG} 2>/dev/null || true`)).trim();
}

/** The loopback vhost's URLs for a path, as seen inside the server. */
const insideUrls = (path: string) => [`http://127.0.0.1:${DB_ADMIN_PORT}${path}`, `http://[::1]:${DB_ADMIN_PORT}${path}`];
/** A page fetched by the server's own PHP (no HTTP client is assumed on the server). */
const fetchInside = (url: string) => mail.execOk(`php -r 'echo file_get_contents($argv[1]);' '${url}'`);

let model: Model;
let secrets: Record<string, string>;

before(async () => {
    ({ model, secrets } = await labSession());
    mkdirSync(ARTIFACTS, { recursive: true });
});

describe("dbadmin: phpPgAdmin (the default) on the loopback interface only", () => {
    test("dbadmin: the lab stack leaves ispmail:dbAdmin at its default, phppgadmin", () => {
        assert.equal(model.dbAdmin, "phppgadmin");
    });

    test("dbadmin: without a tunnel, http://<server>:8080/phppgadmin/ is refused from the lab network (IPv4 and IPv6): nothing listens there", async () => {
        for (const host of [MAIL.ipv4, `[${MAIL.ipv6}]`]) {
            await assert.rejects(get(`http://${host}:${DB_ADMIN_PORT}/phppgadmin/`), (e: NodeJS.ErrnoException) => e.code === "ECONNREFUSED", host);
        }
        assert.equal(await tcpOutcome(MAIL.ipv6, DB_ADMIN_PORT), "refused");
    });

    test("dbadmin: Apache listens on 8080 only at 127.0.0.1 and [::1] (ss on the server)", async () => {
        const listeners = (await mail.execOk(`ss -Hltn 'sport = :${DB_ADMIN_PORT}'`))
            .trim()
            .split("\n")
            .map((l) => l.trim().split(/\s+/)[3])
            .sort();
        assert.deepEqual(listeners, [`127.0.0.1:${DB_ADMIN_PORT}`, `[::1]:${DB_ADMIN_PORT}`]);
    });

    test("dbadmin: inside the server, phpPgAdmin answers on 127.0.0.1 and [::1] port 8080 (where a tunnel leads)", async () => {
        for (const url of insideUrls(DB_ADMIN_APPS.phppgadmin.path)) assert.match(await fetchInside(url), /<title>phpPgAdmin<\/title>/, url);
    });

    test("dbadmin: https://<mail host>/phppgadmin/ is 404, and no public vhost answers for an admin differently than for a path that does not exist", async () => {
        for (const path of ["/phppgadmin/", "/phppgadmin/index.php", "/adminer/", "/adminer/conf.php"]) assert.equal((await get(`https://${model.mailHost}${path}`)).status, 404, path);
        for (const host of webHosts(model)) {
            // Roundcube's .htaccess answers 403 for every path without a dot, so compare with one.
            const missing = await get(`https://${host}/no-such-directory/`);
            const missingPhp = await get(`https://${host}/no-such-directory/index.php`);
            for (const [path, control] of [["/phppgadmin/", missing], ["/adminer/", missing], ["/phppgadmin/index.php", missingPhp]] as const) {
                const r = await get(`https://${host}${path}`);
                assert.ok(r.status >= 400, `https://${host}${path}: ${r.status}`);
                assert.equal(r.status, control.status, `https://${host}${path}`);
                assert.doesNotMatch(r.body, /phpPgAdmin|Adminer/, `https://${host}${path}`);
            }
        }
        const enabled = await mail.execOk("ls /etc/apache2/conf-enabled/");
        assert.doesNotMatch(enabled, /phppgadmin|adminer/, "the packages' global confs are disabled");
    });
});

describe("dbadmin: phpPgAdmin in a browser through an SSH tunnel", { timeout: 300_000 }, () => {
    let tunnel: Tunnel;
    let browser: Browser;
    const shot = (page: Page, name: string) => screenshot(page, ARTIFACTS, name);

    before(async () => {
        tunnel = await openTunnel();
        browser = await launchChromium();
    });

    after(async () => {
        await browser?.close();
        await tunnel?.close();
    });

    /** phpPgAdmin's frames: the object tree on the left, the page on the right. */
    const frames = (page: Page): { tree: FrameLocator; detail: FrameLocator } => ({ tree: page.frameLocator("frame[name=browser]"), detail: page.frameLocator("frame[name=detail]") });

    /** A fresh browser session at phpPgAdmin's login form for our server, filled in (not sent). */
    async function loginForm(user: string, password: string, screenshot?: string): Promise<Page> {
        const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
        await page.goto(`${tunnel.base}${DB_ADMIN_APPS.phppgadmin.path}`);
        const { tree, detail } = frames(page);
        if (screenshot) {
            await detail.getByText("Welcome to phpPgAdmin").waitFor({ timeout: 30_000 });
            await tree.getByRole("link", { name: SERVER_DESC }).waitFor({ timeout: 30_000 });
            await shot(page, `${screenshot}-start`);
        }
        await tree.getByRole("link", { name: SERVER_DESC }).click();
        await detail.getByText(`Login to ${SERVER_DESC}`).waitFor({ timeout: 30_000 });
        await detail.locator("input[name=loginUsername]").fill(user);
        await detail.locator("#loginPassword").fill(password);
        if (screenshot) await shot(page, `${screenshot}-login`);
        return page;
    }

    test("dbadmin: mailadmin logs in with its password, opens database mailserver and sees its tables (users, aliases, domains); PHP 8.4 logs no error", async () => {
        const logFrom = await errorLogOffset();
        const page = await loginForm(DB_ROLES.admin, secrets[dbPasswordSecret(DB_ROLES.admin)], "01");
        const { tree, detail } = frames(page);
        await detail.locator("input[name=loginSubmit]").click();
        await detail.getByText(`You are logged in as user "${DB_ROLES.admin}"`).waitFor({ timeout: 30_000 });
        await detail.getByRole("link", { name: "mailserver", exact: true }).first().waitFor({ timeout: 30_000 });
        await tree.getByRole("link", { name: "mailserver", exact: true }).waitFor({ timeout: 30_000 });
        await shot(page, "02-databases");

        await detail.getByRole("link", { name: "mailserver", exact: true }).first().click();
        await detail.getByRole("link", { name: "public", exact: true }).first().click();
        for (const table of ["users", "aliases", "domains", "shared_mailboxes"]) {
            await detail.getByRole("link", { name: table, exact: true }).first().waitFor({ timeout: 30_000 });
        }
        await shot(page, "03-mailserver-tables");

        // Browse a table: the rows are read with mailadmin's rights.
        await detail.locator("tr", { has: page.locator("a", { hasText: /^domains$/ }) }).getByRole("link", { name: "Browse", exact: true }).click();
        for (const domain of model.domains) await detail.getByRole("cell", { name: domain, exact: true }).waitFor({ timeout: 30_000 });
        await shot(page, "04-domains-rows");

        await detail.getByRole("link", { name: "Logout" }).click();
        await detail.getByText(`Logged out of ${SERVER_DESC}`).waitFor({ timeout: 30_000 });
        await page.context().close();

        const errors = await errorsSince(logFrom);
        assert.equal(errors, "", `the loopback vhost logged errors while logging in and browsing:\n${errors}`);
    });

    test("dbadmin: the superuser postgres and a wrong password are refused; the password is in no log", async () => {
        const logFrom = await errorLogOffset();
        const superuser = await loginForm("postgres", "anything-at-all-1234");
        await frames(superuser).detail.locator("input[name=loginSubmit]").click();
        await frames(superuser).detail.getByText("Login disallowed for security reasons.").waitFor({ timeout: 30_000 });
        await shot(superuser, "05-postgres-refused");
        await superuser.context().close();

        const wrong = "not-the-password-of-mailadmin";
        const page = await loginForm(DB_ROLES.admin, wrong);
        await frames(page).detail.locator("input[name=loginSubmit]").click();
        await frames(page).detail.getByText("Login failed").waitFor({ timeout: 30_000 });
        await shot(page, "06-wrong-password");
        await page.context().close();

        assert.doesNotMatch(await errorsSince(logFrom), new RegExp(wrong), "Apache's and PHP's log of the vhost");
        assert.equal((await mail.exec(`grep -rlF -- '${wrong}' /var/log/`)).stdout.trim(), "", "no log on the server holds the password typed");
    });

    test("dbadmin: a second apply of the web step changes nothing", async () => {
        assert.deepEqual(await applyWeb(labModel(), secrets), { actions: [], changedFiles: [] });
    });
});

describe("dbadmin: switching ispmail:dbAdmin (adminer, none, back to phppgadmin)", { timeout: 600_000 }, () => {
    let tunnel: Tunnel;
    const withAdmin = (dbAdmin: DbAdmin) => labModelWith({ dbAdmin });

    before(async () => {
        tunnel = await openTunnel();
    });

    after(async () => {
        await tunnel?.close();
        // Whatever happened above: the lab's own config again.
        await applyWeb(labModel(), secrets);
    });

    /** Through the tunnel: the loopback vhost's answer for a path, or the error code of a failed connection. */
    const throughTunnel = (path: string) => get(`${tunnel.base}${path}`).catch((e: NodeJS.ErrnoException) => e.code ?? e.message);
    /**
     * The answer once it has this status: `systemctl reload apache2` is a graceful restart that
     * returns before the new configuration (a new or dropped Listen) is in effect.
     */
    const settled = (path: string, status: number) =>
        eventually(`${path} answering ${status} through the tunnel`, async () => {
            const r = await throughTunnel(path);
            return typeof r === "object" && r.status === status ? r : undefined;
        }, 20, 500);

    test("dbadmin: switched to adminer, Adminer answers through the tunnel, phpPgAdmin no longer does, neither on a public vhost; a second apply changes nothing", async () => {
        const first = await applyWeb(withAdmin("adminer"), secrets);
        assert.ok(first.actions.some((a) => /reloaded apache2/.test(a)), first.actions.join("; "));
        assert.match((await settled(DB_ADMIN_APPS.adminer.path, 200)).body, /<title>Login - Adminer/);
        for (const url of insideUrls(DB_ADMIN_APPS.adminer.path)) {
            const page = await fetchInside(url);
            assert.match(page, /<title>Login - Adminer/, url);
            assert.match(page, /pgsql/, `${url}: Adminer offers PostgreSQL`);
        }
        assert.equal(((await throughTunnel(DB_ADMIN_APPS.phppgadmin.path)) as Answer).status, 404);
        for (const path of ["/phppgadmin/", "/adminer/"]) assert.equal((await get(`https://${model.mailHost}${path}`)).status, 404, path);
        assert.doesNotMatch(await mail.execOk("ls /etc/apache2/conf-enabled/"), /phppgadmin|adminer/);
        assert.deepEqual(await applyWeb(withAdmin("adminer"), secrets), { actions: [], changedFiles: [] });
    });

    test("dbadmin: switched to none, nothing listens on 8080 even on loopback; the packages stay installed (no removal), unreachable; a second apply changes nothing", async () => {
        const first = await applyWeb(withAdmin("none"), secrets);
        assert.ok(first.actions.includes("removed apache site ispmail-90-dbadmin"), first.actions.join("; "));
        await eventually("Apache to close 8080", async () => ((await mail.execOk(`ss -Hltn 'sport = :${DB_ADMIN_PORT}'`)).trim() === "" ? true : undefined), 20, 500);
        const r = await mail.exec(`timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/${DB_ADMIN_PORT}'`);
        assert.notEqual(r.code, 0, "a connection to 127.0.0.1:8080 on the server is refused");
        assert.match(r.stderr, /Connection refused/);
        // The tunnel still stands; what it forwards to is refused on the server, so the client gets no answer.
        assert.equal(typeof (await throughTunnel("/")), "string");
        const installed = await mail.execOk("dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' phppgadmin adminer");
        assert.match(installed, /^phppgadmin ii/m);
        assert.deepEqual(await applyWeb(withAdmin("none"), secrets), { actions: [], changedFiles: [] });
    });

    test("dbadmin: back to phppgadmin (the lab's config), phpPgAdmin answers through the tunnel again; a second apply changes nothing", async () => {
        await applyWeb(labModel(), secrets);
        assert.match((await settled(DB_ADMIN_APPS.phppgadmin.path, 200)).body, /<title>phpPgAdmin<\/title>/);
        assert.equal(((await throughTunnel(DB_ADMIN_APPS.adminer.path)) as Answer).status, 404);
        assert.deepEqual(await applyWeb(labModel(), secrets), { actions: [], changedFiles: [] });
    });
});
