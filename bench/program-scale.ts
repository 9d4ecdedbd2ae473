/**
 * Benchmark 4: evaluating the Pulumi program under mocks for 1 domain / 10 users against
 * 200 domains / 5,000 users. Targets: the large stack evaluates in at most 3× the small one's time,
 * and resources grow with domains (DNS records), not with users (users are rows of the directory
 * step, not resources).
 *
 * Users are given configured (secret) passwords, as a provider with 5,000 mailboxes would import
 * them; the same sizes with generated passwords are measured too, because each generated password
 * is a `random.RandomPassword` resource (components/generated-secrets.ts) and so does grow with users.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { summarize, type Summary } from "./stats";
import type { BenchOutcome } from "./report";

const REPO = join(__dirname, "..");
const SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIxAglU8iN8lYBu+/Y8RgeojtfSqUa/9l0CVgx3Hm+Bn admin@example.org";

export interface Size {
    readonly domains: number;
    readonly users: number;
    /** Passwords set as secret config (no resource) or generated (one RandomPassword each). */
    readonly passwords: "configured" | "generated";
}

const domainName = (i: number, total: number) => (total === 1 ? "example.org" : `d${String(i + 1).padStart(3, "0")}.example.org`);

/** A valid stack config of this size: users spread evenly over the domains, a postmaster alias each. */
export function scaledConfig(size: Size): { config: Record<string, unknown>; secretKeys: string[] } {
    const domains = Array.from({ length: size.domains }, (_, i) => domainName(i, size.domains));
    const users = Array.from({ length: size.users }, (_, i) => ({
        address: `user${i + 1}@${domains[i % domains.length]}`,
        displayName: `User ${i + 1}`,
        ...(size.passwords === "configured" ? { password: `bench-password-${String(i + 1).padStart(6, "0")}` } : {}),
    }));
    const aliases = domains.map((d, i) => ({ source: `postmaster@${d}`, destination: users[i % users.length].address }));
    const raw: Record<string, unknown> = {
        mailHost: "mx1.example.org",
        domains,
        adminEmail: "hostmaster@example.org",
        server: { type: "cx22", location: "fsn1", sshPublicKeys: [SSH_KEY], adminCidrs: ["203.0.113.0/24"] },
        users,
        aliases,
        dkimSelectors: ["bench2026"],
        nextcloud: { enabled: false },
        acme: { directoryUrl: "https://acme-staging-v02.api.letsencrypt.org/directory" },
    };
    const config = Object.fromEntries(Object.entries(raw).map(([k, v]) => [`ispmail:${k}`, typeof v === "string" ? v : JSON.stringify(v)]));
    return { config, secretKeys: size.passwords === "configured" ? ["ispmail:users"] : [] };
}

interface Evaluation {
    readonly seconds: number;
    readonly processSeconds: number;
    readonly resources: number;
    readonly byType: Record<string, number>;
    readonly stdinBytes: number;
    readonly rssMiB: number;
}

function evaluate(size: Size): Promise<Evaluation> {
    const configFile = join(mkdtempSync(join(tmpdir(), "ispmail-bench-")), "config.json");
    writeFileSync(configFile, JSON.stringify(scaledConfig(size)));
    const start = process.hrtime.bigint();
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, ["--import", "tsx", join(__dirname, "program-eval.ts"), configFile], { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });

        let out = "";
        let err = "";
        const timer = setTimeout(() => child.kill("SIGKILL"), 300_000);
        child.stdout.on("data", (b: Buffer) => (out += b.toString()));
        child.stderr.on("data", (b: Buffer) => (err += b.toString()));
        child.on("error", reject);
        child.on("close", (code) => {
            clearTimeout(timer);
            rmSync(dirname(configFile), { recursive: true, force: true });
            if (code !== 0) return reject(new Error(`program evaluation (${size.domains} domains, ${size.users} users) failed (exit ${code}):\n${err.slice(-3000)}`));
            const line = JSON.parse(out.trim().split("\n").pop()!) as Omit<Evaluation, "processSeconds">;
            resolve({ ...line, processSeconds: Number(process.hrtime.bigint() - start) / 1e9 });
        });
    });
}

const DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord";
const RANDOM_PASSWORD = "random:index/randomPassword:RandomPassword";

/** Resource types whose count differs between two evaluations. */
function grownTypes(a: Record<string, number>, b: Record<string, number>): Record<string, [number, number]> {
    const out: Record<string, [number, number]> = {};
    for (const t of new Set([...Object.keys(a), ...Object.keys(b)])) if ((a[t] ?? 0) !== (b[t] ?? 0)) out[t] = [a[t] ?? 0, b[t] ?? 0];
    return out;
}

