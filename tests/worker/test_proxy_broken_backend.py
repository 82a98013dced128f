"""mod_proxy in front of a broken backend, beside lighttpd 1.4.69: a raw backend answers
each path with fixed bytes (bad framing, bad heads, bytes past the answer, interim
answers), and lighttpd and pylighttpd, proxying to it with the same config, must give
the client the same status, fields (but Date and Server) and body.  Where pylighttpd
answers otherwise on purpose, the path is in KNOWN_DIFFERENCES with the reason (most
often: the backend's answer is no HTTP answer, and a proxy answers 502 for it rather
than pass a truncated, mis-framed or injected answer on), and the test checks that it
still differs.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from server_util import read_head
from test_differential import LIGHTTPD, beside_lighttpd, exchange, get11, parse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/: test_h2
from test_h2 import Client  # noqa: E402

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

HELLO = b"Content-Length: 5\r\n\r\nhello"
ANSWERS = {
    "ok": b"HTTP/1.1 200 OK\r\n" + HELLO,
    "http10": b"HTTP/1.0 200 OK\r\n" + HELLO,
    "no-reason": b"HTTP/1.1 200\r\n" + HELLO,
    "until-close": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello until close",
    "past-its-length": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhello",
    "204-with-bytes": b"HTTP/1.1 204 No Content\r\n" + HELLO,
    "304-with-bytes": b"HTTP/1.1 304 Not Modified\r\n" + HELLO,
    "304-with-length": b'HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: "x"\r\n\r\n',
    "lf-only": b"HTTP/1.1 200 OK\nX-A: b\nContent-Length: 5\n\nhello",
    "status-not-a-number": b"HTTP/1.1 2x0 OK\r\n" + HELLO,
    "status-099": b"HTTP/1.1 099 Odd\r\n" + HELLO,
    "huge-head": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70000 + b"\r\n" + HELLO,
    "many-fields": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(300))
                   + HELLO,
    "redirect": b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
    # framing pylighttpd refuses (below)
    "length-and-chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: "
                          b"chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello12",
    "two-same-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n" + HELLO,
    "length-not-a-number": b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
    "shorter-than-its-length": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
    "chunk-size-not-hex": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello",
    "chunks-cut-short": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    "no-head": b"hello, no head at all",
    "nothing": b"",
    "head-cut-short": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
    "field-without-colon": b"HTTP/1.1 200 OK\r\nX bad field\r\n" + HELLO,
    "cr-in-value": b"HTTP/1.1 200 OK\r\nX-A: b\rSet-Cookie: injected=1\r\n" + HELLO,
    "folded-field": b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\n" + HELLO,
    "interim-103": b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
                   b"HTTP/1.1 200 OK\r\n" + HELLO,
    "interim-100": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n" + HELLO,
}
_BAD_GATEWAY = "RFC 9110 15.6.3: what the backend sent is no valid HTTP answer, answered "
KNOWN_DIFFERENCES = {
    "length-and-chunked": "RFC 9112 6.1: an answer with both framings 'ought to be "
                          "handled as an error' (502); lighttpd 1.4.69 passes it on",
    "two-lengths": "RFC 9112 6.3 (5): a proxy receiving an invalid Content-Length MUST "
                   "answer 502; lighttpd 1.4.69 takes the first",
    "two-same-lengths": "RFC 9112 6.3 (5) lets identical values through; llhttp refuses "
                        "a repeated Content-Length and pylighttpd answers 502, as nginx "
                        "does; lighttpd 1.4.69 takes it",
    "length-not-a-number": "RFC 9112 6.3 (5), as two-lengths; lighttpd 1.4.69 forwards "
                           "the field as it came",
    "shorter-than-its-length": "RFC 9112 8: an incomplete answer, kept whole before it "
                               "goes out, is not sent as a 200 (502); lighttpd 1.4.69 "
                               "sends the part with the length it does not meet",
    "chunk-size-not-hex": _BAD_GATEWAY + "502; lighttpd 1.4.69 sends an empty 200",
    "chunks-cut-short": "as shorter-than-its-length",
    "no-head": _BAD_GATEWAY + "502; lighttpd 1.4.69 says 500",
    "nothing": _BAD_GATEWAY + "502; lighttpd 1.4.69 says 500",
    "head-cut-short": _BAD_GATEWAY + "502; lighttpd 1.4.69 says 500",
    "field-without-colon": _BAD_GATEWAY + "502; lighttpd 1.4.69 drops the line",
    "cr-in-value": "RFC 9110 5.5: a bare CR in a field value is invalid (502); lighttpd "
                   "1.4.69 forwards it, a second field injected for clients that "
                   "take CR for a line's end",
    "folded-field": "RFC 9112 5.2: a proxy MUST answer 502 or unfold; pylighttpd answers "
                    "502, lighttpd 1.4.69 keeps the first line only",
    "interim-100": "100 Continue is the server's own, sent as it reads a body the client "
                   "asked to send (RFC 9110 10.1.1), not the backend's; lighttpd 1.4.69 "
                   "passes the backend's on to a client that never asked",
}


def _answer_by_path(sock: socket.socket) -> None:
    """Read the request's head, send the bytes its path names, close."""
    with sock:
        head = read_head(sock)
        if b"\r\n\r\n" not in head:
            return
        name = head.split(b" ", 2)[1].decode().strip("/")
        try:
            sock.sendall(ANSWERS[name])
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(2)
            while sock.recv(65536):
                pass
        except OSError:
            pass                  # the proxy may close as soon as it has the answer


