"""HAProxy's PROXY protocol, versions 1 and 2 (haproxy's doc/proxy-protocol.txt), the
receiving side, sans I/O.

A proxy that speaks it sends one header first on each connection, before any byte of
the client's (and before a TLS handshake): the client's address as the proxy saw it.

    PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\\r\\n                 (v1, text)
    \\r\\n\\r\\n\\x00\\r\\nQUIT\\n  0x21 0x11 len  src dst sport dport  TLVs    (v2, binary)

`HeaderReader` takes the bytes a transport peeked at the socket and says how many of
them belong to the header, so the transport consumes exactly those and leaves what
follows (a TLS ClientHello, an HTTP request) in the socket for whoever reads next.
It accepts the header in any number of pieces and refuses, with `ProxyHeaderError`,
anything that is not a well-formed header of a bounded size; the caller closes the
connection then.

What a header yields follows lighttpd 1.4.69's mod_extforward: the source address and
port of TCP4, TCP6 and UNIX (stream) headers; none (the connection's own address
stays) for v1 `UNKNOWN`, the v2 LOCAL command and the other v2 families; from v2's
TLVs the SSL facts (the client used TLS: the scheme is https; a client certificate
verified; SSL_PROTOCOL, SSL_CLIENT_S_DN_CN, SSL_CIPHER, SSL_SERVER_A_SIG,
SSL_SERVER_A_KEY) and PP2_UNIQUE_ID, for the environment of backends.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from shared import log

from .transport import Transport

if TYPE_CHECKING:
    from .chunkqueue import ChunkQueue

V1_PREFIX = b"PROXY "
V1_MAX = 107                      # the longest v1 line, CRLF included (spec 2.1)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16                     # signature, version/command, family, length
# Address block and TLVs of a v2 header: the spec allows 64 KiB, but what a proxy
# sends (addresses, SSL facts, a unique id) fits well below this
V2_MAX_PAYLOAD = 2048

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_FAMILY_TCP4, _FAMILY_TCP6, _FAMILY_UNIX = 0x11, 0x21, 0x31
_ADDRESS_SIZES = {_FAMILY_TCP4: 12, _FAMILY_TCP6: 36, _FAMILY_UNIX: 216}
_TLV_SSL, _TLV_UNIQUE_ID = 0x20, 0x05
_SSL_SUBTYPES = {0x21: "SSL_PROTOCOL", 0x22: "SSL_CLIENT_S_DN_CN", 0x23: "SSL_CIPHER",
                 0x24: "SSL_SERVER_A_SIG", 0x25: "SSL_SERVER_A_KEY"}
_CLIENT_SSL, _CLIENT_CERT_CONN, _CLIENT_CERT_SESS = 0x01, 0x02, 0x04


class ProxyHeaderError(ValueError):
    """What came first on the connection is no acceptable PROXY header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What a header says about the client.  `source` is None when the connection's
    own address stays (v1 UNKNOWN, v2 LOCAL, a family without addresses)."""

    version: int
    source: tuple[str, int] | None = None
    ssl: bool = False                  # the client spoke TLS to the proxy
    ssl_client_verified: bool = False  # and sent a certificate the proxy verified
    env: dict[str, str] = field(default_factory=dict)


def _text(value: bytes) -> str:
    """A TLV's value for the environment: the bytes kept whatever they are."""
    return value.decode("utf-8", "surrogateescape")


def _port(text: str) -> int:
    """A v1 port: 1 to 5 digits, 1 to 65535."""
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or \
            not 0 < int(text) <= 65535:
        raise ProxyHeaderError(f"bad port {text!r}")
    return int(text)


def _address(text: str, version: int) -> str:
    """A v1 address of the announced family, in its canonical spelling."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"bad address {text!r}") from None
    if address.version != version:
        raise ProxyHeaderError(f"{text!r} is not an IPv{version} address")
    return str(address)


def parse_v1(line: bytes) -> ProxyHeader:
    """A v1 header without its CRLF."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("v1 header is not ASCII") from None
    words = text.split(" ")
    if words[0] != "PROXY" or len(words) < 2:
        raise ProxyHeaderError("v1 header does not start with PROXY")
    if words[1] == "UNKNOWN":
        return ProxyHeader(1)
    if words[1] not in ("TCP4", "TCP6") or len(words) != 6:
        raise ProxyHeaderError(f"v1 header {text!r} is not TCP4/TCP6 with 4 fields")
    version = 4 if words[1] == "TCP4" else 6
    source = _address(words[2], version)
    _address(words[3], version)
    _port(words[5])
    return ProxyHeader(1, (source, _port(words[4])))


