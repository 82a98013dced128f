"""worker/h2_fields.py refuses what the h2 library's inbound validation refuses, and
on these pieces nothing else (requests and trailers made at random from good and bad
pieces, both judges asked), and the pseudo-field values RFC 9113 8.3.1 rules out that
the library lets through; in a session, a malformed request is answered 400 on its
stream, as lighttpd answers it, and the connection goes on."""

from __future__ import annotations

import random
import socket
import struct
import sys
from pathlib import Path

import h2.errors
import hpack
import pytest
from h2.exceptions import ProtocolError
from h2.utilities import HeaderValidationFlags, validate_headers

from shared import log
from worker import h2_connection as wire
from worker import h2_fields

sys.path.insert(0, str(Path(__file__).parent))
from h2_inprocess import static_server  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, SETTINGS, GOAWAY = 0, 1, 4, 7
END_STREAM, END_HEADERS = 0x1, 0x4
REQUEST = HeaderValidationFlags(is_client=False, is_trailer=False,
                                is_response_header=False, is_push_promise=False)
TRAILER = HeaderValidationFlags(is_client=False, is_trailer=True,
                                is_response_header=False, is_push_promise=False)
PSEUDO = [(b":method", b"GET"), (b":method", b"CONNECT"), (b":scheme", b"https"),
          (b":path", b"/a"), (b":path", b""), (b":authority", b"x.example"),
          (b":protocol", b"websocket"), (b":status", b"200"), (b":custom", b"1"),
          (b":path", b"/a\r\n"), (b":method", b" GET")]
REGULAR = [(b"accept", b"*/*"), (b"user-agent", b"test 1.0"), (b"host", b"x.example"),
           (b"host", b"y.example"), (b"te", b"trailers"), (b"te", b"TRAILERS"),
           (b"te", b"gzip"), (b"connection", b"close"), (b"upgrade", b"h2c"),
           (b"keep-alive", b"5"), (b"Accept", b"x"), (b"", b"empty"), (b"a b", b"1"),
           (b"x:y", b"1"), (b"x\x7f", b"1"), (b"x-ok", b""), (b"x-ok", b" lead"),
           (b"x-ok", b"trail\t"), (b"x-ok", b"nul\x00"), (b"x-ok", b"in ner"),
           (b"cookie", b"a=1; b=2"), (b"x-ok", b"\xe9t\xe9"), (b"x-\xe9", b"1")]


def _judged_by_h2(fields: list[tuple[bytes, bytes]], flags: HeaderValidationFlags) -> bool:
    try:
        list(validate_headers(fields, flags))
    except ProtocolError:
        return False
    return True


def _judged_here(check, fields: list[tuple[bytes, bytes]]) -> bool:
    try:
        check(fields)
    except wire.ProtocolError:
        return False
    return True


def test_requests_are_refused_exactly_when_h2_refuses_them():
    chooser = random.Random(9113)
    verdicts = set()
    for _ in range(20_000):
        fields = chooser.sample(PSEUDO, chooser.randint(0, 5))
        fields += chooser.sample(REGULAR, chooser.randint(0, 4))
        if chooser.random() < 0.1:
            chooser.shuffle(fields)
        expected = _judged_by_h2(fields, REQUEST)
        assert _judged_here(h2_fields.check_request, fields) == expected, fields
        verdicts.add(expected)
    assert verdicts == {True, False}


def test_trailers_are_refused_exactly_when_h2_refuses_them():
    chooser = random.Random(9114)
    for _ in range(5_000):
        fields = chooser.sample(REGULAR + PSEUDO[:2], chooser.randint(0, 4))
        assert _judged_here(h2_fields.check_trailers, fields) == \
            _judged_by_h2(fields, TRAILER), fields


def test_a_field_found_valid_once_is_still_judged_in_its_block():
    good = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
            (b"host", b"x.example")]
    h2_fields.check_request(good)
    with pytest.raises(wire.ProtocolError):            # Host twice, each one valid
        h2_fields.check_request(good + [(b"host", b"x.example")])


# ------------------------------------------------------------- in a session
def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def _goaway_code(data: bytes) -> int | None:
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if data[3] == GOAWAY:
            return int.from_bytes(data[13:17], "big")
        data = data[9 + length:]
    return None


@pytest.fixture(params=[""])
def session_server(tmp_path, request):
    """An in-process server (`request.param`: more config); `send(frames)` opens an
    h2c connection, sends them after the preface and returns what came back."""
    server = static_server(tmp_path, request.param)

    def send(frames: bytes) -> bytes:
        client, end = socket.socketpair()
        client.setblocking(False)
        server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
        client.sendall(PREFACE + _frame(SETTINGS, 0, 0) + frames)
        received = b""
        for _ in range(20):
            server.loop.run_once(0.0)
            try:
                received += client.recv(1 << 20)
            except BlockingIOError:
                pass
        client.close()
        return received
    yield send
    server.close_all()


