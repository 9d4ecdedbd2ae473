/**
 * Proportional set size (PSS) of a guest's processes, by systemd unit: the pure half of the memory
 * benchmark (bench/memory.ts), unit-tested in test/unit/bench-pss.test.ts.
 *
 * PSS counts each page a process maps divided by the number of processes sharing it, so summing it
 * over processes counts shared pages (libraries, PostgreSQL's shared buffers, Rspamd's forked
 * workers) once in all: the sum over every process is the memory the processes hold.
 *
 * The guest prints, per sample, `@ <epoch seconds>` and then one line per process:
 * `<cgroup path relative to /sys/fs/cgroup> <pid> <Pss kB from /proc/<pid>/smaps_rollup>`
 * ({@link sampleCommand}); a process that exited between listing and reading has Pss -1 and is
 * left out.
 */

export interface ProcessPss {
    /** e.g. "system.slice/dovecot.service", "system.slice/system-postgresql.slice/postgresql@17-main.service", "init.scope" */
    readonly cgroup: string;
    readonly pid: number;
    readonly pssKiB: number;
}

export interface PssSample {
    /** Epoch seconds (the guest's clock). */
    readonly at: number;
    readonly processes: readonly ProcessPss[];
}

/**
 * One sample of every process in the cgroups under `root`, printed by one `awk` over every
 * cgroup.procs (no fork per process). Without `root`, the guest's systemd hierarchy: /sys/fs/cgroup
 * when it is cgroup v2, else its `unified` or `systemd` part (a container on a hybrid host), never
 * the v1 controllers' hierarchies, which list the same processes again.
 */
export function sampleCommand(root?: string): string {
    const pick = root
        ? `r='${root}'`
        : `r=/sys/fs/cgroup; if [ ! -e $r/cgroup.controllers ]; then if [ -e $r/unified/cgroup.procs ]; then r=$r/unified; else r=$r/systemd; fi; fi`;
    return (
        `${pick}; printf '@ %s\\n' "$(date +%s.%N)"; ` +
        `find "$r" -name cgroup.procs -print0 | xargs -0 awk -v root="$r" '{ cg = substr(FILENAME, length(root) + 2); sub("/?cgroup[.]procs$", "", cg); if (cg == "") cg = "/"; ` +
        `f = "/proc/" $1 "/smaps_rollup"; pss = -1; while ((getline line < f) > 0) if (line ~ /^Pss:/) { split(line, a, " "); pss = a[2] }; close(f); print cg, $1, pss }'`
    );
}

/** Samples until `stopFile` exists, every `intervalSeconds`, appending to `out`. */
export function samplerScript(out: string, stopFile: string, intervalSeconds: number): string {
    return `set -u; : > ${out}; while [ ! -e ${stopFile} ]; do { ${sampleCommand()}; } >> ${out} 2>/dev/null; sleep ${intervalSeconds}; done`;
}

/** Parses the sampler's output; malformed lines are errors (they would silently lose memory). */
export function parseSamples(text: string): PssSample[] {
    const samples: { at: number; processes: ProcessPss[] }[] = [];
    for (const [i, raw] of text.split("\n").entries()) {
        const line = raw.trim();
        if (!line) continue;
        if (line.startsWith("@ ")) {
            const at = Number(line.slice(2));
            if (!Number.isFinite(at)) throw new Error(`line ${i + 1}: bad sample time: ${line}`);
            samples.push({ at, processes: [] });
            continue;
        }
        const m = /^(\S+) (\d+) (-?\d+)$/.exec(line);
        if (!m) throw new Error(`line ${i + 1}: not "<cgroup> <pid> <pss>": ${line}`);
        if (samples.length === 0) throw new Error(`line ${i + 1}: a process before the first sample time`);
        const pssKiB = Number(m[3]);
        if (pssKiB < 0) continue; // exited meanwhile
        const current = samples[samples.length - 1];
        const pid = Number(m[2]);
        if (current.processes.some((p) => p.pid === pid)) continue; // listed twice (moved between cgroups while read): counted once
        current.processes.push({ cgroup: m[1], pid, pssKiB });
    }
    return samples;
}

/**
 * The systemd unit a cgroup belongs to: its deepest `.service` or `.scope` component (a service's
 * own sub-cgroups count to it), else the deepest slice, "/" for the root cgroup.
 */
