/**
 * The lab's own config files live under lab/files/ (they are not part of the product); like
 * components/templates.ts, `*.mustache` files get only what varies filled in, without escaping.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
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
