"""Differential test of mod_extforward: Debian's lighttpd 1.4.69 and a pylighttpd worker
run the same config and CGI script; the same forwarding headers, and the same PROXY
headers, go to both, and what the script sees (REMOTE_ADDR, REMOTE_PORT, HTTPS,
REQUEST_SCHEME, a variable a `$HTTP["remoteip"]` block sets ...) must agree.  Where
pylighttpd answers otherwise on purpose, the case is in KNOWN_DIFFERENCES with the
reason, and the test checks that it still differs."""

from __future__ import annotations

import os
import socket
import time

import pytest

from server_util import read_until_closed
from test_differential import LIGHTTPD, beside_lighttpd
from test_mod_extforward import environment, make_site
from test_proxyproto import tcp4, tlv, v2

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

KNOWN_DIFFERENCES = {
    "forwarded-single-pair": "lighttpd 1.4.69 never reads a first Forwarded element "
                             "made of one pair (its walk back from the end stops before "
                             "index 3), so `Forwarded: for=203.0.113.7` alone leaves the "
                             "proxy's address; pylighttpd reads it (RFC 7239 section 4)",
    "forwarded-params": "lighttpd 1.4.69 parses extforward.params but never applies the "
                        "result (host= and remote_user= are ignored); pylighttpd takes "
                        "them as the key documents (and later lighttpd does)",
    "xff-short-ipv4": "lighttpd 1.4.69 takes inet_aton's shorthand (`1.2.3` for 1.2.0.3) "
                      "and passes it on as written; pylighttpd takes only an address in "
                      "its usual textual form and keeps the proxy's",
    "xff-scoped-ipv6": "lighttpd 1.4.69 takes `fe80::1%eth0` and gives backends "
                       "REMOTE_ADDR=0; pylighttpd takes no zone index and keeps the proxy's",
    "v2-in-pieces": "lighttpd takes a PROXY header from one read only and closes the "
                    "connection when it came in pieces; pylighttpd waits for the rest "
                    "(bounded by server.max-read-idle)",
}
# lighttpd reports port 0 for an address taken from a header; pylighttpd the port of
# the proxy's connection (Request.remote_port follows the transport)
_HEADER_ONLY = {"REMOTE_PORT"}


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: a.example", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


HEADER_CASES = [
    ("xff-chain", get("/env.sh", "X-Forwarded-For: 198.51.100.1, 203.0.113.9, 10.1.2.3")),
    ("xff-all-trusted", get("/env.sh", "X-Forwarded-For: 10.0.0.1, 10.2.2.2")),
    ("xff-proto", get("/env.sh", "X-Forwarded-For: 203.0.113.9",
                      "X-Forwarded-Proto: HTTPS")),
    ("xff-proto-list", get("/env.sh", "X-Forwarded-For: 203.0.113.9",
                           "X-Forwarded-Proto: https, http")),
    ("xff-unknown", get("/env.sh", "X-Forwarded-For: unknown")),
    ("xff-ipv6", get("/env.sh", "X-Forwarded-For: 2001:db8::5")),
    ("xff-ipv6-trusted-hop", get("/env.sh", "X-Forwarded-For: 203.0.113.1, 2001:db8::5")),
    ("xff-not-an-address", get("/env.sh", "X-Forwarded-For: abc, 10.0.0.9")),
    ("xff-ipv4-mapped-trusted-hop", get("/env.sh",
                                        "X-Forwarded-For: 203.0.113.9, ::ffff:10.0.0.7")),
    ("xff-ipv4-mapped-only", get("/env.sh", "X-Forwarded-For: ::ffff:10.0.0.7")),
    ("xff-short-ipv4", get("/env.sh", "X-Forwarded-For: 203.0.113.9, 1.2.3")),
    ("xff-scoped-ipv6", get("/env.sh", "X-Forwarded-For: fe80::1%eth0")),
    ("real-ip", get("/realip/env.sh", "X-Real-IP: 203.0.113.44",
                    "X-Forwarded-For: 198.51.100.1")),
    ("real-ip-only-configured", get("/realip/env.sh", "X-Forwarded-For: 198.51.100.1")),
    ("untrusted-peer", get("/untrusted/env.sh", "X-Forwarded-For: 203.0.113.9")),
    ("after-rewrite", get("/again", "X-Forwarded-For: 203.0.113.50")),
    ("forwarded-ipv6-port", get("/rfc/env.sh",
                                'Forwarded: for="[2001:db8:cafe::17]:4711";proto=https')),
    ("forwarded-ipv4-port", get("/rfc/env.sh", 'Forwarded: for="203.0.113.7:99";proto=http')),
    ("forwarded-chain", get("/rfc/env.sh",
                            "Forwarded: for=198.51.100.1;proto=http, for=203.0.113.7")),
    ("forwarded-trusted-hops", get("/rfc/env.sh", "Forwarded: by=x;for=198.51.100.1, "
                                   "for=10.0.0.5;proto=https, for=2001:db8::9;by=y")),
    ("forwarded-obfuscated", get("/rfc/env.sh", 'Forwarded: by=x;for=198.51.100.1, '
                                 'for="_hidden", for=10.0.0.5')),
    ("forwarded-unknown", get("/rfc/env.sh", "Forwarded: for=unknown;proto=https")),
    ("forwarded-open-quote", get("/rfc/env.sh", 'Forwarded: for="203.0.113.1;proto=http')),
    ("forwarded-bad-ipv6", get("/rfc/env.sh", 'Forwarded: for="[2001:db8::1";proto=http')),
    ("forwarded-too-many", get("/rfc/env.sh", "Forwarded: " + "for=1.2.3.4;" * 64)),
    ("forwarded-empty-host", get("/rfc/env.sh", 'Forwarded: host= ;for="198.51.100.1"')),
    ("forwarded-single-pair", get("/rfc/env.sh", "Forwarded: for=203.0.113.7")),
    ("forwarded-params", get("/rfc/env.sh", "Forwarded: for=203.0.113.7;"
                             "host=b.example;remote_user=bob")),
]

