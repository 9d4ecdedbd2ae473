/**
 * The real browser of the browser suites (webmail, dbadmin): Debian's chromium driven by
 * playwright-core (no browser download), and screenshots of what a person would see.
 */
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";

/** Debian's chromium, with the suite's own switches (host mappings, certificate pins). */
export function launchChromium(args: readonly string[] = []): Promise<Browser> {
    return chromium.launch({
        executablePath: CHROMIUM,
        // root in a container: chromium's sandbox needs user namespaces it does not get here.
        args: ["--no-sandbox", ...args],
    });
}

/** A full-page screenshot into `dir` as <name>.png; returns its path. */
export async function screenshot(page: Page, dir: string, name: string): Promise<string> {
    const path = join(dir, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    return path;
}
