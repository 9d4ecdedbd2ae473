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
import type { Browser, FrameLocator, Page } from "playwright-core";
import { launchChromium, screenshot } from "./browser";
import { SERVICE, stepsOf } from "../../components/services";
import { tlsKeySecret } from "../../components/secrets";
import { STATE_DIR } from "../../lab/lab";
import { applyOnGuest, ensureLab, guest, LAB, labModel, labSecrets } from "../../lab/testkit";
import { controllerLearnsOf, controllerLearnsSettled, escapeRegExp, eventually, FOREIGN_RCPT, foreignMessage, headerBlock, inMailbox, loginAccepted, messageIdOf, sendThroughForeign, shellQuote, sleep, token } from "./clients";

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
    const shot = (page: Page, name: string) => screenshot(page, ARTIFACTS, name);

    before(async () => {
        await ensureLab();
        mkdirSync(ARTIFACTS, { recursive: true });
        const secrets = labSecrets();
        configured = secrets[`user:${ALICE}`];
        browser = await launchChromium([
            `--host-resolver-rules=MAP ${host} ${LAB.mail.ipv4}`,
            `--ignore-certificate-errors-spki-list=${spkiPin(secrets[tlsKeySecret(model.tlsKeys[0])])}`,
        ]);
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

    /**
     * Where a settings page's form is: Roundcube's elastic skin shows some settings sections in a
     * content frame (#preferences-frame; managesieve's filter form in #filter-box) and others in
     * the page itself. Waits for `field` in whichever it is.
     */
    async function settingsForm(page: Page, field: string): Promise<Page | FrameLocator> {
        const frame = "#preferences-frame, #filter-box";
        const root = (await page.locator(frame).count()) > 0 ? page.frameLocator(frame).first() : page;
        await root.locator(field).waitFor({ timeout: 30_000 });
        return root;
    }

    /** alice's Sieve scripts, as Roundcube's managesieve plugin left them: deactivated and deleted. */
    async function removeSieveScripts(): Promise<void> {
        await mail.execOk(`doveadm sieve deactivate -u ${ALICE}`);
        const names = (await mail.execOk(`doveadm sieve list -u ${ALICE}`)).split("\n").map((l) => l.replace(/\s+ACTIVE$/, "").trim()).filter(Boolean);
        for (const name of names) await mail.execOk(`doveadm sieve delete -u ${ALICE} ${shellQuote(name)}`);
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

    test("webmail: alice changes her password: too short or the same is refused with a message; then the old one fails on IMAP and SMTP and the new one works; an apply keeps it, an admin reset in the config replaces it", async () => {
        const fresh = `alice-${randomBytes(9).toString("hex")}`;
        const page = await logIn(ALICE, configured);
        await page.goto(`${url}?_task=settings&_action=plugin.password`);
        const form = await settingsForm(page, "#curpasswd");
        await shot(page, "password-page");
        const submitPassword = async (current: string, next: string) => {
            await form.locator("#curpasswd").fill(current);
            await form.locator("#newpasswd").fill(next);
            await form.locator("#confpasswd").fill(next);
            await form.locator("button.mainaction, input.mainaction").first().click();
        };

        // Too short: refused, with Roundcube's message, and nothing changes.
        await submitPassword(configured, "short1");
        // The error notice (the page's own hint says the same, so the notice is what counts).
        await notice(page, "error", /at least 12 characters/i);
        await shot(page, "password-too-short");
        assert.equal(await loginAccepted("imap", ALICE, configured), true, "the too-short attempt changed nothing");
        // The same one again: refused too.
        await submitPassword(configured, configured);
        await notice(page, "error", /have to be different from the old one/i);

        await submitPassword(configured, fresh);
        await notice(page, "confirmation", /Successfully saved/i);
        await shot(page, "password-changed");
        await page.context().close();

        assert.equal(await loginAccepted("imap", ALICE, fresh), true, "IMAP takes the new password");
        assert.equal(await loginAccepted("smtp", ALICE, fresh), true, "SMTP AUTH takes the new password");
        assert.equal(await loginAccepted("imap", ALICE, configured), false, "IMAP refuses the old one");
        assert.equal(await loginAccepted("smtp", ALICE, configured), false, "SMTP AUTH refuses the old one");

        // An apply with no config change (the directory step, as `npm run lab` runs it) keeps hers.
        const directory = stepsOf(SERVICE.directory, model);
        const [applied] = await applyOnGuest("mail", directory, labSecrets());
        assert.equal(applied.result, "unchanged", applied.actions.join("; "));
        assert.equal(await loginAccepted("imap", ALICE, fresh), true, "still hers after the apply");

        // The admin resets it in the stack config (`pulumi config set --secret --path
        // 'ispmail:users[0].password' ...`): after the apply the configured one works in the webmail
        // and on IMAP and SMTP, hers no longer.
        const reset = `reset-${randomBytes(9).toString("hex")}`;
        const [resetApplied] = await applyOnGuest("mail", directory, { ...labSecrets(), [`user:${ALICE}`]: reset });
        assert.match(resetApplied.actions.join("; "), new RegExp(`set the configured password of ${escapeRegExp(ALICE)}`), resetApplied.actions.join("; "));
        assert.equal(await loginAccepted("imap", ALICE, fresh), false, "IMAP refuses hers after the reset");
        assert.equal(await loginAccepted("imap", ALICE, reset), true, "IMAP takes the reset password");
        assert.equal(await loginAccepted("smtp", ALICE, reset), true, "SMTP AUTH takes the reset password");
        await (await logIn(ALICE, reset, "login-after-reset")).context().close();

        // Back to the lab's configured password: one more reset, as its digest changes back.
        const [restored] = await applyOnGuest("mail", directory, labSecrets());
        assert.match(restored.actions.join("; "), /set the configured password/, restored.actions.join("; "));
        assert.equal(await loginAccepted("imap", ALICE, configured), true);
    });

    test("webmail: alice turns on a vacation reply; a foreign sender of two messages gets exactly one, DKIM-signed by us", async (t) => {
        t.after(removeSieveScripts);
        const replySubject = token("Out of office");
        const page = await logIn(ALICE, configured);
        await page.goto(`${url}?_task=settings&_action=plugin.managesieve-vacation`);
        const form = await settingsForm(page, "#vacation_subject");
        await form.locator("#vacation_subject").fill(replySubject);
        await form.locator("#vacation_reason").fill("I am away this week and will read my mail on Monday.");
        await form.locator("#vacation_status").selectOption("on");
        await shot(page, "vacation");
        await form.locator(".formbuttons button.submit").first().click();
        await notice(page, "confirmation", /Out-of-office data saved successfully/i);
        await page.context().close();

        // A sender of its own (rcpt+tag@example.net): a vacation reply goes to each sender once per interval.
        const sender = `${LAB.foreignUser}+away${randomBytes(4).toString("hex")}@${LAB.foreignDomain}`;
        for (const n of [1, 2]) {
            const subject = token(`before the holidays ${n}`);
            await sendThroughForeign(ALICE, subject, undefined, sender);
            await inMailbox(ALICE, "INBOX", subject);
        }
        const reply = headerBlock(await foreignMessage(replySubject));
        assert.match(reply, new RegExp(`^To: <?${escapeRegExp(sender)}>?$`, "m"), reply);
        assert.match(reply, /^From: .*alice@example\.org/m, reply);
        assert.match(reply, /dkim=pass header\.d=example\.org/, reply);
        // Both messages are delivered (the replies are decided at delivery): once our queue is empty
        // a second reply would have left too.
        await eventually("an empty queue on the mail server", async () => ((await mail.execOk("postqueue -j")).trim() === "" ? true : undefined));
        await sleep(3000);
        const replies = await guest("foreign").execOk(`grep -lF -- ${shellQuote(replySubject)} /home/${LAB.foreignUser}/Maildir/new/* | wc -l`);
        assert.equal(replies.trim(), "1", "exactly one vacation reply for two messages");
    });

    test("webmail: alice adds a filter that files mail from example.net into a folder, and the next message from there lands in it", async (t) => {
        t.after(removeSieveScripts);
        const folder = "From abroad";
        await mail.execOk(`doveadm mailbox status -u ${ALICE} messages ${shellQuote(folder)} >/dev/null 2>&1 || doveadm mailbox create -s -u ${ALICE} ${shellQuote(folder)}`);
        const page = await logIn(ALICE, configured);
        await page.goto(`${url}?_task=settings&_action=plugin.managesieve`);
        // "Create", as a person adds a filter: the form opens in the settings frame.
        await page.locator('a.create[onclick*="plugin.managesieve-add"]').first().click();
        const form = await settingsForm(page, "#_name");
        await form.locator("#_name").fill("Mail from example.net");
        await form.locator("#header0").selectOption("from");
        await form.locator("#rule_op0").selectOption("contains");
        await form.locator('input[name="_rule_target[0][]"]').first().fill(`@${LAB.foreignDomain}`);
        await form.locator("#action_type0").selectOption("fileinto");
        await form.locator("#action_mailbox0").selectOption(folder);
        await shot(page, "filter");
        await form.locator(".formbuttons button.submit").first().click();
        await notice(page, "confirmation", /Filter saved successfully/i);
        await page.context().close();

        const subject = token("filed by alice's filter");
        await sendThroughForeign(ALICE, subject);
        await inMailbox(ALICE, folder, subject);
        const inInbox = await mail.execOk(`doveadm search -u ${ALICE} mailbox INBOX subject ${shellQuote(subject)}`);
        assert.equal(inInbox.trim(), "", "filed, not (also) kept in INBOX");
    });

    test("webmail: marking a message as junk moves it to Junk and Rspamd learns it as spam", async () => {
        const subject = token("webmail junk");
        // A body of its own: Rspamd recognises a message it learned before by its content.
        await sendThroughForeign(ALICE, subject, `Cheap watches and a lottery win, reference ${randomBytes(8).toString("hex")}.`);
        await inMailbox(ALICE, "INBOX", subject);
        const messageId = await messageIdOf(ALICE, "INBOX", subject);
        assert.deepEqual(await controllerLearnsOf(messageId), [], "learned before the click");

        const page = await logIn(ALICE, configured);
        const row = page.locator("#messagelist tr", { hasText: subject });
        await row.waitFor({ timeout: 30_000 });
        await row.click();
        // Selected and shown in the preview pane: only then does the toolbar act on it.
        await page.frameLocator("#messagecontframe").getByText(subject).first().waitFor({ timeout: 30_000 });
        // markasjunk's toolbar button, "Junk".
        await page.locator("a.button.junk:not(.disabled)").first().click();
        await notice(page, "confirmation", /Successfully reported as junk/i);
        await shot(page, "marked-as-junk");
        await page.context().close();

        await inMailbox(ALICE, "Junk", subject);
        // Dovecot's imapsieve pipes the moved message to Rspamd's controller. Per message, from the
        // controller's log: the statfiles' totals also move with the autolearn of any other mail
        // delivered meanwhile (a CI run once saw one such ham learn).
        assert.deepEqual(await controllerLearnsSettled(messageId, 1), ["spam"], `one spam learn and no ham learn of ${messageId}`);
    });
});
