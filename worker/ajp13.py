"""The Apache JServ Protocol 1.3 without I/O, as a web server speaks it to a servlet
container (https://tomcat.apache.org/connectors-doc/ajp/ajpv13a.html), the way
lighttpd 1.4.69's mod_ajp13 frames it.

Server to container: one FORWARD_REQUEST packet (`forward_request`: method code,
protocol, URL path, client address, server name and port, TLS flag, headers with the
common names as codes, attributes such as the query string, 0xFF), then the body in
data packets of at most 8188 bytes (`body_packets`), and an empty data packet after
the last.  Container to server (`ResponseReader`): SEND_HEADERS (status, reason,
headers; common names as codes), SEND_BODY_CHUNK, GET_BODY_CHUNK, END_RESPONSE.
Every packet is at most 8 KiB; a request whose head does not fit is refused (400 in
lighttpd), as is a method AJP has no code for.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

MAX_PACKET = 8192
MAX_DATA = MAX_PACKET - 4 - 2          # a data packet: its header, the data's length
SERVER_MAGIC = b"\x12\x34"
CONTAINER_MAGIC = b"AB"
FORWARD_REQUEST, SEND_BODY_CHUNK, SEND_HEADERS = 2, 3, 4
END_RESPONSE, GET_BODY_CHUNK, CPONG_REPLY = 5, 6, 9
NULL_STRING = b"\xff\xff"
END_OF_ATTRIBUTES = 0xFF
EMPTY_DATA_PACKET = SERVER_MAGIC + b"\x00\x00"
_U16 = struct.Struct("!H")

METHODS = {name: code for code, name in enumerate((
    "OPTIONS", "GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "PROPFIND", "PROPPATCH",
    "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "ACL", "REPORT", "VERSION-CONTROL",
    "CHECKIN", "CHECKOUT", "UNCHECKOUT", "SEARCH", "MKWORKSPACE", "UPDATE", "LABEL",
    "MERGE", "BASELINE-CONTROL", "MKACTIVITY"), start=1)}
REQUEST_HEADER_CODES = {name: 0xA000 | code for code, name in enumerate((
    "accept", "accept-charset", "accept-encoding", "accept-language", "authorization",
    "connection", "content-type", "content-length", "cookie", "cookie2", "host",
    "pragma", "referer", "user-agent"), start=1)}
RESPONSE_HEADER_NAMES = ("Content-Type", "Content-Language", "Content-Length", "Date",
                         "Last-Modified", "Location", "Set-Cookie", "Set-Cookie2",
                         "Servlet-Engine", "Status", "WWW-Authenticate")
_CODED_NAMES: Final = {0xA001 + index: name.encode()
                       for index, name in enumerate(RESPONSE_HEADER_NAMES)}
# request attributes
ATTRIBUTE_REMOTE_USER, ATTRIBUTE_AUTH_TYPE, ATTRIBUTE_QUERY_STRING = 0x03, 0x04, 0x05
ATTRIBUTE_SSL_CERT, ATTRIBUTE_SSL_CIPHER, ATTRIBUTE_SSL_KEY_SIZE = 0x07, 0x08, 0x0B
ATTRIBUTE_SECRET = 0x0C


class BadPacket(ValueError):
    """The container sent something that is not AJP13."""


def string(value: str) -> bytes:
    """An AJP string: its length, its bytes, a NUL; empty is the null string."""
    data = value.encode("utf-8", "surrogateescape")
    if not data or len(data) >= 0xFFFF:
        return NULL_STRING
    return _U16.pack(len(data)) + data + b"\0"


@dataclass
class ForwardRequest:
    """What a FORWARD_REQUEST says of a request."""

    method: str
    protocol: str
    uri: str
    remote_addr: str
    server_name: str
    server_port: int
    is_ssl: bool
    headers: list[tuple[str, str]] = field(default_factory=list)
    attributes: list[tuple[int, str]] = field(default_factory=list)


def forward_request(request: ForwardRequest) -> bytes | None:
    """The FORWARD_REQUEST packet; None for a method without a code or a head longer
    than a packet."""
    method = METHODS.get(request.method)
    if method is None:
        return None
    parts = [bytes((FORWARD_REQUEST, method)), string(request.protocol), string(request.uri),
             string(request.remote_addr), NULL_STRING, string(request.server_name),
             _U16.pack(request.server_port), bytes((request.is_ssl,)),
             _U16.pack(len(request.headers))]
    for name, value in request.headers:
        code = REQUEST_HEADER_CODES.get(name.lower())
        parts.append(_U16.pack(code) if code else string(name))
        parts.append(string(value))
    for code, value in request.attributes:
        parts += (bytes((code,)), string(value))
    parts.append(bytes((END_OF_ATTRIBUTES,)))
    payload = b"".join(parts)
    if len(payload) + 4 > MAX_PACKET:
        return None
    return SERVER_MAGIC + _U16.pack(len(payload)) + payload


def body_packets(data: bytes) -> bytes:
    """Body bytes as data packets of at most MAX_DATA bytes each."""
    packets: list[bytes] = []
    for start in range(0, len(data), MAX_DATA):
        piece = data[start:start + MAX_DATA]
        packets += (SERVER_MAGIC, _U16.pack(len(piece) + 2), _U16.pack(len(piece)), piece)
    return b"".join(packets)


@dataclass(frozen=True, slots=True)
class Headers:
    """SEND_HEADERS, as the HTTP/1.1 head it stands for (what lighttpd parses too)."""

    head: bytes


@dataclass(frozen=True, slots=True)
class BodyChunk:
    data: bytes


@dataclass(frozen=True, slots=True)
class BodyWanted:
    """GET_BODY_CHUNK: the container asks for up to `size` more body bytes."""

    size: int


@dataclass(frozen=True, slots=True)
class EndResponse:
    reuse: bool


class ResponseReader:
    """The container's packets from bytes as they arrive."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[Headers | BodyChunk | BodyWanted | EndResponse]:
        """The whole packets `data` completes, in order (CPONG_REPLY and types not
        known here are skipped, as lighttpd skips them)."""
        buffer = self.buffer + data if self.buffer else data
        events: list[Headers | BodyChunk | BodyWanted | EndResponse] = []
        position = 0
        while len(buffer) - position >= 5:     # a packet's head and its type, as lighttpd
            if buffer[position:position + 2] != CONTAINER_MAGIC:
                raise BadPacket("invalid packet prefix sent from container")
            length = _U16.unpack_from(buffer, position + 2)[0]
            if len(buffer) - position - 4 < length:
                break
            payload = buffer[position + 4:position + 4 + length]
            position += 4 + length
            event = _packet(payload) if payload else None   # empty: skipped, as lighttpd
            if event is not None:                           # skips a type it does not know
                events.append(event)
        self.buffer = buffer[position:]
        return events


