/**
 * The resolver step: unbound on loopback, validating; full recursion by default, forwarders and
 * extra trust anchors from ispmail:resolver (what the lab uses), and the lab's trust anchors made
 * from its zone key.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { describe, test } from "node:test";
import { parseConfig } from "../../components/config";
import { SERVICE, stepsOf } from "../../components/services";
import { UNBOUND_CONF } from "../../components/services/resolver";
import { dnskeyOf, labTrustAnchors, labZoneOrigins } from "../../lab/dns";
import { validRawConfig } from "../fixtures/config";

const stepFor = (resolver?: Record<string, unknown>) => {
    const raw = { ...validRawConfig(), ...(resolver ? { resolver } : {}) };
    const [step] = stepsOf(SERVICE.resolver, parseConfig(raw, { stack: "test" }).model);
    return { step, conf: step.files.find((f) => f.path === UNBOUND_CONF)!.content };
};

const ANCHOR_ORG = "example.org. DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==";

describe("resolver step", () => {
    test("resolver: unbound and dig from Debian, after base; the probe zone is the first mail domain", () => {
        const { step } = stepFor();
        assert.deepEqual(step.after, ["base"]);
        assert.deepEqual([...(step.packages ?? [])].sort(), ["bind9-dnsutils", "dns-root-data", "unbound"]);
        assert.match(step.script, /^PROBE_ZONE='example\.org'$/m);
    });

    test("resolver: by default it recurses from the root, on loopback only, validating with the root's key alone", () => {
        const { conf } = stepFor();
        assert.match(conf, /^ {4}interface: 127\.0\.0\.1$/m);
        assert.match(conf, /^ {4}interface: ::1$/m);
        assert.match(conf, /^ {4}harden-dnssec-stripped: yes$/m);
        assert.doesNotMatch(conf, /forward-zone|trust-anchor:|local-zone:/);
    });

    test("resolver: forwarders and trust anchors come from ispmail:resolver; each anchored zone is resolved, never answered as a built-in empty zone", () => {
        const { conf, step } = stepFor({ forwardTo: ["192.0.2.53", "2001:db8::53"], trustAnchors: [ANCHOR_ORG] });
        assert.match(conf, /^forward-zone:\n {4}name: "\."\n {4}forward-addr: 192\.0\.2\.53\n {4}forward-addr: 2001:db8::53$/m);
        assert.match(conf, new RegExp(`^ {4}trust-anchor: "${ANCHOR_ORG.replace(/[.+]/g, "\\$&")}"\\n {4}local-zone: "example\\.org\\." transparent$`, "m"));
        assert.match(step.description, /forwarding to 192\.0\.2\.53, 2001:db8::53/);
    });

    test("resolver: the apply script switches /etc/resolv.conf only after unbound answered, with trust-ad for DANE", () => {
        const { step } = stepFor();
        const probe = step.script.indexOf("dig +short");
        const write = step.script.indexOf("> /etc/resolv.conf");
        assert.ok(probe > 0 && write > probe, "resolv.conf is written after the probe");
        assert.match(step.script, /options edns0 trust-ad/);
        assert.match(step.script, /unbound-checkconf/);
        // Postfix's chroot copy of resolv.conf is refreshed when it changes (Debian's postfix check).
        assert.ok(step.script.indexOf("postfix check") > write, "postfix check after the write");
    });

    test("lab: one trust anchor per lab zone, the DNSKEY of the lab's zone key, accepted by the config schema", () => {
        const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256", privateKeyEncoding: { type: "pkcs8", format: "pem" }, publicKeyEncoding: { type: "spki", format: "pem" } });
        const key = dnskeyOf(privateKey);
        assert.match(key, /^257 3 13 [A-Za-z0-9+/]{86}==$/, "flags 257, protocol 3, ECDSA P-256 (13), 64 bytes of x||y");
        const domains = ["example.org", "example.com"];
        const anchors = labTrustAnchors(domains, privateKey);
        assert.deepEqual(anchors.map((a) => a.split(" ")[0]), labZoneOrigins(domains).map((z) => `${z}.`));
        assert.ok(anchors.every((a) => a.endsWith(key)));
        assert.ok(labZoneOrigins(domains).some((z) => z.endsWith(".in-addr.arpa")) && labZoneOrigins(domains).some((z) => z.endsWith(".ip6.arpa")), "the reverse zones are anchored too");
        const { conf } = stepFor({ trustAnchors: anchors });
        assert.equal(conf.match(/trust-anchor:/g)?.length, anchors.length);
    });
});