export function unitOf(cgroup: string): string {
    const parts = cgroup.split("/").filter(Boolean);
    for (let i = parts.length - 1; i >= 0; i--) if (/\.(service|scope)$/.test(parts[i])) return parts[i];
    return parts.length ? parts[parts.length - 1] : "/";
}

/** The top-level slice of a cgroup ("system.slice", "user.slice", "init.scope", "/"). */
export const topOf = (cgroup: string) => cgroup.split("/").filter(Boolean)[0] ?? "/";

export interface UnitPss {
    readonly unit: string;
    readonly pssKiB: number;
    readonly processes: number;
}

/** PSS per unit of one sample, largest first; processes whose cgroup `exclude` matches are left out. */
export function pssByUnit(sample: PssSample, exclude: (cgroup: string) => boolean = () => false): UnitPss[] {
    const by = new Map<string, { pssKiB: number; processes: number }>();
    for (const p of sample.processes) {
        if (exclude(p.cgroup)) continue;
        const unit = unitOf(p.cgroup);
        const u = by.get(unit) ?? { pssKiB: 0, processes: 0 };
        u.pssKiB += p.pssKiB;
        u.processes++;
        by.set(unit, u);
    }
    return [...by.entries()].map(([unit, u]) => ({ unit, ...u })).sort((a, b) => b.pssKiB - a.pssKiB || (a.unit < b.unit ? -1 : 1));
}

/** Total PSS of one sample, without the excluded cgroups. */
export function totalPss(sample: PssSample, exclude: (cgroup: string) => boolean = () => false): number {
    return sample.processes.reduce((sum, p) => (exclude(p.cgroup) ? sum : sum + p.pssKiB), 0);
}

/** The daemons issue 19 names, by unit; every other unit is reported under its own name. */
export const DAEMONS: readonly { readonly label: string; readonly unit: RegExp }[] = [
    { label: "Postfix", unit: /^postfix(@.*)?\.service$/ },
    { label: "Dovecot", unit: /^dovecot\.service$/ },
    { label: "Rspamd", unit: /^rspamd\.service$/ },
    { label: "Valkey", unit: /^(valkey|redis)(-server)?(@.*)?\.service$/ },
    { label: "PostgreSQL", unit: /^postgresql(@.*)?\.service$/ },
    { label: "Apache", unit: /^apache2(@.*)?\.service$/ },
    { label: "PHP-FPM", unit: /^php[0-9.]*-fpm\.service$/ },
    { label: "fail2ban", unit: /^fail2ban\.service$/ },
    { label: "unbound", unit: /^unbound\.service$/ },
];

/** The daemon label of a unit ("Dovecot"), or the unit itself for the rest (journald, cron, ...). */
export function daemonOf(unit: string): string {
    return DAEMONS.find((d) => d.unit.test(unit))?.label ?? unit;
}

/** PSS per daemon label (units of one daemon summed), in MiB, largest first. */
export function pssByDaemon(units: readonly UnitPss[]): { daemon: string; mib: number; processes: number }[] {
    const by = new Map<string, { kib: number; processes: number }>();
    for (const u of units) {
        const d = daemonOf(u.unit);
        const x = by.get(d) ?? { kib: 0, processes: 0 };
        x.kib += u.pssKiB;
        x.processes += u.processes;
        by.set(d, x);
    }
    return [...by.entries()].map(([daemon, x]) => ({ daemon, mib: mib(x.kib), processes: x.processes })).sort((a, b) => b.mib - a.mib);
}

export const mib = (kib: number) => Math.round((kib / 1024) * 10) / 10;

/**
 * Per unit, the highest PSS any sample saw (units peak at different moments: the sum of these is
 * more than the highest total), with the sample of the highest total.
 */
export function peaks(samples: readonly PssSample[], exclude: (cgroup: string) => boolean = () => false): { perUnit: UnitPss[]; peakTotalKiB: number; peakAt: number } {
    const perUnit = new Map<string, UnitPss>();
    let peakTotalKiB = 0;
    let peakAt = NaN;
    for (const s of samples) {
        const total = totalPss(s, exclude);
        if (total > peakTotalKiB) [peakTotalKiB, peakAt] = [total, s.at];
        for (const u of pssByUnit(s, exclude)) if ((perUnit.get(u.unit)?.pssKiB ?? -1) < u.pssKiB) perUnit.set(u.unit, u);
    }
    return { perUnit: [...perUnit.values()].sort((a, b) => b.pssKiB - a.pssKiB), peakTotalKiB, peakAt };
}
