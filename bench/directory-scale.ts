/**
 * Benchmark: the mail directory at 5,000 mailboxes (issue 19, target 3). The lab's `directory` step
 * rendered for the lab's stack plus N bulk mailboxes, applied to the lab's mail guest:
 * - no change: the apply a `pulumi up` makes when nothing changed in the directory (the step's
 *   inputs are equal, so Pulumi would not even run it; the lab's no-op bench and a re-run after a
 *   reboot do) — target <= 5 s;
 * - one mailbox changes: its quota (a row update), or its configured password (one Argon2id hash:
 *   the admin reset) — target <= 5 s each.
 *
 * The bulk mailboxes are seeded as a directory after its first sync looks (rows with an Argon2id
 * hash of their configured password and the keyed digest of it), by COPY, because a first sync
 * hashes every new password once (Argon2id, 64 MiB, 3 passes: ~0.2-1 s each on this machine) and
 * 5,000 of them would take the whole bench time; that cost is measured per hash and reported.
 * All bulk mailboxes share one configured password, so one hash serves them all (bench data).
 * Afterwards the lab's own directory step is applied again (deleting the bulk rows, timed too).
 */
import { createHmac, randomBytes } from "node:crypto";
import type { MailUser, Model } from "../components/config";
import { userPasswordSecret } from "../components/secrets";
import { SERVICE, stepsOf } from "../components/services";
import { DIRECTORY_DIGEST_KEY_SECRET } from "../components/services/directory";
import { guest, labSecrets, labStack } from "../lab/testkit";
import { applyToMail, type Log } from "./lab-session";
import type { BenchOutcome } from "./report";
import { secondsSince, summarize } from "./stats";

const TARGET_SECONDS = 5;
const BULK_DOMAIN = "example.org";
const bulkAddress = (i: number) => `bulk${String(i).padStart(5, "0")}@${BULK_DOMAIN}`;

/** `sql` as postgres on the mail guest (peer authentication over the socket). */
const psql = (sql: string, input?: string) => guest("mail").execOk(`runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -d mailserver -c ${JSON.stringify(sql)}`, { input, timeoutMs: 300_000 });

async function timedApply(model: Model, secrets: Record<string, string>): Promise<{ seconds: number; result: string; actions: readonly string[] }> {
    const start = process.hrtime.bigint();
    const [applied] = await applyToMail(stepsOf(SERVICE.directory, model), secrets);
    return { seconds: secondsSince(start), result: applied.result, actions: applied.actions };
}

