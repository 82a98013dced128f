"""Connection state transitions, driven in this process over a socketpair.

A real Server (real config, real modules) gets one end of a socketpair; the test writes
requests to the other end and runs the worker's loop step by step, so each state the
connection passes through (reading, answering, lingering, closed) can be checked, and
the epoll interest it registers in each.
"""

from __future__ import annotations

import os
import select
import socket
import time

import pytest

from master.configload import load
from server_util import config_text
from sites import make_docroot
from shared.stats import METHODS, Field, request_offset
from worker.connection import ConnState
from worker.handler import Pipeline
from worker.module import Module
from worker.server import Server


@pytest.fixture
def server(tmp_path):
    docroot = make_docroot(tmp_path)
    conf = tmp_path / "states.conf"
    conf.write_text(config_text(docroot, 'index-file.names = ("index.html")',
                                ("mod_indexfile", "mod_staticfile")))
    server = Server(load(str(conf)), [])
    yield server
    server.close_all()


def connect(server: Server):
    client, end = socket.socketpair()
    client.settimeout(2)
    return client, server.add_connection(end, "127.0.0.1", "127.0.0.1:80")


def run_until(server: Server, done, seconds: float = 2.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the loop never got there"
        server.loop.run_once(0.05)


def test_keep_alive_answer_goes_back_to_reading(server):
    client, connection = connect(server)
    client.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
    run_until(server, lambda: connection.requests_done == 1 and not connection.out.chunks)
    assert connection.events == select.EPOLLIN
    assert connection.state is ConnState.REQUEST_START
    assert client.recv(65536).endswith(b"hello from pylighttpd\n")


def test_close_answer_lingers_reading_until_the_client_eof(server):
    client, connection = connect(server)
    client.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    run_until(server, lambda: connection.state is ConnState.LINGER)
    assert connection.events == select.EPOLLIN      # late bytes are still drained
    client.sendall(b"late bytes")
    server.loop.run_once(0.05)
    assert not connection.closed
    assert client.recv(65536).endswith(b"hello from pylighttpd\n")
    assert client.recv(65536) == b""                 # the server half-closed
    client.close()
    run_until(server, lambda: connection.closed)
    assert connection.fd not in server.loop.handlers
    assert connection.fd not in server.connections


def test_a_repeat_matched_before_a_tick_is_answered_after_it_from_the_file(server, tmp_path):
    client, connection = connect(server)
    request = b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n"
    for count in (1, 2):                     # kept the second time it is answered
        client.sendall(request)
        run_until(server, lambda: connection.requests_done == count
                  and not connection.out.chunks)
        assert client.recv(65536).endswith(b"hello from pylighttpd\n")
    connection.feed(request)                 # parsed and matched to the kept answer ...
    assert connection.ready and connection.ready[0].replay is not None
    page = tmp_path / "www" / "index.html"
    page.write_text("rewritten\n")
    os.utime(page, (time.time() + 5, time.time() + 5))
    server.pipeline.trigger(time.monotonic() + 5)   # ... then a tick drops it
    connection.process()
    run_until(server, lambda: not connection.out.chunks)
    assert client.recv(65536).endswith(b"\r\n\r\nrewritten\n")


def answer_thrice(server, client, connection, request: bytes) -> bytes:
    """Send `request` twice, answered through the pipeline (kept the second time),
    then the same bytes again: the replay's answer."""
    for count in (1, 2):
        client.sendall(request)
        run_until(server, lambda: connection.requests_done == count
                  and not connection.out.chunks)
        client.recv(65536)
    assert request in server.pipeline.answers.raw_entries    # the repeat skips parsing
    client.sendall(request)
    run_until(server, lambda: connection.requests_done == 3 and not connection.out.chunks)
    return client.recv(65536)


def test_a_byte_identical_repeat_is_counted_like_any_request(server):
    client, connection = connect(server)
    words = server.counters.words
    before = list(words)
    again = answer_thrice(server, client, connection,
                          b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
    assert again.startswith(b"HTTP/1.1 200 OK\r\n")
    assert again.endswith(b"hello from pylighttpd\n")
    changed = {i: words[i] - before[i] for i in range(len(before)) if words[i] != before[i]}
    assert changed[request_offset(METHODS.index("GET"), 2)] == 3
    assert changed[Field.KEEPALIVE_REUSES] == 2
    assert changed[Field.BYTES_OUT] == 3 * len(again)


def test_a_repeat_while_draining_is_answered_with_close(server):
    client, connection = connect(server)
    request = b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n"
    client.sendall(request)
    run_until(server, lambda: connection.requests_done == 1 and not connection.out.chunks)
    client.recv(65536)
    server.begin_drain()
    client.sendall(request)
    run_until(server, lambda: connection.state >= ConnState.LINGER)
    assert b"\r\nConnection: close\r\n" in client.recv(65536)


def test_a_replayed_404_is_counted_as_a_4xx(server):
    client, connection = connect(server)
    words = server.counters.words
    before = words[request_offset(METHODS.index("GET"), 4)]
    again = answer_thrice(server, client, connection,
                          b"GET /nothing.html HTTP/1.1\r\nHost: t\r\n\r\n")
    assert again.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert words[request_offset(METHODS.index("GET"), 4)] - before == 3


class _BrokenPattern:
    def search(self, _text):
        raise RuntimeError("a bug in request start")


def test_a_bug_met_while_reading_a_request_is_a_logged_500(tmp_path, capfd, monkeypatch):
    docroot = make_docroot(tmp_path)
    conf = tmp_path / "conditions.conf"
    conf.write_text(config_text(docroot, '$HTTP["url"] =~ "(html)" { server.tag = "in" }',
                                ("mod_staticfile",)))
    server = Server(load(str(conf)), [])
    # the condition's test fails as a bug would, while the request's settings are chosen
    monkeypatch.setattr(server.config.compiled.conditions[0], "regex", _BrokenPattern())
    client, connection = connect(server)
    client.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
    run_until(server, lambda: connection.state >= ConnState.LINGER)
    assert client.recv(65536).startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    err = capfd.readouterr().err
    assert "internal error reading a request from 127.0.0.1" in err
    assert "RuntimeError: a bug in request start" in err
    server.close_all()


@pytest.fixture
def body_reading_server(tmp_path):
    """A server whose pipeline says a module reads request bodies (none of today's
    modules does): bodies are then read, kept, and bounded by server.max-request-size."""
    docroot = make_docroot(tmp_path)
    conf = tmp_path / "bodies.conf"
    conf.write_text(config_text(docroot, "server.max-request-size = 1",
                                ("mod_indexfile", "mod_staticfile")))
    server = Server(load(str(conf)), [])
    server.pipeline.reads_bodies = True
    yield server
    server.close_all()


def test_a_body_nobody_takes_closes_the_connection_after_its_answer(body_reading_server):
    """A static file reads no body: even one that came whole with its head leaves
    the connection closing after the answer (the next request is not answered), as
    lighttpd, which never reads such a body, closes it; an empty body keeps it."""
    server = body_reading_server
    client, connection = connect(server)
    client.sendall(b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
                   b"POST /index.html HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"5\r\nhello\r\n0\r\n\r\n"
                   b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
    run_until(server, lambda: connection.state >= ConnState.LINGER)
    answers = client.recv(65536)
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert answers.count(b"\r\nConnection: close\r\n") == 1


def test_a_kept_chunked_body_over_max_request_size_is_413(body_reading_server):
    server = body_reading_server
    client, connection = connect(server)
    client.sendall(b"POST /index.html HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + (b"400\r\n" + b"y" * 1024 + b"\r\n") * 2 + b"0\r\n\r\n")
    run_until(server, lambda: connection.state >= ConnState.LINGER)
    assert client.recv(65536).startswith(b"HTTP/1.1 413 Payload Too Large\r\n")


def test_a_client_expecting_100_continue_is_answered_at_once_if_nothing_reads_its_body(
        body_reading_server):
    """No module reads a static file's body: the answer goes out without `100
    Continue` (so the client need not send its body), and the connection closes after
    it, as in lighttpd."""
    server = body_reading_server
    client, connection = connect(server)
    client.sendall(b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                   b"Expect: 100-continue\r\n\r\n")
    run_until(server, lambda: connection.state >= ConnState.LINGER)
    answer = client.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"100 Continue" not in answer
    assert b"\r\nConnection: close\r\n" in answer


def test_a_new_connection_waits_max_read_idle_not_the_keep_alive_idle(server):
    """Its first request is on the way: lighttpd gives it server.max-read-idle (60 s),
    not server.max-keep-alive-idle (5 s), which is for the wait between requests."""
    _client, connection = connect(server)
    limits = connection.limits
    start = connection.last_read
    connection.check_timeout(start + limits["server.max-keep-alive-idle"] + 1)
    assert not connection.closed
    connection.check_timeout(start + limits["server.max-read-idle"] + 1)
    assert connection.closed


def _get_2xx(server) -> int:
    return server.counters.words[request_offset(METHODS.index("GET"), 2)]


def test_a_request_is_counted_when_its_last_byte_has_left_not_when_queued(server):
    client, connection = connect(server)
    before = _get_2xx(server)
    client.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    run_until(server, lambda: connection.requests_done == 1)
    server.loop.run_once(0.05)
    assert connection.out.chunks, "1 MiB cannot fit in a socketpair's buffers"
    assert _get_2xx(server) == before
    received = 0
    while True:
        server.loop.run_once(0.01)
        try:
            received += len(client.recv(1 << 20, socket.MSG_DONTWAIT))
        except BlockingIOError:
            pass
        if not connection.out.chunks:
            break
    assert _get_2xx(server) == before + 1


def test_an_answer_cut_by_the_client_going_away_is_counted_once(server):
    client, connection = connect(server)
    before = _get_2xx(server)
    client.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    run_until(server, lambda: connection.requests_done == 1)
    client.close()
    run_until(server, lambda: connection.closed)
    assert _get_2xx(server) == before + 1


class _GuardsPrivate(Module):
    """Not replay-safe everywhere: it answers /private/ by something the key does not
    hold (here: a counter), and leaves every other path alone."""

    seen = 0

    def handle_uri_clean(self, request):
        if request.uri_path.startswith("/private/"):
            type(self).seen += 1
            return 403 if type(self).seen % 2 else None
        return None

    def allows_replay(self, request):
        return not request.uri_path.startswith("/private/")


class _KeysOnLanguage(Module):
    replay_safe = True
    keyed_headers = ("accept-language",)

    def handle_response_start(self, request):
        request.response.add_header("Content-Language",
                                    request.headers.get("accept-language", "none"))


def _with_modules(server, *extra):
    server.pipeline = Pipeline(server.pipeline.modules + [m(None) for m in extra],
                               condition_fields=())
    return server


def _status_of_each(server, path: str, times: int, extra: str = "") -> list[bytes]:
    client, connection = connect(server)
    heads = []
    for count in range(1, times + 1):
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
        run_until(server, lambda: connection.requests_done == count
                  and not connection.out.chunks)
        heads.append(client.recv(65536).split(b"\r\n\r\n")[0])
    return heads


def test_a_module_that_judges_per_request_keeps_the_cache_on_elsewhere(server, tmp_path):
    (tmp_path / "www" / "private").mkdir()
    (tmp_path / "www" / "private" / "a.html").write_text("private\n")
    _with_modules(server, _GuardsPrivate)
    assert server.pipeline.answers.reads is not None
    statuses = [h.split(b" ")[1] for h in _status_of_each(server, "/private/a.html", 4)]
    assert statuses == [b"403", b"200", b"403", b"200"]      # never replayed
    assert len(server.pipeline.answers.entries) == 0
    _status_of_each(server, "/index.html", 2)
    assert len(server.pipeline.answers.entries) == 1          # kept for the public path


def test_a_keyed_header_keeps_one_answer_per_value(server):
    _with_modules(server, _KeysOnLanguage)
    heads = []
    for language in ("de", "fr", "de", "fr"):
        heads += _status_of_each(server, "/index.html", 2, f"Accept-Language: {language}\r\n")
    languages = [h.split(b"Content-Language: ")[1].split(b"\r\n")[0] for h in heads]
    assert languages == [b"de", b"de", b"fr", b"fr", b"de", b"de", b"fr", b"fr"]
    assert len(server.pipeline.answers.entries) == 2


def test_a_request_arriving_in_pieces_is_read_then_answered_then_awaited(server):
    client, connection = connect(server)
    assert connection.state is ConnState.REQUEST_START
    client.sendall(b"GET /index.html HTTP/1.1\r\nHo")
    run_until(server, lambda: connection.state is ConnState.READ)
    client.sendall(b"st: t\r\n\r\n")
    run_until(server, lambda: connection.requests_done == 1
              and connection.state is ConnState.REQUEST_START)
    assert connection.is_idle()


def test_an_answer_the_client_does_not_take_is_written_until_it_does(server):
    client, connection = connect(server)
    client.sendall(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
    run_until(server, lambda: connection.state is ConnState.WRITE)
    assert connection.events & select.EPOLLOUT and not connection.is_idle()
    while connection.state is ConnState.WRITE:
        server.loop.run_once(0.01)
        try:
            client.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
    assert connection.state is ConnState.REQUEST_START


def test_a_half_request_times_out_by_the_read_idle_not_the_keep_alive_idle(server):
    client, connection = connect(server)
    client.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\nGET /ind")
    run_until(server, lambda: connection.requests_done == 1
              and connection.state is ConnState.READ)
    read_idle = connection.limits["server.max-read-idle"]
    keep_alive_idle = connection.limits["server.max-keep-alive-idle"]
    assert read_idle > keep_alive_idle
    connection.check_timeout(connection.last_read + keep_alive_idle + 1)
    assert connection.state is ConnState.READ
    connection.check_timeout(connection.last_read + read_idle + 1)
    assert connection.state is ConnState.CLOSED


class _SetsHeaders(Module):
    replay_safe = True

    def handle_response_start(self, request):
        request.response.set_header("Server", "their-own")


class _ForgesHeaders(Module):
    """Passes on a value with a line break, as a careless module could."""

    def handle_response_start(self, request):
        request.response.add_header("X-Echo", "a\r\nSet-Cookie: forged=1")


def test_a_module_s_server_header_stands(server):
    _with_modules(server, _SetsHeaders)
    [head] = _status_of_each(server, "/index.html", 1)
    assert head.count(b"\r\nServer: ") == 1 and b"\r\nServer: their-own" in head
    assert head.count(b"\r\nDate: ") == 1


def test_no_header_line_is_forged_through_a_value(server, capfd):
    _with_modules(server, _ForgesHeaders)
    [head] = _status_of_each(server, "/index.html", 1)
    assert b"forged" not in head and head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert "line break" in capfd.readouterr().err


class _NamesTheUser(Module):
    """Sets the environment of a request (as mod_auth sets REMOTE_USER) and records what
    each finished request carried (as the access log's %u reads it)."""

    replay_safe = True
    seen: list = []

    def handle_uri_clean(self, request):
        request.set_env("REMOTE_USER", "amy")

    def handle_request_done(self, request):
        type(self).seen.append((request.env or {}).get("REMOTE_USER"))


def test_replayed_answers_keep_the_environment_the_hooks_set(server):
    _NamesTheUser.seen = []
    _with_modules(server, _NamesTheUser)
    _status_of_each(server, "/index.html", 3)
    assert len(server.pipeline.answers.entries) == 1          # the later two replayed
    assert _NamesTheUser.seen == ["amy", "amy", "amy"]


def test_an_answer_is_kept_the_second_time_its_request_comes(server):
    """A one-off request (a unique query string) costs no keeping."""
    _status_of_each(server, "/index.html?once", 1)
    assert not server.pipeline.answers.entries
    _status_of_each(server, "/index.html?twice", 2)
    assert len(server.pipeline.answers.entries) == 1


def test_a_busy_connection_keeps_its_parser_and_an_idle_one_lets_it_go(server):
    client, connection = connect(server)
    client.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\nX-N: 1\r\n\r\n")
    run_until(server, lambda: connection.requests_done == 1 and not connection.out.chunks)
    parser = connection.protocol.parser
    assert parser is not None                    # kept for the next request
    client.recv(65536)
    client.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\nX-N: 2\r\n\r\n")
    run_until(server, lambda: connection.requests_done == 2 and not connection.out.chunks)
    assert connection.protocol.parser is parser  # the same one, not made anew
    client.recv(65536)
    connection.check_timeout(connection.last_read + 0.5)
    assert connection.protocol.parser is parser
    connection.check_timeout(max(connection.last_read, connection.last_write) + 1.5)
    assert connection.protocol.parser is None and not connection.closed
    client.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\nX-N: 3\r\n\r\n")
    run_until(server, lambda: connection.requests_done == 3 and not connection.out.chunks)
    assert client.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_transport_put_in_at_accept_that_must_write_to_read_is_polled_for_it(server):
    """An accept hook replaces the socket's transport (TLS does): a read of the new
    one that waits on a write (a handshake flight the socket did not take) makes the
    connection poll for EPOLLOUT."""
    from worker.transport import SocketTransport

    class WaitsOnWrite(SocketTransport):
        def recv(self) -> bytes:
            self.read_wants_write = True
            raise BlockingIOError

    client, connection = connect(server)
    connection.transport = WaitsOnWrite(connection.transport.sock)
    client.sendall(b"\x16\x03\x01")              # a client's first bytes arrive
    run_until(server, lambda: connection.transport.read_wants_write)
    connection.update_events()
    assert connection.events & select.EPOLLOUT
