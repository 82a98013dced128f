"""Differential test of mod_proxy: lighttpd 1.4.69 and a pylighttpd worker as proxies,
side by side, with the same proxy config, in front of the same backends (two Python
applications, tests/worker/proxy_backends.py, and a static lighttpd).

The same raw requests go to both; the answers must agree on the status, the headers
(but Date and Server, which each server writes itself) and the body.  An echo answer
(what the backend received, as JSON) is compared on what the backend saw, the proxies'
own port numbers made equal.  Where pylighttpd parts from lighttpd on purpose, the
request is in KNOWN_DIFFERENCES with the reason, and the test checks that it still
differs, so the table cannot go stale.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path

import pytest

from proxy_backends import PROXY_RULES, BackendProcess
from server_util import WorkerProcess, read_until_closed
from test_differential import LIGHTTPD, Lighttpd, free_port
from shared.gateway_hosts import djbhash

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

HOST = "proxy.test"
# Headers each server writes for itself.  (Accept-Ranges is compared: both add it to
# a backend's 200 answer they have whole, whose ranges they serve: worker/byteranges.py)
NOT_COMPARED = frozenset({"date", "server"})
# request headers an echo shows that differ by design: lighttpd sends
# `Connection: close` (one connection per request), pylighttpd keeps the connection
ECHO_NOT_COMPARED = frozenset({"connection"})

KNOWN_DIFFERENCES = {
    "hop-by-hop-request": "RFC 9110 7.6.1: Keep-Alive, TE and the headers Connection "
                          "names are hop-by-hop; lighttpd passes them on",
    "hop-by-hop-response": "RFC 9110 7.6.1, as hop-by-hop-request, on the way back",
    "hangup": "RFC 9110 15.6.3: no answer from the backend is 502 Bad Gateway; "
              "lighttpd says 500",
}

PROXY_CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_proxy")
server.tag = "difftest"
proxy.server = (
  "/rr/" => ( "a" => ( {a} ), "b" => ( {b} ) ),
  "/hash/" => ( ( {a} ), ( "host" => "127.0.0.2", "port" => {a_port} ) ),
  "/static/" => ( ( "host" => "127.0.0.1", "port" => {static} ) ),
  "/down/" => ( ( "host" => "127.0.0.1", "port" => {dead} ) ),
  "/timeout/" => ( ( {a}, "read-timeout" => 1 ) ),
  "/label/" => ( "backend.label" => ( {a} ) ),
  ".pxy" => ( ( {a} ) ),
  "/" => ( ( {a} ) ),
)
$HTTP["url"] =^ "/ws/" {{ proxy.header = ( "upgrade" => "enable" ) }}
{rules}"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(lighttpd's port, pylighttpd's port), both proxying to the same backends, and
    the port of backend A."""
    base = tmp_path_factory.mktemp("proxydiff")
    started: list = []
    try:
        a, b = BackendProcess("A", base), BackendProcess("B", base)
        started += [a, b]
        started.append(BackendProcess("C", base, address=f"127.0.0.2:{a.port}"))
        static = start_static(base / "static")
        started.append(static)
        docroot = base / "www"
        docroot.mkdir()
        one = '"host" => "127.0.0.1", "port" => {}'
        common = base / "proxy" / "common.conf"
        common.parent.mkdir()
        common.write_text(PROXY_CONFIG.format(docroot=docroot, rules=PROXY_RULES,
                                              a=one.format(a.port),
                                              b=one.format(b.port), a_port=a.port,
                                              static=static.port,
                                              dead=free_port()))
        lighttpd = Lighttpd(common)
        started.append(lighttpd)
        ours = base / "ours.conf"
        ours.write_text(common.read_text() + f'server.errorlog = "{base}/error.log"\n')
        with WorkerProcess(ours) as worker:
            yield (lighttpd.port, worker.port), a.port
    finally:
        for process in started:
            process.stop()


@pytest.fixture(scope="module")
def servers(setup):
    return setup[0]


