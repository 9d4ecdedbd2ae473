/**
 * The tls-policy step: Postfix's outbound TLS policy tables (DANE first, then MTA-STS), what the
 * files say to each other, and (in the trixie chroot, with Debian's python3 and dnspython) the
 * socketmap protocol of ispmail-dane-first-policy and its refusal to guess when DNS fails. Its DNS
 * decisions against signed zones are proven in the lab (test/e2e/mta-sts.test.ts).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseConfig } from "../../components/config";
import { SERVICE, stepsOf } from "../../components/services";
import { DANE_FIRST_SCRIPT, TLS_POLICY_MAPS } from "../../components/services/tls-policy";
import { validRawConfig } from "../fixtures/config";
import { chrootSkipReason, inChroot, withStepFiles } from "./mail-chroot";

const model = parseConfig(validRawConfig(), { stack: "test" }).model;
const [step] = stepsOf(SERVICE.tlsPolicy, model);
const fileOf = (path: string) => {
    const f = step.files.find((x) => x.path === path);
    assert.ok(f, `the step writes ${path}`);
    return f;
};

describe("tls-policy step", () => {
    test("tls-policy: after the resolver, before Postfix, which asks the DANE table first", () => {
        assert.deepEqual(step.after, ["resolver"]);
        assert.ok(stepsOf(SERVICE.postfix, model)[0].after.includes("tls-policy"), "postfix waits for its policy tables");
        assert.deepEqual([...(step.packages ?? [])].sort(), ["postfix-mta-sts-resolver", "python3-dnspython"]);
        assert.deepEqual(TLS_POLICY_MAPS, ["socketmap:inet:127.0.0.1:8462:dane-first", "socketmap:inet:127.0.0.1:8461:postfix"]);
    });

    test("tls-policy: each table listens where main.cf looks for it", () => {
        const yml = fileOf("/etc/mta-sts-daemon.yml").content;
        assert.match(yml, /^host: 127\.0\.0\.1$/m);
        assert.match(yml, /^port: 8461$/m);
        assert.match(yml, /^\s+strict_testing: false$/m, "a policy in testing mode is never enforced");
        const script = fileOf(DANE_FIRST_SCRIPT);
        assert.equal(script.mode, "0755");
        assert.match(script.content, /^LISTEN = \("127\.0\.0\.1", 8462\)$/m);
        assert.match(script.content, /^TABLE = "dane-first"$/m);
        const unit = fileOf("/etc/systemd/system/ispmail-dane-first-policy.service").content;
        assert.match(unit, new RegExp(`^ExecStart=/usr/bin/python3 ${DANE_FIRST_SCRIPT}$`, "m"));
        assert.match(unit, /^DynamicUser=yes$/m, "it needs no account and no file of its own");
        assert.match(unit, /^Before=postfix\.service$/m);
        // In place before the package's postinst starts the resolver; restarted when it started before the file's last change.
        assert.equal(fileOf("/etc/mta-sts-daemon.yml").beforePackages, true);
        assert.match(step.script, /started_before \$mta_sts \/etc\/mta-sts-daemon\.yml; then\n\s+restart \$mta_sts/);
        // The apply script waits for both before Postfix is configured to ask them.
        assert.match(step.script, /for port in 8462 8461; do/);
    });

    test("tls-policy: the DANE table speaks socketmap and answers TEMP, never 'not found', when DNS fails", { skip: chrootSkipReason("usr/lib/python3/dist-packages/dns/resolver.py") }, () => {
        withStepFiles([step], (inside) => {
            // The module's functions, with a resolver that reaches nobody (port 9 on loopback).
            const probe = `
import importlib.machinery, importlib.util, io, sys
loader = importlib.machinery.SourceFileLoader("policy", "${inside}${DANE_FIRST_SCRIPT}")
spec = importlib.util.spec_from_loader("policy", loader)
policy = importlib.util.module_from_spec(spec)
loader.exec_module(policy)
policy.RESOLVER.nameservers = ["127.0.0.1"]
policy.RESOLVER.port = 9
policy.RESOLVER.lifetime = 2
for request in ["postfix example.org", "dane-first [mx.example.org]:25", "dane-first .example.org", "dane-first example.org"]:
    print(policy.answer(request) + "|")
for raw in [b"10:dane-first,", b"5:hello", b"x:1,", b"99999999:a,", b"3:abc;"]:
    print(repr(policy.read_netstring(io.BytesIO(raw))))
`;
            const r = inChroot(["python3", "-c", probe]);
            assert.equal(r.code, 0, r.stderr);
            const [wrongTable, explicitHop, parent, unreachable, ok, short, notDigits, tooLong, badEnd] = r.stdout.trim().split("\n");
            assert.match(wrongTable, /^PERM no table 'postfix'/);
            assert.equal(explicitHop, "NOTFOUND |");
            assert.equal(parent, "NOTFOUND |");
            // Unknown is not "no DANE": the mail waits instead of going out under a weaker policy.
            assert.match(unreachable, /^TEMP DNS lookup failed: example\.org MX/);
            assert.equal(ok, "b'dane-first'");
            for (const bad of [short, notDigits, tooLong, badEnd]) assert.equal(bad, "None");
        });
    });
});