def _packet(payload: bytes) -> Headers | BodyChunk | BodyWanted | EndResponse | None:
    if not payload:
        raise BadPacket("empty packet")
    kind = payload[0]
    if kind == SEND_BODY_CHUNK:
        if len(payload) < 3:
            raise BadPacket("body packet received with invalid length")
        size = _U16.unpack_from(payload, 1)[0]
        if size > len(payload) - 3:
            raise BadPacket("body packet received with invalid length")
        return BodyChunk(payload[3:3 + size])    # an empty one too: lighttpd skips it
                                                 # only once the head is in
    if kind == SEND_HEADERS:
        return Headers(_headers(payload))
    if kind == GET_BODY_CHUNK:
        return BodyWanted(_U16.unpack_from(payload, 1)[0] if len(payload) >= 3 else 0)
    if kind == END_RESPONSE:
        return EndResponse(len(payload) > 1 and bool(payload[1]))
    return None


def _headers(payload: bytes) -> bytes:
    """SEND_HEADERS as `HTTP/1.1 STATUS REASON` and its header lines.  Read as lighttpd
    reads it: the head ends quietly where the packet does, at a string that runs past
    it (the null string among them) or at a header code that names nothing; a name
    read without its value is a field with an empty one."""
    if len(payload) < 3:
        raise BadPacket("headers packet received with invalid length")
    lines = [b"HTTP/1.1 %d" % _U16.unpack_from(payload, 1)[0]]
    reason, position = _string(payload, 3)
    if reason is None:
        return _head(lines)
    lines[0] += b" " + reason
    if position + 2 > len(payload):
        return _head(lines)
    count = _U16.unpack_from(payload, position)[0]
    position += 2
    for _ in range(count):
        if position + 2 > len(payload):
            break
        code = _U16.unpack_from(payload, position)[0]
        if code >= 0xA000:
            name = _CODED_NAMES.get(code)
            position += 2
        else:
            name, position = _string(payload, position)
        if name is None:
            break
        value, position = _string(payload, position)
        lines.append(name + b": " + (value or b""))
        if value is None:
            break
    return _head(lines)


def _string(payload: bytes, position: int) -> tuple[bytes | None, int]:
    """The string at `position` and the position after its NUL; None for one that runs
    past the packet (a null string's length, 0xFFFF, always does)."""
    if position + 2 > len(payload):
        return None, position
    length = _U16.unpack_from(payload, position)[0]
    start = position + 2
    if start + length + 1 > len(payload):
        return None, start
    return payload[start:start + length], start + length + 1


def _head(lines: list[bytes]) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n"
