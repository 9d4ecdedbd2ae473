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
