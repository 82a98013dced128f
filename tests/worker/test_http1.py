"""The HTTP/1 protocol layer alone (worker/http1.py): bytes in, requests out, no sockets.

A sink stands where the connection stands; the worker `Server` is built from a config
(for its limits and settings) but listens on nothing.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from master.configload import load
from worker.http1 import Http1Parser
from worker.request import Request
from worker.server import Server


class Sink:
    """Collects what the parser hands out, as a connection would take it."""

    scheme = "http"
    remote_ip = "192.0.2.7"
    socket_spec = "127.0.0.1:80"
    condition_cache = None

    def __init__(self, server: Server) -> None:
        self.server = server
        self.requests: list[Request] = []
        self.ready = self.requests
        self.stopped = False
        self.limits = None
        self.arrivals: list[tuple[int, bool]] = []
        self.failures: list[int] = []

    def stop_reading(self) -> None:
        self.stopped = True

    def body_arrived(self, request: Request) -> None:
        self.arrivals.append((request.body.size, request.body.complete))

    def body_failed(self, request: Request, status: int) -> None:
        """As a connection fails a request not handled yet: answered as refused."""
        self.failures.append(status)
        request.response.status = status
        request.keep_alive = False


def _server(base, extra: str = "") -> Server:
    conf = base / "http1.conf"
    conf.write_text(f'server.document-root = "{base}"\n'
                    f'server.errorlog = "{base}/error.log"\n'
                    'server.max-request-size = 1\n'
                    'server.max-request-field-size = 2048\n' + extra)
    return Server(load(str(conf)), [])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    worker = _server(tmp_path_factory.mktemp("http1"))
    yield worker
    worker.loop.close()


@pytest.fixture(scope="module")
def streaming(tmp_path_factory):
    """server.stream-request-body = 1: requests come out when their head is in."""
    worker = _server(tmp_path_factory.mktemp("http1s"), "server.stream-request-body = 1\n")
    yield worker
    worker.loop.close()


def parse(server: Server, *pieces: bytes, bodies: bool = True) -> tuple[Sink, Http1Parser]:
    sink = Sink(server)
    parser = Http1Parser(sink, server)
    parser.reads_bodies = bodies
    for piece in pieces:
        parser.feed(piece)
    return sink, parser


def statuses(sink: Sink) -> list[int]:
    return [request.response.status for request in sink.requests]


def reads(data: bytes, split: bool) -> tuple[bytes, ...]:
    """A head as one read (the usual case) or in two: the tests of fields run both
    ways, as a field may then arrive in pieces."""
    return (data[:20], data[20:]) if split else (data,)


@pytest.mark.parametrize("split", [False, True])
def test_a_request_comes_out_with_its_parts(server, split):
    sink, _ = parse(server, *reads(b"GET /a%20b/c?x=1 HTTP/1.1\r\nHost: Example.COM.:80\r\n"
                                   b"Accept: */*\r\nAccept: text/html\r\nCookie: a=1\r\n"
                                   b"Cookie: b=2\r\n\r\n", split))
    [request] = sink.requests
    assert (request.method, request.target, request.version) == ("GET", "/a%20b/c?x=1", "1.1")
    assert (request.uri_path, request.uri_query, request.host) == ("/a b/c", "x=1", "example.com")
    assert request.headers["accept"] == "*/*, text/html"
    assert request.headers["cookie"] == "a=1; b=2"
    assert request.keep_alive and not sink.stopped and request.response.status == 0


@pytest.mark.parametrize("split", [False, True])
def test_field_values_lose_their_trailing_whitespace(server, split):
    sink, _ = parse(server, *reads(b"GET / HTTP/1.1\r\nHost: h \t\r\nAuthorization: Basic \r\n"
                                   b"X-A:  a b \r\nX-Empty:\r\nX-Colon: a:b: \r\n\r\n", split))
    [request] = sink.requests
    assert request.headers["authorization"] == "Basic"
    assert request.headers["x-a"] == "a b"
    assert request.host == "h"
    assert request.raw_fields == ["Host", "h", "Authorization", "Basic", "X-A", "a b",
                                  "X-Colon", "a:b:"]
    assert "x-empty" not in request.headers      # an empty field is none, as in lighttpd


def test_fields_come_out_the_same_however_they_are_read(server):
    """Many heads, each read whole and in pieces: the same fields come out, in order,
    with the same keys and joined values."""
    names = [b"Accept", b"accept", b"X-Y", b"Cookie", b"COOKIE", b"User-Agent", b"a!#$%&'*+.^_`|~"]
    values = [b"", b"v", b" v", b"v \t", b"\tv w\t ", b"a:b", b"\xe9\x80", b"x" * 300]
    for n in range(40):
        fields = b"".join(names[(n * 3 + i) % len(names)] + b":" + values[(n + i * 5) % len(values)]
                          + b"\r\n" for i in range(n % 9))
        data = b"GET /%d HTTP/1.1\r\nHost: h\r\n%s\r\n" % (n, fields)
        seen = []
        for pieces in ([data], [bytes([b]) for b in data], [data[:n + 3], data[n + 3:]]):
            sink, _ = parse(server, *pieces)
            [request] = sink.requests
            seen.append((request.raw_fields, request.headers, request.header_bytes))
        assert seen[0] == seen[1] == seen[2], data


def test_the_parser_follows_each_read_s_shape(server):
    """Whole heads, pipelined ones, heads in pieces and bodies, one after another on
    one connection: the fields of each come out intact."""
    one = b"GET /%d HTTP/1.1\r\nHost: h\r\nX-N: %d\r\n\r\n"
    sink, parser = parse(server, one % (0, 0), one % (1, 1) + one % (2, 2), one % (3, 3),
                         (one % (4, 4))[:25], (one % (4, 4))[25:], one % (5, 5),
                         b"PUT /6 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nX-N: 6\r\n\r\n",
                         b"ok", one % (7, 7))
    assert [(r.target, r.headers["x-n"]) for r in sink.requests] == \
        [(f"/{n}", str(n)) for n in range(8)]
    assert sink.requests[6].body.read() == b"ok"
    assert parser.current is None


@pytest.mark.parametrize("split", [False, True])
def test_a_chunked_body_s_trailer_fields_are_not_headers(server, split):
    sink, _ = parse(server, *reads(b"POST /p HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n", split),
                    b"2\r\nok\r\n0\r\nX-A: 2\r\nX-Trailer: t\r\n\r\n")
    [request] = sink.requests
    assert request.body.read() == b"ok"
    assert request.headers["x-a"] == "1" and "x-trailer" not in request.headers


def test_pipelined_requests_come_out_in_order_whatever_the_pieces(server):
    data = b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % n for n in range(3))
    for pieces in ([data], [bytes([b]) for b in data], [data[:7], data[7:50], data[50:]]):
        sink, parser = parse(server, *pieces)
        assert [r.target for r in sink.requests] == ["/0", "/1", "/2"]
        assert parser.current is None


def test_a_body_comes_out_with_its_request_de_chunked(server):
    sink, _ = parse(server, b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"5\r\nhello\r\n", b"6\r\n world\r\n0\r\n\r\n")
    [request] = sink.requests
    assert request.body.read() == b"hello world"
    sink, _ = parse(server, b"PUT /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                            b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [r.target for r in sink.requests] == ["/p", "/next"]
    assert sink.requests[0].body.read() == b"abc"


def test_a_body_nobody_reads_stops_the_reading(server):
    sink, _ = parse(server, b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
                            b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n", bodies=False)
    assert [r.target for r in sink.requests] == ["/p"]
    assert sink.stopped and not sink.requests[0].keep_alive


def test_expect_100_continue_is_noted_until_the_body_comes(server):
    sink, parser = parse(server, b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
                                 b"Expect: 100-continue\r\n\r\n")
    request = parser.current
    assert sink.requests == [request] and request.expect_continue
    assert request.waits_for_body()
    parser.feed(b"ok")
    assert request.body.read() == b"ok" and not request.waits_for_body()
    assert not request.expect_continue


@pytest.mark.parametrize("data, status", [
    (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505),
    (b"GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505),
    (b"BREW / HTTP/1.1\r\nHost: h\r\n\r\n", 501),
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    (b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET /%ff HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 3000 + b"\r\n\r\n", 431),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"800\r\n" + b"a" * 2048 + b"\r\n0\r\n\r\n", 413),
    (b"POST / HTTP/1.1\r\nHost: h\r\n\r\n", 411),
    (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: tea\r\n\r\nx", 417),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"GET http://other/ HTTP/1.1\r\nHost: h\r\n\r\n", 400),
])
def test_a_refused_request_comes_out_with_its_status_and_stops_the_reading(server, data,
                                                                           status):
    after = b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n"
    for pieces in ((data + after,), (data, after)):
        sink, _ = parse(server, *pieces)
        assert statuses(sink) == [status]
        assert sink.stopped and not sink.requests[0].keep_alive


KEPT_10 = b"Connection: keep-alive\r\n\r\n"       # an HTTP/1.0 request the next one follows


@pytest.mark.parametrize("pieces", [
    (b"GET /a HTTP/1.0\r\n" + KEPT_10 + b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
     b"GET /c HTTP/1.0\r\n\r\n",),                                  # pipelined
    (b"GET /a HTTP/1.0\r\n" + KEPT_10 + b"GET /b HT",
     b"TP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.0\r\n\r\n"),          # a line split
    (b"GET /a HTTP/1.0\r\n", KEPT_10, b"\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n",
     b"GET /c HTTP/1.0\r\n\r\n"),                                     # a blank line first
    (b"GET /a HTTP/1.0\r\n" + KEPT_10, b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n",
     b"GET /c HTTP/1.0\r\n\r\n"),                                     # one per read
])
def test_each_request_has_its_own_version_wherever_its_line_falls(server, pieces):
    sink, _ = parse(server, *pieces)
    assert [(r.target, r.version) for r in sink.requests] == \
        [("/a", "1.0"), ("/b", "1.1"), ("/c", "1.0")]


@pytest.mark.parametrize("split", [False, True])
def test_a_refused_request_keeps_its_line_unless_refused_within_it(server, split):
    sink, _ = parse(server, *reads(b"GET /seen HTTP/1.1\r\nHost: a b\r\n\r\n", split))
    assert (sink.requests[0].target, sink.requests[0].version) == ("/seen", "1.1")
    sink, _ = parse(server, *reads(b"GET /seen HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", split))
    assert (sink.requests[0].target, sink.requests[0].response.status) == ("/seen", 400)
    sink, _ = parse(server, *reads(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 3000
                                   + b"\r\n\r\n", split))
    assert (sink.requests[0].target, sink.requests[0].version) == ("", "1.0")


@pytest.mark.parametrize("pieces", [
    (b"GET /a" + b"a" * 3000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",),
    (b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\nHEAD /a" + b"a" * 3000 + b" HTTP/1.1\r\n\r\n",),
    (b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n", b"HEAD /a" + b"a" * 3000 + b" HTTP/1.1\r\n"),
])
def test_a_target_too_long_has_no_request_line_whatever_came_before(server, pieces):
    """414 is refused within the request line, before llhttp reads its version: the
    version a parser gives then is the last request's, if it read one."""
    sink, _ = parse(server, *pieces)
    refused = sink.requests[-1]
    assert (refused.response.status, refused.method, refused.target, refused.version) == \
        (414, "GET", "", "1.0")


