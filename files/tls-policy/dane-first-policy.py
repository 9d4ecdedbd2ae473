#!/usr/bin/python3
# Installed by ispmail (the tls-policy step) as /usr/local/lib/ispmail/dane-first-policy and run by
# ispmail-dane-first-policy.service.
"""DANE before MTA-STS: a Postfix socketmap table (socketmap_table(5)) for smtp_tls_policy_maps.

Postfix asks this table first and postfix-mta-sts-resolver second. For a destination where DANE
applies (its MX RRset is DNSSEC-validated and one of its MX hosts has a validated TLSA RRset at
_25._tcp.<host>) the answer is "dane", so that the MTA-STS policy the same domain may publish never
overrides DANE (RFC 8461, section 2); Postfix then authenticates each MX as its own DANE does. For
every other destination the answer is "not found" and the next table decides.

Only what the server's validating resolver (unbound on 127.0.0.1) marked as authenticated (AD)
counts. When a lookup fails (SERVFAIL, timeout) the answer is a temporary error, so Postfix keeps
the mail queued rather than fall back to a weaker policy; except for a TLSA lookup of an MX host
whose own address records are not signed, which Postfix's DANE would not look up either.
"""
import socketserver
import sys

import dns.exception
import dns.flags
import dns.resolver

LISTEN = ("127.0.0.1", 8462)
TABLE = "dane-first"
MAX_REQUEST = 10000

RESOLVER = dns.resolver.Resolver(configure=False)
RESOLVER.nameservers = ["127.0.0.1"]
RESOLVER.use_edns(0, dns.flags.DO, 1232)
RESOLVER.flags = dns.flags.RD | dns.flags.AD
RESOLVER.lifetime = 15


class LookupFailed(Exception):
    pass


def validated(name, rdtype):
    """The validated RRset (possibly empty: a validated "no such data"); None if unsigned or absent."""
    try:
        answer = RESOLVER.resolve(name, rdtype, search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return None
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as e:
        raise LookupFailed(f"{name} {rdtype}: {e}") from e
    if not answer.response.flags & dns.flags.AD:
        return None
    return list(answer.rrset or [])


def address_signed(host):
    return any(validated(host, t) is not None for t in ("A", "AAAA"))


def dane_applies(domain):
    mx = validated(domain, "MX")
    if mx is None:
        return False
    # No MX: the domain itself is the mail host (RFC 5321, 5.1); a null MX (".") accepts no mail.
    hosts = [r.exchange.to_text(omit_final_dot=True) for r in mx] if mx else [domain]
    for host in filter(None, hosts):
        try:
            if validated(f"_25._tcp.{host}", "TLSA"):
                return True
        except LookupFailed:
            if address_signed(host):
                raise
    return False


def answer(request):
    table, _, key = request.partition(" ")
    if table != TABLE:
        return f"PERM no table {table!r} here, only {TABLE!r}"
    domain = key.strip().lower().rstrip(".")
    # Postfix asks for the next-hop domain, and then for its parents as ".parent" and for explicit
    # next hops as "[host]:port": DANE for those is Postfix's own business (smtp_tls_security_level).
    if not domain or domain.startswith((".", "[")) or ":" in domain:
        return "NOTFOUND "
    try:
        return "OK dane" if dane_applies(domain) else "NOTFOUND "
    except LookupFailed as e:
        print(f"temporary failure for {domain}: {e}", file=sys.stderr, flush=True)
        return f"TEMP DNS lookup failed: {e}"
    except dns.exception.DNSException as e:
        return f"PERM {domain}: {e}"


def read_netstring(stream):
    """One netstring ("<length>:<bytes>,") from the stream; None at its end or on a malformed one."""
    length = b""
    while True:
        c = stream.read(1)
        if not c:
            return None
        if c == b":":
            break
        if not c.isdigit() or len(length) >= len(str(MAX_REQUEST)):
            return None
        length += c
    if not length or int(length) > MAX_REQUEST:
        return None
    data = stream.read(int(length))
    if len(data) != int(length) or stream.read(1) != b",":
        return None
    return data


class Handler(socketserver.StreamRequestHandler):
    """One Postfix process's connection: it sends lookups one after another and keeps it open."""

    def handle(self):
        while (request := read_netstring(self.rfile)) is not None:
            reply = answer(request.decode("utf-8", "replace")).encode("utf-8")
            self.wfile.write(b"%d:%s," % (len(reply), reply))


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


if __name__ == "__main__":
    with Server(LISTEN, Handler) as server:
        server.serve_forever()
