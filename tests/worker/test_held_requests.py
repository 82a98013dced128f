"""The module contract of worker/module.py, driven in this process: a worker `Server`
with modules defined here, one real socket pair per exchange, the loop run by the test.

WAIT and handle_subrequest, COMEBACK, streamed answers (chunked, close-delimited,
HEAD), backpressure, the order of pipelined requests behind a held one, a client gone
while a module works, and a module's bug while it holds a request.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from master.configload import load
from server_util import split_responses
from sites import make_docroot
from worker.module import BACKLOG_HIGH, COMEBACK, ERROR, WAIT, Module
from worker.connection import Connection, ConnState
from worker.chunked import Dechunker
from worker.request import Request
from worker.server import Server

BLOCK = 64 * 1024


class Later(Module):
    reads_request_body = True
    """/later/...: held, answered by a timer 20 ms on.  /stream/N: N parts of 1 KiB,
    one per timer.  /again: COMEBACK to /index.html.  /loop: COMEBACK forever.
    /broken: a bug in handle_subrequest.  /flood/N: N blocks as fast as the client
    reads, pausing above BACKLOG_HIGH."""

    resets: list[tuple[str, bool]] = []
    most_backlog = 0
    most_unread = 0

    def handle_uri_clean(self, request: Request):
        path = request.uri_path
        if path == "/again":
            request.internal_redirect("/index.html")
            return COMEBACK
        if path == "/loop":
            request.internal_redirect("/loop")
            return COMEBACK
        if path.startswith(("/later/", "/stream/", "/broken", "/flood/", "/echo/", "/fail/",
                            "/shout", "/backend/")):
            request.handler = self       # claimed: no file behind these URLs
        return None

    def _backend(self, request: Request):
        """/backend/STATUS[/LENGTH]: answers as a backend would, the status as it is
        (passthrough), streamed, announcing LENGTH and sending no body to HEAD."""
        parts = request.uri_path.split("/")
        response = request.response
        response.passthrough = True
        response.stream()
        if len(parts) > 3:
            response.add_header("Content-Length", parts[3])
            if request.method != "HEAD":
                response.write(b"b" * int(parts[3]))
        return int(parts[2])

    def _shout(self, request: Request):
        """/shout: switches to the "shout" protocol (101) and echoes in upper case
        until the client ends its side."""
        response = request.response
        if not response.streaming:
            if request.headers.get("upgrade") != "shout":
                response.write(b"ask to upgrade")
                return 200
            response.status = 101
            response.add_header("Upgrade", "shout")
            response.add_header("Connection", "Upgrade")
            response.stream()
            return WAIT
        response.write(request.body.read_chunk().upper())
        return 200 if request.body.complete and not request.body.unread else WAIT

    def _fail(self, request: Request):
        """/fail/N: streams N parts, then its backend breaks (ERROR)."""
        ctx = request.plugin_ctx
        left = ctx.setdefault("left", int(request.uri_path[6:]))
        if not left:
            return ERROR
        if not request.response.streaming:
            request.response.stream()
        request.response.write(b"part")
        ctx["left"] = left - 1
        self.services.call_later(0.002, request.wake)
        return WAIT

    def _echo(self, request: Request):
        """/echo/N: takes at most N bytes of the body per call, a call per 2 ms, and
        answers with what it saw once the body is complete."""
        if request.waits_for_body():       # mode 0: the work starts with the whole body
            return WAIT
        ctx = request.plugin_ctx
        body = request.body
        ctx.setdefault("calls", 0)
        ctx["calls"] += 1
        ctx.setdefault("incomplete", 0)
        ctx["incomplete"] += not body.complete
        Later.most_unread = max(Later.most_unread, body.unread)
        ctx["got"] = ctx.get("got", 0) + len(body.read_chunk(int(request.uri_path[6:])))
        if body.complete and not body.unread:
            request.response.write(b"%d bytes, %d calls before the end"
                                   % (ctx["got"], ctx["incomplete"]))
            return 200
        if body.unread:
            self.services.call_later(0.002, request.wake)
        return WAIT

    def handle_subrequest(self, request: Request):
        path = request.uri_path
        response = request.response
        if path.startswith("/echo/"):
            return self._echo(request)
        if path.startswith("/fail/"):
            return self._fail(request)
        if path == "/shout":
            return self._shout(request)
        if path.startswith("/backend/"):
            return self._backend(request)
        if "left" not in request.plugin_ctx:       # the first call
            request.plugin_ctx["left"] = int(path.rsplit("/", 1)[1] or 0) \
                if path.startswith(("/stream/", "/flood/")) else 0
            if path.startswith("/flood/"):
                return self._flood(request)
            self.services.call_later(0.02, request.wake)
            return WAIT
        if path.startswith("/broken"):
            raise RuntimeError("a module bug")
        if path.startswith("/later/"):
            response.write(b"late " + path.encode())
            if path == "/later/handler":
                response.write(b" for " + request.target_orig.encode())
            return 200
        if path.startswith("/flood/"):
            return self._flood(request)
        left = request.plugin_ctx["left"]
        if not response.streaming:
            response.add_header("Content-Type", "text/plain")
            response.stream()
        if left == 0:
            if request.headers.get("te") == "trailers":
                response.trailers = [("Checksum", "abc"), ("Server-Timing", "db;dur=5")]
            return 200
        response.write(b"%d" % left + b"." * 1023)
        request.plugin_ctx["left"] = left - 1
        self.services.call_later(0.005, request.wake)
        return WAIT

    def _flood(self, request: Request):
        response = request.response
        if not response.streaming:
            response.stream()
        for _ in range(4):               # a few blocks per round, as a backend gives them
            if not request.plugin_ctx["left"]:
                return 200
            backlog = request.backlog()
            Later.most_backlog = max(Later.most_backlog, backlog)
            if backlog >= BACKLOG_HIGH:
                response.wants_drain = True
                return WAIT
            response.write(b"f" * BLOCK)
            request.plugin_ctx["left"] -= 1
        self.services.call_later(0, request.wake)
        return WAIT

    def handle_request_reset(self, request: Request) -> None:
        Later.resets.append((request.uri_path, request.aborted))


class _Starring:
    """A content coding for the test: dots become stars, and a mark at the end."""

    def encode(self, data: bytes) -> bytes:
        return data.replace(b".", b"*")

    def finish(self) -> bytes:
        return b"<END>"


class Encodes(Module):
    """Sets an encoder on streamed answers when they start (as mod_deflate does)."""

    def handle_response_start(self, request: Request):
        response = request.response
        if response.streaming and request.uri_path.startswith("/stream/"):
            response.encoder = _Starring()
            response.body = [part.replace(b".", b"*") for part in response.body]
            response.set_header("Content-Encoding", "starring")


@contextlib.contextmanager
def held_server(base: Path, stream_response_body: int,
                stream_request_body: int = 0, max_request_kib: int = 0,
                error_handler: str = "/later/handler",
                extra_modules: tuple[type[Module], ...] = ()) -> Iterator[Server]:
    docroot = make_docroot(base)
    conf = base / "held.conf"
    conf.write_text(f'server.document-root = "{docroot}"\n'
                    'server.modules = ("mod_indexfile", "mod_staticfile")\n'
                    f'server.errorlog = "{base}/error.log"\n'
                    f'server.upload-dirs = ("{base}/spool")\n'
                    f'server.error-handler-404 = "{error_handler}"\n'
                    f'server.stream-response-body = {stream_response_body}\n'
                    f'server.stream-request-body = {stream_request_body}\n'
                    f'server.max-request-size = {max_request_kib}\n')
    (base / "spool").mkdir()
    config = load(str(conf))
    config.modules = [Later, *extra_modules, *config.modules]
    worker = Server(config, [])
    Later.resets = []
    Later.most_backlog = Later.most_unread = 0
    try:
        yield worker
    finally:
        worker.close_all()
        worker.loop.close()


def errorlog(server: Server) -> Path:
    return Path(server.config.settings["server.errorlog"])


def spool(server: Server) -> Path:
    return Path(server.upload_dirs[0])


@pytest.fixture()
def server(tmp_path):
    """Answers streamed with backpressure (server.stream-response-body = 2)."""
    with held_server(tmp_path, 2) as worker:
        yield worker


def exchange(server: Server, data: bytes, read_pause: float = 0.0,
             seconds: float = 10.0, rst_after: float | None = None) -> bytes:
    """Send `data` on a new connection and run the loop until the server closes it
    (or the client resets it after `rst_after` seconds); the answer bytes."""
    client, end = socket.socketpair()
    server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
    return converse(server, client, data, read_pause, seconds, rst_after)


def converse(server: Server, client: socket.socket, data: bytes, read_pause: float = 0.0,
             seconds: float = 10.0, rst_after: float | None = None) -> bytes:
    """exchange() on a connection the server has already: send `data`, read until
    the server closes, and run the loop until it has let the connection go."""
    client.setblocking(False)
    unsent = memoryview(data)
    received = bytearray()
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        if unsent:
            with contextlib.suppress(BlockingIOError):
                unsent = unsent[client.send(unsent):]
        server.loop.run_once(0.005)
        if rst_after is not None and time.monotonic() - start > rst_after:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            for _ in range(5):
                server.loop.run_once(0.005)
            return bytes(received)
        try:
            chunk = client.recv(4096 if read_pause else 1 << 20)
        except BlockingIOError:
            continue
        if not chunk:
            break
        received += chunk
        if read_pause:
            time.sleep(read_pause)
    client.close()
    while server.connections and time.monotonic() < deadline:
        server.loop.run_once(0.005)      # the lingering close sees the client's EOF
    return bytes(received)


def get(path: str, version: str = "1.1", method: str = "GET", close: bool = True) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return f"{method} {path} HTTP/{version}\r\nHost: t\r\n{connection}\r\n".encode()


def test_a_held_request_is_answered_when_its_module_is_woken(server):
    answers = split_responses(exchange(server, get("/later/x")))
    assert answers == [(200, answers[0][1], b"late /later/x")]
    assert answers[0][1]["content-length"] == "13"
    assert Later.resets == [("/later/x", False)]


def test_pipelined_requests_behind_a_held_one_keep_their_order(server):
    data = get("/later/1", close=False) + get("/index.html", close=False) + get("/later/2")
    bodies = [body for _, _, body in split_responses(exchange(server, data))]
    assert bodies == [b"late /later/1", b"hello from pylighttpd\n", b"late /later/2"]


def _held_connection(server: Server, data: bytes) -> tuple[socket.socket, Connection]:
    """A client whose first request (`data`) the worker now holds."""
    client, end = socket.socketpair()
    connection = server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
    client.sendall(data)
    deadline = time.monotonic() + 5
    while connection.held is None and time.monotonic() < deadline:
        server.loop.run_once(0.001)
    assert connection.held is not None
    return client, connection


def test_holding_a_request_leaves_the_client_polled_until_it_speaks(server):
    """No epoll_ctl for a held request whose client waits quietly; the next request,
    sent meanwhile, switches the client to hang-ups only and is read after."""
    client, connection = _held_connection(server, get("/later/1", close=False))
    assert connection.events == select.EPOLLIN and connection.held.quiet
    client.sendall(get("/index.html"))
    for _ in range(3):
        server.loop.run_once(0.001)
    if connection.held is not None:          # still held: only its hang-up is polled
        assert connection.events == select.EPOLLRDHUP and not connection.held.quiet
    bodies = [body for _, _, body in split_responses(converse(server, client, b""))]
    assert bodies == [b"late /later/1", b"hello from pylighttpd\n"]


def test_a_client_half_closed_while_held_still_gets_its_answer(server):
    client, connection = _held_connection(server, get("/later/2", close=False))
    client.shutdown(socket.SHUT_WR)
    answers = split_responses(converse(server, client, b""))
    assert [body for _, _, body in answers] == [b"late /later/2"]
    assert not server.connections


def test_a_streamed_answer_is_chunked_for_http11(server):
    data = exchange(server, get("/stream/3"))
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\nTransfer-Encoding: chunked\r\n" in head + b"\r\n"
    assert b"Content-Length" not in head
    parts = [b"3" + b"." * 1023, b"2" + b"." * 1023, b"1" + b"." * 1023]
    assert body == b"".join(b"400\r\n" + part + b"\r\n" for part in parts) + b"0\r\n\r\n"


def test_a_streamed_answer_keeps_the_connection_for_the_next_request(server):
    data = exchange(server, get("/stream/2", close=False) + get("/index.html"))
    streamed, _, rest = data.partition(b"\r\n0\r\n\r\n")
    assert b"\r\nConnection: close" not in streamed
    assert split_responses(rest)[0][2] == b"hello from pylighttpd\n"


def test_a_streamed_answer_to_http10_ends_with_the_connection(server):
    data = exchange(server, get("/stream/2", version="1.0"))
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert b"\r\nConnection: close" in head
    assert body == b"2" + b"." * 1023 + b"1" + b"." * 1023


def test_a_streamed_answer_to_head_has_no_body(server):
    data = get("/stream/2", method="HEAD", close=False) + get("/index.html")
    answers = split_responses(exchange(server, data))
    assert [status for status, _, _ in answers] == [200, 200]
    assert answers[1][2] == b"hello from pylighttpd\n"


def test_comeback_runs_the_phases_again_for_the_new_url(server):
    answers = split_responses(exchange(server, get("/again")))
    assert answers[0][0] == 200 and answers[0][2] == b"hello from pylighttpd\n"


def test_an_endless_comeback_is_500(server):
    assert exchange(server, get("/loop")).startswith(b"HTTP/1.1 500 ")
    assert "ENDLESS LOOP" in errorlog(server).read_text()


def test_an_error_handler_may_be_a_held_request(server):
    answers = split_responses(exchange(server, get("/missing.html")))
    assert answers[0][0] == 200          # the 404 handler's own status stands
    assert answers[0][2] == b"late /later/handler for /missing.html"


def test_a_module_bug_while_holding_is_500_and_the_worker_goes_on(server):
    assert exchange(server, get("/broken")).startswith(b"HTTP/1.1 500 ")
    assert "a module bug" in errorlog(server).read_text()
    assert exchange(server, get("/index.html")).startswith(b"HTTP/1.1 200 ")


def test_a_client_gone_while_a_module_holds_aborts_the_request(server):
    exchange(server, get("/stream/1000"), rst_after=0.05)
    assert Later.resets == [("/stream/1000", True)]
    assert not server.connections


def test_a_slow_client_slows_the_producer(server):
    """4 MiB to a client reading 4 KiB at a time: the queue stays near BACKLOG_HIGH."""
    count = 64
    data = exchange(server, get("/flood/%d" % count, version="1.0"), read_pause=0.0001,
                    seconds=60)
    assert data.count(b"f") == count * BLOCK
    assert Later.most_backlog < BACKLOG_HIGH + 2 * BLOCK


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_stream_response_body_0_sends_the_whole_body_with_its_length(tmp_path):
    """lighttpd's default: the body is kept (on disk past 64 KiB) and sent whole."""
    with held_server(tmp_path, 0) as server:
        fds = open_fds()
        [(status, headers, body)] = split_responses(exchange(server, get("/stream/100")))
        assert status == 200 and "transfer-encoding" not in headers
        assert headers["content-length"] == str(len(body))
        assert len(body) == sum(len(b"%d" % n) + 1023 for n in range(1, 101))
        assert body.startswith(b"100.") and body[-1024:].startswith(b"1.")
        assert open_fds() == fds                    # the spool file is gone
        assert "internal error" not in errorlog(server).read_text()
        [(status, headers, body)] = split_responses(
            exchange(server, get("/stream/2", method="HEAD")))
        assert headers["content-length"] == "2048" and body == b""


