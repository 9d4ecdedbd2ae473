/** Several runs of one measurement, summarised the way a noisy machine needs: min and median. */
export interface Summary {
    readonly runs: number;
    readonly min: number;
    readonly median: number;
    readonly max: number;
    /** Every sample in run order, so a reader can see drift or one outlier. */
    readonly samples: readonly number[];
}

const round = (x: number) => Math.round(x * 1000) / 1000;

export function summarize(samples: readonly number[]): Summary {
    if (samples.length === 0) throw new Error("no samples to summarise");
    const sorted = [...samples].sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    return { runs: samples.length, min: round(sorted[0]), median: round(median), max: round(sorted[sorted.length - 1]), samples: samples.map(round) };
}

/** Seconds since `start` (a `process.hrtime.bigint()` value). */
export function secondsSince(start: bigint): number {
    return Number(process.hrtime.bigint() - start) / 1e9;
}

/** Runs `fn` and returns its result with the wall time in seconds. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; seconds: number }> {
    const start = process.hrtime.bigint();
    const value = await fn();
    return { value, seconds: secondsSince(start) };
}

/**
 * The p-th percentile (0 < p <= 100) by the nearest-rank method: the smallest sample with at least
 * p % of the samples at or below it (p99 of 1,000 samples is the 990th smallest). Always a sample.
 */
export function percentile(samples: readonly number[], p: number): number {
    if (samples.length === 0) throw new Error("no samples for a percentile");
    if (!(p > 0 && p <= 100)) throw new Error(`percentile ${p} is not in (0, 100]`);
    const sorted = [...samples].sort((a, b) => a - b);
    return sorted[Math.ceil((p / 100) * sorted.length) - 1];
}
