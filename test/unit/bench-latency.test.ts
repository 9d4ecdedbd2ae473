/**
 * The latency benchmark's arithmetic (bench/latency.ts latencyFigures): latency from submission
 * start to IMAP visibility, nearest-rank percentiles, lost = accepted but never seen, refused
 * messages counted as errors, and how far the sends fell behind the schedule.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { latencyFigures } from "../../bench/latency";

const probe = (i: number, latency: number | null, opts: { error?: string; lag?: number; submit?: number } = {}) => {
    const scheduled = i / 20;
    const start = scheduled + (opts.lag ?? 0.001);
    const accepted = opts.error ? null : start + (opts.submit ?? 0.05);
    return { i, scheduled, start, accepted, visible: latency === null || opts.error ? null : start + latency, error: opts.error ?? null };
};

describe("bench: latency figures", () => {
    test("bench: p50/p99/max of submission -> visible over 1,000 messages, none lost", () => {
        // 1,000 messages: latency (i+1) ms, so p50 = 0.5 s and p99 = 0.99 s by nearest rank.
        const f = latencyFigures(Array.from({ length: 1000 }, (_, i) => probe(i, (i + 1) / 1000)));
        assert.equal(f.sent, 1000);
        assert.equal(f.visible, 1000);
        assert.equal(f.lost, 0);
        assert.equal(f.errors, 0);
        assert.ok(Math.abs(f.p50 - 0.5) < 1e-9, String(f.p50));
        assert.ok(Math.abs(f.p99 - 0.99) < 1e-9, String(f.p99));
        assert.ok(Math.abs(f.max - 1) < 1e-9);
        assert.ok(Math.abs(f.submitP99 - 0.05) < 1e-9);
        assert.ok(Math.abs(f.achievedRate - 20) < 1e-6, String(f.achievedRate));
    });

    test("bench: an accepted message never seen is lost; a refused one is an error; lag is the worst late start", () => {
        const f = latencyFigures([probe(0, 0.2), probe(1, null), probe(2, null, { error: "SMTPDataError: (451, b'Ratelimit exceeded')" }), probe(3, 0.4, { lag: 0.75 })]);
        assert.equal(f.accepted, 3);
        assert.equal(f.visible, 2);
        assert.equal(f.lost, 1);
        assert.equal(f.errors, 1);
        assert.ok(Math.abs(f.maxScheduleLag - 0.75) < 1e-9);
        assert.ok(Math.abs(f.max - 0.4) < 1e-9);
    });
});
