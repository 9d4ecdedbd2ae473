/**
 * The throughput benchmark's arithmetic and its batch follower (bench/throughput.ts,
 * bench/smtp-load.ts): the bound a milter's per-message CPU puts on the on / off ratio, and the
 * shell loop that follows a batch from one SSH session, run here against a real directory and a
 * stand-in postqueue.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { followCommand } from "../../bench/smtp-load";
import { milterBound, milterCpuAllowedMs } from "../../bench/throughput";

function bash(script: string, env: Record<string, string>): Promise<{ stdout: string; code: number | null }> {
    return new Promise((resolve, reject) => {
        const child = spawn("bash", ["-c", script], { env: { ...process.env, ...env } });
        let stdout = "";
        child.stdout.on("data", (d) => (stdout += d));
        child.on("error", reject);
        child.on("close", (code) => resolve({ stdout, code }));
    });
}

describe("throughput benchmark", () => {
    test("the milter bound: no scan time leaves the off rate, the scan's CPU adds to every message of a session", () => {
        assert.equal(milterBound(0, 50, 2), 1);
        // 2 sessions at 50 msg/s off: 40 ms per message and session; 60 ms of scanning makes it 100 ms.
        assert.ok(Math.abs(milterBound(60, 50, 2) - 0.4) < 1e-9);
        // More sessions hide more of it; more CPU lowers it.
        assert.ok(milterBound(60, 50, 4) > milterBound(60, 50, 2));
        assert.ok(milterBound(90, 50, 2) < milterBound(60, 50, 2));
        // The CPU a target allows is the bound read backwards.
        assert.ok(Math.abs(milterCpuAllowedMs(0.4, 50, 2) - 60) < 1e-9);
        assert.ok(Math.abs(milterBound(milterCpuAllowedMs(0.55, 37, 3), 37, 3) - 0.55) < 1e-9);
    });

    test("the follower answers `in N` once the batch is delivered, `idle N` when the queue stays empty and nothing arrives", { timeout: 30_000 }, async () => {
        const dir = mkdtempSync(join(tmpdir(), "ispmail-follow-"));
        try {
            // A postqueue that reports an empty queue (postqueue -j prints one line per queued message).
            writeFileSync(join(dir, "postqueue"), "#!/bin/sh\nexit 0\n");
            chmodSync(join(dir, "postqueue"), 0o755);
            const maildir = join(dir, "new");
            const env = { PATH: `${dir}:${process.env.PATH}` };
            const count = `mkdir -p ${maildir}; ls ${maildir} | wc -l`;
            // One message there before the batch, three delivered while it is followed.
            await bash(`mkdir -p ${maildir} && touch ${maildir}/old`, env);
            const delivering = bash(`for i in 1 2 3; do sleep 0.3; touch ${maildir}/m$i; done`, env);
            const done = await bash(followCommand(count, 1, 3), env);
            await delivering;
            assert.equal(done.code, 0);
            assert.equal(done.stdout.trim(), "in 3");
            // Nothing more arrives: after four quiet polls (~2 s) it says so, with what it counted.
            const t0 = Date.now();
            const idle = await bash(followCommand(count, 1, 5), env);
            assert.equal(idle.stdout.trim(), "idle 3");
            assert.ok(Date.now() - t0 >= 1500, "idle only after several quiet polls");
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });
});