export async function benchDirectoryScale(opts: { runs: number; users: number; log: Log }): Promise<BenchOutcome> {
    const { model } = labStack();
    const secrets = labSecrets();
    const password = randomBytes(24).toString("base64url").slice(0, 32);
    const bulk: MailUser[] = Array.from({ length: opts.users }, (_, i) => {
        const address = bulkAddress(i + 1);
        return { address, local: address.split("@")[0], domain: BULK_DOMAIN, quotaMb: model.defaultQuotaMb, passwordFromConfig: true };
    });
    const big: Model = { ...model, users: [...model.users, ...bulk] };
    const bigSecrets: Record<string, string> = { ...secrets, ...Object.fromEntries(bulk.map((u) => [userPasswordSecret(u.address), password])) };

    // What Argon2id costs here, per hash (the price of each new mailbox and of each reset).
    const hashStart = process.hrtime.bigint();
    const hash = (await guest("mail").execOk("doveadm pw -s ARGON2ID", { input: `${password}\n${password}\n` })).trim();
    const hashSeconds = secondsSince(hashStart);

    // Seed: the rows a first sync of these mailboxes would have written (digest key as the sync reads it).
    const key = Buffer.from(secrets[DIRECTORY_DIGEST_KEY_SECRET], "utf8");
    const rows = bulk.map((u) => [u.local, u.domain, String(u.quotaMb), hash, "t", createHmac("sha256", key).update(`${u.address}\0${password}`).digest("hex")].join("\t")).join("\n") + "\n";
    await psql(`DELETE FROM users WHERE local LIKE 'bulk%' AND domain = '${BULK_DOMAIN}'`);
    const seedStart = process.hrtime.bigint();
    await psql("COPY users (local, domain, quota_mb, password_hash, managed, config_password_digest) FROM STDIN", rows);
    opts.log(`directory-scale: seeded ${opts.users} mailboxes in ${secondsSince(seedStart).toFixed(1)} s (one Argon2id hash: ${hashSeconds.toFixed(2)} s)`);

    const noop: number[] = [];
    const quota: number[] = [];
    const reset: number[] = [];
    const problems: string[] = [];
    try {
        // The first apply after seeding may record what COPY could not (none expected); not counted.
        const settle = await timedApply(big, bigSecrets);
        opts.log(`directory-scale: settling apply ${settle.seconds.toFixed(1)} s, ${settle.result} ${settle.actions.join("; ")}`);
        for (let i = 1; i <= opts.runs; i++) {
            const n = await timedApply(big, bigSecrets);
            if (n.result !== "unchanged") problems.push(`no-op run ${i} reported ${n.result}: ${n.actions.join("; ")}`);
            noop.push(n.seconds);

            const target = bulk[i % bulk.length];
            const moreQuota: Model = { ...big, users: big.users.map((u) => (u.address === target.address ? { ...u, quotaMb: u.quotaMb + 1 } : u)) };
            const q = await timedApply(moreQuota, bigSecrets);
            if (!q.actions.includes("synced directory: users +0 ~1 -0")) problems.push(`quota run ${i}: ${q.actions.join("; ")}`);
            quota.push(q.seconds);

            const resetSecrets = { ...bigSecrets, [userPasswordSecret(target.address)]: `${password}-reset-${i}` };
            const r = await timedApply(moreQuota, resetSecrets);
            if (!r.actions.some((a) => a === `set the configured password of ${target.address}`)) problems.push(`reset run ${i}: ${r.actions.join("; ")}`);
            reset.push(r.seconds);
            opts.log(`directory-scale ${i}: no-op ${n.seconds.toFixed(2)} s, one quota ${q.seconds.toFixed(2)} s, one password reset ${r.seconds.toFixed(2)} s`);
            // Back to the seeded state for the next run (its password and quota again: one more hash, not counted).
            await timedApply(big, bigSecrets);
        }
    } finally {
        const cleanup = await timedApply(model, secrets);
        opts.log(`directory-scale: back to the lab's directory in ${cleanup.seconds.toFixed(1)} s (${cleanup.actions.join("; ")})`);
        if (!cleanup.actions.some((a) => a.includes(`-${opts.users}`))) problems.push(`cleanup did not remove the ${opts.users} bulk mailboxes: ${cleanup.actions.join("; ")}`);
    }
    const s = { noop: summarize(noop), quota: summarize(quota), reset: summarize(reset) };
    const met = problems.length === 0 && s.noop.median <= TARGET_SECONDS && s.quota.median <= TARGET_SECONDS && s.reset.median <= TARGET_SECONDS;
    const firstSyncEstimate = hashSeconds * opts.users;
    return {
        name: "directory-scale",
        title: `Directory step with ${opts.users.toLocaleString("en")} mailboxes: no change, one changed`,
        target: `no-op apply <= ${TARGET_SECONDS} s and a one-mailbox change <= ${TARGET_SECONDS} s`,
        met,
        headline: `no-op ${s.noop.min.toFixed(2)} / ${s.noop.median.toFixed(2)} s; one quota ${s.quota.min.toFixed(2)} / ${s.quota.median.toFixed(2)} s; one password reset ${s.reset.min.toFixed(2)} / ${s.reset.median.toFixed(2)} s`,
        notes: [
            `${opts.runs} runs; the directory step alone (migrations check + sync over SSH, as Pulumi runs it), rendered for the lab stack plus ${opts.users} mailboxes in ${BULK_DOMAIN}.`,
            `Seeded by COPY as a first sync leaves them (Argon2id hash of the configured password, keyed digest). One Argon2id hash (64 MiB, 3 passes) took ${hashSeconds.toFixed(2)} s here, so a first sync of ${opts.users} new mailboxes would spend ~${Math.round(firstSyncEstimate)} s hashing (once per mailbox, never again unless its configured password changes).`,
            ...problems.map((p) => `Problem: ${p}`),
        ],
        data: { users: opts.users, hashSeconds, ...s, samples: { noop, quota, reset } },
    };
}
