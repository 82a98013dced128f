"""mod_ajp13 against a container stand-in (ajp_backend.py) that answers with what it
was sent, beside lighttpd 1.4.69 on the same config: the FORWARD_REQUEST fields,
headers and attributes, answers with coded headers, long bodies, uploads, a container
that hangs up or speaks something else, none up; and the codec of worker/ajp13.py."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest

from ajp_backend import AjpBackend, body_chunk, send_headers
from server_util import WorkerProcess
from test_differential import LIGHTTPD, beside_lighttpd, free_port
from worker import ajp13

TIMEOUT = 5.0
# Headers each server writes for itself; how a streamed answer is delimited (by its
# length when it was all in before its head went out) depends on timing.
NOT_COMPARED = frozenset({"date", "server", "accept-ranges", "content-length",
                          "transfer-encoding"})
KNOWN_DIFFERENCES = {
    "hangup": "RFC 9110 15.6.3: a container that closes without an answer is 502 Bad "
              "Gateway; lighttpd says 500",
    "data-packets": "lighttpd 1.4.69 sends a body's data packets without the length "
                    "of their data, which containers read as a wrong length; ours carry "
                    "it (AJP13, Tomcat's AjpProcessor)",
}

ERROR_LOGS: dict[int, Path] = {}     # pylighttpd's port -> the error log of the config

CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_ajp13")
server.stream-response-body = 2
server.errorlog = "{errorlog}"
server.max-request-field-size = 32768
ajp13.server = ( "/app" => (( "host" => "127.0.0.1", "port" => {port} )),
                 ".jsp" => (( "host" => "127.0.0.1", "port" => {port} )),
                 "/down" => (( "host" => "127.0.0.1", "port" => {dead} )) )
"""


@pytest.fixture(scope="module")
def backend():
    made = AjpBackend()
    yield made
    made.close()


@pytest.fixture(scope="module")
def both(tmp_path_factory, backend):
    base = tmp_path_factory.mktemp("ajp13")
    conf = base / "ajp13.conf"
    errorlog = base / "error.log"
    conf.write_text(CONFIG.format(docroot=base, port=backend.port, dead=free_port(),
                                  errorlog=errorlog))
    if not os.access(LIGHTTPD, os.X_OK):         # our own tests run all the same
        with WorkerProcess(conf) as ours:
            ERROR_LOGS[ours.port] = errorlog
            yield None, ours.port
        return
    with beside_lighttpd(conf) as ports:
        ERROR_LOGS[ports[1]] = errorlog
        yield ports


