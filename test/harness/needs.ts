/**
 * Reasons for node:test's `{ skip }`: why a test cannot run on this machine, or undefined when it
 * can. A reason says what is missing and why the test needs it. `npm test` lists every skipped test
 * with its reason, and its strict runs (ISPMAIL_REQUIRE_LAB=1, ISPMAIL_E2E=off) fail on any of
 * them (test/run.mjs), so a skip here never passes for a test that ran.
 */

/** For a test that does what only root may (chown to root, chroot, loop devices, ...). */
export function needsRoot(why: string): string | undefined {
    return process.getuid?.() === 0 ? undefined : `needs root: ${why}`;
}
