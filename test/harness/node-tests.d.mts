// Types of node-tests.mjs (plain JavaScript, so that test/run.mjs runs with node alone).

export interface TestPolicy {
    /** auto: when the machine can run the lab; required: fail when it cannot; off: not run here. */
    readonly e2e: "auto" | "required" | "off";
    /** Any test that did not run fails the run. */
    readonly strict: boolean;
    /** The variable that asked for it ("" when not strict). */
    readonly why: string;
}

/** One line of skip-reporter.mjs: a test or suite that did not run to a verdict. */
export interface NotRun {
    readonly kind: "skipped" | "todo";
    readonly file: string;
    readonly name: string;
    readonly reason: string;
}

export declare function testPolicy(env: Record<string, string | undefined>): TestPolicy;

export declare function runReportingSkips(
    cmd: string,
    args: readonly string[],
    options?: { env?: Record<string, string | undefined>; stdio?: "inherit" | "pipe" },
): { status: number; skipped: NotRun[]; stdout: string; stderr: string };

export declare function skipVerdict(policy: TestPolicy, label: string, skipped: readonly NotRun[], root?: string): { fails: boolean; lines: string[] };
