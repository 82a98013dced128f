"""HTTP/2 frames that break RFC 9113's rules, beside Debian's lighttpd 1.4.69 (in the
manner of h2spec): each sequence goes to both servers over h2c after the preface and
an empty SETTINGS, and what comes back (GOAWAY and its code, RST_STREAM and its code,
an answer's status) must agree: connection errors, stream errors and frames to ignore
alike.  Where pylighttpd follows the RFC where lighttpd does not, the case is in
KNOWN_DIFFERENCES with the reason, and the test checks that it still differs."""

from __future__ import annotations

import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import hpack
import pytest

from test_differential import LIGHTTPD
from test_h2_malformed_differential import servers  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)
ES, EH, PADDED, PRIO = 0x1, 0x4, 0x8, 0x20
IDLE = 0.25         # seconds of silence after which a server has said all it will


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
            + struct.pack(">I", stream) + payload)


def block(method: bytes = b"GET", extra: tuple = ()) -> bytes:
    return hpack.Encoder().encode([(b":method", method), (b":scheme", b"http"),
                                   (b":authority", b"a.example"),
                                   (b":path", b"/index.html"), *extra])


def GET(stream: int) -> bytes:  # noqa: N802 - read as the frame it makes
    return frame(HEADERS, EH | ES, stream, block())


def POSTH(stream: int) -> bytes:  # noqa: N802 - a POST's head, its 4 bytes to come
    return frame(HEADERS, EH, stream, block(b"POST", ((b"content-length", b"4"),)))


def S(*pairs: tuple[int, int]) -> bytes:  # noqa: N802 - a SETTINGS frame
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def W(stream: int, increment: int) -> bytes:  # noqa: N802 - a WINDOW_UPDATE frame
    return frame(WINDOW, 0, stream, struct.pack(">I", increment))


