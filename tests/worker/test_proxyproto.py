"""The PROXY protocol reader (worker/proxyproto.py) without sockets: v1 and v2 headers
whole and in pieces, what each kind yields, and what is refused; and the reading of
X-Forwarded-For lists and Forwarded headers of mod_extforward."""

from __future__ import annotations

import socket
import struct

import pytest

from worker.modules.mod_extforward import (ForwardedError, address_list, client_of_list,
                                           parse_forwarders, read_forwarded)
from worker.proxyproto import (V2_MAX_PAYLOAD, V2_SIGNATURE, HeaderReader, ProxyHeader,
                               ProxyHeaderError)

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v2(command: int, family: int, payload: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + \
        struct.pack("!H", len(payload)) + payload


def tcp4(source: str, port: int, tlvs: bytes = b"") -> bytes:
    return v2(1, 0x11, socket.inet_aton(source) + socket.inet_aton("192.0.2.1")
              + struct.pack("!HH", port, 443) + tlvs)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def read(*pieces: bytes) -> tuple[ProxyHeader | None, bytes]:
    """Feed the pieces as a socket would offer them (each peek sees what is there and
    was not consumed); returns the header and what was left for the client."""
    reader = HeaderReader()
    waiting = b""
    for piece in pieces:
        waiting += piece
        while reader.header is None and waiting:
            taken = reader.take(waiting[:reader.peek_size()])
            waiting = waiting[taken:]
    return reader.header, waiting


def test_v1_tcp4_leaves_the_request():
    header, rest = read(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n" + REQUEST)
    assert header == ProxyHeader(1, ("203.0.113.7", 56324))
    assert rest == REQUEST


def test_v1_tcp6_is_canonical():
    header, _ = read(b"PROXY TCP6 2001:DB8:0::7 ::1 1 65535\r\n")
    assert header.source == ("2001:db8::7", 1)


@pytest.mark.parametrize("line", [b"PROXY UNKNOWN\r\n",
                                  b"PROXY UNKNOWN 2001:db8::7 ::1 1 2\r\n"])
def test_v1_unknown_keeps_the_address(line):
    header, rest = read(line + REQUEST)
    assert header == ProxyHeader(1) and rest == REQUEST


def test_v1_in_pieces_with_crlf_split():
    header, rest = read(b"PRO", b"XY TCP4 203.0.113.7 192.0.2.1 ", b"80 443\r",
                        b"\n" + REQUEST)
    assert header.source == ("203.0.113.7", 80) and rest == REQUEST


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 203.0.113.300 192.0.2.1 1 2\r\n",     # not an address
    b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",       # wrong family
    b"PROXY TCP4 203.0.113.7 192.0.2.1 0 2\r\n",        # port 0
    b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 2\r\n",    # port too large
    b"PROXY TCP4 203.0.113.7 192.0.2.1 +1 2\r\n",       # not digits
    b"PROXY TCP4 203.0.113.7 192.0.2.1 1\r\n",          # a field missing
    b"PROXY TCP4  203.0.113.7 192.0.2.1 1 2\r\n",       # two spaces
    b"PROXY UDP4 203.0.113.7 192.0.2.1 1 2\r\n",
    b"PROXY\r\n",
    b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\xff\r\n",    # not ASCII
    b"GET / HTTP/1.1\r\n",                              # no header at all
    b"proxy TCP4 203.0.113.7 192.0.2.1 1 2\r\n",
])
def test_v1_malformed(line):
    with pytest.raises(ProxyHeaderError):
        read(line)


def test_v1_without_crlf_in_107_bytes_is_refused():
    with pytest.raises(ProxyHeaderError):
        read(b"PROXY TCP4 " + b"1" * 100, b"1" * 10)


def test_v2_tcp4_in_pieces():
    data = tcp4("203.0.113.9", 4242)
    header, rest = read(data[:3], data[3:14], data[14:17], data[17:] + REQUEST)
    assert header == ProxyHeader(2, ("203.0.113.9", 4242))
    assert rest == REQUEST


def test_v2_tcp6():
    payload = socket.inet_pton(socket.AF_INET6, "2001:db8::9") + bytes(16) + \
        struct.pack("!HH", 8080, 443)
    header, _ = read(v2(1, 0x21, payload))
    assert header.source == ("2001:db8::9", 8080)


def test_v2_unix_source_path():
    payload = b"/run/client.sock".ljust(108, b"\0") + bytes(108)
    header, _ = read(v2(1, 0x31, payload))
    assert header.source == ("/run/client.sock", 0)


@pytest.mark.parametrize("command,family", [(0, 0x11), (0, 0x00), (1, 0x00), (1, 0x12)])
def test_v2_local_and_other_families_keep_the_address(command, family):
    header, rest = read(v2(command, family, bytes(12)) + REQUEST)
    assert header.source is None and rest == REQUEST