_REQUEST = get("/env.sh")
_SSL_FACTS = bytes([0x01]) + bytes(4) + tlv(0x21, b"TLSv1.3") + tlv(0x23, b"AES")
PROXY_CASES = [
    ("v1-tcp4", b"PROXY TCP4 203.0.113.3 127.0.0.1 4444 80\r\n" + _REQUEST),
    ("v1-tcp6", b"PROXY TCP6 2001:db8::7 ::1 5555 80\r\n" + _REQUEST),
    ("v1-unknown", b"PROXY UNKNOWN\r\n" + _REQUEST),
    ("v2-tcp4", tcp4("203.0.113.4", 6666) + _REQUEST),
    ("v2-local", v2(0, 0x11, bytes(12)) + _REQUEST),
    ("v2-ssl-facts", tcp4("203.0.113.5", 7777, tlv(0x20, _SSL_FACTS)
                          + tlv(0x05, b"id-9")) + _REQUEST),
    ("v2-then-xff", tcp4("10.0.0.3", 1000) + get("/env.sh", "X-Forwarded-For: 203.0.113.8")),
    ("v1-bad-address", b"PROXY TCP4 203.0.113.300 127.0.0.1 1 80\r\n" + _REQUEST),
    ("no-header", _REQUEST),
    ("v2-in-pieces", (tcp4("203.0.113.4", 6666)[:10], tcp4("203.0.113.4", 6666)[10:]
                      + _REQUEST)),
]


def seen(port: int, data: bytes | tuple[bytes, ...]) -> dict[str, str]:
    """What the script saw, for bytes sent at once or as pieces a moment apart."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        pieces = (data,) if isinstance(data, bytes) else data
        for index, piece in enumerate(pieces):
            if index:
                time.sleep(0.1)      # the first piece read on its own
            sock.sendall(piece)
        return environment(read_until_closed(sock))


def compare(name: str, theirs: dict[str, str], ours: dict[str, str], ignored: set[str]):
    for key in ignored:
        theirs.pop(key, None)
        ours.pop(key, None)
    if name in KNOWN_DIFFERENCES:
        assert theirs != ours, f"{name} agrees now: {KNOWN_DIFFERENCES[name]}"
    else:
        assert ours == theirs, name


@pytest.fixture(scope="module")
def header_servers(tmp_path_factory):
    with beside_lighttpd(make_site(tmp_path_factory.mktemp("xfdiff"))) as ports:
        yield ports


@pytest.fixture(scope="module")
def proxy_servers(tmp_path_factory):
    conf = make_site(tmp_path_factory.mktemp("ppdiff"), 'extforward.hap-PROXY = "enable"\n')
    with beside_lighttpd(conf) as ports:
        yield ports


@pytest.mark.parametrize("name,data", HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_headers(header_servers, name, data):
    theirs, ours = header_servers
    compare(name, seen(theirs, data), seen(ours, data), _HEADER_ONLY)


@pytest.mark.parametrize("name,data", PROXY_CASES, ids=[c[0] for c in PROXY_CASES])
def test_proxy_protocol(proxy_servers, name, data):
    theirs, ours = proxy_servers
    ignored = {"REMOTE_PORT"} if name in ("v1-unknown", "v2-local", "v2-then-xff") else set()
    compare(name, seen(theirs, data), seen(ours, data), ignored)
