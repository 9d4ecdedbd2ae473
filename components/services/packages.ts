/**
 * The `packages` step: every package of every step of the server in ONE apt run, before any other
 * step, with every step's debconf answers set first and the files their packages read at install
 * time (`beforePackages`) in place. dpkg's triggers (man-db, systemd, ldconfig, the PHP and Apache
 * helpers) then run once for the whole server instead of once per step; every later step still
 * lists its own packages, finds them installed (one dpkg-query) and so also works alone.
 *
 * Nothing here is written by hand: the list is the steps' own, so adding a package to a step adds it
 * here, and a package is never listed twice. It is data like any step: `pulumi preview` shows it as
 * one command whose summary names every package, and every other step's command depends on it.
 *
 * Daemons installed long before their step configures them: Debian starts each daemon with its
 * packaged default when it is installed (postinst), as it did when each step installed its own
 * packages a moment before writing its config; now the default runs for the length of the steps in
 * between (about a minute on a fresh server, which has no users yet; the firewall opens only the
 * public ports). Nothing depends on that window: each step writes its config and reloads or
 * restarts its daemon when the config changed or the daemon is not running, as on any later apply. What must differ from Debian's
 * default already at install is set before it: Postfix's debconf "No configuration" (no main.cf of
 * Debian's, Postfix not started), Roundcube's (no database of its own, Apache untouched),
 * postgresql-common's createcluster drop-in (no cluster outside the data volume). Apache serves
 * only its default page meanwhile: phpPgAdmin's conf, which its package enables, is `Require local`,
 * and no PHP runs in Apache before the web step enables PHP-FPM (mod_php is never installed). The
 * resolver step leaves Postfix alone until its step has written main.cf. Daemons are not
 * kept from starting (no policy-rc.d, no `systemctl mask`): that would also hold back the timers
 * and helpers that the packages start (php's session cleanup, certbot's, ...), which no step starts
 * again, and a policy-rc.d left behind by an interrupted run would silently stop every later
 * upgrade from restarting its daemon.
 */
import type { Step, StepFile } from "../steps";
import { PACKAGES_STEP } from "./names";

export { PACKAGES_STEP };

/** Each item once, in first-seen order (the steps' order; a step's own order is kept, see web.ts). */
function once(items: readonly string[]): string[] {
    return [...new Set(items)];
}

/** The debconf question of a selection line ("pkg question type value"). */
const question = (line: string) => line.trim().split(/\s+/).slice(0, 2).join(" ");

/**
 * The packages step of these steps, or none when no step installs anything. Refuses two steps that
 * answer the same debconf question differently, or ship different content for the same file that
 * must be in place before the packages.
 */
export function renderPackagesStep(steps: readonly Step[]): Step | undefined {
    const packages = once(steps.flatMap((s) => s.packages ?? []));
    if (packages.length === 0) return undefined;
    const debconf = once(steps.flatMap((s) => s.debconf ?? []));
    const asked = new Map<string, string>();
    for (const line of debconf) {
        const q = question(line);
        const other = asked.get(q);
        if (other !== undefined) throw new Error(`debconf question "${q}" is answered twice, differently: "${other}" and "${line}"`);
        asked.set(q, line);
    }
    const early: StepFile[] = [];
    for (const f of steps.flatMap((s) => s.files.filter((x) => x.beforePackages))) {
        const other = early.find((x) => x.path === f.path);
        if (!other) early.push(f);
        else if (JSON.stringify(other) !== JSON.stringify(f)) throw new Error(`${f.path} is installed before the packages by two steps, with different content or attributes`);
    }
    return {
        name: PACKAGES_STEP,
        description: `Every package of every step in one apt run (${packages.length} packages), debconf answers and install-time files first`,
        packages,
        ...(debconf.length ? { debconf } : {}),
        files: early,
        script: "# Nothing else: the packages step only installs (components/services/packages.ts).",
        after: [],
    };
}

/**
 * The server's steps with the packages step in front and every other step after it (an explicit
 * edge: `dependsOn` in Pulumi, the same order in the lab). Unchanged when no step has packages.
 */
export function withPackagesStep(steps: readonly Step[]): Step[] {
    const install = renderPackagesStep(steps);
    if (!install) return [...steps];
    return [install, ...steps.map((s) => afterPackages(s))];
}

/** A step that runs after the packages step (the edge {@link withPackagesStep} adds). */
export function afterPackages(step: Step): Step {
    return step.after.includes(PACKAGES_STEP) ? step : { ...step, after: [PACKAGES_STEP, ...step.after] };
}
