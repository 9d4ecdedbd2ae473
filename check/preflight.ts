/**
 * `npm run check -- --preflight --stack <name> [--from <your public IPv4>]`: what must be true
 * before the first `pulumi up`, checked from the machine that will run it, so that `up` does not
 * stop half way (or build a server nobody can configure):
 *  - the stack file passes the program's own validation (every problem with its key; a placeholder
 *    Nextcloud hash included);
 *  - the provider tokens are in the environment (HCLOUD_TOKEN, CLOUDFLARE_API_TOKEN: the one way
 *    this project passes them) and valid;
 *  - every DNS zone of the stack is an active zone of that Cloudflare account, readable with the token;
 *  - the Hetzner server type and location exist for that token;
 *  - this machine's public IPv4 address is inside `ispmail:server.adminCidrs` (every step reaches
 *    the server over SSH through a firewall open to those networks only);
 *  - outbound port 25 at Hetzner: not visible through its API, so said as a reminder.
 * Read-only: it asks the APIs, it changes nothing. API addresses can be pointed elsewhere (the tests
 * run a fake of both APIs on loopback).
 */
import { BlockList, isIPv4 } from "node:net";
import { join } from "node:path";
import { ConfigError, parseConfig, readStackFile, type Model } from "../components/config";
import { dnsZones } from "../components/dns/records";
import { ok, problem, skipped, type Finding } from "./findings";

export interface PreflightOptions {
    readonly stack: string;
    /** The stack file (default: Pulumi.<stack>.yaml in the repository). */
    readonly stackFile?: string;
    /** Where the tokens are read from (default: process.env). */
    readonly env?: Readonly<Record<string, string | undefined>>;
    readonly cloudflareApi?: string;
    readonly hcloudApi?: string;
    /** This machine's public IPv4 address; asked at {@link traceUrl} when not given. */
    readonly from?: string;
    /** Answers "ip=<address>" lines, as Cloudflare's /cdn-cgi/trace does. */
    readonly traceUrl?: string;
}

const CLOUDFLARE_API = "https://api.cloudflare.com/client/v4";
const HCLOUD_API = "https://api.hetzner.cloud/v1";
const TRACE_URL = "https://www.cloudflare.com/cdn-cgi/trace";
const REPO_ROOT = join(__dirname, "..");

interface ApiAnswer {
    readonly status: number;
    readonly body: any;
}

async function getJson(url: string, token: string): Promise<ApiAnswer> {
    const r = await fetch(url, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(15_000) });
    const text = await r.text();
    let body: unknown;
    try {
        body = JSON.parse(text);
    } catch {
        body = text;
    }
    return { status: r.status, body };
}

/** The stack's model, or the finding that says why there is none. */
function loadModel(opts: PreflightOptions): { model?: Model; finding: Finding } {
    const path = opts.stackFile ?? join(REPO_ROOT, `Pulumi.${opts.stack}.yaml`);
    try {
        // Encrypted values (mailbox passwords, the DQS key) only need to be there; their plaintext is
        // the CLI's. The stand-in fits every secret's own rule (26 lowercase letters and digits).
        const file = readStackFile(path, { encryptedStandIn: "encryptedvaluestandin00000" });
        const { model } = parseConfig(file.raw, { stack: opts.stack, secretKeys: file.secretKeys });
        return { model, finding: ok("config", `${path} passes the program's validation (protected: ${model.protectState})`) };
    } catch (e) {
        const message = e instanceof ConfigError || e instanceof Error ? e.message : String(e);
        return { finding: problem("config", message.replace(/\n\s*/g, " "), `fix the keys named in ${path}; every key is commented in Pulumi.prod.yaml`) };
    }
}

async function cloudflareFindings(model: Model, token: string, api: string): Promise<Finding[]> {
    const verify = await getJson(`${api}/user/tokens/verify`, token);
    if (verify.status !== 200 || verify.body?.result?.status !== "active") {
        return [problem("cloudflare-token", `the token is not accepted (HTTP ${verify.status}${verify.body?.result?.status ? `, ${verify.body.result.status}` : ""})`, "create an API token with Zone:Read and DNS:Edit on the zones and export it as CLOUDFLARE_API_TOKEN")];
    }
    const findings: Finding[] = [ok("cloudflare-token", "the token is active")];
    for (const zone of dnsZones(model)) {
        const configuredId = model.dns.zoneIds[zone];
        const found = configuredId
            ? await getJson(`${api}/zones/${encodeURIComponent(configuredId)}`, token)
            : await getJson(`${api}/zones?name=${encodeURIComponent(zone)}`, token);
        const z = configuredId ? found.body?.result : found.body?.result?.[0];
        if (found.status !== 200 || !z) {
            findings.push(problem("cloudflare-zone", `zone ${zone} is not in this token's account (HTTP ${found.status})`, `add ${zone} to Cloudflare and give the token Zone:Read on it`));
            continue;
        }
        if (z.status !== "active") {
            findings.push(problem("cloudflare-zone", `zone ${zone} is ${z.status}, not active: Cloudflare does not answer for it yet`, `point the registrar's name servers to ${(z.name_servers ?? []).join(", ") || "Cloudflare's"}`));
            continue;
        }
        const records = await getJson(`${api}/zones/${z.id}/dns_records?per_page=1`, token);
        if (records.status !== 200) findings.push(problem("cloudflare-zone", `zone ${zone}: the token cannot read its DNS records (HTTP ${records.status})`, "give the token DNS:Edit on the zone"));
        else findings.push(ok("cloudflare-zone", `zone ${zone} is active and its records are readable (DNS:Edit itself shows at the first up: it cannot be tested without writing)`));
    }
    return findings;
}

