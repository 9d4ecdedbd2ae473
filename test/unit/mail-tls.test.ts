/**
 * The tls step: a self-signed certificate for the stack's key, for mailHost and every web host,
 * created only when the files are missing, the key never world-readable. The script runs for real against a scratch
 * directory (openssl from the host) with the step's paths redirected.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parseConfig } from "../../components/config";
import { CERTIFICATE_KEY, TLS_DIR } from "../../components/services/tls";
import { tlsaOfKey } from "../../components/dns/records";
import { tlsKeySecret } from "../../components/secrets";
import { renderApplyScript, resolveSecrets } from "../../components/steps";
import { validRawConfig } from "../fixtures/config";
import { SERVICE, stepsOf } from "../../components/services";
import { needsRoot } from "../harness/needs";

const model = parseConfig(validRawConfig(), { stack: "test" }).model;
const [step] = stepsOf(SERVICE.tls, model);
/** The stack's certificate key (Pulumi's tls.PrivateKey, PKCS#1 PEM). */
const KEY = generateKeyPairSync("rsa", { modulusLength: 2048, privateKeyEncoding: { type: "pkcs1", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } }).privateKey;

/** The apply script with its TLS directory and key file moved into `dir` and package installation left out. */
function runScript(dir: string): { result: string; stderr: string } {
    const script = renderApplyScript({ ...resolveSecrets(step, { [tlsKeySecret(model.tlsKeys[0])]: KEY }), packages: [] })
        .replaceAll(CERTIFICATE_KEY, join(dir, "configured-key.pem"))
        .replaceAll(TLS_DIR, dir)
        // The scratch run is not root-owned /etc: keep the group of the running user.
        .replaceAll("-g ssl-cert", "-g $(id -gn)")
        .replaceAll("root:ssl-cert 640", "$(id -un):$(id -gn) 640");
    const r = spawnSync("bash", ["-s"], { input: script, encoding: "utf8", timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    return { result: r.stdout.trim().split("\n").pop() ?? "", stderr: r.stderr };
}

describe("tls step", () => {
    test("tls: runs after base", () => {
        assert.deepEqual(step.after, ["base"]);
        assert.equal(step.name, "tls");
    });

    test("tls: creates a certificate for mailHost and all web hosts, then leaves it alone", { skip: needsRoot("the script installs the TLS directory with install -o root") }, () => {
        const dir = mkdtempSync(join(tmpdir(), "ispmail-tls-"));
        try {
            const first = runScript(dir);
            assert.match(first.result, /"result":"changed".*created a self-signed certificate/);
            const text = execFileSync("openssl", ["x509", "-in", join(dir, "fullchain.pem"), "-noout", "-subject", "-ext", "subjectAltName"], { encoding: "utf8" });
            assert.match(text, /CN ?= ?mx1\.example\.org$/m);
            // The fixture's mailHost and web hosts (MTA-STS and autoconfig of both domains), written out.
            const sans = [...text.matchAll(/DNS:([a-z0-9.-]+)/g)].map((m) => m[1]).sort();
            assert.deepEqual(sans, ["autoconfig.example.com", "autoconfig.example.org", "mta-sts.example.com", "mta-sts.example.org", "mx1.example.org", "webmail.example.org"]);
            assert.equal(statSync(join(dir, "privkey.pem")).mode & 0o777, 0o640);
            assert.equal(statSync(join(dir, "fullchain.pem")).mode & 0o777, 0o644);
            // For the stack's key: its published TLSA matches even this stopgap certificate.
            assert.equal(statSync(join(dir, "configured-key.pem")).mode & 0o777, 0o600);
            const served = execFileSync("openssl", ["x509", "-in", join(dir, "fullchain.pem"), "-noout", "-pubkey"], { encoding: "utf8" });
            assert.equal(tlsaOfKey(served), tlsaOfKey(KEY));

            const before = readFileSync(join(dir, "fullchain.pem"), "utf8");
            const second = runScript(dir);
            assert.match(second.result, /"result":"unchanged"/);
            assert.equal(readFileSync(join(dir, "fullchain.pem"), "utf8"), before);

            // A certificate installed by certbot (any content) is never replaced.
            writeFileSync(join(dir, "fullchain.pem"), "ACME CERTIFICATE\n");
            assert.match(runScript(dir).result, /"result":"unchanged"/);
            assert.equal(readFileSync(join(dir, "fullchain.pem"), "utf8"), "ACME CERTIFICATE\n");
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });
});
