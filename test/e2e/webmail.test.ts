/**
 * Users own their accounts (issue 15): Roundcube, driven in a real browser — Debian's chromium on
 * the lab host through playwright-core (which downloads no browser), as a person would use it.
 *
 * The browser reaches webmail.example.org at the mail guest's address (a resolver rule: the lab
 * host's own resolver knows nothing of the lab zones) and trusts exactly the stack's certificate
 * key (an SPKI pin: pebble's issuing root changes with every pebble start). Screenshots of what a
 * person sees are kept in .lab/artifacts/webmail/.
 */
import assert from "node:assert/strict";
import { createHash, createPublicKey, randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { SERVICE, stepsOf } from "../../components/services";
import { tlsKeySecret } from "../../components/secrets";
import { STATE_DIR } from "../../lab/lab";
import { applyOnGuest, ensureLab, guest, LAB, labModel, labSecrets } from "../../lab/testkit";
import { escapeRegExp, eventually, FOREIGN_RCPT, foreignMessage, headerBlock, loginAccepted, sendThroughForeign, token } from "./clients";

const CHROMIUM = "/usr/bin/chromium";
export const ARTIFACTS = join(STATE_DIR, "artifacts", "webmail");
const mail = guest("mail");
const ALICE = "alice@example.org";

/** base64 SHA-256 of a key's SubjectPublicKeyInfo: what chromium's SPKI pin list takes. */
const spkiPin = (privateKeyPem: string) => createHash("sha256").update(createPublicKey(privateKeyPem).export({ type: "spki", format: "der" })).digest("base64");

describe("webmail in a browser (lab)", { timeout: 600_000 }, () => {
    const model = labModel();
    const host = model.webmail.host;
    const url = `https://${host}/`;
    let browser: Browser;
    let configured: string;
    const shot = async (page: Page, name: string) => {
        const path = join(ARTIFACTS, `${name}.png`);
        await page.screenshot({ path, fullPage: true });
        return path;
    };

    before(async () => {
        await ensureLab();
        mkdirSync(ARTIFACTS, { recursive: true });
        const secrets = labSecrets();
        configured = secrets[`user:${ALICE}`];
        browser = await chromium.launch({
            executablePath: CHROMIUM,
            args: [
                // root in a container: chromium's sandbox needs user namespaces it does not get here.
                "--no-sandbox",
                `--host-resolver-rules=MAP ${host} ${LAB.mail.ipv4}`,
                `--ignore-certificate-errors-spki-list=${spkiPin(secrets[tlsKeySecret(model.tlsKeys[0])])}`,
            ],
        });
    });

    after(async () => {
        await browser?.close();
        // Whatever a test left behind: alice's configured password opens her mailbox again.
        if (configured && !(await loginAccepted("imap", ALICE, configured))) {
            const hash = (await mail.execOk("doveadm pw -s ARGON2ID", { input: `${configured}\n${configured}\n` })).trim();
            await mail.execOk("runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -d mailserver", { input: `UPDATE users SET password_hash = '${hash}' WHERE local = 'alice' AND domain = 'example.org';` });
        }
    });

    /** Waits for Roundcube's notice of this kind (#messagestack: error, warning, confirmation) with this text. */
    async function notice(page: Page, kind: "error" | "warning" | "confirmation", text: RegExp): Promise<void> {
        await page.locator(`#messagestack .${kind}`, { hasText: text }).first().waitFor({ timeout: 30_000 });
    }

    /** A fresh browser session that has submitted Roundcube's login form as `user`. */
    async function submitLogin(user: string, password: string, screenshot?: string): Promise<Page> {
        const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
        await page.goto(url);
        await page.locator("#rcmloginuser").fill(user);
        await page.locator("#rcmloginpwd").fill(password);
        if (screenshot) await shot(page, screenshot);
        await page.locator("#rcmloginsubmit").click();
        return page;
    }

    /** A fresh browser session logged in to Roundcube as `user`. */
    async function logIn(user: string, password: string, screenshot?: string): Promise<Page> {
        const page = await submitLogin(user, password, screenshot);
        await page.waitForURL(/_task=mail/, { timeout: 30_000 });
        return page;
    }

    test("webmail: alice logs in over HTTPS, opens a message the foreign MTA delivered, and sends one that arrives DKIM-signed", async () => {
        const inbound = token("webmail inbound");
        const body = `Hello Alice, ${randomBytes(4).toString("hex")}`;
        await sendThroughForeign(ALICE, inbound, body);
        await eventually(`"${inbound}" in alice's INBOX`, async () => ((await mail.exec(`doveadm search -u ${ALICE} mailbox INBOX subject ${JSON.stringify(inbound)}`)).stdout.trim() ? true : undefined));

        const page = await logIn(ALICE, configured, "login");
        const row = page.locator("#messagelist tr", { hasText: inbound });
        await row.waitFor({ timeout: 30_000 });
        await shot(page, "inbox");
        await row.dblclick();
        await page.waitForURL(/_action=show/, { timeout: 30_000 });
        await page.getByText(body).waitFor({ timeout: 30_000 });
        await shot(page, "message");

        const outbound = token("webmail outbound");
        await page.goto(`${url}?_task=mail&_action=compose`);
        await page.locator("#compose_to input").first().fill(FOREIGN_RCPT);
        await page.locator("#compose-subject").fill(outbound);
        await page.locator("#composebody").fill("Sent from Roundcube in the lab.");
        await shot(page, "compose");
        await page.locator(".formbuttons button.send, #compose-content button.send, button.btn.send").first().click();
        const headers = headerBlock(await foreignMessage(outbound));
        // Back in the mailbox, as Roundcube leaves the sender after sending.
        await page.locator("#messagelist tr", { hasText: inbound }).waitFor({ timeout: 30_000 });
        await shot(page, "sent");
        const ar = headers.split("\n").filter((l) => /^Authentication-Results:/i.test(l)).join("\n");
        assert.match(ar, /dkim=pass[^;]*header\.d=example\.org/, ar || headers);
        await page.context().close();
    });

    test("webmail: a wrong password is refused on the login page, and fail2ban's roundcube-auth jail counts it for the browser's address", async () => {
        const failed = async () => Number(/Total failed:\s+(\d+)/.exec(await mail.execOk("fail2ban-client status roundcube-auth"))?.[1]);
        const before = await failed();
        const page = await submitLogin(ALICE, "not her password");
        await notice(page, "warning", /Login failed/i);
        await shot(page, "login-failed");
        await page.context().close();
        await eventually("the jail's count to rise", async () => ((await failed()) > before ? true : undefined), 20, 1000);
        const log = await mail.execOk("journalctl -t roundcube --since -5min --no-pager -o cat");
        assert.match(log, new RegExp(`Failed login for ${escapeRegExp(ALICE)} from ${escapeRegExp(LAB.host.ipv4)}`), log);
    });

    test("webmail: alice changes her password: too short is refused with a message; then the old one fails on IMAP and SMTP and the new one works, and an apply keeps it", async () => {
        const fresh = `alice-${randomBytes(9).toString("hex")}`;
        const page = await logIn(ALICE, configured);
        await page.goto(`${url}?_task=settings&_action=plugin.password`);
        const form = page.frameLocator("#preferences-frame").first();
        const inFrame = (await page.locator("#preferences-frame").count()) > 0;
        const root = inFrame ? form : page;
        await root.locator("#curpasswd").waitFor({ timeout: 30_000 });
        await shot(page, "password-page");

        // Too short: refused, with Roundcube's message, and nothing changes.
        await root.locator("#curpasswd").fill(configured);
        await root.locator("#newpasswd").fill("short1");
        await root.locator("#confpasswd").fill("short1");
        await root.locator("button.mainaction, input.mainaction").first().click();
        // The error notice (the page's own hint says the same, so the notice is what counts).
        await notice(page, "error", /at least 12 characters/i);
        await shot(page, "password-too-short");
        assert.equal(await loginAccepted("imap", ALICE, configured), true, "the too-short attempt changed nothing");

        await root.locator("#curpasswd").fill(configured);
        await root.locator("#newpasswd").fill(fresh);
        await root.locator("#confpasswd").fill(fresh);
        await root.locator("button.mainaction, input.mainaction").first().click();
        await notice(page, "confirmation", /Successfully saved/i);
        await shot(page, "password-changed");
        await page.context().close();

        assert.equal(await loginAccepted("imap", ALICE, fresh), true, "IMAP takes the new password");
        assert.equal(await loginAccepted("smtp", ALICE, fresh), true, "SMTP AUTH takes the new password");
        assert.equal(await loginAccepted("imap", ALICE, configured), false, "IMAP refuses the old one");
        assert.equal(await loginAccepted("smtp", ALICE, configured), false, "SMTP AUTH refuses the old one");

        // An apply with no config change (the directory step, as `npm run lab` runs it) keeps hers.
        const [applied] = await applyOnGuest("mail", stepsOf(SERVICE.directory, model), labSecrets());
        assert.equal(applied.result, "unchanged", applied.actions.join("; "));
        assert.equal(await loginAccepted("imap", ALICE, fresh), true, "still hers after the apply");

        // And back, through the same page (the other suites log in with the configured password).
        const again = await logIn(ALICE, fresh);
        await again.goto(`${url}?_task=settings&_action=plugin.password`);
        const root2 = inFrame ? again.frameLocator("#preferences-frame").first() : again;
        await root2.locator("#curpasswd").fill(fresh);
        await root2.locator("#newpasswd").fill(configured);
        await root2.locator("#confpasswd").fill(configured);
        await root2.locator("button.mainaction, input.mainaction").first().click();
        await notice(again, "confirmation", /Successfully saved/i);
        await again.context().close();
        assert.equal(await loginAccepted("imap", ALICE, configured), true);
    });
});
