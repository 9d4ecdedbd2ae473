"""Delivery latency client for bench/latency.ts: submits `count` messages at a steady `rate` per
second with authenticated SMTP submission (587, STARTTLS, AUTH as one mailbox) over `senders`
persistent connections, each message with a unique Message-ID, subject and X-Ispmail-Bench header
and its send time, while a watcher logged in over IMAP (993) to the recipient's INBOX issues NOOP
every `pollSeconds` and, when EXISTS grows, fetches the new messages' X-Ispmail-Bench headers: the
time of that NOOP's answer is when the message became visible.

Reads {"host", "sender": {"user", "password"}, "rcpt": {"user", "password"}, "count", "rate",
"senders", "subject", "runId", "pollSeconds", "waitSeconds"} as JSON on stdin (no password on a
command line) and prints one JSON line: per message its scheduled, start (before MAIL FROM), accepted
(after the final 250) and visible times in seconds from the first scheduled send, or its error."""
import imaplib
import json
import re
import smtplib
import ssl
import sys
import threading
import time
from email.utils import formatdate

req = json.load(sys.stdin)
# Timing only: the e2e tests verify certificates; here the address is used directly.
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

count = int(req["count"])
rate = float(req["rate"])
run_id = req["runId"]
messages = [{"i": i, "scheduled": i / rate, "start": None, "accepted": None, "visible": None, "error": None} for i in range(count)]
by_tag = {f"{run_id}-{i}": messages[i] for i in range(count)}
lock = threading.Lock()
next_index = [0]
ready = threading.Event()
t0 = [0.0]
clock = time.monotonic


def now():
    return clock() - t0[0]


def message_bytes(i):
    sender = req["sender"]["user"]
    rcpt = req["rcpt"]["user"]
    domain = sender.split("@", 1)[1]
    lines = [
        f"From: Bench <{sender}>",
        f"To: <{rcpt}>",
        f"Subject: {req['subject']} {run_id} {i}",
        f"Date: {formatdate(localtime=False)}",
        f"Message-ID: <{run_id}.{i}@{domain}>",
        f"X-Ispmail-Bench: {run_id}-{i}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"Latency probe {i} of {count}, sent at {time.time():.6f} (epoch seconds).",
        "",
    ]
    return "\r\n".join(lines).encode()


def connect():
    s = smtplib.SMTP(req["host"], 587, timeout=60)
    s.ehlo("bench.example.org")
    s.starttls(context=ctx)
    s.ehlo("bench.example.org")
    s.login(req["sender"]["user"], req["sender"]["password"])
    return s


def sender(k):
    # Connected and authenticated before the schedule starts: a login verifies the password's
    # Argon2id hash (64 MiB, 3 passes), which is the client's start-up, not delivery latency.
    try:
        conn = connect()
    except Exception:  # noqa: BLE001 - retried at the first message
        conn = None
    connected[k].set()
    ready.wait()
    while True:
        with lock:
            i = next_index[0]
            if i >= count:
                break
            next_index[0] += 1
        m = messages[i]
        delay = m["scheduled"] - now()
        if delay > 0:
            time.sleep(delay)
        try:
            if conn is None:
                conn = connect()
            m["start"] = now()
            conn.sendmail(req["sender"]["user"], [req["rcpt"]["user"]], message_bytes(i))
            m["accepted"] = now()
        except Exception as e:  # noqa: BLE001 - recorded per message
            m["error"] = f"{type(e).__name__}: {e}"[:300]
            try:
                if conn is not None:
                    conn.close()
            except Exception:  # noqa: BLE001
                pass
            conn = None
    if conn is not None:
        try:
            conn.quit()
        except Exception:  # noqa: BLE001
            pass


TAG = re.compile(rb"X-Ispmail-Bench:\s*(\S+)", re.I)
UID = re.compile(rb"UID (\d+)")
watch = {"polls": 0, "fetches": 0, "others": 0}


def watcher(done):
    imap = imaplib.IMAP4_SSL(req["host"], 993, ssl_context=ctx, timeout=120)
    imap.login(req["rcpt"]["user"], req["rcpt"]["password"])
    typ, data = imap.select("INBOX", readonly=True)
    if typ != "OK":
        raise SystemExit(f"SELECT failed: {data}")
    exists = int(data[-1])
    _, uidnext = imap.response("UIDNEXT")
    next_uid = int(uidnext[-1]) if uidnext and uidnext[-1] else 1
    for e in connected:
        e.wait(timeout=120)
    t0[0] = clock() + 0.5  # the senders' schedule starts half a second from now
    ready.set()  # the senders start once the watcher knows where the mailbox stands
    poll = float(req["pollSeconds"])
    while not done():
        time.sleep(poll)
        imap.noop()
        answered = now()
        watch["polls"] += 1
        _, ex = imap.response("EXISTS")
        seen = max((int(x) for x in ex if x is not None), default=exists) if ex else exists
        if seen <= exists:
            continue
        exists = seen
        typ, data = imap.uid("FETCH", f"{next_uid}:*", "(UID BODY.PEEK[HEADER.FIELDS (X-ISPMAIL-BENCH)])")
        watch["fetches"] += 1
        for part in data:
            if not isinstance(part, tuple):
                continue
            u = UID.search(part[0])
            if not u or int(u.group(1)) < next_uid:
                continue  # "n:*" past the end answers with the last message again
            next_uid = max(next_uid, int(u.group(1)) + 1)
            tag = TAG.search(part[1])
            m = by_tag.get(tag.group(1).decode()) if tag else None
            if m is None:
                watch["others"] += 1
            elif m["visible"] is None:
                m["visible"] = answered
    imap.logout()


def all_settled():
    return all(m["visible"] is not None or m["error"] is not None for m in messages)


connected = [threading.Event() for _ in range(int(req["senders"]))]
threads = [threading.Thread(target=sender, args=(k,), daemon=True) for k in range(int(req["senders"]))]
for t in threads:
    t.start()
finish = [None]


def done():
    if all_settled():
        return True
    if finish[0] is None and all(not t.is_alive() for t in threads):
        finish[0] = clock()
    return finish[0] is not None and clock() - finish[0] > float(req["waitSeconds"])


w_error = [None]


def run_watcher():
    try:
        watcher(done)
    except Exception as e:  # noqa: BLE001
        w_error[0] = f"{type(e).__name__}: {e}"
        with lock:
            next_index[0] = count  # nothing more to send
        ready.set()


t0[0] = clock()
wt = threading.Thread(target=run_watcher, daemon=True)
wt.start()
wt.join()
for t in threads:
    t.join(timeout=60)
if w_error[0]:
    raise SystemExit(f"IMAP watcher failed: {w_error[0]}")
print(json.dumps({"messages": messages, "watch": watch}))
