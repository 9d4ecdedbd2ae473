/**
 * Where the trixie tools chroot is (built by test/harness/build-trixie-chroot.sh, which `npm test`
 * (test/run.mjs) calls as root). Tests that need it skip with the reason when it is missing.
 */
import { join } from "node:path";

export const TRIXIE_CHROOT = process.env.ISPMAIL_TRIXIE_CHROOT ?? join(__dirname, "..", "..", ".lab", "trixie-tools");
