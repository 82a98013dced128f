"""Differential test of mod_cgi: Debian's lighttpd 1.4.69 and a pylighttpd worker run
the same CGI scripts (sh, perl, python) from the same docroot with the same config;
each request goes to both (at the same time: a timeout costs its seconds once) and the
answers must agree on the status, the headers (but those in IGNORED_HEADERS) and the
body.  Where pylighttpd answers otherwise on purpose, the request is in
KNOWN_DIFFERENCES with the reason, and the test checks that it still differs.
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from cgi_site import cgi_config, make_cgi_site, parse_answer
from test_differential import LIGHTTPD, beside_lighttpd, exchange

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

# header -> why it is not compared
IGNORED_HEADERS = {
    "date": "the time of the answer",
    "server": "each server's own tag",
}
# request name -> why pylighttpd answers otherwise
KNOWN_DIFFERENCES = {
    "error-handler-head": "server.error-handler's page of a HEAD: lighttpd runs the script "
                         "as a GET (REQUEST_METHOD=GET) and drops the body it wrote; "
                         "pylighttpd runs it as the HEAD it is, so that a page streamed "
                         "out never sends a body to a HEAD",
    "stalls-then-timeout": "a read timeout after the script's head was read but before "
                           "anything went out: both answer 504, lighttpd with the "
                           "script's headers and the part of its body it had, pylighttpd "
                           "with its error page (a part of a body is no answer)",
    "range-unsatisfiable": "416 to a range past a script's answer: lighttpd drops the "
                           "Content-Range its range code set when it writes the error "
                           "page, pylighttpd keeps `bytes */N` (RFC 9110 15.5.17)",
    "upgrade-off": "a 101 that switches nothing: lighttpd sends it with Content-Length: "
                   "0, pylighttpd without (RFC 9110 8.6: never in a 1xx answer)",
}
# cgi.upgrade where the upgrade scripts (and env.py) run at the docroot; off elsewhere
UPGRADES = """
$HTTP["url"] =~ "^/(upper|env)\\.py$" {
    cgi.upgrade = "enable"
    cgi.limits = ("read-timeout" => 20)
}
"""
# seconds of silence a client waits for an answer (the longest timeout above is 20 s,
# met only where a script reads a body that comes at once)
ANSWER_WAIT = 15
# requests answered when a read timeout fires: on a loaded machine lighttpd's timer
# has been seen to slip past ANSWER_WAIT; then only pylighttpd's answer is checked
TIMED_OUT = {"hang": 504, "stalls-then-timeout": 504}
# variables that differ by nature (each server has its own port, each client its own)
_OWN_VARIABLES = ("REMOTE_PORT=", "SERVER_PORT=")


def _requests(base) -> list[tuple[str, bytes]]:
    sendable = base / "sendable"
    small, large = os.urandom(10_000), os.urandom(300_000)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                       for part in (large[:100_000], large[100_000:])) + b"0\r\n\r\n"
    return [
        ("hello-sh", get("/hello.sh")),
        ("hello-perl", get("/hello.pl")),
        ("hello-python", get("/hello.py")),
        ("hello-python-shebang", get("/self.cgi")),
        ("head", get("/hello.sh", method="HEAD")),
        ("http10", b"GET /hello.sh HTTP/1.0\r\n\r\n"),
        ("fragment", get("/env.py/extra#frag/more?b=2")),
        ("fragment-after-query", get("/env.py?a=1#frag")),
        ("environment", get("/env.py/extra/path?a=1&b=%20", "X-Custom-Header: custom",
                            "Proxy: http://evil.example/", "Content-Type: text/x")),
        ("environment-normalised-target", get("/x/../env.py/%61b?q=%7e")),
        ("environment-absolute-target", get("http://test.example/env.py?a=1")),
        # raw octets beyond ASCII (REQUEST_URI keeps them, the query is escaped), a
        # fragment with controls, fields of UTF-8 octets
        ("environment-raw-octets", get("/env.py/pé?q=é&r=%C3%A9#f\x01é", "X-U: ünï")),
        # Transfer-Encoding is the body's framing, no HTTP_TRANSFER_ENCODING; an
        # Expect (sent twice) met by the server, no HTTP_EXPECT, but without a body
        ("environment-chunked", get("/env.py", "Transfer-Encoding: chunked", method="POST")
         + chunked),
        ("environment-expect", get("/env.py", "Expect: 100-continue", "Content-Length: 3",
                                   "Expect: 100-continue", method="POST") + b"abc"),
        ("environment-expect-no-body", get("/env.py", "Expect: 100-continue")),
        # an h2c offer not taken (no HTTP2-Settings) is dropped, Connection loses its
        # token; another protocol's offer stays
        ("environment-h2c-offer", get("/env.py", "Upgrade: h2c", "Connection: Upgrade")),
        ("environment-other-offer", get("/env.py", "Upgrade: foo/2", "Connection: Upgrade")),
        ("local-redirect-raw-utf8", get("/location_raw.py?/r%C3%A9sum%C3%A9.txt")),
        ("x-sendfile-raw-utf8", get("/sendfile_raw.py?r%C3%A9sum%C3%A9.txt")),
        ("environment-empty-fields", get("/env.py", "X-Empty:", "X-Blank:   ",
                                         "X-Full: v", "X-Full:")),
        ("environment-one-variable-two-names", get("/env.py", "X_User: first",
                                                   "X-User: second")),
        ("post-memory-python", post("/sum.py", small)),
        ("post-file-python", post("/sum.py", large)),
        ("post-file-perl", post("/sum.pl", large)),
        ("post-chunked", get("/sum.py", "Transfer-Encoding: chunked", method="POST")
         + chunked),
        ("post-streamed-1", post("/stream1/sum.py", large)),
        ("post-streamed-2", post("/stream2/sum.pl", large)),
        ("status", get("/status.pl")),
        ("location-external", get("/location.sh?http://example.com/x")),
        ("location-local-file", get("/location.sh?/target.txt")),
        ("location-local-script", get("/location.sh?/env.py/more?x=1")),
        ("location-self", get("/location.sh?/location.sh")),
        ("sendfile", get(f"/sendfile.sh?{sendable}/file.txt")),
        ("sendfile-head", get(f"/sendfile.sh?{sendable}/file.txt", method="HEAD")),
        ("sendfile-outside", get(f"/sendfile.sh?{base}/www/index.html")),
        ("sendfile-traversal", get(f"/sendfile.sh?{sendable}/../www/index.html")),
        ("sendfile-missing", get(f"/sendfile.sh?{sendable}/missing")),
        ("sendfile2-of-a-cgi", get(f"/sendfile2.sh?{sendable}/file.txt")),
        ("no-head", get("/nohead.sh")),
        ("own-length", get("/length.sh")),
        ("own-length-streamed", get("/paced/length_later.sh")),
        ("chunked-answer", get("/chunked.pl")),
        ("bare-newlines", get("/lf.sh")),
        ("silent", get("/silent.sh")),
        ("execute-x-only", get("/xonly/plain.sh")),
        ("cannot-run", get("/noexec.sh")),
        ("hang", get("/hang.sh")),
        ("stalls-then-timeout", get("/stalls.sh")),
        ("error-handler-script", get("/eh404/missing?q=1")),
        ("error-handler-404-keeps-post", post("/eh404/missing", b"abc")),
        ("error-handler-runs-a-get", post("/eh/missing", b"abc")),
        ("error-handler-head", get("/eh/missing", method="HEAD")),
        ("error-handler-before-404-handler", get("/ehboth/missing")),
        ("upgrade-answered-200", upgrade("/env.py")),
        ("upgrade-off", upgrade("/stream1/upper.py")),
        ("range-one", get("/hello.sh", "Range: bytes=2-6")),
        ("range-suffix", get("/hello.sh", "Range: bytes=-4")),
        ("range-many", get("/flood.sh?1000", "Range: bytes=0-9,500-509")),
        ("range-spooled", get("/flood.sh?300000", "Range: bytes=100-199,200000-200099")),
        ("range-if-range-other", get("/hello.sh", "Range: bytes=2-6", 'If-Range: "x"')),
        ("range-head", get("/hello.sh", "Range: bytes=2-6", method="HEAD")),
        ("range-post", post("/sum.py", b"12345")[:-5].replace(
            b"Connection: close", b"Connection: close\r\nRange: bytes=0-1") + b"12345"),
        ("range-not-bytes", get("/hello.sh", "Range: lines=1-2")),
        ("range-unsatisfiable", get("/hello.sh", "Range: bytes=100-")),
        ("range-of-an-answer-with-content-range",
         get("/head.py?Content-Range:%20bytes%200-1/5|X-A:%201", "Range: bytes=2-4")),
        ("javascript-renamed",
         get("/head.py?Content-Type:%20application/javascript;%20charset=utf-8")),
        ("not-modified-names-no-coding",
         get("/head.py?Status:%20304|Content-Encoding:%20gzip|ETag:%20%22e%22")),
        ("empty-field-not-sent", get("/head.py?X-Empty:%20|X-A:%201")),
        ("host-as-normalized",
         b"GET /env.py HTTP/1.1\r\nHost: Test.EXAMPLE.:80\r\nConnection: close\r\n\r\n"),
        ("host-of-an-absolute-target", b"GET http://Abs.Example/env.py HTTP/1.0\r\n\r\n"),
        ("server-fields-never-sent",
         get("/head.py?X-LIGHTTPD-send-file:%20/etc/passwd|X-LIGHTTPD-Any:%201|X-A:%201")),
    ]


def upgrade(target: str) -> bytes:
    """A request asking to switch protocols, its connection closed after the answer."""
    return (f"GET {target} HTTP/1.1\r\nHost: test.example\r\n"
            "Connection: close, Upgrade\r\nUpgrade: upper\r\n\r\n").encode()


def get(target: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: test.example", "Connection: close",
             *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(target: str, body: bytes) -> bytes:
    return get(target, f"Content-Length: {len(body)}", method="POST") + body


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("cgidiff")
    docroot = make_cgi_site(base)
    conf = base / "common.conf"
    conf.write_text(cgi_config(base, docroot, UPGRADES))
    with beside_lighttpd(conf) as (theirs, ours):
        yield theirs, ours, base


def summary(raw: bytes, method: str) -> dict:
    """Status, compared headers and body; a script's environment without the
    variables that differ by nature (and so without the length of that body)."""
    status, headers, body = parse_answer(raw, method)
    found = {"status": status, "body": body}
    found.update({k: v for k, v in headers.items() if k not in IGNORED_HEADERS})
    if b"GATEWAY_INTERFACE=" in body:
        found["body"] = b"\n".join(line for line in body.split(b"\n")
                                   if not line.startswith(tuple(
                                       v.encode() for v in _OWN_VARIABLES)))
        found.pop("content-length", None)
    return found


def _answers(servers) -> dict[str, tuple[dict, dict]]:
    """Each request to both servers at once, one request after the other (lighttpd
    misses a CGI read timeout for seconds while it serves certain others, the more on
    a loaded machine: each client waits up to ANSWER_WAIT seconds of silence)."""
    lighttpd_port, our_port, base = servers
    answers = {}
    with ThreadPoolExecutor(2) as pool:
        for name, raw in _requests(base):
            theirs, ours = pool.map(lambda port: exchange(port, raw, ANSWER_WAIT),
                                    (lighttpd_port, our_port))
            assert ours, f"{name}: pylighttpd sent nothing in {ANSWER_WAIT} s"
            method = raw.split(b" ", 1)[0].decode()
            if not theirs and name in TIMED_OUT:      # lighttpd's timer slipped
                assert parse_answer(ours, method)[0] == TIMED_OUT[name], name
                continue
            assert theirs, f"{name}: lighttpd sent nothing in {ANSWER_WAIT} s"
            answers[name] = (summary(theirs, method), summary(ours, method))
    return answers


def test_same_answers_as_lighttpd(servers):
    differences, known = {}, {}
    answers = _answers(servers)
    for name, (theirs, ours) in answers.items():
        diff = {k: (theirs.get(k), ours.get(k)) for k in theirs.keys() | ours.keys()
                if theirs.get(k) != ours.get(k)}
        diff = {k: (a[:200], b[:200]) if isinstance(a, bytes) and isinstance(b, bytes)
                else (a, b) for k, (a, b) in diff.items()}
        if name in KNOWN_DIFFERENCES:
            known[name] = diff
        elif diff:
            differences[name] = diff
    assert len(answers) >= 30
    for name in ("range-one", "range-suffix", "range-many", "range-spooled"):
        assert answers[name][0]["status"] == 206, name      # ranges of a script's answer
    assert not differences, "\n".join(f"{name}: {diff}" for name, diff in differences.items())
    stale = [name for name, diff in known.items() if not diff]
    assert not stale, f"listed in KNOWN_DIFFERENCES but now the same: {stale}"


def test_a_range_of_a_script_answer_has_one_content_range(servers):
    """The script's own Content-Range gives way to the one of the range sent (the
    differential summary reads headers by name, so it would not see two)."""
    request = get("/head.py?Content-Range:%20bytes%200-1/5", "Range: bytes=2-4")
    for port in servers[:2]:
        head = exchange(port, request, ANSWER_WAIT).partition(b"\r\n\r\n")[0]
        assert head.count(b"\r\nContent-Range: ") == 1, (port, head)
        assert b"\r\nContent-Range: bytes 2-4/10\r\n" in head + b"\r\n"


def _tunnel(port: int) -> dict:
    """Upgrade to upper.py with bytes right after the request, then more: the head's
    status and upgrade headers, and what came back (upper-cased) each time."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(upgrade("/upper.py").replace(b"close, ", b"") + b"early ")
        data = b""
        while not data.endswith(b"EARLY "):
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
        sock.sendall(b"hello")
        echo = sock.recv(65536)
    status, headers, _ = parse_answer(data.partition(b"\r\n\r\n")[0] + b"\r\n\r\n")
    return {"status": status, "first": data.partition(b"\r\n\r\n")[2], "echo": echo,
            **{k: headers.get(k) for k in ("upgrade", "connection", "x-asked",
                                           "content-length", "transfer-encoding")}}


