/**
 * The lab's ACME test CA: pebble from Debian on https://198.51.100.1:14000/dir (in the lab namespace),
 * serving TLS with a certificate of the lab's own CA (made with openssl at run time), resolving
 * through the lab DNS and validating HTTP-01 on port 80 of the guests — as Let's Encrypt would.
 *
 * Two different roots matter to the guests:
 *  - the lab CA (.lab/ca/ca.pem) signs pebble's HTTPS endpoint; it is installed into the guests'
 *    trust store so that certbot talks to pebble as it talks to Let's Encrypt;
 *  - pebble's issuing root (new on every pebble start) signs the certificates it issues; it is
 *    written to .lab/pebble/issuing-root.pem for tests that verify an issued chain.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { LAB, PATHS } from "./lab";
import { daemonPid, inLabNet, run, runOk, startDaemon, waitFor } from "./proc";

export const LAB_CA_CERT = join(PATHS.ca, "ca.pem");
const LAB_CA_KEY = join(PATHS.ca, "ca.key");
const PEBBLE = "pebble";

/** Creates the lab CA and pebble's server certificate (for the lab bridge addresses) once. */
export async function ensureLabCa(): Promise<void> {
    mkdirSync(PATHS.ca, { recursive: true, mode: 0o700 });
    if (!existsSync(LAB_CA_CERT)) {
        await runOk("openssl", [
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", LAB_CA_KEY, "-out", LAB_CA_CERT, "-days", "3650", "-subj", "/CN=ispmail lab CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }
    // pebble's own key, made once; its certificate names the lab bridge addresses.
    const key = join(PATHS.ca, "pebble.key");
    if (!existsSync(key)) await runOk("openssl", ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key]);
    await labCaCertificate(key, [`IP:${LAB.host.ipv4}`, `IP:${LAB.host.ipv6}`], join(PATHS.ca, "pebble.pem"));
}

/**
 * A certificate of the lab CA for an existing key (a PEM file) with these subjectAltName entries
 * ("DNS:name", "IP:address"), written to `out`: made only when there is none or the names changed,
 * so that the files made from it stay as they are from one lab run to the next.
 */
export async function labCaCertificate(keyFile: string, altNames: readonly string[], out: string): Promise<void> {
    const ext = `${out}.ext`;
    const extensions = `subjectAltName=${altNames.join(",")}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n`;
    if (existsSync(out) && existsSync(ext) && readFileSync(ext, "utf8") === extensions) return;
    writeFileSync(ext, extensions);
    const csr = `${out}.csr`;
    await runOk("openssl", ["req", "-new", "-key", keyFile, "-out", csr, "-subj", `/CN=${altNames[0].replace(/^[A-Z]+:/, "")}`]);
    await runOk("openssl", ["x509", "-req", "-in", csr, "-CA", LAB_CA_CERT, "-CAkey", LAB_CA_KEY, "-CAcreateserial", "-days", "825", "-extfile", ext, "-out", out]);
}

/** GET over HTTPS inside the lab namespace, trusting the lab CA. */
async function labGet(url: string): Promise<{ ok: boolean; body: string }> {
    const [cmd, args] = inLabNet("curl", ["-sS", "--fail", "--max-time", "5", "--cacert", LAB_CA_CERT, url]);
    const r = await run(cmd, args, { timeoutMs: 10_000 });
    return { ok: r.code === 0, body: r.stdout };
}

/** Starts pebble when it is not running; refreshes the issuing root file. */
export async function ensurePebble(): Promise<"started" | "running"> {
    mkdirSync(PATHS.pebble, { recursive: true });
    let state: "started" | "running" = "running";
    if (daemonPid(PEBBLE) === undefined) {
        const config = join(PATHS.pebble, "pebble-config.json");
        writeFileSync(
            config,
            JSON.stringify(
                {
                    pebble: {
                        listenAddress: `${LAB.host.ipv4}:14000`,
                        managementListenAddress: `${LAB.host.ipv4}:15000`,
                        certificate: join(PATHS.ca, "pebble.pem"),
                        privateKey: join(PATHS.ca, "pebble.key"),
                        // HTTP-01 on the standard port, as Let's Encrypt validates.
                        httpPort: 80,
                        tlsPort: 443,
                        ocspResponderURL: "",
                        externalAccountBindingRequired: false,
                    },
                },
                null,
                2,
            ),
        );
        const [cmd, args] = inLabNet("pebble", ["-config", config, "-dnsserver", `${LAB.dns}:53`]);
        // No random validation delays, no random nonce rejections: fast and deterministic tests.
        startDaemon(PEBBLE, cmd, args, { ...process.env, PEBBLE_VA_NOSLEEP: "1", PEBBLE_WFE_NONCEREJECT: "0" });
        await waitFor("pebble's ACME directory", async () => (await labGet(LAB.acme.directoryUrl)).ok, { tries: 60, intervalMs: 250, timeoutMs: 20_000 });
        state = "started";
    }
    const root = await labGet(`${LAB.acme.managementUrl}/roots/0`);
    if (!root.ok || !root.body.includes("BEGIN CERTIFICATE")) throw new Error("pebble did not serve its issuing root at /roots/0");
    writeFileSync(PATHS.pebbleIssuingRoot, root.body);
    return state;
}

export { PEBBLE as PEBBLE_DAEMON };
