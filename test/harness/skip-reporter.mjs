// A reporter for node's test runner (`--test-reporter`, https://nodejs.org/docs/latest-v20.x/api/test.html#custom-reporters):
// one JSON line per test or suite that did not run to a verdict — skipped (`{ skip }`, `t.skip()`,
// a skipped `describe`) or marked todo (its failure would not fail the run) — with its file, name
// and reason. test/harness/node-tests.mjs reads the lines back for test/run.mjs.
//
// Why a reporter and not node's closing summary: the summary counts a skipped test as passed, and
// the tests inside a skipped suite not at all (its "skipped" line misses them).

/** @param {AsyncIterable<{ type: string, data: Record<string, unknown> }>} source */
export default async function* skipReporter(source) {
    for await (const event of source) {
        if (event.type !== "test:pass" && event.type !== "test:fail") continue;
        const { skip, todo, name, file } = event.data;
        const kind = skip !== undefined && skip !== false ? "skipped" : todo !== undefined && todo !== false ? "todo" : undefined;
        if (kind === undefined) continue;
        const reason = kind === "skipped" ? skip : todo;
        yield `${JSON.stringify({
            kind,
            file: typeof file === "string" ? file : "",
            name: String(name),
            reason: typeof reason === "string" && reason !== "" ? reason : "(no reason given)",
        })}\n`;
    }
}
