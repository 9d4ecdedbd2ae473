/**
 * `npm run check -- --preflight` (check/preflight.ts) against a fake of the Cloudflare and Hetzner
 * APIs on loopback (the real ones are out of reach here): the answers it gets decide each finding,
 * and each problem names its fix. The fake checks the bearer token as the APIs do.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { parse, stringify } from "yaml";
import type { Finding } from "../../check/findings";
import { preflight, type PreflightOptions } from "../../check/preflight";
import { REPO_ROOT } from "../fixtures/config";

const CF_TOKEN = "cf-token-for-the-test";
const HC_TOKEN = "hc-token-for-the-test";

/** Zones of the fake Cloudflare account: name -> status. */
const zones = new Map<string, string>([
    ["example.org", "active"],
    ["example.com", "active"],
]);

function fakeApis(): Server {
    return createServer((req, res) => {
        const url = new URL(req.url ?? "/", "http://fake");
        const json = (status: number, body: unknown) => {
            res.writeHead(status, { "content-type": "application/json" });
            res.end(JSON.stringify(body));
        };
        const auth = req.headers.authorization;
        if (url.pathname === "/trace") return res.end("fl=1\nip=203.0.113.7\nts=1\n");
        if (url.pathname.startsWith("/cf/")) {
            if (auth !== `Bearer ${CF_TOKEN}`) return json(401, { success: false, errors: [{ code: 1000, message: "Invalid API Token" }] });
            if (url.pathname === "/cf/user/tokens/verify") return json(200, { success: true, result: { status: "active" } });
            if (url.pathname === "/cf/zones") {
                const name = url.searchParams.get("name") ?? "";
                const status = zones.get(name);
                return json(200, { success: true, result: status ? [{ id: `id-${name}`, name, status, name_servers: ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"] }] : [] });
            }
            if (/^\/cf\/zones\/id-[^/]+\/dns_records$/.test(url.pathname)) return json(200, { success: true, result: [] });
            return json(404, { success: false });
        }
        if (url.pathname.startsWith("/hc/")) {
            if (auth !== `Bearer ${HC_TOKEN}`) return json(401, { error: { code: "unauthorized" } });
            if (url.pathname === "/hc/server_types") return json(200, { server_types: ["cx22", "cx32"].includes(url.searchParams.get("name") ?? "") ? [{ name: url.searchParams.get("name") }] : [] });
            if (url.pathname === "/hc/locations") return json(200, { locations: ["fsn1", "nbg1"].includes(url.searchParams.get("name") ?? "") ? [{ name: url.searchParams.get("name") }] : [] });
        }
        return json(404, {});
    });
}

describe("check: preflight before the first pulumi up", () => {
    let server: Server;
    let base: string;
    let dir: string;
    before(async () => {
        server = fakeApis();
        await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
        base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
        dir = mkdtempSync(join(tmpdir(), "ispmail-preflight-"));
    });
    after(() => {
        server.close();
        rmSync(dir, { recursive: true, force: true });
    });

    /** Pulumi.prod.yaml with `change` applied to its config, as a stack file of its own. */
    const stackFile = (change: (config: Record<string, any>) => void = () => undefined) => {
        const doc = parse(readFileSync(join(REPO_ROOT, "Pulumi.prod.yaml"), "utf8"));
        change(doc.config);
        const path = join(dir, `Pulumi.${Math.random().toString(36).slice(2)}.yaml`);
        writeFileSync(path, stringify(doc));
        return path;
    };
    const run = (opts: Partial<PreflightOptions> = {}) =>
        preflight({
            stack: "prod",
            stackFile: stackFile(),
            env: { HCLOUD_TOKEN: HC_TOKEN, CLOUDFLARE_API_TOKEN: CF_TOKEN },
            cloudflareApi: `${base}/cf`,
            hcloudApi: `${base}/hc`,
            traceUrl: `${base}/trace`,
            ...opts,
        });
    const problems = (fs: Finding[]) => fs.filter((f) => f.status === "problem").map((f) => `${f.check}: ${f.message} -> ${f.fix}`);

    it("preflight: all is well: the config, both tokens, every zone, the server type and location, this machine inside adminCidrs (from the trace); port 25 is a reminder", async () => {
        const findings = await run({ stackFile: stackFile((c) => (c["ispmail:server"].adminCidrs = ["203.0.113.0/24"])) });
        assert.deepEqual(problems(findings), []);
        const okChecks = findings.filter((f) => f.status === "ok").map((f) => f.check);
        for (const check of ["config", "cloudflare-token", "cloudflare-zone", "hcloud-token", "hcloud-server", "admin-cidrs"]) assert.ok(okChecks.includes(check), `${check}: ${JSON.stringify(findings)}`);
        assert.equal(okChecks.filter((c) => c === "cloudflare-zone").length, 2, "both zones");
        assert.match(findings.find((f) => f.check === "admin-cidrs")!.message, /203\.0\.113\.7/);
        assert.equal(findings.find((f) => f.check === "outbound-25")?.status, "skipped");
    });

    it("preflight: this machine outside adminCidrs is a problem naming its address and the fix", async () => {
        const findings = await run({ stackFile: stackFile((c) => (c["ispmail:server"].adminCidrs = ["198.51.100.0/24"])), from: "192.0.2.44" });
        assert.deepEqual(problems(findings).filter((p) => p.startsWith("admin-cidrs")), [
            "admin-cidrs: this machine's public address 192.0.2.44 is outside ispmail:server.adminCidrs (198.51.100.0/24): every step of `pulumi up` would time out at SSH -> add 192.0.2.44/32 (or your network) to ispmail:server.adminCidrs, or run pulumi up from a machine inside them",
        ]);
    });

    it("preflight: missing tokens, a refused token, a zone that is not in the account or still pending, an unknown server type are each a problem with its fix", async () => {
        const missing = await run({ env: {} });
        assert.deepEqual(problems(missing).filter((p) => p.startsWith("tokens")).length, 2);
        const refused = await run({ env: { HCLOUD_TOKEN: "wrong", CLOUDFLARE_API_TOKEN: "wrong" } });
        assert.ok(problems(refused).some((p) => p.startsWith("cloudflare-token: the token is not accepted (HTTP 401")), problems(refused).join("\n"));
        assert.ok(problems(refused).some((p) => p.startsWith("hcloud-token: the token is not accepted (HTTP 401)")), problems(refused).join("\n"));

        zones.set("example.com", "pending");
        zones.delete("example.org");
        try {
            const zoneProblems = problems(await run()).filter((p) => p.startsWith("cloudflare-zone"));
            assert.deepEqual(zoneProblems, [
                "cloudflare-zone: zone example.com is pending, not active: Cloudflare does not answer for it yet -> point the registrar's name servers to ada.ns.cloudflare.com, bob.ns.cloudflare.com",
                "cloudflare-zone: zone example.org is not in this token's account (HTTP 200) -> add example.org to Cloudflare and give the token Zone:Read on it",
            ]);
        } finally {
            zones.set("example.org", "active");
            zones.set("example.com", "active");
        }
        const badType = problems(await run({ stackFile: stackFile((c) => (c["ispmail:server"].type = "cx99")) }));
        assert.ok(badType.some((p) => p.startsWith("hcloud-server: server type cx99 does not exist")), badType.join("\n"));
    });

    it("preflight: a stack file the program would refuse is the first problem, and no API is asked", async () => {
        const findings = await run({
            stackFile: stackFile((c) => (c["ispmail:nextcloud"] = { enabled: true, version: "31.0.9", sha256: "0".repeat(64) })),
            cloudflareApi: "http://127.0.0.1:9/unreachable",
        });
        assert.equal(findings[0].status, "problem");
        assert.match(findings[0].message, /ispmail:nextcloud\.sha256: is a placeholder/);
        assert.equal(findings.find((f) => f.check === "providers")?.status, "skipped");
        assert.ok(!findings.some((f) => f.check.startsWith("cloudflare")), "nothing asked");
    });
});
