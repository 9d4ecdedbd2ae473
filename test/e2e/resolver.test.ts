/**
 * Trust on the wire (issue 14), first part: the server's own validating resolver. The lab DNS signs
 * every lab zone (lab/dns.ts); the server's unbound forwards to it with the lab zones' trust anchors
 * (lab/stack.yaml, lab/stack.ts) and is the resolver of the system, Postfix and Rspamd.
 */
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { labZoneOrigins } from "../../lab/dns";
import { ensureLab, guest, LAB, labModel } from "../../lab/testkit";

const mail = guest("mail");

/** dig on the server against its own resolver: the header flags and the answer section. */
async function digOnServer(args: string): Promise<{ status: string; flags: string[]; answer: string[] }> {
    const out = await mail.execOk(`dig @127.0.0.1 +dnssec +noall +comments +answer ${args}`);
    const status = /status: ([A-Z]+)/.exec(out)?.[1] ?? "";
    const flags = (/;; flags: ([a-z ]+);/.exec(out)?.[1] ?? "").trim().split(/\s+/);
    const answer = out.split("\n").filter((l) => l && !l.startsWith(";"));
    return { status, flags, answer };
}

describe("resolver (lab, signed zones)", { timeout: 300_000 }, () => {
    before(async () => {
        await ensureLab();
    });

    test("resolver: unbound answers on loopback only, and is the resolver of the system and of Rspamd", async () => {
        const listening = (await mail.execOk("ss -Hlnup 'sport = :53' | awk '{print $4}' | sort -u")).trim().split("\n");
        assert.deepEqual(listening.sort(), ["127.0.0.1:53", "[::1]:53"], listening.join(" "));
        const resolv = await mail.execOk("cat /etc/resolv.conf");
        assert.deepEqual(resolv.split("\n").filter((l) => l.startsWith("nameserver")), ["nameserver 127.0.0.1", "nameserver ::1"], resolv);
        assert.match(resolv, /^options edns0 trust-ad$/m, "without trust-ad glibc drops the AD bit that Postfix's DANE needs");
        const rspamd = await mail.execOk("rspamadm configdump options | sed -n '/^dns {/,/^}/p'");
        assert.match(rspamd, /nameserver \[\s*"127\.0\.0\.1:53",?\s*\]/, rspamd);
    });

    test("resolver: answers from every lab zone are DNSSEC-validated (AD), forward and reverse", async () => {
        const model = labModel();
        const probes = [
            `${model.mailHost} A`,
            `${model.domains[0]} MX`,
            `_dmarc.${model.domains[1]} TXT`,
            `${LAB.foreign.fqdn} AAAA`,
            `-x ${LAB.mail.ipv4}`,
            `-x ${LAB.foreign.ipv6}`,
        ];
        for (const q of probes) {
            const r = await digOnServer(q);
            assert.equal(r.status, "NOERROR", `${q}: ${JSON.stringify(r)}`);
            assert.ok(r.flags.includes("ad"), `${q}: not validated (flags ${r.flags.join(" ")})`);
            assert.ok(r.answer.some((l) => /\sRRSIG\s/.test(l)), `${q}: no signature in the answer`);
        }
        // Every zone the lab serves is covered (the list the trust anchors are made from).
        for (const zone of labZoneOrigins(model.domains)) {
            const r = await digOnServer(`${zone} SOA`);
            assert.ok(r.flags.includes("ad") && r.status === "NOERROR", `${zone} SOA: ${JSON.stringify(r)}`);
        }
    });

    test("resolver: the system's resolver library gets the validated answer too (getent through /etc/resolv.conf)", async () => {
        const model = labModel();
        const hosts = await mail.execOk(`getent ahostsv4 ${LAB.foreign.fqdn} | awk '{print $1}' | sort -u`);
        assert.equal(hosts.trim(), LAB.foreign.ipv4);
        const ptr = await mail.execOk(`getent hosts ${LAB.foreign.ipv4} | awk '{print $2}'`);
        assert.equal(ptr.trim(), LAB.foreign.fqdn);
        assert.ok(model.domains.length > 0);
    });
});