async function hetznerFindings(model: Model, token: string, api: string): Promise<Finding[]> {
    const types = await getJson(`${api}/server_types?name=${encodeURIComponent(model.server.type)}`, token);
    if (types.status === 401 || types.status === 403) {
        return [problem("hcloud-token", `the token is not accepted (HTTP ${types.status})`, "create a Read & Write API token in the Hetzner Cloud project and export it as HCLOUD_TOKEN")];
    }
    const findings: Finding[] = [ok("hcloud-token", "the token is accepted")];
    if (types.status !== 200 || !types.body?.server_types?.length) {
        findings.push(problem("hcloud-server", `server type ${model.server.type} does not exist (HTTP ${types.status})`, "set ispmail:server.type to one of `hcloud server-type list`"));
    } else {
        findings.push(ok("hcloud-server", `server type ${model.server.type} exists`));
    }
    const locations = await getJson(`${api}/locations?name=${encodeURIComponent(model.server.location)}`, token);
    if (locations.status !== 200 || !locations.body?.locations?.length) {
        findings.push(problem("hcloud-server", `location ${model.server.location} does not exist (HTTP ${locations.status})`, "set ispmail:server.location to one of `hcloud location list`"));
    } else {
        findings.push(ok("hcloud-server", `location ${model.server.location} exists`));
    }
    return findings;
}

/** Is `address` inside one of the IPv4 CIDRs? */
function insideCidrs(address: string, cidrs: readonly string[]): boolean {
    const list = new BlockList();
    for (const cidr of cidrs) {
        const [network, bits] = cidr.split("/");
        if (isIPv4(network)) list.addSubnet(network, Number(bits), "ipv4");
    }
    return list.check(address, "ipv4");
}

async function publicAddress(opts: PreflightOptions): Promise<string> {
    if (opts.from) return opts.from;
    const r = await fetch(opts.traceUrl ?? TRACE_URL, { signal: AbortSignal.timeout(15_000) });
    const ip = /^ip=(.+)$/m.exec(await r.text())?.[1]?.trim();
    if (!ip) throw new Error("no ip= line in the answer");
    return ip;
}

async function adminCidrFinding(model: Model, opts: PreflightOptions): Promise<Finding> {
    let address: string;
    try {
        address = await publicAddress(opts);
    } catch (e) {
        return skipped("admin-cidrs", `this machine's public address is unknown (${e instanceof Error ? e.message : String(e)}); give it with --from`);
    }
    if (!isIPv4(address)) return skipped("admin-cidrs", `${address} is not an IPv4 address; the steps connect to the server's IPv4 address, give yours with --from`);
    if (insideCidrs(address, model.server.adminCidrs)) return ok("admin-cidrs", `this machine (${address}) is inside ispmail:server.adminCidrs`);
    return problem(
        "admin-cidrs",
        `this machine's public address ${address} is outside ispmail:server.adminCidrs (${model.server.adminCidrs.join(", ")}): every step of \`pulumi up\` would time out at SSH`,
        `add ${address}/32 (or your network) to ispmail:server.adminCidrs, or run pulumi up from a machine inside them`,
    );
}

export async function preflight(opts: PreflightOptions): Promise<Finding[]> {
    const env = opts.env ?? process.env;
    const { model, finding } = loadModel(opts);
    const findings: Finding[] = [finding];
    const tokens = { hcloud: env.HCLOUD_TOKEN, cloudflare: env.CLOUDFLARE_API_TOKEN };
    for (const [name, value] of [["HCLOUD_TOKEN", tokens.hcloud], ["CLOUDFLARE_API_TOKEN", tokens.cloudflare]] as const) {
        if (!value) findings.push(problem("tokens", `${name} is not set`, `export ${name} (README.md, "Provider tokens")`));
    }
    if (!model) {
        findings.push(skipped("providers", "not asked: the stack file must pass validation first"));
        return findings;
    }
    const asked = async (area: string, run: () => Promise<Finding[]>): Promise<Finding[]> => {
        try {
            return await run();
        } catch (e) {
            return [problem(area, `the API did not answer (${e instanceof Error ? e.message : String(e)})`, "check this machine's network and the API's status page")];
        }
    };
    if (tokens.cloudflare) findings.push(...(await asked("cloudflare", () => cloudflareFindings(model, tokens.cloudflare!, opts.cloudflareApi ?? CLOUDFLARE_API))));
    if (tokens.hcloud) findings.push(...(await asked("hcloud", () => hetznerFindings(model, tokens.hcloud!, opts.hcloudApi ?? env.HCLOUD_ENDPOINT ?? HCLOUD_API))));
    findings.push(await adminCidrFinding(model, opts));
    findings.push(skipped("outbound-25", "Hetzner's API does not say whether outbound port 25 is unblocked for this project: new projects have it blocked; ask Hetzner support to unblock it (after the first paid invoice), or no mail leaves the server"));
    return findings;
}