@pytest.fixture(scope="module")
def backend_port() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=_answer_by_path, args=(sock,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.fixture(scope="module")
def servers(backend_port, tmp_path_factory) -> Iterator[tuple[int, int]]:
    """(lighttpd's port, pylighttpd's), both proxying everything to the backend."""
    base = tmp_path_factory.mktemp("proxy-broken")
    (base / "www").mkdir()
    conf = base / "common.conf"
    conf.write_text(f'server.document-root = "{base}/www"\nserver.modules = ("mod_proxy")\n'
                    f'proxy.server = ("" => (("host" => "127.0.0.1", '
                    f'"port" => {backend_port})))\n')
    with beside_lighttpd(conf) as ports:
        yield ports


@pytest.fixture(scope="module")
def answers(servers) -> dict[str, tuple[dict, dict]]:
    return {name: tuple(_summary(exchange(port, get11(f"/{name}"), 10)) for port in servers)
            for name in ANSWERS}


def _summary(raw: bytes) -> dict:
    """The final answer's status, fields and body, and the interim (1xx) heads before
    it."""
    interim = []
    while raw.startswith(b"HTTP/1.1 1"):
        head, _, raw = raw.partition(b"\r\n\r\n")
        interim.append(head.decode("latin-1"))
    status, headers, body = parse(raw)
    found: dict = {"status": status, "body": body, "interim": interim}
    found.update({name: value for name, value in headers.items()
                  if name not in ("date", "server")})
    return found


@pytest.mark.parametrize("name", [name for name in ANSWERS if name not in KNOWN_DIFFERENCES])
def test_same_answer_as_lighttpd(answers, name):
    theirs, ours = answers[name]
    assert ours == theirs


@pytest.mark.parametrize("name", KNOWN_DIFFERENCES)
def test_known_difference_still_differs(answers, name):
    theirs, ours = answers[name]
    assert ours != theirs
    if name == "interim-100":
        assert (ours["status"], ours["interim"], theirs["interim"]) == (
            200, [], ["HTTP/1.1 100 Continue"])
    else:
        assert ours["status"] == 502 and b"502 Bad Gateway" in ours["body"]


def test_early_hints_reach_http2_clients_and_not_http10_ones(servers):
    """The backend's 103 goes on as an interim HEADERS frame over HTTP/2; an HTTP/1.0
    client, which cannot read a 1xx answer, gets the final answer alone."""
    client = Client(servers[1])
    stream = client.get("/interim-103")
    client.run(lambda: stream in client.ended)
    assert (client.interim[stream], client.statuses[stream]) == ("103", "200")
    raw = exchange(servers[1], b"GET /interim-103 HTTP/1.0\r\n\r\n", 10)
    assert raw.startswith(b"HTTP/1.0 200 OK\r\n") and b" 103 " not in raw
