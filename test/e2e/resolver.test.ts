/**
 * Trust on the wire (issue 14), first part: the server's own validating resolver. The lab DNS signs
 * every lab zone (lab/dns.ts); the server's unbound forwards to it with the lab zones' trust anchors
 * (lab/stack.yaml, lab/stack.ts) and is the resolver of the system, Postfix and Rspamd.
 */
import assert from "node:assert/strict";
import { before, describe, test, type TestContext } from "node:test";
import { BROKEN_ZONE_HOST, labZoneOrigins } from "../../lab/dns";
import { randomBytes } from "node:crypto";
import { client, deployLabConfig, ensureLab, guest, LAB, labModel, labStack } from "../../lab/testkit";
import { swaks, type SmtpAnswer } from "./clients";

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
            // The records that authenticate the server: DANE, SSH host key, who may issue certificates.
            `_25._tcp.${model.mailHost} TLSA`,
            `${model.mailHost} SSHFP`,
            `${model.domains[0]} CAA`,
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

    test("resolver: an answer whose chain of trust is broken is refused (SERVFAIL), not passed on", async () => {
        // The lab serves dnssec-failed.example.net with a DS in its parent that matches no key.
        const refused = await digOnServer(`${BROKEN_ZONE_HOST} A`);
        assert.equal(refused.status, "SERVFAIL", JSON.stringify(refused));
        assert.deepEqual(refused.answer, []);
        // The data is there: with checking disabled (+cd) the same question is answered.
        const unchecked = await digOnServer(`+cd ${BROKEN_ZONE_HOST} A`);
        assert.equal(unchecked.status, "NOERROR", JSON.stringify(unchecked));
        assert.ok(unchecked.answer.some((l) => l.includes(LAB.host.ipv4)), JSON.stringify(unchecked));
        // And the system's resolver library gets nothing for it.
        const getent = await mail.exec(`getent hosts ${BROKEN_ZONE_HOST}`);
        assert.notEqual(getent.code, 0, getent.stdout);
    });

    test("resolver: the system's resolver library gets the validated answer too (getent through /etc/resolv.conf)", async () => {
        const hosts = await mail.execOk(`getent ahostsv4 ${LAB.foreign.fqdn} | awk '{print $1}' | sort -u`);
        assert.equal(hosts.trim(), LAB.foreign.ipv4);
        const ptr = await mail.execOk(`getent hosts ${LAB.foreign.ipv4} | awk '{print $2}'`);
        assert.equal(ptr.trim(), LAB.foreign.fqdn);
    });

    /** What became of one probe message: the SMTP transcript, and Rspamd's log line when it got that far. */
    interface Probe {
        readonly smtp: SmtpAnswer;
        readonly rspamd?: string;
    }

    /**
     * Mail from the lab's listed address and from an unlisted one, each asked about in a list zone:
     * what happened to each, after checking that the listed address's question went through
     * unbound (not in its cache before, in it after).
     */
    async function blocklistProbe(t: TestContext, listZone: string): Promise<{ listed: Probe; other: Probe }> {
        const unlisted = "198.51.100.67";
        const sources = [LAB.dnsbl.listed, unlisted];
        for (const a of sources) {
            const r = await client("ip", ["addr", "replace", `${a}/24`, "dev", LAB.bridge]);
            assert.equal(r.code, 0, r.stderr);
        }
        t.after(async () => {
            for (const a of sources) await client("ip", ["addr", "del", `${a}/24`, "dev", LAB.bridge]);
        });
        const probe = async (source: string): Promise<Probe> => {
            const id = `${randomBytes(8).toString("hex")}@dnsbl.test`;
            const smtp = await swaks(["--server", LAB.mail.ipv4, "--port", "25", "--local-interface", source, "--ehlo", `client-${source.replace(/\./g, "-")}.example.net`,
                "--from", `${LAB.foreignUser}@${LAB.foreignDomain}`, "--to", "carol@example.com", "--header", `Message-Id: <${id}>`, "--h-Subject", "blocklist probe"]);
            // Refused before DATA (postscreen): Rspamd never saw it.
            if (!/^<-\s+354 /m.test(smtp.transcript)) return { smtp };
            // Rspamd logs every scanned message with its Message-ID and symbols, whatever the verdict
            // (the probes' sender domain, example.net, has p=reject, so they are refused at DATA).
            const line = await mail.execOk(`for i in $(seq 1 20); do l=$(grep -F 'id: <${id}>' /var/log/rspamd/rspamd.log | grep rspamd_task_write_log | tail -n1); [ -n "$l" ] && { echo "$l"; exit 0; }; sleep 1; done`);
            assert.ok(line.trim(), `Rspamd never logged the probe from ${source}`);
            return { smtp, rspamd: line };
        };
        const blName = `${LAB.dnsbl.listed.split(".").reverse().join(".")}.${listZone}.`;
        await mail.execOk(`unbound-control flush_type ${blName} A >/dev/null`);
        const cached = async () => (await mail.execOk(`unbound-control dump_cache | grep -cP '^${blName.replace(/\./g, "\\.")}\\t\\d+\\tIN\\tA\\t' || true`)).trim();
        assert.equal(await cached(), "0");
        const listed = await probe(LAB.dnsbl.listed);
        assert.notEqual(await cached(), "0", `the blocklist question for ${listZone} did not go through unbound`);
        return { listed, other: await probe(unlisted) };
    }
    const XBL_HIT = new RegExp(`RBL_SPAMHAUS_XBL\\([0-9.]+\\)\\{${LAB.dnsbl.listed.replace(/\./g, "\\.")}:from;\\}`);

    test("resolver: DNS blocklists are really asked through it: postscreen refuses mail from the lab's listed address at RCPT, the same mail from another address is delivered", async (t) => {
        // The lab DNS serves a zone under Spamhaus ZEN's name (LAB.dnsbl) that lists one lab
        // address. postscreen and Rspamd ask their lists through unbound; were they asked anywhere
        // else, nothing would answer in the lab, as the public lists answer nothing to a hoster's
        // resolver.
        const { listed, other } = await blocklistProbe(t, LAB.dnsbl.zone);
        assert.equal(listed.smtp.code, 550, listed.smtp.transcript);
        assert.match(listed.smtp.transcript, new RegExp(`550 5\\.7\\.1 Service unavailable; client \\[${LAB.dnsbl.listed.replace(/\./g, "\\.")}\\] blocked using zen\\.spamhaus\\.org`), listed.smtp.transcript);
        assert.ok(other.rspamd, `the unlisted address got past postscreen to Rspamd:\n${other.smtp.transcript}`);
        assert.doesNotMatch(other.rspamd, /RBL_SPAMHAUS_XBL|SPAMHAUS_FAIL/, other.rspamd);
    });

    test("resolver: with ispmail:spamhausDqsKey, Rspamd asks Spamhaus's DQS zones with the key, and the key file is Rspamd's alone", { timeout: 300_000 }, async (t) => {
        const key = LAB.dnsbl.dqsKey;
        const keyed = labStack({ spamhausDqsKey: key });
        const withKey = await deployLabConfig(keyed.model, keyed.configured);
        t.after(async () => {
            const restored = await deployLabConfig(labModel());
            assert.deepEqual(restored.applied.filter((s) => s.result !== "unchanged").map((s) => s.name).sort(), ["postfix", "rspamd"]);
        });
        // Rspamd gets the key; postscreen's list goes from main.cf, which every local user can read.
        assert.deepEqual(withKey.applied.filter((s) => s.result !== "unchanged").map((s) => s.name).sort(), ["postfix", "rspamd"]);
        assert.equal((await mail.execOk("stat -c '%U:%G %a' /etc/rspamd/local.d/rbl.conf")).trim(), "root:_rspamd 640");
        assert.equal((await mail.execOk("postconf -h postscreen_dnsbl_sites")).trim(), "");
        const { listed, other } = await blocklistProbe(t, `${key}.zen.${LAB.dnsbl.dqsZone}`);
        assert.ok(listed.rspamd, `without a list at postscreen the listed address reaches Rspamd:\n${listed.smtp.transcript}`);
        assert.match(listed.rspamd, XBL_HIT, listed.rspamd);
        assert.ok(other.rspamd, other.smtp.transcript);
        assert.doesNotMatch(other.rspamd, /RBL_SPAMHAUS_XBL|SPAMHAUS_FAIL/, other.rspamd);
        // The key is in the file Rspamd reads, not in the step's output the lab (or Pulumi) shows.
        const rspamd = withKey.applied.find((s) => s.name === "rspamd")!;
        assert.ok(!JSON.stringify(rspamd).includes(key), "the key appears in the step's reported output");
    });
});

