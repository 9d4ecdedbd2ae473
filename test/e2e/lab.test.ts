/**
 * The lab itself: its DNS, its foreign MTA, its ACME CA and its guests behave as the other e2e
 * suites assume. Run with `npm run test:e2e` (inside the lab network namespace).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Resolver } from "node:dns/promises";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, it } from "node:test";
import { renderDnsRecords } from "../../components/dns/records";
import { FOREIGN_DKIM_SELECTOR, renderForeignMtaSteps } from "../../lab/foreign";
import { labDig } from "../../lab/dns";
import { dkimPublicKeys, tlsaData } from "../../lab/stack";
import type { AppliedStep } from "../../lab/apply";
import { applyOnGuest, client, ensureLab, guest, LAB, labModel, labSecrets, labServerSteps, PATHS } from "../../lab/testkit";

const resolver = () => {
    const r = new Resolver({ timeout: 2000, tries: 2 });
    r.setServers([LAB.dns]);
    return r;
};

/** Polls a guest command until it succeeds: at most `tries` times, 250 ms apart. */
async function eventually(name: "mail" | "foreign", command: string, tries = 60): Promise<string> {
    let last = "";
    for (let i = 0; i < tries; i++) {
        const r = await guest(name).exec(command, { timeoutMs: 10_000 });
        if (r.code === 0) return r.stdout;
        last = r.stderr;
        await new Promise((res) => setTimeout(res, 250));
    }
    throw new Error(`${name}: \`${command}\` did not succeed after ${tries} tries: ${last}`);
}

before(ensureLab);

describe("lab dns", () => {
    it("lab dns: answers the MX of every configured domain", async () => {
        const model = labModel();
        assert.ok(model.domains.length >= 2, "the lab stack has several domains");
        for (const domain of model.domains) {
            const mx = await resolver().resolveMx(domain);
            assert.deepEqual(
                mx.map((m) => m.exchange),
                [model.mailHost],
                `MX of ${domain}`,
            );
        }
    });

    it("lab dns: PTR of the mail server is mailHost", async () => {
        const model = labModel();
        assert.deepEqual(await resolver().reverse(LAB.mail.ipv4), [model.mailHost]);
        assert.deepEqual(await resolver().reverse(LAB.mail.ipv6), [model.mailHost]);
    });

    it("lab dns: the foreign domain has MX, addresses and SPF", async () => {
        const r = resolver();
        assert.deepEqual((await r.resolveMx(LAB.foreignDomain)).map((m) => m.exchange), [LAB.foreign.fqdn]);
        assert.deepEqual(await r.resolve4(LAB.foreign.fqdn), [LAB.foreign.ipv4]);
        assert.deepEqual(await r.resolve6(LAB.foreign.fqdn), [LAB.foreign.ipv6]);
        assert.deepEqual((await r.resolveTxt(LAB.foreignDomain)).map((t) => t.join("")), ["v=spf1 mx -all"]);
        assert.deepEqual(await r.reverse(LAB.foreign.ipv4), [LAB.foreign.fqdn]);
    });

    it("lab dns: serves every record of renderDnsRecords (kdig)", async () => {
        const model = labModel();
        const records = renderDnsRecords({ model, ipv4: LAB.mail.ipv4, ipv6: LAB.mail.ipv6, dkimPublicKeys: dkimPublicKeys(model, labSecrets()), tlsa: tlsaData(model, labSecrets()) });
        // Presentation format without trailing dots and with single spaces, as both sides print it.
        const norm = (s: string) => s.trim().replace(/\s+/g, " ").replace(/\.(?=\s|$)/g, "").toLowerCase();
        const byQuery = new Map<string, string[]>();
        for (const r of records) byQuery.set(`${r.name} ${r.type}`, [...(byQuery.get(`${r.name} ${r.type}`) ?? []), norm(r.content)]);
        for (const [query, expected] of byQuery) {
            const [name, type] = query.split(" ");
            const r = await client("kdig", [`@${LAB.dns}`, name, type, "+short", "+time=2", "+retry=1"]);
            assert.equal(r.code, 0, r.stderr);
            const got = r.stdout.split("\n").filter(Boolean).map(norm);
            assert.deepEqual(got.sort(), [...expected].sort(), query);
        }
    });

    it("lab dns: refuses names outside its zones (no recursion, no way out)", async () => {
        const r = await client("kdig", [`@${LAB.dns}`, "deb.debian.org", "A", "+time=2", "+retry=1"]);
        assert.match(r.stdout, /status: REFUSED/);
    });
});