def _statuses(data: bytes) -> dict[int, str]:
    """stream id -> the :status of its answer's HEADERS frame."""
    decoder, found = hpack.Decoder(), {}
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if data[3] == HEADERS:
            stream = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
            found[stream] = dict(decoder.decode(data[9:9 + length]))[":status"]
        data = data[9 + length:]
    return found


def test_a_malformed_request_is_answered_400_and_the_connection_goes_on(session_server):
    """RFC 9113 8.1.1: a malformed request is an error of its stream, which may be
    answered first; lighttpd answers 400 and so does the session (it ended the whole
    connection with GOAWAY PROTOCOL_ERROR, and every other stream with it)."""
    encoder = hpack.Encoder()
    bad = encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/small.txt"),
                          (":authority", "127.0.0.1"), ("connection", "close")])
    good = encoder.encode([(":method", "GET"), (":scheme", "http"), (":path", "/small.txt"),
                           (":authority", "127.0.0.1")])
    answer = session_server(_frame(HEADERS, END_HEADERS | END_STREAM, 1, bad)
                            + _frame(HEADERS, END_HEADERS | END_STREAM, 3, good))
    assert _goaway_code(answer) is None
    assert _statuses(answer) == {1: "400", 3: "200"}


@pytest.mark.parametrize("session_server, logged", [
    ("", False), ('debug.log-request-header-on-error = "enable"', True)],
    indirect=["session_server"], ids=["quiet", "debug"])
def test_a_malformed_request_is_logged_with_the_debug_flag_only(session_server, logged,
                                                                capfd, monkeypatch):
    """As lighttpd logs a refused request: a client must not fill the error log."""
    monkeypatch.setattr(log, "_default", log.ErrorLog())
    bad = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"),
                                  (":path", "/small.txt"), (":authority", "127.0.0.1"),
                                  ("connection", "close")])
    assert _statuses(session_server(_frame(HEADERS, END_HEADERS | END_STREAM, 1, bad))) == \
        {1: "400"}
    assert ("malformed request on stream 1" in capfd.readouterr().err) is logged


@pytest.mark.parametrize("fields", [
    [(":method", ""), (":scheme", "http"), (":path", "/small.txt")],
    [(":method", "GET"), (":scheme", ""), (":path", "/small.txt")],
    [(":method", "GET"), (":scheme", "http"), (":path", "http://127.0.0.1/small.txt")],
    [(":method", "GET"), (":scheme", "http"), (":path", "*")],
    [(":method", "GET"), (":scheme", "http"), (":path", "/small.txt"), (":authority", "")],
], ids=["empty-method", "empty-scheme", "absolute-uri-path", "asterisk-get",
        "empty-authority"])
def test_pseudo_field_values_rfc_9113_rules_out_are_400(session_server, fields):
    """8.3.1 beyond what the h2 library checks, as lighttpd answers them."""
    if not any(name == ":authority" for name, _ in fields):
        fields = fields + [(":authority", "127.0.0.1")]
    block = hpack.Encoder().encode(fields)
    answer = session_server(_frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    assert _statuses(answer) == {1: "400"}


def test_a_trailer_with_a_pseudo_field_is_its_streams_error(session_server):
    encoder = hpack.Encoder()
    head = encoder.encode([(":method", "POST"), (":scheme", "http"),
                           (":path", "/small.txt"), (":authority", "127.0.0.1")])
    trailer = encoder.encode([(":path", "/again")])
    answer = session_server(_frame(HEADERS, END_HEADERS, 1, head) + _frame(DATA, 0, 1, b"x")
                            + _frame(HEADERS, END_HEADERS | END_STREAM, 1, trailer))
    assert _goaway_code(answer) is None


def _answer_status(data: bytes) -> str | None:
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if data[3] == HEADERS:
            fields = dict(hpack.Decoder().decode(data[9:9 + length]))
            return fields.get(":status")
        data = data[9 + length:]
    return None


def test_an_empty_field_is_none_as_in_lighttpd(session_server):
    """lighttpd passes over a field with an empty value (over HTTP/1 as well): an
    empty Content-Length or Range is no framing and no range."""
    block = hpack.Encoder().encode([(":method", "GET"), (":scheme", "http"),
                                    (":path", "/small.txt"), (":authority", "127.0.0.1"),
                                    ("content-length", ""), ("range", "")])
    answer = session_server(_frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    assert _answer_status(answer) == "200"