def test_v2_ssl_and_unique_id_tlvs():
    ssl = bytes([0x01 | 0x02]) + bytes(4) + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"alice") \
        + tlv(0x23, b"TLS_AES_128_GCM_SHA256") + tlv(0x7f, b"ignored")
    header, _ = read(tcp4("203.0.113.9", 1, tlv(0x04, b"") + tlv(0x20, ssl)
                          + tlv(0x05, b"id-1")))
    assert header.ssl and header.ssl_client_verified
    assert header.env == {"SSL_PROTOCOL": "TLSv1.3", "SSL_CLIENT_S_DN_CN": "alice",
                          "SSL_CIPHER": "TLS_AES_128_GCM_SHA256", "PP2_UNIQUE_ID": "id-1"}


def test_v2_failed_verification_and_a_cut_tlv():
    ssl = bytes([0x01 | 0x02]) + struct.pack("!I", 1)
    header, _ = read(tcp4("203.0.113.9", 1, tlv(0x20, ssl) + b"\x05\x00\x09abc"))
    assert header.ssl and not header.ssl_client_verified and header.env == {}


@pytest.mark.parametrize("data", [
    V2_SIGNATURE + bytes([0x11, 0x11, 0, 12]) + bytes(12),     # version 1 in a v2 header
    V2_SIGNATURE + bytes([0x22, 0x11, 0, 12]) + bytes(12),     # command 2
    V2_SIGNATURE[:5] + b"X",                                   # signature broken
    v2(1, 0x11, bytes(8)),                                     # address block too short
    v2(1, 0x21, bytes(20)),
    v2(1, 0x31, b"x" * 216),                                   # path without its NUL
])
def test_v2_malformed(data):
    with pytest.raises(ProxyHeaderError):
        read(data)


def test_v2_oversized_is_refused_from_its_fixed_part():
    fixed = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", V2_MAX_PAYLOAD + 1)
    with pytest.raises(ProxyHeaderError):
        read(fixed)


def test_v2_largest_accepted():
    header, rest = read(tcp4("203.0.113.9", 7, tlv(0x04, bytes(V2_MAX_PAYLOAD - 15)))
                        + REQUEST)
    assert header.source == ("203.0.113.9", 7) and rest == REQUEST


def test_peek_never_reaches_past_a_v2_header():
    reader = HeaderReader()
    data = tcp4("203.0.113.9", 7)
    reader.take(data[:16])
    assert reader.peek_size() == len(data) - 16


# ------------------------------------------------------------ mod_extforward's lists
TRUSTED = parse_forwarders((("10.0.0.0/8", "trust"), ("192.0.2.5", "trust"),
                            ("192.0.2.6", "untrusted"), ("[2001:db8::]/32", "trust")))


def test_address_list_cuts_like_lighttpd():
    assert address_list("203.0.113.1, unknown,10.0.0.1 ;[::1]") == \
        ["203.0.113.1", "10.0.0.1", "::1"]


@pytest.mark.parametrize("value,client", [
    ("203.0.113.1, 10.1.1.1, 192.0.2.5", "203.0.113.1"),
    ("198.51.100.1, 203.0.113.1, 10.1.1.1", "203.0.113.1"),    # rightmost untrusted
    ("203.0.113.1, 192.0.2.6", "192.0.2.6"),                   # listed, untrusted
    ("10.0.0.1, 2001:db8::1", None),                            # all trusted
])
def test_client_of_list(value, client):
    assert client_of_list(value, TRUSTED) == client


@pytest.mark.parametrize("value,client", [
    ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
    ('for=203.0.113.1', "203.0.113.1"),
    ('for="203.0.113.1:80";proto=https', "203.0.113.1"),
    ('for=203.0.113.1, for=10.0.0.1', "203.0.113.1"),
    ('for=198.51.100.1, for=203.0.113.1, for=10.0.0.1', "203.0.113.1"),
    ('for=198.51.100.1, for="_hidden", for=10.0.0.1', "10.0.0.1"),
    ('for=198.51.100.1, by=x, for=10.0.0.1', "198.51.100.1"),  # an element without for=
    ('for=unknown', None),
    ('proto=https', None),
])
def test_forwarded_client(value, client):
    found = read_forwarded(value, TRUSTED)
    assert (found.address if found else None) == client


def test_forwarded_params_of_the_clients_element():
    found = read_forwarded('for=203.0.113.1;proto="https";remote_user="a\\"b", '
                           'for=10.0.0.1;host=later.example', TRUSTED)
    assert (found.proto, found.host, found.remote_user) == \
        ("https", "later.example", '"a\\"b"')


@pytest.mark.parametrize("value", ['for="203.0.113.1', 'for="[2001:db8::1"',
                                   "for=1.2.3.4;" * 64])
def test_forwarded_refused(value):
    with pytest.raises(ForwardedError):
        read_forwarded(value, TRUSTED)
