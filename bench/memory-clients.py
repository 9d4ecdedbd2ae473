"""Client load for bench/memory.ts while mail arrives: IMAP clients that log in over 993, SELECT
INBOX, FETCH every message's headers and the newest message's body, and log out, in a loop (one
thread per user), and, when a webmail host is given, a thread fetching the webmail's login page over
HTTPS (the address directly, the host name in SNI and Host). Runs until the stop file exists.

Reads {"host", "users": [{"user", "password"}], "webHost" or null, "stopFile"} as JSON on stdin (no
password on a command line) and prints one JSON line of counts."""
import http.client
import imaplib
import json
import os
import ssl
import sys
import threading
import time

req = json.load(sys.stdin)
# Load only: the e2e tests verify certificates; here the address is used directly.
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

counts = {"imapSessions": 0, "imapErrors": 0, "webRequests": 0, "webErrors": 0}
lock = threading.Lock()


def stopped():
    return os.path.exists(req["stopFile"])


def bump(key):
    with lock:
        counts[key] += 1


def imap_client(user, password):
    while not stopped():
        try:
            imap = imaplib.IMAP4_SSL(req["host"], 993, ssl_context=ctx, timeout=60)
            imap.login(user, password)
            typ, data = imap.select("INBOX", readonly=True)
            exists = int(data[0]) if typ == "OK" else 0
            if exists:
                imap.fetch("1:*", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)])")
                imap.fetch(str(exists), "(BODY.PEEK[])")
            imap.logout()
            bump("imapSessions")
        except Exception:  # noqa: BLE001 - counted, the load goes on
            bump("imapErrors")
            time.sleep(1)
        time.sleep(0.2)


def web_client(host):
    while not stopped():
        try:
            conn = http.client.HTTPSConnection(req["host"], 443, timeout=60, context=ssl_context_for(host))
            conn.request("GET", "/", headers={"Host": host, "User-Agent": "ispmail-bench"})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            bump("webRequests" if resp.status < 500 else "webErrors")
        except Exception:  # noqa: BLE001
            bump("webErrors")
            time.sleep(1)
        time.sleep(0.2)


def ssl_context_for(host):
    # SNI must name the virtual host (Apache picks the vhost by it); the address is what we connect to.
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    wrap = c.wrap_socket
    c.wrap_socket = lambda sock, server_hostname=None, **kw: wrap(sock, server_hostname=host, **kw)  # type: ignore[method-assign]
    return c


threads = [threading.Thread(target=imap_client, args=(u["user"], u["password"]), daemon=True) for u in req["users"]]
if req.get("webHost"):
    threads.append(threading.Thread(target=web_client, args=(req["webHost"],), daemon=True))
for t in threads:
    t.start()
deadline = time.time() + 900
while not stopped() and time.time() < deadline:
    time.sleep(0.2)
for t in threads:
    t.join(timeout=90)
print(json.dumps(counts))