def start_static(directory: Path) -> Lighttpd:
    """A static lighttpd backend with a small file and a large one."""
    docroot = directory / "www"
    (docroot / "static").mkdir(parents=True)
    (docroot / "static" / "file.txt").write_text("a static file\n")
    (docroot / "static" / "large.bin").write_bytes(bytes(range(256)) * 6000)
    conf = directory / "static.conf"
    conf.write_text(f'server.document-root = "{docroot}"\n'
                    'mimetype.assign = (".txt" => "text/plain",\n'
                    '                   "" => "application/octet-stream")\n')
    return Lighttpd(conf)


def request(method: str, path: str, *headers: str, body: bytes = b"",
            version: str = "1.1", host: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/{version}"] + ([f"Host: {HOST}"] if host else [])
    lines += ["Connection: close", *headers]
    if body and not any(h.lower().startswith("transfer-encoding") for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def corpus() -> list[tuple[str, bytes]]:
    return [
        ("get-query", request("GET", "/echo?a=1&b=%2F&c")),
        ("get-encoded-path", request("GET", "/x%20y/echo")),
        ("get-escaped-slash", request("GET", "/x%2fy%7e/echo?b=%2f%7e")),
        ("dot-segment", request("GET", "/a/../echo")),
        ("absolute-form", request("GET", f"http://{HOST}/echo?q")),
        ("http10-without-host", request("GET", "/echo", version="1.0", host=False)),
        ("head", request("HEAD", "/big?n=5000")),
        ("post-length", request("POST", "/echo", body=b"x=1&y=2")),
        ("post-chunked", request("POST", "/echo", "Transfer-Encoding: chunked",
                                 body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")),
        ("post-expect", request("POST", "/echo", "Expect: 100-continue", body=b"abc")),
        ("big", request("GET", "/big?n=1200000")),
        ("chunked", request("GET", "/chunked?n=50000")),
        ("close-delimited", request("GET", "/close?n=30000")),
        ("empty-404", request("GET", "/status/404")),
        ("no-content", request("GET", "/status/204")),
        ("map-in", request("GET", "/map/echo?x=1", "Destination: http://proxy.test/map/y")),
        ("map-out", request("GET", "/map/headers")),
        ("forwarded", request("GET", "/fwd/echo", "X-Forwarded-For: 10.0.0.1")),
        ("forwarded-existing", request("GET", "/fwd/echo", "Forwarded: for=192.0.2.1")),
        ("replace-http-host", request("GET", "/label/echo")),
        ("extension", request("GET", "/file.pxy")),
        ("request-headers", request("GET", "/echo", "Proxy: http://evil", "X-A: 1",
                                    "X-A: 2", "Cookie: a=1", "Cookie: b=2")),
        ("static", request("GET", "/static/file.txt")),
        ("static-large", request("GET", "/static/large.bin")),
        ("static-range", request("GET", "/static/large.bin", "Range: bytes=10-19")),
        ("garbage", request("GET", "/garbage")),
        ("refused", request("GET", "/down/x")),
        ("hop-by-hop-request", request("GET", "/echo", "Connection: X-Private",
                                       "X-Private: 1", "Keep-Alive: 300", "TE: trailers")),
        ("hop-by-hop-response", request("GET", "/hop")),
        ("upgrade-to-http10-backend", request("GET", "/http10-up/echo", "Upgrade: shout",
                                              "Connection: Upgrade")),
        ("hangup", request("GET", "/hangup")),
        # a HEAD answer whose backend gave no length announces none (it was 0)
        ("head-without-length", request("HEAD", "/raw?h=" + b"HTTP/1.1 200 OK\r\n"
                                        b"X-A: 1\r\n\r\n".hex())),
        # a status line of another version than HTTP/1.x is no answer (502)
        ("http2-status-line", request("GET", "/raw?h=" + b"HTTP/2.0 200 OK\r\n"
                                      b"Content-Length: 2\r\n\r\nok".hex())),
    ]


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def summary(raw: bytes, port: int) -> dict:
    """Status, compared headers, body; an echo's body as what the backend saw."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name not in NOT_COMPARED:
            headers[name] = headers[name] + "\n" + value.strip() if name in headers \
                else value.strip()
    found: dict = {"status": int(lines[0].split()[1]), "headers": headers, "body": body}
    if headers.get("content-type") == "application/json" and body:
        headers.pop("content-length", None)      # the echo's length follows what it saw
        seen = json.loads(body.decode().replace(f"127.0.0.1:{port}", "127.0.0.1:PROXY"))
        seen["headers"] = sorted((name.lower(), value) for name, value in seen["headers"]
                                 if name.lower() not in ECHO_NOT_COMPARED)
        found["body"] = seen
    return found


def answers(servers, requests: list[tuple[str, bytes]]) -> dict[str, tuple[dict, dict]]:
    """Each request's summary from lighttpd and from pylighttpd (asked in turn)."""
    return {name: tuple(summary(exchange(port, data), port) for port in servers)
            for name, data in requests}


def difference(theirs: dict, ours: dict) -> dict:
    return {key: (theirs[key], ours[key]) for key in theirs if theirs[key] != ours[key]}


def test_same_answers_as_lighttpd(servers):
    found = answers(servers, corpus())
    differences = {name: difference(*pair) for name, pair in found.items()
                   if name not in KNOWN_DIFFERENCES and difference(*pair)}
    assert not differences, "\n".join(f"{name}: {str(diff)[:600]}"
                                      for name, diff in differences.items())
    stale = [name for name in KNOWN_DIFFERENCES if not difference(*found[name])]
    assert not stale, f"listed in KNOWN_DIFFERENCES but now the same: {stale}"


def test_known_differences_are_the_rfc_answers(servers):
    found = answers(servers, [item for item in corpus() if item[0] in KNOWN_DIFFERENCES])
    ours = {name: pair[1] for name, pair in found.items()}
    seen = {name for name, _ in ours["hop-by-hop-request"]["body"]["headers"]}
    assert not seen & {"x-private", "keep-alive", "te"}
    assert "x-hop" not in ours["hop-by-hop-response"]["headers"]
    assert ours["hangup"]["status"] == 502


def test_a_slow_backend_is_504_behind_both(servers):
    results: dict[int, int] = {}

    def ask(port: int) -> None:
        results[port] = summary(exchange(port, request("GET", "/timeout/slow?s=4")),
                                port)["status"]

    threads = [threading.Thread(target=ask, args=(port,)) for port in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert [results.get(port) for port in servers] == [504, 504]


def test_round_robin_takes_the_same_turns(servers):
    turns = [[served_by(port, "/rr/echo") for _ in range(4)] for port in servers]
    assert turns == [["A", "B", "A", "B"]] * 2


def test_hash_balancing_is_lighttpds_djb2a(setup):
    """Both hash a URL as lighttpd does: djb2a of the path, then of the Host, against
    each host's hash.  pylighttpd mixes the port into a host's hash, as lighttpd does
    since after 1.4.69: hosts on one address (several ports of one machine, the usual
    case) differ; 1.4.69 hashes them alike and sends every URL to the first."""
    servers, port = setup
    paths = [f"/hash/{n}/echo" for n in range(20)]
    for server, with_port in zip(servers, (False, True)):
        expected = [expected_pick(path, port if with_port else 0) for path in paths]
        assert [served_by(server, path) for path in paths] == expected


def expected_pick(path: str, port: int) -> str:
    """The backend of /hash/ (A at 127.0.0.1, C at 127.0.0.2) for `path`."""
    key = djbhash(HOST, djbhash(path))
    a, c = key ^ djbhash("127.0.0.1") ^ port, key ^ djbhash("127.0.0.2") ^ port
    return "C" if c >= a else "A"


def served_by(port: int, path: str) -> str:
    return summary(exchange(port, request("GET", path)), port)["body"]["server"]


def test_a_tunnel_behind_both(servers):
    """An upgrade to the backend's "shout" protocol: the same 101 head, and the bytes
    both ways."""
    transcripts = []
    for port in servers:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request("GET", "/ws/upgrade", "Connection: Upgrade",
                                 "Upgrade: shout").replace(b"Connection: close\r\n", b"")
                         + b"hello ")
            received = read_until(sock, b"HELLO ")
            sock.sendall(b"world")
            transcripts.append(summary(read_until(sock, b"WORLD", received), port))
    assert transcripts[0] == transcripts[1]
    assert transcripts[1]["status"] == 101 and transcripts[1]["body"] == b"HELLO WORLD"


def read_until(sock: socket.socket, ending: bytes, received: bytes = b"") -> bytes:
    while not received.endswith(ending):
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return received
