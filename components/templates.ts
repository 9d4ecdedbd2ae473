/**
 * Config files live under files/<service>/ as real files an admin can read. Static ones are read
 * as they are; `*.mustache` templates get only what varies per stack filled in.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Mustache from "mustache";

export const FILES_DIR = join(__dirname, "..", "files");

/** The content of files/<relPath>, unchanged. */
export function readStatic(relPath: string): string {
    return readFileSync(join(FILES_DIR, relPath), "utf8");
}

/**
 * Renders files/<relPath> with Mustache. Config files are not HTML: values are inserted as they
 * are (no escaping), so the view must only hold validated data from the model.
 */
export function renderTemplate(relPath: string, view: Record<string, unknown>): string {
    const template = readStatic(relPath);
    return Mustache.render(template, view, {}, { escape: (v: unknown) => String(v) });
}