def _source_v2(family: int, block: bytes) -> tuple[str, int]:
    if family == _FAMILY_TCP4:
        return socket.inet_ntop(socket.AF_INET, block[:4]), \
            struct.unpack_from("!H", block, 8)[0]
    if family == _FAMILY_TCP6:
        return socket.inet_ntop(socket.AF_INET6, block[:16]), \
            struct.unpack_from("!H", block, 32)[0]
    path = block[:108]
    end = path.find(b"\0")
    if end < 0:
        raise ProxyHeaderError("v2 UNIX source path without its NUL")
    return _text(path[:end]), 0


def _tlvs(data: bytes) -> list[tuple[int, bytes]]:
    """Type-length-value vectors, up to the first that does not fit (the rest is
    ignored, as lighttpd ignores it)."""
    vectors = []
    offset = 0
    while len(data) - offset >= 3:
        kind, length = data[offset], struct.unpack_from("!H", data, offset + 1)[0]
        if offset + 3 + length > len(data):
            break
        vectors.append((kind, data[offset + 3:offset + 3 + length]))
        offset += 3 + length
    return vectors


def _ssl_facts(value: bytes, env: dict[str, str]) -> tuple[bool, bool]:
    """PP2_TYPE_SSL: (client used TLS, client certificate verified); its sub-TLVs
    go to `env`."""
    if len(value) < 5:
        return False, False
    client = value[0]
    verified = bool(client & (_CLIENT_CERT_CONN | _CLIENT_CERT_SESS)) and \
        value[1:5] == b"\0\0\0\0"
    for kind, sub in _tlvs(value[5:]):
        name = _SSL_SUBTYPES.get(kind)
        if name is not None:
            env[name] = _text(sub)
    return bool(client & _CLIENT_SSL), verified


def parse_v2(header: bytes) -> ProxyHeader:
    """A whole v2 header, signature included."""
    command, family = header[12] & 0x0F, header[13]
    if command == _V2_LOCAL:
        return ProxyHeader(2)
    payload = header[V2_FIXED:]
    size = _ADDRESS_SIZES.get(family)
    if size is None:
        return ProxyHeader(2)          # UNSPEC, UDP ...: the connection's address stays
    if len(payload) < size:
        raise ProxyHeaderError(f"v2 address block of {len(payload)} bytes for family "
                               f"{family:#x}")
    source = _source_v2(family, payload)
    env: dict[str, str] = {}
    ssl = verified = False
    for kind, value in _tlvs(payload[size:]):
        if kind == _TLV_SSL:
            ssl, verified = _ssl_facts(value, env)
        elif kind == _TLV_UNIQUE_ID:
            env["PP2_UNIQUE_ID"] = _text(value)
    return ProxyHeader(2, source, ssl, verified, env)


def _v2_total(data: bytes) -> int:
    """The size of the v2 header whose fixed part starts `data`."""
    length = struct.unpack_from("!H", data, 14)[0]
    if length > V2_MAX_PAYLOAD:
        raise ProxyHeaderError(f"v2 header of {length} bytes after its fixed part "
                               f"(at most {V2_MAX_PAYLOAD})")
    return V2_FIXED + length