def test_stream_response_body_1_parks_what_a_slow_client_has_not_taken(tmp_path):
    """The producer is never paused; past BACKLOG_HIGH the rest waits on disk."""
    with held_server(tmp_path, 1) as server:
        fds = open_fds()
        data = exchange(server, get("/flood/64", version="1.0"), read_pause=0.0001,
                        seconds=60)
        assert data.count(b"f") == 64 * BLOCK
        assert Later.most_backlog == 0             # request.backlog() never asked it to wait
        assert open_fds() == fds
        assert list(spool(server).iterdir()) == []  # unlinked at once
        assert "internal error" not in errorlog(server).read_text()


def post(path: str, body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return (f"POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n").encode() + body


UPLOAD = bytes(range(256)) * 16 * 1024       # 4 MiB


def test_stream_request_body_0_hands_the_body_over_complete(tmp_path):
    with held_server(tmp_path, 0, stream_request_body=0) as server:
        answer = exchange(server, post("/echo/100000000", UPLOAD))
        assert answer.endswith(b"\r\n\r\n4194304 bytes, 0 calls before the end")


def test_stream_request_body_1_hands_the_body_over_as_it_comes(tmp_path):
    with held_server(tmp_path, 0, stream_request_body=1) as server:
        answer = exchange(server, post("/echo/65536", UPLOAD))
        assert answer.startswith(b"HTTP/1.1 200 ")
        count, calls = answer.rsplit(b"\r\n\r\n", 1)[1].split(b" bytes, ")
        assert int(count) == len(UPLOAD) and int(calls.split()[0]) > 1


def test_stream_request_body_2_slows_the_client_to_the_module(tmp_path):
    """The module takes 4 KiB every 2 ms: the body waits in the socket, not here."""
    with held_server(tmp_path, 0, stream_request_body=2) as server:
        answer = exchange(server, post("/echo/4096", UPLOAD[:1 << 20]), seconds=30)
        assert answer.endswith(b"\r\n\r\n1048576 bytes, " + answer.rsplit(b", ", 1)[1])
        assert Later.most_unread < 64 * 1024 + 64 * 1024     # BODY_HIGH_WATER + a read
        assert list(spool(server).iterdir()) == []


@pytest.mark.parametrize("mode, calls", [(0, 0), (1, 1)])
def test_a_body_a_module_reads_waits_for_100_continue(tmp_path, mode, calls):
    """The module holds the request (mode 0: until the body is whole, without a look
    at it): `100 Continue` goes out then, and the client sends its body."""
    with held_server(tmp_path, 0, stream_request_body=mode) as server:
        interim, answer = _post_expecting_100(server, "/echo/65536")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert answer.endswith(b"5 bytes, %d calls before the end" % calls)


def _post_expecting_100(server: Server, path: str) -> tuple[bytes, bytes]:
    """A POST of 5 bytes that waits for `100 Continue` before its body: what came
    before the body was sent, and what came after."""
    client, end = socket.socketpair()
    server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
    client.sendall(post(path, b"", "Expect: 100-continue")
                   .replace(b"Content-Length: 0", b"Content-Length: 5"))
    client.setblocking(False)
    interim = _pump(server, client, bool, 100)
    client.sendall(b"hello")
    answer = _pump(server, client, lambda seen: seen.endswith(b"the end"), 200)
    client.close()
    return interim, answer


def _pump(server: Server, client: socket.socket, done: Callable[[bytes], bool],
          turns: int) -> bytes:
    """Turns of the server's loop (5 ms at most each) until `done` holds for what the
    client received."""
    seen = b""
    for _ in range(turns):
        server.loop.run_once(0.005)
        try:
            seen += client.recv(4096)
        except BlockingIOError:
            pass
        if done(seen):
            break
    return seen


def test_a_streamed_body_over_the_limit_is_413(tmp_path):
    """server.max-request-size = 8 KiB, and no Content-Length to check at the start."""
    with held_server(tmp_path, 0, stream_request_body=1, max_request_kib=8) as server:
        chunked = (b"POST /echo/1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + (b"1000\r\n" + b"x" * 4096 + b"\r\n") * 3 + b"0\r\n\r\n")
        assert exchange(server, chunked).startswith(b"HTTP/1.1 413 ")
        assert Later.resets == [("/echo/1", False)]


def test_a_client_gone_mid_body_aborts_the_streamed_request(tmp_path):
    with held_server(tmp_path, 0, stream_request_body=1) as server:
        client, end = socket.socketpair()
        server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
        client.sendall(post("/echo/65536", b"x" * 1000)[:-500])
        for _ in range(20):
            server.loop.run_once(0.005)
        client.close()
        for _ in range(20):
            server.loop.run_once(0.005)
        assert Later.resets == [("/echo/65536", True)]
        assert not server.connections


def test_a_streamed_body_over_the_limit_while_held_is_413(tmp_path):
    """The same, the module already holding the request when the limit is crossed."""
    with held_server(tmp_path, 0, stream_request_body=1, max_request_kib=8) as server:
        client, end = socket.socketpair()
        server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
        client.sendall(b"POST /echo/1 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(10):
            server.loop.run_once(0.005)
        client.setblocking(False)
        client.sendall((b"1000\r\n" + b"x" * 4096 + b"\r\n") * 3)
        answer = b""
        for _ in range(100):
            server.loop.run_once(0.005)
            with contextlib.suppress(BlockingIOError):
                answer += client.recv(4096)
        client.close()
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert Later.resets == [("/echo/1", False)]


def test_a_module_failing_before_its_answer_started_is_500(server):
    data = exchange(server, get("/fail/0", close=False) + get("/index.html"))
    answers = split_responses(data)
    assert [status for status, _, _ in answers] == [500, 200]
    assert "internal error" not in errorlog(server).read_text()


def test_a_module_failing_mid_answer_cuts_the_connection(server):
    """Streamed (mode 2): the head and two parts went out; the end never comes."""
    data = exchange(server, get("/fail/2", close=False) + get("/index.html"))
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"4\r\npart\r\n4\r\npart\r\n")     # no last chunk, no next answer
    assert "internal error" not in errorlog(server).read_text()


def test_a_module_switching_protocols_gets_the_raw_bytes_both_ways(server):
    """101: whatever the client sent after its request (at once, and later) reaches
    the module as body, what it writes goes out as is; the client's EOF ends it."""
    client, end = socket.socketpair()
    server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
    client.sendall(b"GET /shout HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
                   b"Upgrade: shout\r\n\r\nfirst words ")
    client.setblocking(False)
    received = b""

    def run(until: bytes) -> bytes:
        nonlocal received
        for _ in range(200):
            server.loop.run_once(0.005)
            with contextlib.suppress(BlockingIOError):
                chunk = client.recv(4096)
                if not chunk:
                    return received
                received += chunk
            if received.endswith(until):
                break
        return received

    head = run(b"FIRST WORDS ")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert head.endswith(b"\r\n\r\nFIRST WORDS ")   # sent with the request: woken for it
    assert b"\r\nConnection: Upgrade\r\n" in head and b"Connection: close" not in head
    assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
    client.sendall(b"and more")
    assert run(b"AND MORE").endswith(b"\r\n\r\nFIRST WORDS AND MORE")
    client.shutdown(socket.SHUT_WR)
    run(b"never")
    client.close()
    for _ in range(20):
        server.loop.run_once(0.005)
    assert not server.connections
    assert Later.resets == [("/shout", False)]


def test_an_upgrade_not_taken_leaves_the_next_request_to_http(server):
    data = (b"GET /shout HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n"
            b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    bodies = [body for _, _, body in split_responses(exchange(server, data))]
    assert bodies == [b"ask to upgrade", b"hello from pylighttpd\n"]


def test_nothing_after_a_connect_nobody_takes_is_read_as_http(server):
    data = (b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"
            b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
    answers = split_responses(exchange(server, data))
    assert [status for status, _, _ in answers] == [400]      # a name: refused as lighttpd
    data = data.replace(b"CONNECT example.org:443", b"CONNECT 192.0.2.1:443")
    answers = split_responses(exchange(server, data))
    assert [status for status, _, _ in answers] == [405]      # an address nobody takes


def test_trailers_follow_a_chunked_body(server):
    data = exchange(server, get("/stream/1").replace(b"\r\n\r\n", b"\r\nTE: trailers\r\n\r\n"))
    assert data.endswith(b"\r\n0\r\nChecksum: abc\r\nServer-Timing: db;dur=5\r\n\r\n")


def test_an_answer_before_its_streamed_body_is_in_closes_the_connection(tmp_path):
    """/later/x answers without reading: the rest of the body is not kept."""
    with held_server(tmp_path, 0, stream_request_body=2) as server:
        client, end = socket.socketpair()
        server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
        client.sendall(b"POST /later/x HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n"
                       + b"x" * 1000)
        client.setblocking(False)
        answer = b""
        for _ in range(100):
            server.loop.run_once(0.005)
            with contextlib.suppress(BlockingIOError):
                answer += client.recv(4096)
            if answer.endswith(b"late /later/x"):
                break
        client.close()
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nConnection: close\r\n" in answer


def test_a_backend_s_own_error_passes_as_it_is(server):
    """No error page, and not the error handler the fixture sets for 404s."""
    [(status, headers, body)] = split_responses(exchange(server, get("/backend/404")))
    assert (status, headers["content-length"], body) == (404, "0", b"")
    [(status, _, body)] = split_responses(exchange(server, get("/backend/503/5")))
    assert (status, body) == (503, b"bbbbb")


def test_head_to_a_backend_keeps_the_length_it_announced(tmp_path):
    with held_server(tmp_path, 0) as server:
        data = exchange(server, get("/backend/200/12345", method="HEAD"))
        assert b"\r\nContent-Length: 12345\r\n" in data and data.endswith(b"\r\n\r\n")
        data = exchange(server, get("/backend/200", method="HEAD"))
        assert b"Content-Length" not in data and b"Transfer-Encoding" not in data


def test_a_failing_timer_or_fd_callback_is_logged_and_the_loop_goes_on(server):
    class Broken:
        def on_event(self, mask: int) -> None:
            raise ValueError("fd callback bug")
    server.loop.call_later(0, lambda: 1 / 0)
    reader, writer = socket.socketpair()
    server.loop.register(reader.fileno(), 1, Broken())       # EPOLLIN
    writer.send(b"x")
    server.loop.run_once(0.01)
    server.loop.unregister(reader.fileno())
    reader.close()
    writer.close()
    log = errorlog(server).read_text()
    assert "internal error in the callback of a timer" in log and "ZeroDivisionError" in log
    assert "fd callback bug" in log
    assert exchange(server, get("/index.html")).startswith(b"HTTP/1.1 200 ")


def test_an_error_handler_url_whose_module_fails_gives_the_original_error(tmp_path):
    """The 404 handler's URL is held by a module that then fails (ERROR): the client
    gets the plain 404, not a 500 nor a negative status."""
    with held_server(tmp_path, 0, error_handler="/fail/0") as server:
        [(status, _, body)] = split_responses(exchange(server, get("/missing.html")))
        assert status == 404 and b"404 Not Found" in body


def state_trail(server: Server, data: bytes, then: bytes = b"") -> list[ConnState]:
    """The states a new connection passes through while it is sent `data` (and `then`
    once the first answer bytes are back, then its end), until it is closed."""
    client, end = socket.socketpair()
    connection = server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
    client.setblocking(False)
    client.sendall(data)
    trail = [connection.state]
    deadline = time.monotonic() + 5
    while connection.state is not ConnState.CLOSED:
        assert time.monotonic() < deadline, f"stuck in {trail}"
        server.loop.run_once(0.005)
        if connection.state is not trail[-1]:
            trail.append(connection.state)
        with contextlib.suppress(BlockingIOError):
            if client.recv(1 << 20) and then:
                client.sendall(then)
                client.shutdown(socket.SHUT_WR)
                then = b""
    client.close()
    return [state for n, state in enumerate(trail) if state is not ConnState.WRITE
            or trail[n - 1] is not ConnState.HANDLE]     # the answer may go out at once


def test_a_held_request_passes_through_handle(server):
    assert state_trail(server, get("/later/x")) == [
        ConnState.REQUEST_START, ConnState.HANDLE, ConnState.LINGER, ConnState.CLOSED]


def test_a_protocol_switch_passes_through_tunnel(server):
    request = b"GET /shout HTTP/1.1\r\nHost: t\r\nUpgrade: shout\r\nConnection: Upgrade\r\n\r\n"
    assert state_trail(server, request, then=b"hello") == [    # the client ended first:
        ConnState.REQUEST_START, ConnState.TUNNEL, ConnState.CLOSED]  # nothing to linger on


def test_an_encoder_set_when_a_stream_starts_codes_the_rest_and_ends_it(tmp_path):
    with held_server(tmp_path, 1, extra_modules=(Encodes,)) as worker:
        data = exchange(worker, get("/stream/3"))
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\nContent-Encoding: starring\r\n" in head
    assert b"Transfer-Encoding: chunked" in head
    parts = [b"3" + b"*" * 1023, b"2" + b"*" * 1023, b"1" + b"*" * 1023, b"<END>"]
    assert Dechunker().feed(body) == b"".join(parts)


class LookUp(Module):
    """/looked-up/echo/N: held a while by a module that reads no bodies (as an
    authentication back end's look-up holds it), then handed to /echo/N."""

    def handle_uri_clean(self, request: Request):
        if not request.uri_path.startswith("/looked-up/"):
            return None
        self.services.call_later(0.02, request.wake)
        return WAIT

    def handle_subrequest(self, request: Request):
        request.internal_redirect(request.uri_path[len("/looked-up"):])
        return COMEBACK


def test_100_continue_waits_for_the_module_that_reads_the_body(tmp_path):
    with held_server(tmp_path, 0, extra_modules=(LookUp,)) as server:
        interim, answer = _post_expecting_100(server, "/looked-up/echo/65536")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        assert answer.endswith(b"5 bytes, 0 calls before the end")