describe("guests", () => {
    it("guest: resolves through the lab dns", async () => {
        // Names that are not in the guest's own /etc/hosts, so the answer comes from the lab DNS.
        assert.match(await guest("mail").execOk(`getent ahostsv4 ${LAB.foreign.fqdn}`), new RegExp(`^${LAB.foreign.ipv4.replace(/\./g, "\\.")}\\s`, "m"));
        assert.match(await guest("foreign").execOk(`getent ahostsv4 ${LAB.mail.fqdn}`), new RegExp(`^${LAB.mail.ipv4.replace(/\./g, "\\.")}\\s`, "m"));
    });

    it("guest: has the lab addresses and no route out of the lab", async () => {
        const addrs = await guest("mail").execOk("ip -o addr show dev host0");
        assert.match(addrs, new RegExp(`inet ${LAB.mail.ipv4.replace(/\./g, "\\.")}/24`));
        assert.match(addrs, new RegExp(`inet6 ${LAB.mail.ipv6}/64`));
        assert.equal((await guest("mail").execOk("ip route show default; ip -6 route show default")).trim(), "");
    });

    it("guest: the mail server's /srv/ispmail is the data volume from the host", async () => {
        await guest("mail").execOk("mountpoint -q /srv/ispmail");
        const marker = `lab-volume-check-${randomUUID()}`;
        writeFileSync(join(PATHS.mailData, ".lab-volume-check"), marker);
        assert.equal((await guest("mail").execOk("cat /srv/ispmail/.lab-volume-check")).trim(), marker);
    });

    it("guest: trusts the lab ACME CA's HTTPS endpoint (as certbot will)", async () => {
        const dir = await guest("mail").execOk(`curl -sS --fail --max-time 10 ${LAB.acme.directoryUrl}`);
        assert.ok(JSON.parse(dir).newOrder, `ACME directory: ${dir}`);
    });
});

describe("foreign mta", () => {
    it("foreign mta: accepts a message from swaks and stores it", async () => {
        const id = randomUUID();
        const r = await client("swaks", [
            "--server", LAB.foreign.ipv4,
            "--from", `tester@${LAB.foreignDomain}`,
            "--to", `${LAB.foreignUser}@${LAB.foreignDomain}`,
            "--header", `Subject: lab check ${id}`,
            "--body", `lab check ${id}`,
            "--timeout", "20",
        ]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stdout, /<-\s+250 2\.0\.0 Ok: queued/);
        const file = (await eventually("foreign", `grep -l -- 'lab check ${id}' /home/${LAB.foreignUser}/Maildir/new/*`)).trim();
        const message = await guest("foreign").execOk(`cat ${file}`);
        assert.match(message, new RegExp(`^Subject: lab check ${id}$`, "m"));
    });

    it("foreign mta: signs its users' mail with example.net's DKIM key, which the lab DNS publishes with a DMARC p=reject policy", async () => {
        // The lab host is the foreign provider's users' network: what the tests inject there is
        // signed like a logged-in user's mail (its verification: policy.test.ts, sender checks).
        const id = randomUUID();
        const r = await client("swaks", [
            "--server", LAB.foreign.ipv4,
            "--from", `tester@${LAB.foreignDomain}`,
            "--to", `${LAB.foreignUser}@${LAB.foreignDomain}`,
            "--header", `Subject: signing check ${id}`,
            "--timeout", "20",
        ]);
        assert.equal(r.code, 0, r.stdout + r.stderr);
        const file = (await eventually("foreign", `grep -l -- 'signing check ${id}' /home/${LAB.foreignUser}/Maildir/new/*`)).trim();
        const headers = await guest("foreign").execOk(`sed '/^$/q' ${file}`);
        assert.match(headers.replace(/\n[ \t]+/g, " "), new RegExp(`^DKIM-Signature: .*\\bd=${LAB.foreignDomain.replace(/\./g, "\\.")};.*\\bs=${FOREIGN_DKIM_SELECTOR};`, "m"), headers);
        assert.deepEqual(await labDig(`_dmarc.${LAB.foreignDomain}`, "TXT"), [`"v=DMARC1; p=reject; rua=mailto:postmaster@${LAB.foreignDomain}"`]);
        assert.equal((await labDig(`${FOREIGN_DKIM_SELECTOR}._domainkey.${LAB.foreignDomain}`, "TXT")).length, 1);
    });
});

describe("steps", () => {
    it("steps: applying twice in a row, the second apply changes nothing on either guest", async (t) => {
        const describe = (s: AppliedStep) => `${s.name}: ${[...s.actions, ...s.changedFiles].join("; ")}`;
        const foreignSteps = renderForeignMtaSteps(labModel().resolver);
        const mailSteps = labServerSteps();
        // The first apply converges whatever earlier suites changed on the guests (reported, not failed).
        for (const s of [...(await applyOnGuest("foreign", foreignSteps, {})), ...(await applyOnGuest("mail", mailSteps, labSecrets()))]) {
            if (s.result === "changed") t.diagnostic(`drift corrected by the first apply: ${describe(s)}`);
        }
        const foreign = await applyOnGuest("foreign", foreignSteps, {});
        const mail = await applyOnGuest("mail", mailSteps, labSecrets());
        assert.equal(foreign.length, foreignSteps.length);
        assert.equal(mail.length, mailSteps.length);
        assert.deepEqual([...foreign, ...mail].filter((s) => s.result !== "unchanged").map(describe), []);
    });
});