class HeaderReader:
    """The header as it arrives: `take(peeked)` with the bytes waiting in the socket
    returns how many of them are the header's; once `header` is set, the rest belong
    to the client."""

    __slots__ = ("buffer", "header")

    def __init__(self) -> None:
        self.buffer = b""
        self.header: ProxyHeader | None = None

    def peek_size(self) -> int:
        """How many bytes to peek at: enough to finish the header or learn its size."""
        buffer = self.buffer
        if buffer.startswith(V2_SIGNATURE) and len(buffer) >= V2_FIXED:
            return _v2_total(buffer) - len(buffer)
        if buffer.startswith(b"\r"):
            return V2_FIXED - len(buffer)
        return V1_MAX + 1 - len(buffer)

    def take(self, peeked: bytes) -> int:
        """Account for the bytes peeked; returns how many of them the header takes
        (all, until it is complete).  Raises ProxyHeaderError."""
        before = len(self.buffer)
        data = self.buffer + peeked
        if data[:1] == b"\r":
            end = self._v2_end(data)
        else:
            end = self._v1_end(data)
        self.buffer = data[:end] if end else data
        return (end or len(data)) - before

    def _v1_end(self, data: bytes) -> int:
        """Where the v1 header ends in `data` (0: not yet)."""
        if not data.startswith(V1_PREFIX[:len(data)]):
            raise ProxyHeaderError("not a PROXY protocol header")
        crlf = data.find(b"\r\n", 0, V1_MAX)
        if crlf < 0:
            if len(data) >= V1_MAX:
                raise ProxyHeaderError(f"v1 header longer than {V1_MAX} bytes")
            return 0
        self.header = parse_v1(data[:crlf])
        return crlf + 2

    def _v2_end(self, data: bytes) -> int:
        """Where the v2 header ends in `data` (0: not yet)."""
        if not data.startswith(V2_SIGNATURE[:len(data)]):
            raise ProxyHeaderError("not a PROXY protocol v2 signature")
        if len(data) < V2_FIXED:
            return 0
        if data[12] >> 4 != 2 or data[12] & 0x0F not in (_V2_LOCAL, _V2_PROXY):
            raise ProxyHeaderError(f"v2 version/command byte {data[12]:#x}")
        total = _v2_total(data)
        if len(data) < total:
            return 0
        self.header = parse_v2(data[:total])
        return total



class ProxyHeaderTransport(Transport):
    """A connection's transport that reads the PROXY header first, from the socket
    itself, then is the transport it wraps (plain or TLS): TLS starts on the bytes
    after the header, since none of them was read.  The source port the header
    gave is the connection's peer port from then on.  `on_header` learns the header
    before the first byte of the client's is read.  The wrapped transport's
    `read_wants_write` (TLS sets it in a read) is copied after each read.

    While the header is incomplete, recv raises BlockingIOError (what came is kept);
    a malformed or oversized header is logged and raised as OSError, so the
    connection closes; the peer's EOF ends the connection as usual."""

    __slots__ = ("inner", "reader", "on_header", "source_port")

    def __init__(self, inner: Transport, on_header: Callable[[ProxyHeader], None]) -> None:
        super().__init__(inner.pollable)
        self.inner: Any = inner          # its own members too (a socket's, TLS's)
        self.reader: HeaderReader | None = HeaderReader()
        self.on_header = on_header
        self.source_port = 0

    def __getattr__(self, name: str) -> Any:
        """What else the inner transport offers (its socket, its TLS connection)."""
        return getattr(self.inner, name)

    def fileno(self) -> int:
        return self.inner.fileno()

    def recv(self) -> bytes:
        if self.reader is not None and not self._read_header():
            return b""
        try:
            return self.inner.recv()
        finally:
            self.read_wants_write = self.inner.read_wants_write

    def _read_header(self) -> bool:
        """Read what is there of the header; True once it is complete, False at the
        peer's EOF before that."""
        reader = self.reader
        sock = self.inner.sock
        while reader.header is None:
            peeked = sock.recv(reader.peek_size(), socket.MSG_PEEK)
            if not peeked:
                return False
            try:
                size = reader.take(peeked)
            except ProxyHeaderError as err:
                log.error("mod_extforward.c", f"hap-PROXY proto received invalid/unsupported "
                          f"request from {self._peer()}: {err}")
                raise OSError(f"PROXY protocol: {err}") from None
            sock.recv(size)
        header = reader.header
        self.reader = None
        if header.source is not None:
            self.source_port = header.source[1]
        self.on_header(header)
        return True

    def _peer(self) -> str:
        try:
            return str(self.inner.sock.getpeername()[0])
        except (OSError, IndexError, TypeError):
            return "?"

    def send(self, out: "ChunkQueue") -> int:
        return self.inner.send(out)

    def send_limited(self, out: "ChunkQueue", budget: int) -> int:
        return self.inner.send_limited(out, budget)

    def shutdown_write(self) -> None:
        self.inner.shutdown_write()

    def negotiated(self) -> bytes:
        return self.inner.negotiated()

    def close(self) -> None:
        self.inner.close()

    def peer_port(self) -> int:
        if self.reader is None and self.source_port:
            return self.source_port
        return self.inner.peer_port()

    def local_address(self) -> str:
        return self.inner.local_address()
