"""A servlet container stand-in for mod_ajp13's tests: a threaded TCP server that reads
AJP13 FORWARD_REQUEST packets and their bodies (asking for the body with
GET_BODY_CHUNK as a container does) and answers with what it received, as JSON: the
method, URL path, headers, attributes and body, and how the body came framed.

An `X-Want` request header asks for other answers: `status/NNN` answers NNN with a
Location header (codes for the common header names), `big/N` sends N KiB of body in
8000-byte packets, `hangup` closes without an answer, `garbage` answers with what is
not AJP13, `packets/HEX` answers with those octets and END_RESPONSE.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct

from tcp_backends import ThreadedServer

U16 = struct.Struct("!H")
HEADER_NAMES = {0xA000 | code: name for code, name in enumerate((
    "accept", "accept-charset", "accept-encoding", "accept-language", "authorization",
    "connection", "content-type", "content-length", "cookie", "cookie2", "host",
    "pragma", "referer", "user-agent"), start=1)}
METHODS = {code: name for code, name in enumerate((
    "OPTIONS", "GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "PROPFIND"), start=1)}


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def byte(self) -> int:
        self.position += 1
        return self.data[self.position - 1]

    def u16(self) -> int:
        self.position += 2
        return U16.unpack_from(self.data, self.position - 2)[0]

    def string(self) -> str | None:
        length = self.u16()
        if length == 0xFFFF:
            return None
        value = self.data[self.position:self.position + length]
        self.position += length + 1
        return value.decode("utf-8", "surrogateescape")


def read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_packet(conn: socket.socket) -> bytes:
    head = read_exactly(conn, 4)
    if head[:2] != b"\x12\x34":
        raise ValueError(f"bad magic {head[:2]!r}")
    return read_exactly(conn, U16.unpack(head[2:])[0])


def forward_request(payload: bytes) -> dict:
    reader = Reader(payload)
    assert reader.byte() == 2
    seen = {"method": METHODS.get(reader.byte(), "?"), "protocol": reader.string(),
            "uri": reader.string(), "remote_addr": reader.string(),
            "remote_host": reader.string(), "server_name": reader.string(),
            "server_port": reader.u16(), "is_ssl": reader.byte()}
    headers = []
    for _ in range(reader.u16()):
        code = U16.unpack_from(payload, reader.position)[0]
        if code >= 0xA000:
            reader.position += 2
            name = HEADER_NAMES[code]
        else:
            name = reader.string()
        headers.append([name, reader.string()])
    attributes = []
    while (code := reader.byte()) != 0xFF:
        attributes.append([code, reader.string()])
    seen.update(headers=headers, attributes=attributes)
    return seen


def packet(payload: bytes) -> bytes:
    return b"AB" + U16.pack(len(payload)) + payload


def string(value: str) -> bytes:
    data = value.encode()
    return U16.pack(len(data)) + data + b"\0"


def send_headers(status: int, reason: str, headers: list[tuple[int | str, str]]) -> bytes:
    parts = [bytes((4,)), U16.pack(status), string(reason), U16.pack(len(headers))]
    for name, value in headers:
        parts += (U16.pack(name) if isinstance(name, int) else string(name), string(value))
    return packet(b"".join(parts))


def body_chunk(data: bytes) -> bytes:
    return packet(bytes((3,)) + U16.pack(len(data)) + data + b"\0")


END = packet(b"\x05\x00")
DRAIN_SECONDS = 5.0     # the longest wait for the server to close after an answer


def read_body(conn: socket.socket, length: int) -> tuple[bytes, list[int]]:
    """The body as a container reads it: the first data packet comes unasked, then one
    per GET_BODY_CHUNK until `length` bytes or an empty packet."""
    body, sizes = b"", []
    while True:
        payload = read_packet(conn)
        sizes.append(len(payload))
        if not payload:
            return body, sizes
        body += payload[2:2 + U16.unpack_from(payload)[0]]
        if len(body) >= length:
            return body, sizes
        conn.sendall(packet(bytes((6,)) + U16.pack(8186)))


def serve(conn: socket.socket) -> None:
    """One request, answered as its X-Want header asks."""
    seen = forward_request(read_packet(conn))
    length = int(dict((k.lower(), v) for k, v in seen["headers"]).get("content-length")
                 or 0)
    body, sizes = read_body(conn, length)
    seen.update(body_sha1=hashlib.sha1(body).hexdigest(), body_size=len(body),
                packet_sizes=sizes[:4])
    want = dict((k.lower(), v) for k, v in seen["headers"]).get("x-want") or ""
    if want == "hangup":
        return
    if want == "garbage":
        conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
        return
    if want.startswith("packets/"):          # these packets (hex), then END_RESPONSE
        conn.sendall(bytes.fromhex(want.split("/")[1]) + END)
        return
    if want.startswith("status/"):
        status = int(want.split("/")[1])
        conn.sendall(send_headers(status, "Custom", [(0xA006, "/elsewhere"),
                                                    ("X-Ajp", "yes")]) + END)
        return
    if want.startswith("big/"):
        conn.sendall(send_headers(200, "OK", [(0xA001, "application/octet-stream")]))
        block = b"b" * 8000
        for _ in range(int(want.split("/")[1]) * 1024 // len(block)):
            conn.sendall(body_chunk(block))
        conn.sendall(END)
        return
    answer = json.dumps(seen, sort_keys=True).encode()
    conn.sendall(send_headers(200, "OK", [(0xA001, "application/json"),
                                          ("X-Ajp", "yes")])
                 + body_chunk(answer) + END)


class AjpBackend(ThreadedServer):
    def handle(self, conn: socket.socket) -> None:
        serve(conn)
        drain(conn)


def drain(conn: socket.socket) -> None:
    """Read what the server still sends (the empty data packet after a body) until
    it closes, as a container does: a socket closed with unread bytes is reset, and a
    reset drops what the stand-in's answer had not yet got out (a rare 502 under
    load)."""
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(DRAIN_SECONDS)
    while conn.recv(65536):
        pass
