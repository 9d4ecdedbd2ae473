/**
 * The lab DNS zones (lab/dns.ts), rendered from lab/stack.yaml without a running server. Zone files
 * are checked with knot's own kzonecheck where knot is installed.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { renderDnsRecords } from "../../components/dns/records";
import { BROKEN_ZONE, BROKEN_ZONE_HOST, labZoneOrigins, labZones, renderZoneFile, reverseName, reverseZone, writeZoneIfChanged } from "../../lab/dns";
import { tlsaOfKey } from "../../components/dns/records";
import { LAB } from "../../lab/lab";
import { labModel } from "../fixtures/config";

const model = labModel();
const dkimPublicKeys = Object.fromEntries(
    model.dkimSelectors.map((s) => [s, generateKeyPairSync("rsa", { modulusLength: 2048 }).publicKey.export({ type: "spki", format: "der" }).toString("base64")]),
);
const tlsa = { [model.tlsKeys[0]]: `3 1 1 ${"c".repeat(64)}` };
const zones = labZones({ model, dkimPublicKeys, tlsa });
const zone = (origin: string) => {
    const z = zones.find((x) => x.origin === origin);
    assert.ok(z, `zone ${origin} exists`);
    return z;
};
const hasKzonecheck = spawnSync("kzonecheck", ["--version"]).status === 0;

describe("lab dns zones", () => {
    it("reverse names follow in-addr.arpa and the ip6.arpa nibble format", () => {
        assert.equal(reverseName("192.0.2.10"), "10.2.0.192.in-addr.arpa");
        assert.equal(reverseName("2001:db8:2::10"), "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
        assert.equal(reverseZone("192.0.2.10", 24), "2.0.192.in-addr.arpa");
        assert.equal(reverseZone("2001:db8:2::10", 64), "0.0.0.0.2.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
        assert.throws(() => reverseZone("192.0.2.10", 20), /label boundary/);
    });

    it("serves every record of renderDnsRecords in its zone, for every configured domain", () => {
        for (const d of model.domains) zone(d);
        const records = renderDnsRecords({ model, ipv4: LAB.mail.ipv4, ipv6: LAB.mail.ipv6, dkimPublicKeys, tlsa });
        assert.ok(records.length > 0);
        for (const r of records) {
            assert.ok(
                zone(r.zone).records.some((x) => x.name === r.name && x.type === r.type && x.content === r.content),
                `${r.name} ${r.type} ${r.content} in zone ${r.zone}`,
            );
        }
    });

    it("maps the guests' addresses back to mailHost and the foreign MTA (rDNS)", () => {
        const ptr = (address: string) =>
            zones.flatMap((z) => z.records).filter((r) => r.type === "PTR" && r.name === reverseName(address)).map((r) => r.content);
        assert.deepEqual(ptr(LAB.mail.ipv4), [model.mailHost]);
        assert.deepEqual(ptr(LAB.mail.ipv6), [model.mailHost]);
        assert.deepEqual(ptr(LAB.foreign.ipv4), [LAB.foreign.fqdn]);
        assert.deepEqual(ptr(LAB.foreign.ipv6), [LAB.foreign.fqdn]);
    });

    it("gives the foreign domain an MX, addresses and a strict SPF policy", () => {
        const net = zone(LAB.foreignDomain).records;
        assert.ok(net.some((r) => r.name === LAB.foreignDomain && r.type === "MX" && r.content === `10 ${LAB.foreign.fqdn}`));
        assert.ok(net.some((r) => r.name === LAB.foreign.fqdn && r.type === "A" && r.content === LAB.foreign.ipv4));
        assert.ok(net.some((r) => r.name === LAB.foreign.fqdn && r.type === "AAAA" && r.content === LAB.foreign.ipv6));
        assert.ok(net.some((r) => r.name === LAB.foreignDomain && r.type === "TXT" && r.content === '"v=spf1 mx -all"'));
    });

    it("serves a blocklist that lists one lab address, and its standard test entry", () => {
        const bl = zone(LAB.dnsbl.zone).records;
        assert.deepEqual(bl.map((r) => `${r.name} ${r.type} ${r.content}`).sort(), [
            `2.0.0.127.${LAB.dnsbl.zone} A 127.0.0.2`,
            `${LAB.dnsbl.listed.split(".").reverse().join(".")}.${LAB.dnsbl.zone} A ${LAB.dnsbl.code}`,
        ].sort());
    });

    it("serves one zone with a broken chain of trust (its parent's DS matches no key), which is never anchored", () => {
        const net = zone(LAB.foreignDomain).records;
        assert.ok(net.some((r) => r.name === BROKEN_ZONE && r.type === "NS"));
        assert.ok(net.some((r) => r.name === BROKEN_ZONE && r.type === "DS" && /^12345 13 2 0{64}$/.test(r.content)));
        assert.ok(zone(BROKEN_ZONE).records.some((r) => r.name === BROKEN_ZONE_HOST && r.type === "A"));
        assert.ok(!labZoneOrigins(model.domains).includes(BROKEN_ZONE), "an anchor would make it valid");
        // Every other zone is one of the anchored origins.
        assert.deepEqual(zones.map((z) => z.origin).filter((o) => o !== BROKEN_ZONE).sort(), [...labZoneOrigins(model.domains)].sort());
    });

    it("publishes DANE TLSA for the foreign MX (3 1 1 of its key), and a mismatching one for a second MX name", () => {
        const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256", privateKeyEncoding: { type: "pkcs8", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } });
        const foreignTlsa = tlsaOfKey(privateKey);
        assert.match(foreignTlsa, /^3 1 1 [0-9a-f]{64}$/);
        const net = labZones({ model, dkimPublicKeys, tlsa, foreignTlsa }).find((z) => z.origin === LAB.foreignDomain)!.records;
        const tlsaOf = (host: string) => net.filter((r) => r.name === `_25._tcp.${host}` && r.type === "TLSA").map((r) => r.content);
        assert.deepEqual(tlsaOf(LAB.foreign.fqdn), [foreignTlsa]);
        const bad = LAB.daneMismatch;
        assert.ok(net.some((r) => r.name === bad.domain && r.type === "MX" && r.content === `10 ${bad.mx}`));
        assert.ok(net.some((r) => r.name === bad.mx && r.type === "A" && r.content === LAB.foreign.ipv4), "the same host as the foreign MX");
        assert.equal(tlsaOf(bad.mx).length, 1);
        assert.notEqual(tlsaOf(bad.mx)[0], tlsa);
    });

    it("writes host names in record data fully qualified", () => {
        const text = renderZoneFile(zone(model.domains[0]), 1);
        assert.match(text, new RegExp(`^${model.domains[0]}\\. \\d+ IN MX 10 ${model.mailHost.replace(/\./g, "\\.")}\\.$`, "m"));
        assert.match(text, /^@ SOA ns\.example\.net\. hostmaster\.example\.net\. 1 /m);
    });

    it("renders zone files that knot's kzonecheck accepts", { skip: !hasKzonecheck && "kzonecheck (knot) is not installed" }, () => {
        const dir = mkdtempSync(join(tmpdir(), "lab-zones-"));
        try {
            for (const z of zones) {
                const file = join(dir, `${z.origin}.zone`);
                writeFileSync(file, renderZoneFile(z, 2026112501));
                const r = spawnSync("kzonecheck", ["-o", z.origin, file], { encoding: "utf8", timeout: 20_000 });
                assert.equal(r.status, 0, `${z.origin}: ${r.stdout}${r.stderr}`);
            }
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });

    it("rewrites a zone file only when its records change, with a higher serial", () => {
        const dir = mkdtempSync(join(tmpdir(), "lab-zones-"));
        try {
            const file = join(dir, "example.org.zone");
            const z = zone(model.domains[0]);
            assert.equal(writeZoneIfChanged(z, file, 1000), true);
            const first = readFileSync(file, "utf8");
            assert.equal(writeZoneIfChanged(z, file, 2000), false, "same records: not rewritten");
            assert.equal(readFileSync(file, "utf8"), first);
            const changed = { ...z, records: [...z.records, { name: `new.${z.origin}`, type: "A" as const, ttl: 300, content: "192.0.2.99" }] };
            assert.equal(writeZoneIfChanged(changed, file, 500), true);
            assert.match(readFileSync(file, "utf8"), / 1001 3600 600 86400 60$/m, "serial above the old one even when the clock is behind");
        } finally {
            rmSync(dir, { recursive: true, force: true });
        }
    });
});