def exchange(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        received = b""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                return 0, {}, b""
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunked(body)
    return int(lines[0].split()[1]), headers, body


def dechunked(body: bytes) -> bytes:
    data = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if not size:
            break
        data, body = data + body[:size], body[size + 2:]
    return data


def request(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: ajp.test:8080", "Connection: close",
             *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def seen(port: int, data: bytes) -> dict:
    status, headers, body = exchange(port, data)
    assert status == 200 and headers.get("x-ajp") == "yes", \
        f"{status} {headers}; the error log (both servers) ends:\n{log_tail(port)}"
    return json.loads(body)


def log_tail(port: int) -> str:
    try:
        return "\n".join(ERROR_LOGS[port].read_text().splitlines()[-15:])
    except (KeyError, OSError) as err:
        return f"(none: {err})"


# ------------------------------------------------------------------ ours
def test_forward_request_fields(both):
    got = seen(both[1], request("GET", "/app/x/y?q=1&r=%20", "User-Agent: t",
                                "X-Foo: bar", "Accept: */*"))
    assert got["method"] == "GET" and got["protocol"] == "HTTP/1.1"
    assert got["uri"] == "/app"                       # the prefix splits off path-info
    assert got["server_name"] == "ajp.test" and got["remote_addr"] == "127.0.0.1"
    assert got["remote_host"] is None and got["is_ssl"] == 0
    assert got["headers"][0] == ["content-length", "0"]
    assert ["X-Foo", "bar"] in got["headers"] and ["accept", "*/*"] in got["headers"]
    assert got["attributes"] == [[5, "q=1&r=%20"]]
    assert got["packet_sizes"] == [0]                 # the empty data packet


def test_upload_in_data_packets(both):
    body = os.urandom(100_000)
    got = seen(both[1], request("POST", "/app/up", f"Content-Length: {len(body)}",
                                body=body))
    assert got["body_size"] == len(body)
    assert got["body_sha1"] == hashlib.sha1(body).hexdigest()
    assert got["packet_sizes"][0] == ajp13.MAX_DATA + 2


def test_chunked_upload_gets_its_length(both):
    got = seen(both[1], request("POST", "/app/up", "Transfer-Encoding: chunked",
                                body=b"5\r\nhello\r\n0\r\n\r\n"))
    assert got["headers"][0] == ["content-length", "5"] and got["body_size"] == 5


def test_long_answer_streams(both):
    status, _, body = exchange(both[1], request("GET", "/app/", "X-Want: big/2000"))
    assert status == 200 and len(body) == 2000 * 1024 // 8000 * 8000


@pytest.mark.parametrize("want, status", [
    ("hangup", 502), ("garbage", 502),
    # a body packet before the head, even an empty one (lighttpd: 500, KNOWN_DIFFERENCES)
    ("packets/" + (b"AB\x00\x03\x03\x00\x00"
                   + b"AB\x00\x08\x04\x00\xc8\x00\x00\x00\x00\x00").hex(), 502),
])
def test_broken_containers_are_502(both, want, status):
    assert exchange(both[1], request("GET", "/app/", f"X-Want: {want}"))[0] == status


def test_container_down_is_503(both):
    assert exchange(both[1], request("GET", "/down/x"))[0] == 503


def test_head_too_long_for_a_packet_is_400(both):
    assert exchange(both[1], request("GET", "/app/", "X-Big: " + "x" * 9000))[0] == 400


# ------------------------------------------------------------------ differential
needs_lighttpd = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                    reason="Debian's lighttpd is not installed")


@needs_lighttpd
@pytest.mark.parametrize("name, data", [
    ("get", request("GET", "/app/x/y?q=1", "User-Agent: t", "X-Foo: bar",
                    "Cookie: a=b", "Accept-Language: en")),
    ("extension", request("GET", "/dir/page.jsp")),
    ("head", request("HEAD", "/app/")),
    ("options", request("OPTIONS", "/app/")),
    ("status-302", request("GET", "/app/", "X-Want: status/302")),
    ("status-404", request("GET", "/app/", "X-Want: status/404")),
    ("big", request("GET", "/app/", "X-Want: big/300")),
    ("down", request("GET", "/down/x")),
    ("empty-post", request("POST", "/app/", "Content-Length: 0")),
    ("head-too-long", request("GET", "/app/", "X-Big: " + "x" * 9000)),
    ("raw-octets", request("GET", "/app/pé?q=é&r=%C3%A9#é")),
])
def test_same_as_lighttpd(both, name, data):
    theirs, ours = (exchange(port, data) for port in both)
    assert ours[0] == theirs[0]
    assert {k: v for k, v in ours[1].items() if k not in NOT_COMPARED} == \
        {k: v for k, v in theirs[1].items() if k not in NOT_COMPARED}
    if theirs[1].get("x-ajp") and theirs[0] == 200 and name not in ("big", "head"):
        mine, lighttpds = json.loads(ours[2]), json.loads(theirs[2])
        mine.pop("server_port"), lighttpds.pop("server_port")
        assert mine == lighttpds
    else:
        assert ours[2] == theirs[2]


def packets(*payloads: bytes) -> str:
    """X-Want for a container answer of these packets (payloads), then END_RESPONSE."""
    return "X-Want: packets/" + b"".join(
        b"AB" + len(payload).to_bytes(2, "big") + payload for payload in payloads).hex()


HEAD_301 = b"\x04\x01\x2d\x00\x02OK\x00"


@needs_lighttpd
@pytest.mark.parametrize("name, want", [
    ("fewer-fields-than-said", packets(HEAD_301 + b"\x00\x03\xa0\x06\x00\x02/x\x00")),
    ("code-naming-nothing", packets(HEAD_301 + b"\x00\x02\xa0\x0c\x00\x01y\x00")),
    ("null-value", packets(HEAD_301 + b"\x00\x02\x00\x03X-A\x00\xff\xff"
                                     b"\x00\x03X-B\x00\x00\x01b\x00")),
    ("null-reason", packets(b"\x04\x00\xc8\xff\xff\x00\x01\xa0\x06\x00\x02/x\x00")),
    ("name-past-the-end", packets(HEAD_301 + b"\x00\x01\x00\x30X-A\x00")),
    ("empty-packet", packets(HEAD_301 + b"\x00\x00", b"", b"\x03\x00\x02hi\x00")),
    ("head-after-body", packets(HEAD_301 + b"\x00\x00", b"\x03\x00\x02hi\x00",
                                HEAD_301 + b"\x00\x00", b"\x03\x00\x01!\x00")),
])
def test_container_answers_read_as_lighttpd_reads_them(both, name, want):
    """Heads cut short or odd (lighttpd reads what it can and goes on), an empty
    packet (skipped), a second head after the body began (ignored)."""
    theirs, ours = (exchange(port, request("GET", "/app/", want)) for port in both)
    assert ours[0] == theirs[0]
    assert {k: v for k, v in ours[1].items() if k not in NOT_COMPARED} == \
        {k: v for k, v in theirs[1].items() if k not in NOT_COMPARED}
    assert ours[2] == theirs[2]


@needs_lighttpd
@pytest.mark.parametrize("data", [
    b"GET /app/ HTTP/1.1\r\nHost: AJP.Test:8080\r\nConnection: close\r\nX-Foo: a\r\n"
    b"x-foo: b\r\nCookie: a=1\r\nCookie: b=2\r\nX-U: \xc3\xbcn\xc3\xaf\r\n\r\n",
    request("POST", "/app/", "Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
])
def test_forwarded_fields_as_lighttpd_keeps_them(both, data):
    """A field sent twice goes once, joined (`; ` for Cookie), under the name first
    written; the Host normalized; UTF-8 octets as sent; no Transfer-Encoding."""
    theirs, ours = (exchange(port, data) for port in both)
    assert ours[0] == theirs[0] == 200
    assert json.loads(ours[2])["headers"] == json.loads(theirs[2])["headers"]


@needs_lighttpd
def test_upload_framing_differs_from_lighttpd_as_listed(both):
    body = b"z" * 20000
    data = request("POST", "/app/", f"Content-Length: {len(body)}", body=body)
    theirs, ours = (exchange(port, data) for port in both)
    assert json.loads(ours[2])["body_sha1"] == hashlib.sha1(body).hexdigest()
    assert theirs[0] != 200 or json.loads(theirs[2])["body_sha1"] != \
        hashlib.sha1(body).hexdigest(), KNOWN_DIFFERENCES["data-packets"]


# ------------------------------------------------------------------ codec
def test_forward_request_encoding():
    packet = ajp13.forward_request(ajp13.ForwardRequest(
        "POST", "HTTP/1.1", "/a", "10.0.0.1", "h", 80, False,
        [("Content-Type", "text/plain"), ("X-Y", "z"), ("Empty", "")], [(5, "q=1")]))
    assert packet[:2] == b"\x12\x34" and packet[4:6] == b"\x02\x04"
    assert b"\xa0\x07\x00\x0atext/plain\x00" in packet
    assert b"\x00\x03X-Y\x00\x00\x01z\x00" in packet
    assert b"\x00\x05Empty\x00\xff\xff" in packet            # empty is the null string
    assert packet.endswith(b"\x05\x00\x03q=1\x00\xff")
    assert int.from_bytes(packet[2:4], "big") == len(packet) - 4
    assert ajp13.forward_request(ajp13.ForwardRequest(
        "FOO", "HTTP/1.1", "/", "", "", 0, False)) is None


def test_body_packets_and_response_reader():
    data = os.urandom(20000)
    packets = ajp13.body_packets(data)
    sizes, position, joined = [], 0, b""
    while position < len(packets):
        length = int.from_bytes(packets[position + 2:position + 4], "big")
        inner = int.from_bytes(packets[position + 4:position + 6], "big")
        joined += packets[position + 6:position + 6 + inner]
        sizes.append(inner)
        position += 4 + length
    assert joined == data and max(sizes) == ajp13.MAX_DATA
    stream = send_headers(302, "Found", [(0xA006, "/x"), ("X-A", "b")]) + \
        body_chunk(b"hello") + b"AB\x00\x03\x06\x1f\xfa" + b"AB\x00\x02\x05\x01"
    reader = ajp13.ResponseReader()
    events = [event for index in range(len(stream))
              for event in reader.feed(stream[index:index + 1])]
    assert events == [ajp13.Headers(b"HTTP/1.1 302 Found\r\nLocation: /x\r\nX-A: b\r\n\r\n"),
                      ajp13.BodyChunk(b"hello"), ajp13.BodyWanted(8186),
                      ajp13.EndResponse(True)]
    with pytest.raises(ajp13.BadPacket):
        ajp13.ResponseReader().feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ajp13.BadPacket):
        ajp13.ResponseReader().feed(b"AB\x00\x02\x04\x00\x00")


@pytest.mark.parametrize("payload, head", [
    (b"\x04\x00\xc8\x00", b"HTTP/1.1 200"),                       # the reason cut short
    (b"\x04\x00\xc8\xff\xff\x00\x01\xa0\x01\x00\x01x\x00", b"HTTP/1.1 200"),   # null reason
    (b"\x04\x01\x2d\x00\x02OK\x00\x00\x03\xa0\x06\x00\x02/x\x00\xa0\x0c\x00\x01y\x00",
     b"HTTP/1.1 301 OK\r\nLocation: /x"),                          # a code naming nothing
    (b"\x04\x01\x2d\x00\x02OK\x00\x00\x02\x00\x03X-A\x00\x00\x01a\x00",
     b"HTTP/1.1 301 OK\r\nX-A: a"),                                # fewer fields than said
    (b"\x04\x01\x2d\x00\x02OK\x00\x00\x02\x00\x03X-A\x00\xff\xff\x00\x03X-B\x00\x00\x01b\x00",
     b"HTTP/1.1 301 OK\r\nX-A: "),                                 # a null value ends it
    (b"\x04\x01\x2d\x00\x02OK\x00\x00\x01\x00\x09X-A\x00\x00\x01a\x00",
     b"HTTP/1.1 301 OK"),                                            # a name past the end
])
def test_a_broken_head_ends_where_lighttpd_stops_reading_it(payload, head):
    """SEND_HEADERS read as lighttpd's ajp13_expand_headers reads it: no error, the head
    is what could be read (its status line at least)."""
    packet = b"AB" + len(payload).to_bytes(2, "big") + payload
    assert ajp13.ResponseReader().feed(packet) == [ajp13.Headers(head + b"\r\n\r\n")]


def test_an_empty_packet_is_skipped_once_more_follows():
    """lighttpd reads a packet's type before its length: an empty packet is one of a
    type it does not know (the next packet's first octet), skipped."""
    reader = ajp13.ResponseReader()
    assert reader.feed(b"AB\x00\x00") == []
    assert reader.feed(b"AB\x00\x02\x05\x00") == [ajp13.EndResponse(False)]


@needs_lighttpd
def test_hangup_differs_from_lighttpd_as_listed(both):
    theirs, ours = (exchange(port, request("GET", "/app/", "X-Want: hangup"))[0]
                    for port in both)
    assert theirs == 500, KNOWN_DIFFERENCES["hangup"]
    assert ours == 502
