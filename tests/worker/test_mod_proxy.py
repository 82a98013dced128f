"""mod_proxy through a real worker, in front of real backends (tests/worker/
proxy_backends.py, each in a process of its own) on 127.0.0.1 free ports.

Methods and bodies, large and chunked answers, the URL and host maps, Forwarded and
X-Forwarded-*, hop-by-hop headers, balancing, a backend down (503, then left alone for
its disable-time), garbage (502), too slow (504), kept connections (counted by the
backend's accept()s), a retry on a kept connection the backend dropped, a client gone
mid-download (the backend sees its socket closed), and no fd left behind by aborted
requests.  Every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from master.configload import load
from proxy_backends import PROXY_RULES, BackendProcess, pattern
from server_util import WorkerProcess, config_text, read_until_closed
from shared.config import ConfigError
from worker.modules.mod_proxy import HeaderOptions, Remap

HOST = "proxy.test"


def proxy_config(a: BackendProcess, b: BackendProcess, unix: BackendProcess,
                 down: int, refusing: int, errorlog: Path) -> str:
    """Prefixes for each case; the last, "/", goes to backend A."""
    one = f'"host" => "127.0.0.1", "port" => {a.port}'
    return f"""
server.errorlog = "{errorlog}"
proxy.server = (
  "/rr/" => ( "a" => ( {one} ), "b" => ( "host" => "127.0.0.1", "port" => {b.port} ) ),
  "/hash/" => ( ( {one} ), ( "host" => "127.0.0.1", "port" => {b.port} ) ),
  "/sticky/" => ( ( {one} ), ( "host" => "127.0.0.1", "port" => {b.port} ) ),
  "/down/" => ( ( "host" => "127.0.0.1", "port" => {down}, "disable-time" => 1 ) ),
  "/failover/" => ( ( "host" => "127.0.0.1", "port" => {refusing} ), ( {one} ) ),
  "/timeout/" => ( ( {one}, "read-timeout" => 1, "write-timeout" => 1 ) ),
  "/unix/" => ( ( "socket" => "{unix.path}" ) ),
  "/nopool/" => ( ( {one}, "keepalive" => 0 ) ),
  "/label/" => ( "backend.label" => ( {one} ) ),
  ".pxy" => ( ( {one} ) ),
  "/" => ( ( {one} ) ),
)
{PROXY_RULES}
$HTTP["url"] =^ "/ws/" {{ proxy.header = ( "upgrade" => "enable", "connect" => "enable" ) }}
$HTTP["url"] =^ "/old/" {{ proxy.header = ( "force-http10" => "enable" ) }}
$HTTP["url"] =^ "/sticky/" {{ proxy.balance = "sticky" }}
$HTTP["url"] =^ "/upload1/" {{ server.stream-request-body = 1 }}
$HTTP["url"] =^ "/upload2/" {{ server.stream-request-body = 2 }}
$HTTP["url"] =^ "/stream/" {{ server.stream-response-body = 2 }}
$HTTP["url"] =^ "/intercept/" {{ server.error-intercept = "enable" }}
"""


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    work = tmp_path_factory.mktemp("backends")
    started = [BackendProcess("A", work), BackendProcess("B", work),
               BackendProcess("U", work, unix=True)]
    try:
        yield started
    finally:
        for backend in started:
            backend.stop()


@pytest.fixture(scope="module")
def dead_sockets():
    """Two ports that refuse: bound, not listening (until a test calls listen())."""
    socks = [socket.socket(), socket.socket()]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    yield socks
    for sock in socks:
        sock.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, backends, dead_sockets):
    base = tmp_path_factory.mktemp("proxy")
    (base / "www").mkdir()
    errorlog = base / "error.log"
    conf = base / "proxy.conf"
    ports = [sock.getsockname()[1] for sock in dead_sockets]
    extra = proxy_config(*backends, *ports, errorlog)
    conf.write_text(config_text(base / "www", extra, ("mod_proxy",)))
    with WorkerProcess(conf) as worker:
        worker.errorlog = errorlog       # type: ignore[attr-defined]
        yield worker


def ask(worker: WorkerProcess, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return worker.request(method, path, {"Host": HOST, **(headers or {})}, body)


def echoed(worker: WorkerProcess, path: str, method: str = "GET", body: bytes | None = None,
           headers: dict[str, str] | None = None) -> dict:
    """What the echo backend saw, with its headers as a name -> value dict."""
    status, _, raw = ask(worker, method, path, body, headers)
    assert status == 200, raw[:200]
    seen = json.loads(raw)
    seen["header"] = {name.lower(): value for name, value in seen["headers"]}
    return seen


def raw_exchange(worker: WorkerProcess, data: bytes) -> bytes:
    with worker.socket() as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def errors(worker: WorkerProcess, text: str) -> int:
    return worker.errorlog.read_text().count(text)   # type: ignore[attr-defined]


def wait_for(predicate, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError("not reached in time")


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset: the client is gone, not just done sending."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# ------------------------------------------------------------ methods and bodies
def test_get_passes_the_target_and_the_query_as_sent(proxy):
    seen = echoed(proxy, "/echo/x%20y?a=1&b=%2F&c")
    assert (seen["method"], seen["target"], seen["version"]) == \
        ("GET", "/echo/x%20y?a=1&b=%2F&c", "HTTP/1.1")
    assert seen["header"]["host"] == HOST
    assert "content-length" not in seen["header"]


def test_the_target_goes_on_normalised(proxy):
    """As lighttpd passes it on under its default server.http-parseopts: an escaped
    slash in the path decoded, an unreserved character's escape decoded, the other
    escapes upper-cased (in the query too)."""
    seen = echoed(proxy, "/echo/a%2fb%7e?b=%2f%7e")
    assert seen["target"] == "/echo/a/b~?b=%2F~"


def test_head_gets_the_length_without_the_body(proxy):
    _, got, body = ask(proxy, "GET", "/echo")
    status, headers, empty = ask(proxy, "HEAD", "/echo")
    assert (status, empty) == (200, b"")
    assert headers["Content-Length"] == str(len(body) + 1)   # "HEAD" is one letter more


def test_post_with_a_content_length(proxy):
    seen = echoed(proxy, "/echo", "POST", b"x=1&y=2")
    assert (seen["method"], seen["body"]) == ("POST", "x=1&y=2")
    assert seen["header"]["content-length"] == "7"


def test_a_chunked_request_body_arrives_with_its_length(proxy):
    answer = raw_exchange(proxy, b"POST /echo HTTP/1.1\r\nHost: proxy.test\r\n"
                                 b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    seen = json.loads(answer.partition(b"\r\n\r\n")[2])
    header = {name.lower(): value for name, value in seen["headers"]}
    assert seen["body"] == "hello world"
    assert header["content-length"] == "11" and "transfer-encoding" not in header


def test_a_large_request_body_goes_from_its_temp_file(proxy):
    body = pattern(700_000)
    status, _, raw = ask(proxy, "POST", "/echo", body)
    assert status == 200
    assert json.loads(raw)["body"].encode("latin-1") == body


@pytest.mark.parametrize("mode", [1, 2])
def test_a_body_streamed_in_goes_on_as_it_comes(proxy, mode):
    """server.stream-request-body: a body of known length goes with it, one of
    unknown length (chunked from the client) goes chunked."""
    body = pattern(1_300_000)
    seen = echoed(proxy, f"/upload{mode}/echo", "POST", body)
    assert seen["body"].encode("latin-1") == body
    assert seen["header"]["content-length"] == str(len(body))
    with proxy.socket(timeout=10) as sock:
        sock.sendall(f"POST /upload{mode}/echo HTTP/1.1\r\nHost: {HOST}\r\n"
                     "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode())
        for start in range(0, len(body), 100_000):
            piece = body[start:start + 100_000]
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.sendall(b"0\r\n\r\n")
        answer = read_until_closed(sock)
    seen = json.loads(answer.partition(b"\r\n\r\n")[2])
    header = {name.lower(): value for name, value in seen["headers"]}
    assert seen["body"].encode("latin-1") == body
    assert header["transfer-encoding"] == "chunked" and "content-length" not in header


@pytest.mark.parametrize("path", ["/big", "/chunked", "/close", "/stream/big",
                                  "/stream/chunked", "/stream/close"])
def test_a_large_answer_arrives_whole(proxy, path):
    size = 1_300_000
    status, headers, body = ask(proxy, "GET", f"{path}?n={size}")
    assert status == 200 and body == pattern(size)
    if path.endswith("/big") or not path.startswith("/stream/"):
        assert headers["Content-Length"] == str(size)   # passed on, or counted whole
    else:
        assert headers["Transfer-Encoding"] == "chunked"


def test_an_empty_error_from_the_backend_is_its_own(proxy):
    status, headers, body = ask(proxy, "GET", "/status/404")
    assert (status, body, headers["Content-Type"]) == (404, b"", "text/plain")


def test_an_intercepted_error_gets_the_servers_page(proxy):
    """server.error-intercept: the backend's error gives way to the server's page; its
    success does not."""
    status, headers, body = ask(proxy, "GET", "/intercept/status/404")
    assert (status, headers["Content-Type"]) == (404, "text/html")
    assert b"<title>404 Not Found</title>" in body
    status, _, body = ask(proxy, "GET", "/intercept/big?n=3000")
    assert (status, body) == (200, pattern(3000))


def test_a_unix_socket_backend(proxy):
    assert echoed(proxy, "/unix/echo")["server"] == "U"


def test_an_extension_is_matched_at_the_end_of_the_path(proxy):
    assert echoed(proxy, "/some/file.pxy")["target"] == "/some/file.pxy"


# ------------------------------------------------------------------ header maps
def test_map_urlpath_and_host_on_the_way_in(proxy):
    seen = echoed(proxy, "/map/echo?q=1", headers={"Destination": "http://proxy.test/map/x"})
    assert seen["target"] == "/app/echo?q=1"
    assert seen["header"]["host"] == "backend.internal"
    assert seen["header"]["destination"] == "http://backend.internal/app/x"
    assert seen["header"]["x-host"] == HOST       # what the client asked for


def test_map_urlpath_and_host_on_the_way_out(proxy):
    connection = proxy.connection()
    connection.request("GET", "/map/headers", headers={"Host": HOST})
    answer = connection.getresponse()
    answer.read()
    connection.close()
    assert answer.getheader("Location") == "http://proxy.test/map/next?x=1"
    assert answer.getheader("Content-Location") == "/map/content"
    assert answer.headers.get_all("Set-Cookie") == ["a=1; Domain=proxy.test; Path=/map/",
                                                    "b=2; path=/app"]


def test_force_http10_sends_http10_and_closes(proxy):
    seen = echoed(proxy, "/old/echo")
    assert (seen["version"], seen["header"]["connection"]) == ("HTTP/1.0", "close")


def test_replace_http_host_sends_the_backend_label(proxy):
    seen = echoed(proxy, "/label/echo")
    assert seen["header"]["host"] == "backend.label"
    assert seen["header"]["x-forwarded-host"] == HOST


def test_remap_unit_cases():
    options = HeaderOptions(urlpaths=(("/a/", "/b/"),),
                            hosts_request=(("-", "in.internal"),),
                            hosts_response=(("in.internal", "-"), ("other", "")),
                            https_remap=True)
    remap = Remap(options, "front.example", https=True)
    assert remap.uri("https://front.example/a/x", True) == "http://in.internal/b/x"
    assert remap.uri("http://in.internal/b/y", False) == "https://front.example/a/y"
    assert remap.uri("http://other/b/y", False) == "http://other/a/y"
    assert remap.uri("http://in.internal", False) == "https://front.example/"
    assert remap.uri("mailto:x", False) == "mailto:x"
    assert remap.set_cookie('s=1; domain=.in.internal; path="/b/z"; Secure') == \
        's=1; domain=.front.example; path="/a/z"; Secure'


# ------------------------------------------------------------ forwarding headers
def test_forwarded_and_x_forwarded_headers(proxy):
    seen = echoed(proxy, "/fwd/echo", headers={"X-Forwarded-For": "10.0.0.1, 10.0.0.2"})
    header = seen["header"]
    assert header["forwarded"] == (f'for="10.0.0.1", for="10.0.0.2", for=127.0.0.1;'
                                   f'by="127.0.0.1:{proxy.port}";proto=http;'
                                   f'host="{HOST}"')
    assert header["x-forwarded-for"] == "10.0.0.1, 10.0.0.2, 127.0.0.1"
    assert (header["x-host"], header["x-forwarded-host"], header["x-forwarded-proto"]) == \
        (HOST, HOST, "http")


def test_a_forwarded_header_from_the_client_is_extended(proxy):
    header = echoed(proxy, "/fwd/echo", headers={"Forwarded": "for=192.0.2.1"})["header"]
    assert header["forwarded"].startswith("for=192.0.2.1, for=127.0.0.1;by=")


def test_without_proxy_forwarded_there_is_no_forwarded_header(proxy):
    header = echoed(proxy, "/echo")["header"]
    assert "forwarded" not in header and header["x-forwarded-for"] == "127.0.0.1"


# --------------------------------------------------------------- hop-by-hop
def test_hop_by_hop_request_headers_stay_here(proxy):
    header = echoed(proxy, "/echo", headers={
        "Connection": "keep-alive, X-Private", "X-Private": "secret", "Keep-Alive": "300",
        "TE": "trailers", "Proxy-Connection": "keep-alive", "Proxy": "http://evil",
        "Upgrade": "websocket", "X-Kept": "yes"})["header"]
    for name in ("x-private", "keep-alive", "te", "proxy-connection", "proxy", "upgrade",
                 "connection"):
        assert name not in header, name
    assert header["x-kept"] == "yes"


def test_hop_by_hop_response_headers_stay_there(proxy):
    _, headers, _ = ask(proxy, "GET", "/hop")
    lower = {name.lower() for name in headers}
    assert "x-hop" not in lower and "keep-alive" not in lower
    assert headers["X-End-To-End"] == "kept"


UPGRADE = (b"GET /ws/upgrade HTTP/1.1\r\nHost: proxy.test\r\nConnection: Upgrade\r\n"
           b"Upgrade: shout\r\n\r\n")


def read_until(sock: socket.socket, ending: bytes, seconds: float = 5.0) -> bytes:
    data = b""
    deadline = time.monotonic() + seconds
    while not data.endswith(ending) and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_an_upgrade_turns_into_a_tunnel_both_ways(proxy):
    with proxy.socket() as sock:
        sock.sendall(UPGRADE + b"first words ")
        head = read_until(sock, b"FIRST WORDS ")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"\r\nUpgrade: shout\r\n" in head and b"\r\nConnection: upgrade\r\n" in head
        sock.sendall(b"and more")
        assert read_until(sock, b"AND MORE") == b"AND MORE"
        sock.shutdown(socket.SHUT_WR)       # passed on: the backend ends, and so do we
        assert read_until_closed(sock) == b""


def test_a_tunnel_carries_a_megabyte_each_way(proxy):
    data = pattern(1024 * 1024)
    with proxy.socket() as sock:
        sock.sendall(UPGRADE)
        read_until(sock, b"\r\n\r\n")
        sender = threading.Thread(target=sock.sendall, args=(data,))
        sender.start()
        echoed_back = b""
        while len(echoed_back) < len(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            echoed_back += chunk
        sender.join(10)
    assert echoed_back == data.upper()


def test_an_upgrade_not_allowed_goes_without_its_upgrade_header(proxy):
    status, _, body = ask(proxy, "GET", "/upgrade",
                          headers={"Connection": "Upgrade", "Upgrade": "shout"})
    assert (status, body) == (200, b"not asked to upgrade\n")


# -------------------------------------------------------------------- balancing
def test_round_robin_spreads_over_both_backends(proxy):
    servers = [echoed(proxy, "/rr/echo")["server"] for _ in range(4)]
    assert servers in (["A", "B", "A", "B"], ["B", "A", "B", "A"])


def test_hash_sends_a_url_to_the_same_backend(proxy):
    first = {path: echoed(proxy, f"/hash/{path}")["server"] for path in range(20)}
    again = {path: echoed(proxy, f"/hash/{path}")["server"] for path in range(20)}
    assert first == again and set(first.values()) == {"A", "B"}


def test_sticky_keeps_a_client_on_one_backend(proxy):
    assert len({echoed(proxy, f"/sticky/{n}/echo")["server"] for n in range(10)}) == 1


# ------------------------------------------------------------------- failures
def test_a_backend_that_refuses_is_503_then_left_alone_for_its_disable_time(
        proxy, dead_sockets):
    dead_socket = dead_sockets[0]
    refused = errors(proxy, "establishing connection failed")
    assert ask(proxy, "GET", "/down/x")[0] == 503
    assert errors(proxy, "establishing connection failed") == refused + 1
    dead_socket.listen(8)                   # up now, but still disabled
    assert ask(proxy, "GET", "/down/x")[0] == 503
    dead_socket.setblocking(False)
    with pytest.raises(BlockingIOError):    # no connect was even tried
        dead_socket.accept()
    answered = threading.Thread(target=answer_once, args=(dead_socket,), daemon=True)
    answered.start()
    time.sleep(1.1)
    status, _, body = ask(proxy, "GET", "/down/x")
    answered.join(5)
    assert (status, body) == (200, b"back")


def answer_once(listener: socket.socket) -> None:
    listener.setblocking(True)
    listener.settimeout(10)
    sock, _ = listener.accept()
    with sock:
        sock.recv(65536)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nback")


def test_a_refusing_backend_is_skipped_for_the_next_one(proxy):
    before = errors(proxy, "establishing connection failed")
    servers = [echoed(proxy, "/failover/echo")["server"] for _ in range(3)]
    assert servers == ["A", "A", "A"]
    assert errors(proxy, "establishing connection failed") <= before + 1


def test_garbage_is_502(proxy):
    assert ask(proxy, "GET", "/garbage")[0] == 502


def test_a_backend_that_hangs_up_is_502(proxy):
    assert ask(proxy, "GET", "/hangup")[0] == 502


def test_a_slow_backend_is_504(proxy):
    start = time.monotonic()
    assert ask(proxy, "GET", "/timeout/slow?s=4")[0] == 504
    assert time.monotonic() - start >= 1


def test_a_backend_that_takes_no_body_is_504(proxy):
    status, _, _ = ask(proxy, "POST", "/timeout/stall?s=5", pattern(16 * 1024 * 1024))
    assert status == 504


# --------------------------------------------------------------- kept connections
def test_sequential_requests_use_one_backend_connection(proxy, backends):
    a = backends[0]
    ask(proxy, "GET", "/echo")                      # a kept connection exists
    before = a.stats()["accepted"]
    for _ in range(20):
        assert ask(proxy, "GET", "/echo")[0] == 200
    assert a.stats()["accepted"] == before + 1      # only the stats request's own


def test_keepalive_zero_connects_for_every_request(proxy, backends):
    a = backends[0]
    before = a.stats()["accepted"]
    for _ in range(5):
        assert echoed(proxy, "/nopool/echo")["header"]["connection"] == "close"
    assert a.stats()["accepted"] == before + 5 + 1


def test_a_dropped_kept_connection_is_retried_for_an_idempotent_request(proxy):
    assert ask(proxy, "GET", "/arm")[0] == 200      # the next request on it is hung up
    assert echoed(proxy, "/echo")["method"] == "GET"


def test_a_dropped_kept_connection_is_not_retried_for_a_post(proxy):
    assert ask(proxy, "POST", "/arm", b"x")[0] == 200
    assert ask(proxy, "POST", "/echo", b"y")[0] == 502


# ----------------------------------------------------------------- clients gone
def test_a_client_gone_mid_download_closes_the_backend_connection(proxy, backends):
    a = backends[0]
    before = a.stats()["cut_off"]
    sock = proxy.socket()
    sock.sendall(b"GET /stream/drip?n=3000 HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
    reset(sock)
    wait_for(lambda: a.stats()["cut_off"] == before + 1)


def test_a_client_that_reads_slowly_holds_the_backend_back(proxy):
    """server.stream-response-body = 2: the worker reads no further ahead of the
    client than BACKLOG_HIGH, so its memory does not grow with the answer."""
    size = 48 * 1024 * 1024
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(20)
        sock.connect(("127.0.0.1", proxy.port))
        sock.sendall(f"GET /stream/big?n={size} HTTP/1.1\r\nHost: {HOST}\r\n"
                     "Connection: close\r\n\r\n".encode())
        rss_before = resident(proxy.process.pid)
        time.sleep(1.0)
        grown = resident(proxy.process.pid) - rss_before
        data = read_until_closed(sock)
    assert grown < 16 * 1024 * 1024
    assert data.partition(b"\r\n\r\n")[2] == pattern(size)


def resident(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_aborted_requests_leave_no_fd_behind(proxy):
    fds = Path(f"/proc/{proxy.process.pid}/fd")
    ask(proxy, "GET", "/echo")                      # one kept connection, as after
    before = settled(lambda: len(os.listdir(fds)))  # earlier tests' ends are done
    for _ in range(4):
        clients = [proxy.socket() for _ in range(50)]
        for sock in clients:
            sock.sendall(b"GET /slow?s=2 HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        time.sleep(0.3)
        for sock in clients:
            reset(sock)
    ask(proxy, "GET", "/echo")
    wait_for(lambda: len(os.listdir(fds)) <= before, seconds=10)


def settled(measure, seconds: float = 5.0) -> int:
    """A figure once it stayed the same for a quarter of a second."""
    value = measure()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.25)
        again = measure()
        if again == value:
            return value
        value = again
    return value


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("setting, message", [
    ('proxy.balance = "random"', "has to be one of"),
    ('proxy.server = ( "/" => ( ( "host" => "127.0.0.1", "socket" => "/tmp/s" ) ) )',
     "either host/port or socket"),
    ('proxy.server = ( "/" => ( ( "host" => "127.0.0.1", "read_timeout" => 1 ) ) )',
     "a dash, not an underscore"),
    ('proxy.server = ( "/" => ( "host" => "127.0.0.1" ) )', "expected"),
    ('proxy.server = ( "/" => ( ( "port" => 80 ) ) )', "host or socket has to be set"),
    ('proxy.header = ( "map-everything" => ( "a" => "b" ) )', "unexpected key"),
    ('proxy.header = ( "upgrade" => "maybe" )', '"upgrade" => "enable" or "disable"'),
    ('proxy.forwarded = ( "when" => 1 )', "but not: when"),
])
def test_config_errors_say_what_is_wrong(tmp_path, setting, message):
    conf = tmp_path / "bad.conf"
    conf.write_text(config_text(tmp_path, setting, ("mod_proxy",)))
    with pytest.raises(ConfigError, match=message):
        load(str(conf))


def test_host_names_are_resolved_when_the_config_loads(tmp_path):
    conf = tmp_path / "named.conf"
    conf.write_text(config_text(tmp_path, 'proxy.server = ( "/" => ( ( "host" => '
                                          '"localhost", "port" => 8080 ) ) )', ("mod_proxy",)))
    (extension,) = load(str(conf)).settings["proxy.server"]
    (spec,) = extension.hosts
    assert spec.address[0] in ("127.0.0.1", "::1") and spec.name.startswith("tcp:")


@pytest.fixture(scope="module")
def connect_proxy(tmp_path_factory):
    """proxy.header "connect": CONNECT tunnels to a TCP backend that shouts back."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def shout() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data.upper())
    thread = threading.Thread(target=shout, daemon=True)
    thread.start()
    base = tmp_path_factory.mktemp("connect")
    (base / "www").mkdir()
    port = listener.getsockname()[1]
    extra = (f'server.errorlog = "{base}/error.log"\n'
             f'proxy.server = ( "" => ( ( "host" => "127.0.0.1", "port" => {port} ) ) )\n'
             '$HTTP["remoteip"] == "127.0.0.1" { proxy.header = ( "connect" => "enable" ) }\n')
    (base / "proxy.conf").write_text(config_text(base / "www", extra, ("mod_proxy",)))
    try:
        with WorkerProcess(base / "proxy.conf") as worker:
            yield worker
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_connect_tunnels_to_the_backend(connect_proxy):
    with connect_proxy.socket() as sock:
        sock.sendall(b"CONNECT 192.0.2.1:443 HTTP/1.1\r\nHost: 192.0.2.1:443\r\n\r\nhello ")
        head = read_until(sock, b"HELLO ")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and head.endswith(b"\r\n\r\nHELLO ")
        assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
        sock.sendall(b"tunnel")
        assert read_until(sock, b"TUNNEL") == b"TUNNEL"
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == b""


def test_connect_to_a_name_is_400_as_lighttpd(connect_proxy):
    answer = raw_exchange(connect_proxy, b"CONNECT example.org:443 HTTP/1.1\r\n"
                                         b"Host: example.org:443\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