TRAILER = hpack.Encoder().encode([(b"x-t", b"1")])
# name -> the frames sent after the preface and SETTINGS
CASES = {
    "settings-ack-with-payload": frame(SETTINGS, 1, 0, b"\0\0\0\0\0\0"),
    "settings-on-stream": frame(SETTINGS, 0, 1, b""),
    "settings-bad-length": frame(SETTINGS, 0, 0, b"\0\0\0"),
    "settings-enable-push-2": S((2, 2)),
    "settings-window-too-big": S((4, 2**31)),
    "settings-frame-size-small": S((5, 16383)),
    "settings-frame-size-big": S((5, 2**24)),
    "settings-unknown": S((0xff, 1)) + GET(1),
    "ping-on-stream": frame(PING, 0, 1, b"\0" * 8),
    "ping-bad-length": frame(PING, 0, 0, b"\0" * 6),
    "goaway-on-stream": frame(GOAWAY, 0, 1, b"\0" * 8),
    "window-zero-conn": W(0, 0),
    "window-zero-stream": POSTH(1) + W(1, 0),
    "window-bad-length": frame(WINDOW, 0, 0, b"\0\0\0"),
    "window-overflow-conn": W(0, 2**31 - 1) + W(0, 2**31 - 1),
    "window-overflow-stream": POSTH(1) + W(1, 2**31 - 1) + W(1, 2**31 - 1),
    "data-on-stream-0": frame(DATA, 0, 0, b"x"),
    "data-on-idle": frame(DATA, 0, 1, b"x"),
    "headers-on-stream-0": frame(HEADERS, EH | ES, 0, block()),
    "headers-even-stream": GET(2),
    "headers-lower-stream": GET(5) + GET(3),
    "headers-self-dependency": (frame(HEADERS, EH | ES | PRIO, 1, struct.pack(">IB", 1, 15)
                                + block())),
    "continuation-alone": frame(CONT, EH, 1, block()),
    "headers-then-other-frame": frame(HEADERS, ES, 1, block()) + frame(PING, 0, 0, b"\0" * 8),
    "headers-then-continuation-other-stream": (frame(HEADERS, ES, 1, block())
                                               + frame(CONT, EH, 3, b"")),
    "priority-bad-length": frame(PRIORITY, 0, 1, b"\0\0\0\0"),
    "priority-on-stream-0": frame(PRIORITY, 0, 0, b"\0\0\0\0\x0f"),
    "priority-self": frame(PRIORITY, 0, 1, struct.pack(">IB", 1, 15)),
    "rst-on-stream-0": frame(RST, 0, 0, b"\0\0\0\x08"),
    "rst-on-idle": frame(RST, 0, 1, b"\0\0\0\x08"),
    "rst-bad-length": POSTH(1) + frame(RST, 0, 1, b"\0\0\0"),
    "push-promise": frame(PUSH, EH, 1, b"\0\0\0\x02" + block()),
    "frame-too-big": frame(DATA, 0, 1, b"x" * 16385),
    "headers-pad-too-long": frame(HEADERS, EH | ES | PADDED, 1, b"\xff" + block()),
    "data-pad-too-long": POSTH(1) + frame(DATA, PADDED, 1, b"\x09abcd"),
    "data-after-end-stream": GET(1) + frame(DATA, 0, 1, b"x"),
    "headers-after-end-stream": GET(1) + frame(HEADERS, EH | ES, 1, TRAILER),
    "hpack-bad-index": frame(HEADERS, EH | ES, 1, b"\xff\xff\x7f"),
    "unknown-frame": frame(0x20, 0, 0, b"abc") + GET(1),
    "unknown-frame-in-headers": (frame(HEADERS, ES, 1, block()) + frame(0x20, 0, 1, b"")
                                 + frame(CONT, EH, 1, b"")),
    "body-longer-than-length": POSTH(1) + frame(DATA, ES, 1, b"abcdefgh"),
    "body-shorter-than-length": POSTH(1) + frame(DATA, ES, 1, b"ab"),
    "trailers-without-end-stream": (POSTH(1) + frame(DATA, 0, 1, b"abcd")
                                    + frame(HEADERS, EH, 1, TRAILER)),
    "data-beyond-window": S((4, 100)) + POSTH(1),   # server's own window is ours to respect only
    "zero-length-headers": frame(HEADERS, EH | ES, 1, b""),
    "stream-id-reuse": GET(1) + GET(1),
    "settings-header-table-0": S((1, 0)) + GET(1) + GET(3),
    "settings-max-concurrent-0-then-get": S((3, 0)) + GET(1),
}
KNOWN_DIFFERENCES = {
    "priority-bad-length": "RFC 9113 6.3: a PRIORITY frame of another length than 5 is a "
                           "stream error FRAME_SIZE_ERROR; lighttpd 1.4.69 ends the "
                           "connection",
    "data-after-end-stream": "RFC 9113 5.1: DATA after END_STREAM is a stream error "
                             "STREAM_CLOSED, and the reset stream is not answered; "
                             "lighttpd 1.4.69 resets it and answers it after",
}


def run(port: int, payload: bytes) -> list:
    """What came back for `payload`, in order, until GOAWAY, a close or IDLE seconds
    of silence: ("goaway", code), ("rst", stream, code), ("status", stream, status)."""
    got: list = []
    decoder = hpack.Decoder()
    pending = b""
    with socket.create_connection(("127.0.0.1", port), timeout=IDLE) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0) + payload)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                got.append(("reset",))
                break
            if not data:
                got.append(("closed",))
                break
            pending += data
            while len(pending) >= 9 and len(pending) >= 9 + int.from_bytes(pending[:3], "big"):
                length = int.from_bytes(pending[:3], "big")
                kind, stream = pending[3], int.from_bytes(pending[5:9], "big") & 0x7FFFFFFF
                body, pending = pending[9:9 + length], pending[9 + length:]
                if kind == GOAWAY:
                    return got + [("goaway", int.from_bytes(body[4:8], "big"))]
                if kind == RST:
                    got.append(("rst", stream, int.from_bytes(body[:4], "big")))
                elif kind == HEADERS:
                    got.append(("status", stream, dict(decoder.decode(body))[":status"]))
    return got


@pytest.mark.parametrize("name", list(CASES))
def test_frames_are_answered_as_by_lighttpd(servers, name):
    theirs, ours = servers
    with ThreadPoolExecutor(2) as pool:
        expected, found = pool.map(run, (theirs, ours), (CASES[name], CASES[name]))
    if name in KNOWN_DIFFERENCES:
        assert found != expected, f"{name} agrees now: drop it from KNOWN_DIFFERENCES"
    else:
        assert found == expected
