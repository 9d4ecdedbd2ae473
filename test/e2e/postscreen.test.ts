/**
 * Postscreen on port 25 (issue 14): a client that talks before the greeting is done is refused at
 * RCPT ("550 5.5.1 Protocol error") and logged with what it tried (PREGREET), while a client that waits, from another address
 * postscreen has never seen, gets its mail through after the greeting's wait. Blocklists at
 * postscreen: resolver.test.ts (the lab's listed address).
 */
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { client, ensureLab, guest, LAB } from "../../lab/testkit";
import { shellQuote, swaks } from "./clients";

const mail = guest("mail");

/** Speaks SMTP from `source` without waiting for the whole greeting: EHLO right after its first line. */
const EARLY_TALKER = String.raw`
import json, socket, sys
source, server = sys.argv[1], sys.argv[2]
s = socket.create_connection((server, 25), 30, source_address=(source, 0))
f = s.makefile("rb")
first = f.readline().decode().strip()
s.sendall(b"EHLO early.example.net\r\n")
replies = []
def reply():
    lines = []
    while True:
        l = f.readline().decode().strip()
        lines.append(l)
        if len(l) < 4 or l[3] != "-":
            return lines
replies.append(reply())
for cmd in [b"MAIL FROM:<spam@example.net>\r\n", b"RCPT TO:<carol@example.com>\r\n", b"QUIT\r\n"]:
    s.sendall(cmd)
    replies.append(reply())
print(json.dumps({"first": first, "replies": replies}))
`;

describe("postscreen (lab)", { timeout: 300_000 }, () => {
    before(async () => {
        await ensureLab();
    });

    test("postscreen: a client that talks before the greeting is done is refused at RCPT and logged; a patient new client gets through", async (t) => {
        const early = "198.51.100.68";
        // postscreen remembers a pass for a day: a new address each run, so that it is really new.
        const patient = `198.51.100.${100 + Math.floor(Math.random() * 100)}`;
        for (const a of [early, patient]) {
            const r = await client("ip", ["addr", "replace", `${a}/24`, "dev", LAB.bridge]);
            assert.equal(r.code, 0, r.stderr);
        }
        t.after(async () => {
            for (const a of [early, patient]) await client("ip", ["addr", "del", `${a}/24`, "dev", LAB.bridge]);
        });
        const since = (await mail.execOk("date '+%Y-%m-%d %H:%M:%S'")).trim();

        const r = await client("python3", ["-c", EARLY_TALKER, early, LAB.mail.ipv4], { timeoutMs: 90_000 });
        assert.equal(r.code, 0, r.stderr);
        const talk = JSON.parse(r.stdout.trim()) as { first: string; replies: string[][] };
        assert.match(talk.first, /^220-mx1\.example\.org /, "postscreen's first greeting line");
        const rcpt = talk.replies[2].join(" ");
        assert.match(rcpt, /^550 5\.5\.1 Protocol error/, JSON.stringify(talk.replies));
        const log = await mail.execOk(`journalctl --since ${shellQuote(since)} --no-pager -o cat -u postfix.service`);
        assert.match(log, new RegExp(`PREGREET \\d+ after [0-9.]+ from \\[${early.replace(/\./g, "\\.")}\\]:\\d+: EHLO early\\.example\\.net`), log);
        assert.match(log, new RegExp(`NOQUEUE: reject: RCPT from \\[${early.replace(/\./g, "\\.")}\\]:\\d+: 550 5\\.5\\.1 Protocol error; from=<spam@example\\.net>, to=<carol@example\\.com>`), log);

        // A client that waits for the whole greeting, from an address postscreen has not seen: the
        // wait is paid once, then smtpd takes the connection and accepts the recipient. (Stopped
        // after RCPT: a lab address sending as example.net would fail its DMARC at DATA.)
        const t0 = Date.now();
        const ok = await swaks(["--server", LAB.mail.ipv4, "--port", "25", "--local-interface", patient, "--ehlo", "patient.example.net", "--from", `${LAB.foreignUser}@${LAB.foreignDomain}`, "--to", "carol@example.com", "--quit-after", "RCPT"]);
        assert.equal(ok.code, 250, ok.transcript);
        assert.match(ok.transcript, /^<-\s+250 2\.1\.5 Ok/m, ok.transcript);
        console.log(`# postscreen: a new client's first session took ${((Date.now() - t0) / 1000).toFixed(1)} s (the greeting's wait)`);
        const log2 = await mail.execOk(`journalctl --since ${shellQuote(since)} --no-pager -o cat -u postfix.service`);
        assert.match(log2, new RegExp(`PASS NEW \\[${patient.replace(/\./g, "\\.")}\\]:\\d+`), log2);
    });
});