OK_11 = b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize("refused, status, line", [
    (b"GET /v2 HTTP/2.0\r\nHost: h\r\n\r\n", 505, ("GET", "", "1.0")),
    (b"BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n", 501, ("BREW", "/pot", "1.1")),
    (b"GET /a\x01b HTTP/1.0\r\n\r\n", 400, ("GET", "/a\x01b", "1.0")),
    (b"GET /a\x01b HTTP/1.1\r\nHost: h\r\n\r\n", 400, ("GET", "/a\x01b", "1.1")),
    (b"GET /x HTTP/1.1 x\r\nHost: h\r\n\r\n", 400, ("GET", "", "1.0")),
])
@pytest.mark.parametrize("together", [True, False])
def test_a_refused_request_is_judged_by_its_own_line_after_others(server, refused, status,
                                                                  line, together):
    """The status and the line of a request llhttp refused come from that request's own
    line, also after requests read before it from the same bytes (pipelined), where
    the parser's version is still the last request's."""
    pieces = (OK_11 + OK_11 + refused,) if together else (OK_11, OK_11, refused)
    sink, _ = parse(server, *pieces)
    assert statuses(sink) == [0, 0, status]
    refused_request = sink.requests[-1]
    assert (refused_request.method, refused_request.target, refused_request.version) == line
    assert sink.stopped and not refused_request.keep_alive