describe("SSHFP (lab, signed zones)", { timeout: 120_000 }, () => {
    before(async () => {
        await ensureLab();
    });

    test("sshfp: ssh with VerifyHostKeyDNS accepts the server's host key from its signed SSHFP record, with no known_hosts entry", async () => {
        // From the foreign guest: like an admin's machine it validates through its own unbound (the
        // lab host's namespace has no validating resolver, and ssh trusts only answers with AD).
        // No key of ours is offered, so the login itself is refused after the host key was accepted.
        const host = labModel().mailHost;
        const r = await guest("foreign").exec(
            `ssh -v -F /dev/null -o VerifyHostKeyDNS=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null -o BatchMode=yes -o PreferredAuthentications=none -o ConnectTimeout=10 root@${host} true`,
        );
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /found 1 secure fingerprints in DNS/, r.stderr);
        assert.match(r.stderr, /matching host key fingerprint found in DNS/, r.stderr);
        assert.doesNotMatch(r.stderr, /Host key verification failed/, r.stderr);
        assert.match(r.stderr, /Permission denied|No more authentication methods/, r.stderr);
        // Control: the same without VerifyHostKeyDNS cannot accept an unknown key.
        const control = await guest("foreign").exec(
            `ssh -F /dev/null -o VerifyHostKeyDNS=no -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=10 root@${host} true`,
        );
        assert.match(control.stderr, /Host key verification failed/, control.stderr);
    });
});
