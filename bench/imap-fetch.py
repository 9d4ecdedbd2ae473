"""IMAP timing client for bench/imap.ts: logs in over implicit TLS (993), then per run times SELECT
and FETCH of the headers of every message in one mailbox. Reads {"host", "user", "password",
"mailbox", "runs"} as JSON on stdin (the password never goes on a command line) and prints one JSON
line of timings. Each run is a new connection, as a client opening the mailbox would make."""
import imaplib
import json
import ssl
import sys
import time

req = json.load(sys.stdin)
# Timing only: the e2e web/mail tests verify the certificate; here the address is used directly.
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

runs = []
for _ in range(int(req["runs"])):
    t0 = time.perf_counter()
    imap = imaplib.IMAP4_SSL(req["host"], 993, ssl_context=ctx, timeout=120)
    imap.login(req["user"], req["password"])
    t1 = time.perf_counter()
    typ, data = imap.select(req["mailbox"], readonly=True)
    t2 = time.perf_counter()
    if typ != "OK":
        raise SystemExit(f"SELECT failed: {data}")
    exists = int(data[0])
    # What a client lists: the envelope headers of every message.
    typ, fields = imap.fetch("1:*", "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)])")
    t3 = time.perf_counter()
    # Every header of every message.
    typ2, full = imap.fetch("1:*", "(BODY.PEEK[HEADER])")
    t4 = time.perf_counter()
    if typ != "OK" or typ2 != "OK":
        raise SystemExit("FETCH failed")
    fetched = sum(1 for part in fields if isinstance(part, tuple))
    fetched_full = sum(1 for part in full if isinstance(part, tuple))
    header_bytes = sum(len(part[1]) for part in full if isinstance(part, tuple))
    imap.logout()
    runs.append({
        "connectLogin": t1 - t0,
        "select": t2 - t1,
        "fetchHeaderFields": t3 - t2,
        "fetchHeaders": t4 - t3,
        "selectAndFetch": t3 - t1,
        "exists": exists,
        "fetched": fetched,
        "fetchedFull": fetched_full,
        "headerBytes": header_bytes,
    })
print(json.dumps({"runs": runs}))
