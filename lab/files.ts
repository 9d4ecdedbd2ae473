/**
 * The lab's own config files live under lab/files/ (they are not part of the product); like
 * components/templates.ts, `*.mustache` files get only what varies filled in, without escaping.
 */
import { generateKeyPairSync } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import Mustache from "mustache";

export const LAB_FILES_DIR = join(__dirname, "files");

export function labFile(relPath: string): string {
    return readFileSync(join(LAB_FILES_DIR, relPath), "utf8");
}

export function labTemplate(relPath: string, view: Record<string, unknown>): string {
    return Mustache.render(labFile(relPath), view, {}, { escape: (v: unknown) => String(v) });
}

/** Writes a rendered file only when its content differs; returns whether it wrote. */
export function writeIfChanged(file: string, content: string): boolean {
    if (existsSync(file) && readFileSync(file, "utf8") === content) return false;
    writeFileSync(file, content);
    return true;
}

/**
 * A private key the lab makes once and keeps (0600), as a provider keeps its keys: records that
 * publish its public half (DKIM, TLSA, trust anchors) stay valid across lab runs.
 */
export function keptKey(file: string, generate: () => string): string {
    if (!existsSync(file)) {
        mkdirSync(dirname(file), { recursive: true });
        writeFileSync(file, generate(), { mode: 0o600 });
    }
    return readFileSync(file, "utf8");
}

/** A new ECDSA P-256 private key, PKCS#8 PEM. */
export const ecP256PrivateKey = (): string =>
    generateKeyPairSync("ec", { namedCurve: "P-256", privateKeyEncoding: { type: "pkcs8", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } }).privateKey;