export async function benchProgramScale(opts: { runs: number; log: (line: string) => void }): Promise<BenchOutcome> {
    const small: Size = { domains: 1, users: 10, passwords: "configured" };
    const large: Size = { domains: 200, users: 5000, passwords: "configured" };
    const largeSameDomains: Size = { domains: 1, users: 5000, passwords: "configured" };
    const smallGenerated: Size = { ...small, passwords: "generated" };
    const largeGenerated: Size = { ...large, passwords: "generated" };
    const mid: Size = { domains: 50, users: 1250, passwords: "configured" };
    // A warm-up evaluation: the first tsx compile of the program is cached for the rest.
    await evaluate(small);
    const samples = new Map<Size, Evaluation[]>();
    const measure = async (size: Size, run: number) => {
        const e = await evaluate(size);
        samples.set(size, [...(samples.get(size) ?? []), e]);
        opts.log(`program-scale run ${run}: ${size.domains} domains / ${size.users} users (${size.passwords} passwords): ${e.seconds.toFixed(2)} s, ${e.resources} resources`);
    };
    for (let run = 1; run <= opts.runs; run++) {
        // Side by side in each round, so drift of the machine hits every size alike.
        for (const size of [small, mid, large, largeSameDomains]) await measure(size, run);
    }
    // Generated passwords once each: the large one takes about a minute on its own.
    for (const size of [smallGenerated, largeGenerated]) await measure(size, 1);
    const summary = (s: Size): { seconds: Summary; processSeconds: Summary; resources: number; byType: Record<string, number>; stdinMiB: number; rssMiB: number } => {
        const list = samples.get(s)!;
        return {
            seconds: summarize(list.map((e) => e.seconds)),
            processSeconds: summarize(list.map((e) => e.processSeconds)),
            resources: list[0].resources,
            byType: list[0].byType,
            stdinMiB: Math.round((list[0].stdinBytes / 2 ** 20) * 100) / 100,
            rssMiB: Math.max(...list.map((e) => e.rssMiB)),
        };
    };
    const [S, M, L, LU, SG, LG] = [small, mid, large, largeSameDomains, smallGenerated, largeGenerated].map(summary);
    // Seconds per resource beyond the small stack: constant when evaluation is linear in resources.
    const perResourceMs = (x: typeof S) => ((x.seconds.median - S.seconds.median) / (x.resources - S.resources)) * 1000;
    const ratio = L.seconds.median / S.seconds.median;
    const ratioMin = L.seconds.min / S.seconds.min;
    // Users alone (1 domain, 10 -> 5,000 users) must not add resources; domains add DNS records.
    const usersAddResources = LU.resources !== S.resources;
    const dnsGrows = (L.byType[DNS_RECORD] ?? 0) > (S.byType[DNS_RECORD] ?? 0);
    const timeOk = ratio <= 3;
    const met = timeOk && !usersAddResources && dnsGrows;
    const notes = [
        `Evaluation grows linearly with resources, not faster: ${perResourceMs(M).toFixed(1)} ms per added resource at 50 domains (${M.resources} resources, ${M.seconds.median.toFixed(2)} s), ${perResourceMs(L).toFixed(1)} ms at 200 domains (${L.resources}).`,
        `Evaluation time = runMocked() of index.ts in a fresh Node process (registration of every resource until the runtime settles); process start and tsx compile excluded (process wall time is in the JSON). One warm-up evaluation first; ${opts.runs} runs per size, sizes interleaved.`,
        `Users have configured (secret) passwords. With generated passwords each user is one random.RandomPassword resource: ${SG.resources} resources for 10 users, ${LG.resources} for 5,000 (evaluation ${LG.seconds.median.toFixed(2)} s median vs ${SG.seconds.median.toFixed(2)} s) — users then do add resources, one each.`,
    ];
    if (!timeOk) {
        notes.push(
            `Time ratio ${ratio.toFixed(2)} > 3: the 200-domain stack has ${L.byType[DNS_RECORD]} cloudflare.DnsRecord resources (${Math.round((L.byType[DNS_RECORD] - S.byType[DNS_RECORD]) / (large.domains - small.domains))} per domain) and each resource costs one registration in the Pulumi runtime (~${perResourceMs(L).toFixed(1)} ms here), while 5,000 users add only ${(LU.seconds.median - S.seconds.median).toFixed(2)} s. A ratio of 3 at 200× the domains is out of reach while every DNS record is its own resource. What would close it: fewer records per domain (the optional autoconfig/autodiscover/MTA-STS/TLS-RPT names behind a per-domain switch), or one resource per zone that uploads the zone's records in bulk (Cloudflare's zone-file import) instead of one resource per record. The linear cost (${L.seconds.median.toFixed(1)} s for 200 domains) is small next to the ${L.byType[DNS_RECORD]} Cloudflare API calls a real \`pulumi up\` of such a stack makes.`,
        );
    }
    if (usersAddResources) notes.push(`Users added resources even with configured passwords: ${JSON.stringify(grownTypes(S.byType, LU.byType))}.`);
    return {
        name: "program-scale",
        title: "Program evaluation under mocks: 1 domain / 10 users vs 200 domains / 5,000 users",
        target: "time ratio <= 3; resources grow with domains, not users",
        met,
        headline:
            `${S.seconds.min.toFixed(2)} / ${S.seconds.median.toFixed(2)} s vs ${L.seconds.min.toFixed(2)} / ${L.seconds.median.toFixed(2)} s: ratio ${ratioMin.toFixed(2)} / ${ratio.toFixed(2)}; ` +
            `resources ${S.resources} -> ${L.resources} (DNS records ${S.byType[DNS_RECORD] ?? 0} -> ${L.byType[DNS_RECORD] ?? 0}); 1 domain with 5,000 users: ${LU.resources} resources`,
        notes,
        data: {
            sizes: {
                small: { ...small, ...S },
                mid: { ...mid, ...M },
                large: { ...large, ...L },
                largeUsersOneDomain: { ...largeSameDomains, ...LU },
                smallGeneratedPasswords: { ...smallGenerated, ...SG },
                largeGeneratedPasswords: { ...largeGenerated, ...LG },
            },
            ratio: { min: ratioMin, median: ratio },
            msPerAddedResource: { mid: perResourceMs(M), large: perResourceMs(L) },
            grownSmallToLarge: grownTypes(S.byType, L.byType),
            grownByUsersOnly: grownTypes(S.byType, LU.byType),
            randomPasswordsGenerated: { small: SG.byType[RANDOM_PASSWORD] ?? 0, large: LG.byType[RANDOM_PASSWORD] ?? 0 },
        },
    };
}