def test_requests_before_a_refused_one_come_out_first(server):
    sink, _ = parse(server, b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    assert [(r.target, r.response.status) for r in sink.requests] == [("/ok", 0), ("/", 400)]


UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
           b"Upgrade: websocket\r\n\r\n")


def test_what_follows_an_upgrade_request_waits_for_its_answer(server):
    sink, parser = parse(server, UPGRADE + b"GET /next HTTP/1.1\r\n", b"Host: h\r\n\r\n")
    assert [r.target for r in sink.requests] == ["/ws"]
    parser.upgrade_answered(sink.requests[0], switched=False)    # answered as any other
    assert [r.target for r in sink.requests] == ["/ws", "/next"]
    assert not sink.stopped


def test_what_follows_an_upgrade_that_switched_is_the_tunnel_s(server):
    sink, parser = parse(server, UPGRADE + b"\x81\x05hello", b"GET / HTTP/1.1\r\n\r\n")
    assert parser.upgrade_answered(sink.requests[0], switched=True) == \
        b"\x81\x05helloGET / HTTP/1.1\r\n\r\n"
    assert [r.target for r in sink.requests] == ["/ws"] and parser.tunnelled


def test_nothing_is_read_after_a_connect_request_nobody_took(server):
    sink, parser = parse(server, b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n\x16\x03\x01")
    assert len(sink.requests) == 1
    parser.upgrade_answered(sink.requests[0], switched=False)
    assert len(sink.requests) == 1 and sink.stopped


def test_http10_is_closed_unless_it_asks_for_keep_alive(server):
    closed, _ = parse(server, b"GET / HTTP/1.0\r\n\r\n")
    kept, _ = parse(server, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert (closed.requests[0].keep_alive, kept.requests[0].keep_alive) == (False, True)


def test_a_streamed_body_comes_out_with_its_head_and_grows(streaming):
    sink, parser = parse(streaming, b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nab")
    [request] = sink.requests
    assert request.body.read_chunk() == b"ab" and not request.body.complete
    parser.feed(b"cdef")
    assert sink.arrivals == [(2, False), (6, False), (6, True)]
    assert request.body.read_chunk() == b"cdef" and request.body.complete
    assert len(sink.requests) == 1 and parser.current is None


def test_a_streamed_body_over_the_limit_fails_in_its_handler(streaming):
    sink, _ = parse(streaming, b"POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"400\r\n" + b"a" * 1024 + b"\r\n", b"1\r\na\r\n")
    assert len(sink.requests) == 1 and sink.failures == [413] and sink.stopped


@pytest.mark.parametrize("body, content", [
    (b"Content-Length: 3\r\n\r\nabc", b"abc"),
    (b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", b"abc"),
    (b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"")])
def test_a_request_asking_to_upgrade_keeps_its_body_and_the_next_request(server, body,
                                                                          content):
    """It cannot switch (RFC 9110 7.8: a body first); the body is read, and the request
    after it parsed, whatever the read sizes."""
    data = (b"POST /x HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n" + body
            + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    for pieces in ([data], [bytes([b]) for b in data]):
        sink, _ = parse(server, *pieces)
        first, second = sink.requests
        assert (first.body.read(), first.body.complete) == (content, True)
        assert second.target == "/next" and not sink.stopped


@pytest.mark.parametrize("names, found", [
    (frozenset({"x-c"}), True), (frozenset({"x-z"}), False),
    (frozenset({"x-z", "x-y", "x-w", "x-v", "x-u", "x-t", "x-s", "x-a"}), True),
    (frozenset({"x-z", "x-y", "x-w", "x-v", "x-u", "x-t", "x-s", "x-r"}), False),
    (frozenset(), False)])
def test_a_request_tells_whether_any_of_some_fields_came(server, names, found):
    """Whichever of the two is the smaller, the fields or the names asked about."""
    sink, _ = parse(server, b"GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n")
    assert sink.requests[0].has_any_header(names) is found


@pytest.mark.parametrize("split", [False, True])
def test_a_repeated_field_joins_its_values_even_when_they_are_alike(server, split):
    sink, _ = parse(server, *reads(b"GET / HTTP/1.1\r\nHost: h\r\nX: 1\r\nX: 1\r\nX:\r\nX: \r\n"
                                   b"Cookie: a\r\nCookie: a\r\n\r\n", split))
    headers = sink.requests[0].headers
    assert (headers["x"], headers["cookie"]) == ("1, 1", "a; a")   # the empty ones dropped


# ------------------------------------------------------ a stream cut anywhere
def _request_bytes(number: int, kind: str, fields: list[tuple[bytes, bytes]]) -> bytes:
    head = b"".join(name + b": " + value + b"\r\n" for name, value in fields)
    if kind == "get":
        return b"GET /%d HTTP/1.1\r\nHost: h\r\n%s\r\n" % (number, head)
    if kind == "length":
        return b"PUT /%d HTTP/1.1\r\nHost: h\r\n%sContent-Length: 40\r\n\r\n%s" % (
            number, head, _body(number))
    trailer = b"T: %d\r\n" % number if kind == "trailer" else b""
    return (b"PUT /%d HTTP/1.1\r\nHost: h\r\n%sTransfer-Encoding: chunked\r\n\r\n"
            b"2;ext=1\r\nb%d\r\n1\r\n%d\r\n0\r\n%s\r\n" % (number, head, number % 10,
                                                          number % 10, trailer))


def _body(number: int) -> bytes:
    return b"%02d" % (number % 100) * 20


_KINDS = st.sampled_from(["get", "get", "length", "chunked", "trailer"])
_FIELDS = st.lists(st.tuples(st.sampled_from([b"Accept", b"X-A", b"Cookie", b"cookie"]),
                             st.sampled_from([b"", b"v", b"a:b", b"x y", b"\xe9"])),
                   max_size=4)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_KINDS, _FIELDS, st.booleans()), min_size=1, max_size=6),
       st.lists(st.integers(0, 400), max_size=6))
def test_requests_come_out_whole_however_the_stream_is_cut(server, requests, cuts):
    """Requests with and without bodies (by length, chunked, with a trailer), empty
    lines between some, one stream cut anywhere into reads: each request comes out
    with its own fields and body."""
    stream = b"".join((b"\r\n" if blank else b"") + _request_bytes(number, kind, fields)
                      for number, (kind, fields, blank) in enumerate(requests))
    points = sorted({0, len(stream), *(cut for cut in cuts if cut < len(stream))})
    sink, parser = parse(server, *(stream[a:b] for a, b in zip(points, points[1:])))
    assert len(sink.requests) == len(requests)
    for number, ((kind, fields, _), request) in enumerate(zip(requests, sink.requests)):
        assert request.target == f"/{number}" and request.response.status in (0, 200)
        fields = [(name, value) for name, value in fields if value]   # empty: no field
        names = [name.decode("latin-1") for name, _ in fields]
        assert request.raw_fields[:2] == ["Host", "h"]
        assert request.raw_fields[2:2 + 2 * len(fields)] == [
            text for name, value in fields for text in (name.decode("latin-1"),
                                                          value.decode("latin-1"))]
        for name in {name.lower() for name in names}:
            joined = ("; " if name == "cookie" else ", ").join(
                value.decode("latin-1") for field, value in fields
                if field.decode().lower() == name)
            assert request.headers[name] == joined
        assert "t" not in request.headers           # a trailer is no field
        if kind == "get":
            assert request.body is None
        else:
            expected = _body(number) if kind == "length" else \
                b"b%d%d" % (number % 10, number % 10)
            assert request.body.read() == expected and request.body.complete
    assert parser.current is None and not sink.stopped



_RAW_TARGETS = st.sampled_from([b"/\xc3\xbc", b"/a/\xc3\xa9.txt?q=\xc3\xbc", b"/x#\x01\xff",
                                b"/p?\x80&r=%C3%BC", b"/plain"])


@settings(max_examples=200, deadline=None)
@given(st.lists(_RAW_TARGETS, min_size=1, max_size=3), st.lists(st.integers(0, 200), max_size=5))
def test_targets_of_raw_octets_come_out_as_sent_however_the_stream_is_cut(server, targets,
                                                                          cuts):
    """llhttp refuses octets beyond ASCII in a target (and controls in a fragment); the
    line is parsed again escaped, from the request's own start, whether the line came
    whole, cut before the octet (its start kept from the earlier read) or after it (held
    until the rest comes), after pipelined requests or not."""
    stream = b"".join(b"GET %s HTTP/1.1\r\nHost: h\r\nX-N: %d\r\n\r\n" % (target, number)
                      for number, target in enumerate(targets))
    points = sorted({0, len(stream), *(cut for cut in cuts if cut < len(stream))})
    sink, _ = parse(server, *(stream[a:b] for a, b in zip(points, points[1:])))
    assert [request.target_orig.encode("utf-8", "surrogateescape")
            for request in sink.requests] == targets
    assert [request.headers["x-n"] for request in sink.requests] == \
        [str(number) for number in range(len(targets))]
    assert all(request.response.status == 0 for request in sink.requests)