def test_a_tunnel_to_a_script_as_lighttpd_relays_it(servers):
    lighttpd_port, our_port, _ = servers
    with ThreadPoolExecutor(2) as pool:
        theirs, ours = pool.map(_tunnel, (lighttpd_port, our_port))
    assert theirs["status"] == 101 and theirs["echo"] == b"HELLO"
    assert ours == theirs


@pytest.mark.parametrize("status", [204, 304])
@pytest.mark.parametrize("place", ["", "/paced"])
def test_a_body_after_a_bodiless_status_never_reaches_the_client(servers, status, place):
    """A script's body after 204 or 304 is dropped, kept whole or streamed, over a kept
    connection: else the client would read it as the start of its next answer."""
    follow_up = b"GET /hello.sh HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n"
    first = f"GET {place}/bodiless.sh?{status} HTTP/1.1\r\nHost: test.example\r\n\r\n"
    for port in servers[:2]:
        raw = exchange(port, first.encode() + follow_up, ANSWER_WAIT)
        head, _, rest = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status), (port, raw)
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), (port, raw)


def test_early_hints_of_a_script_go_out_ahead_of_its_answer(servers):
    """A script's interim 103 head reaches the client before its answer, as lighttpd
    passes it on (neither server keeps the Link field for the final head)."""
    request = b"GET /hints.sh HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n"
    for port in servers[:2]:
        raw = exchange(port, request, ANSWER_WAIT)
        interim, _, rest = raw.partition(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload", (port, raw)
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n") and b"Link:" not in rest, (port, raw)
        assert rest.endswith(b"\r\n\r\nbody\n"), (port, raw)
