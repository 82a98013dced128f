"""mod_cgi in a real worker process: real scripts (sh, perl, python), real sockets.

Answers (GET, HEAD, POST with a length or chunked, Status, Location, local redirects,
X-Sendfile), the CGI environment, scripts that fail or hang, and what a script leaves
behind: no child process, no fd, no pipe once its request is over, whether it ended,
timed out or its client went away; a worker that stays small while a slow client
takes 50 MiB from a script, or while a client sends 8 MiB to a script that reads it as
it comes (server.stream-request-body 1 and 2); cgi.upgrade: a script switching
protocols relays bytes both ways with backpressure until its client ends, and a 101
that may not switch is its head alone.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from cgi_site import cgi_config, make_cgi_site, parse_answer
from server_util import WorkerProcess, read_until_closed, split_responses

MIB = 1024 * 1024
# cgi.upgrade for the scripts that switch protocols (and env.py, which tells what it
# saw); elsewhere (/stream1/) it stays off.  deaf.py passes its client's end on as
# tcp-fin-propagate's signal.
UPGRADES = """
$HTTP["url"] =~ "^/(upper|env)\\.py$" {
    cgi.upgrade = "enable"
    cgi.limits = ("read-timeout" => 20)
}
$HTTP["url"] == "/deaf.py" {
    cgi.upgrade = "enable"
    cgi.limits = ("read-timeout" => 20, "tcp-fin-propagate" => "TERM")
}
"""


@pytest.fixture(scope="module")
def cgi(tmp_path_factory):
    base = tmp_path_factory.mktemp("cgi")
    docroot = make_cgi_site(base)
    conf = base / "worker.conf"
    conf.write_text(cgi_config(base, docroot, f'server.errorlog = "{base}/error.log"\n'
                                              + UPGRADES))
    with WorkerProcess(conf) as worker:
        worker.base = base            # type: ignore[attr-defined]
        worker.errorlog = base / "error.log"    # type: ignore[attr-defined]
        yield worker


def request(worker: WorkerProcess, target: str, method: str = "GET",
            headers: tuple[str, ...] = (), body: bytes = b"",
            version: str = "1.1") -> tuple[int, dict[str, str], bytes]:
    """One request on a raw socket (Connection: close), its answer parsed."""
    lines = [f"{method} {target} HTTP/{version}", "Host: cgi.test", "Connection: close",
             *headers]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    return parse_answer(worker.raw(data, timeout=10), method)


def children(worker: WorkerProcess) -> list[psutil.Process]:
    return psutil.Process(worker.process.pid).children(recursive=True)


def wait_for(condition, seconds: float = 8.0) -> bool:
    """Poll `condition` until it holds or `seconds` pass (a bounded wait)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def open_fds(worker: WorkerProcess) -> int:
    return len(os.listdir(f"/proc/{worker.process.pid}/fd"))


def reset(sock: socket.socket) -> None:
    """Close with a TCP reset: the client is gone, not merely done sending."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def env_of(body: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in body.decode().splitlines() if "=" in line)


def log_during(worker: WorkerProcess, action) -> str:
    """What the error log gained while `action` ran (the worker's log is shared by
    all the tests of this module)."""
    before = worker.errorlog.stat().st_size
    action()
    with open(worker.errorlog, encoding="utf-8") as log:
        log.seek(before)
        return log.read()


# ------------------------------------------------------------------ answers
@pytest.mark.parametrize("script, answer", [
    ("hello.sh", b"hello from sh\n"), ("hello.pl", b"hello from perl\n"),
    ("hello.py", b"hello from python\n"), ("self.cgi", b"hello from python\n")])
def test_a_script_answers_a_get(cgi, script, answer):
    status, headers, body = request(cgi, f"/{script}")
    assert status == 200
    assert body == answer
    assert headers["content-type"] == "text/plain"
    assert headers["content-length"] == str(len(body))


def test_head_runs_the_script_and_sends_no_body(cgi):
    _, got, body = request(cgi, "/hello.sh")
    status, headers, head_body = request(cgi, "/hello.sh", method="HEAD")
    assert status == 200 and head_body == b""
    assert headers["content-length"] == got["content-length"] == str(len(body))


@pytest.mark.parametrize("size", [10_000, 300_000])    # a body in memory, in a temp file
@pytest.mark.parametrize("script", ["sum.py", "sum.pl"])
def test_post_with_a_length_reaches_stdin(cgi, script, size):
    data = os.urandom(size)
    status, _, body = request(cgi, f"/{script}", "POST", (f"Content-Length: {size}",), data)
    assert status == 200
    assert body.decode().split() == [
        "method=POST", f"content-length={size}", f"read={size}",
        hashlib.sha256(data).hexdigest()]


def test_a_chunked_post_reaches_stdin_with_its_length(cgi):
    data = os.urandom(200_000)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                       for part in (data[:70_000], data[70_000:]))
    status, _, body = request(cgi, "/sum.py", "POST", ("Transfer-Encoding: chunked",),
                              chunked + b"0\r\n\r\n")
    assert status == 200
    assert body.decode().split()[1:] == [
        "content-length=200000", "read=200000", hashlib.sha256(data).hexdigest()]


def test_the_cgi_environment(cgi):
    status, _, body = request(cgi, "/env.py/extra/path?a=1&b=%20", headers=(
        "X-Custom-Header: custom", "Proxy: http://evil.example/", "Content-Type: text/x"))
    assert status == 200
    env = env_of(body)
    docroot = str(cgi.base / "www")
    assert {k: env.get(k) for k in (
        "SCRIPT_NAME", "PATH_INFO", "PATH_TRANSLATED", "SCRIPT_FILENAME", "DOCUMENT_ROOT",
        "QUERY_STRING", "REQUEST_URI", "REQUEST_METHOD", "SERVER_PROTOCOL",
        "GATEWAY_INTERFACE", "REDIRECT_STATUS", "REMOTE_ADDR", "SERVER_ADDR", "SERVER_NAME",
        "SERVER_PORT", "SERVER_SOFTWARE", "REQUEST_SCHEME", "CONTENT_LENGTH",
        "CONTENT_TYPE", "HTTP_X_CUSTOM_HEADER", "HTTP_HOST", "cwd")} == {
        "SCRIPT_NAME": "/env.py", "PATH_INFO": "/extra/path",
        "PATH_TRANSLATED": docroot + "/extra/path",
        "SCRIPT_FILENAME": docroot + "/env.py", "DOCUMENT_ROOT": docroot,
        "QUERY_STRING": "a=1&b=%20", "REQUEST_URI": "/env.py/extra/path?a=1&b=%20",
        "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1",
        "GATEWAY_INTERFACE": "CGI/1.1", "REDIRECT_STATUS": "200",
        "REMOTE_ADDR": "127.0.0.1", "SERVER_ADDR": "127.0.0.1", "SERVER_NAME": "cgi.test",
        "SERVER_PORT": str(cgi.port), "SERVER_SOFTWARE": "cgitest",
        "REQUEST_SCHEME": "http", "CONTENT_LENGTH": "0", "CONTENT_TYPE": "text/x",
        "HTTP_X_CUSTOM_HEADER": "custom", "HTTP_HOST": "cgi.test", "cwd": docroot}
    assert int(env["REMOTE_PORT"]) > 0
    assert "HTTP_PROXY" not in env and "HTTPS" not in env      # httpoxy; plain http


def test_status_header_sets_the_status(cgi):
    status, headers, body = request(cgi, "/status.pl")
    assert (status, headers["x-extra"], body) == (418, "yes", b"teapot\n")
    assert "status" not in headers


def test_a_location_elsewhere_is_a_302(cgi):
    status, headers, body = request(cgi, "/location.sh?http://example.com/x")
    assert (status, headers["location"], body) == (302, "http://example.com/x", b"")


def test_a_local_location_is_answered_from_that_url(cgi):
    status, headers, body = request(cgi, "/location.sh?/target.txt")
    assert status == 200 and body == b"the target of a local redirect\n"
    assert "location" not in headers


def test_a_script_runs_for_every_request_even_when_it_redirects_to_a_file(cgi):
    """The file's answer is one the answer cache would keep: never for the script's
    URL, whose next request must run the script again."""
    runs = cgi.base / "runs.log"
    for _ in range(3):
        assert request(cgi, "/counted.sh")[2] == b"the target of a local redirect\n"
    assert runs.read_text() == "run\n" * 3


@pytest.mark.parametrize("target, redirected", [
    ("/location.sh?/env.py/more?x=1",                   # a local Location
     ("/env.py/more?x=1", "200", "/env.py", "/more", "x=1")),
    ("/eh404/missing?q=1",                              # server.error-handler-404
     ("/env.py", "404", "/env.py", None, "")),
])
def test_a_script_reached_by_an_internal_redirect_sees_the_first_uri(cgi, target,
                                                                       redirected):
    status, _, body = request(cgi, target)
    env = env_of(body)
    assert status == 200 and env["REQUEST_URI"] == target
    assert (env["REDIRECT_URI"], env["REDIRECT_STATUS"], env["SCRIPT_NAME"],
            env.get("PATH_INFO"), env["QUERY_STRING"]) == redirected


def test_a_location_back_to_the_script_is_not_followed(cgi):
    status, headers, _ = request(cgi, "/location.sh?/location.sh")
    assert (status, headers["location"]) == (302, "/location.sh")


def test_a_streamed_answer_keeps_the_length_its_script_gave(cgi):
    """Its head went out before its body came: delimited by its length, not chunked."""
    status, headers, body = request(cgi, "/paced/length_later.sh")
    assert (status, body) == (200, b"hello")
    assert headers["content-length"] == "5" and "transfer-encoding" not in headers


def test_x_sendfile_sends_the_file_under_the_docroot(cgi):
    path = cgi.base / "sendable" / "file.txt"
    status, headers, body = request(cgi, f"/sendfile.sh?{path}")
    assert status == 200 and body == path.read_bytes()
    assert headers["content-type"] == "text/x-sent"
    assert "x-sendfile" not in headers and "etag" in headers


def test_x_sendfile_outside_its_docroot_is_refused(cgi):
    outside = cgi.base / "www" / "index.html"
    status, _, body = request(cgi, f"/sendfile.sh?{outside}")
    assert status == 403 and b"the index" not in body
    traversal = f"{cgi.base}/sendable/../www/index.html"
    assert request(cgi, f"/sendfile.sh?{traversal}")[0] == 403
    assert "not under configured x-sendfile-docroot" in cgi.errorlog.read_text()


def test_x_sendfile_of_a_missing_file_is_404(cgi):
    assert request(cgi, f"/sendfile.sh?{cgi.base}/sendable/missing")[0] == 404


def test_x_sendfile2_of_a_cgi_is_an_ordinary_header(cgi):
    status, headers, body = request(cgi, f"/sendfile2.sh?{cgi.base}/sendable/file.txt")
    assert (status, body) == (200, b"own body")
    assert headers["x-sendfile2"].endswith("file.txt 0-3")


@pytest.mark.parametrize("script, status, body", [
    ("nohead.sh", 200, b"a body without a head\n"),
    ("length.sh", 200, b"hello"),                   # cut at its own Content-Length
    ("chunked.pl", 200, b"hello world"),            # its chunks decoded
    ("lf.sh", 201, b"created with bare newlines\n"),
    ("short.sh", 502, None),                        # shorter than its Content-Length
    ("silent.sh", 500, None),                       # exits without a word
])
def test_what_scripts_send_is_read_as_lighttpd_reads_it(cgi, script, status, body):
    got_status, _, got_body = request(cgi, f"/{script}")
    assert got_status == status
    if body is not None:
        assert got_body == body


def test_a_script_that_cannot_run_is_500_and_nothing_else_is_hurt(cgi):
    """The exec fails (no x bit): 500, and no signal goes anywhere (a script that
    never started has no session to end)."""
    assert request(cgi, "/noexec.sh")[0] == 500
    assert request(cgi, "/noexec.sh", "POST", ("Content-Length: 5",), b"hello")[0] == 500
    log = cgi.errorlog.read_text()
    assert "cannot run" in log and "answering /noexec.sh" not in log   # no module bug
    assert request(cgi, "/hello.sh")[0] == 200


def test_execute_x_only_leaves_a_file_without_x_bit_alone(cgi):
    status, headers, body = request(cgi, "/xonly/plain.sh")
    assert status == 200 and body.startswith(b"#!/bin/sh")     # the file, not its run


def test_stderr_lines_go_to_the_error_log(cgi):
    assert request(cgi, "/stderr.sh")[2] == b"ok\n"
    log = cgi.errorlog.read_text()
    assert "stderr.sh: first line to stderr" in log
    assert "stderr.sh: second line to stderr" in log


# ------------------------------------------------------- ends and leftovers
def test_a_hanging_script_is_killed_at_the_read_timeout(cgi):
    start = time.monotonic()
    status, _, _ = request(cgi, "/hang.sh")
    assert status == 504
    assert 1.0 <= time.monotonic() - start < 5.0       # read-timeout 1, checked each second
    assert "read timeout on CGI" in cgi.errorlog.read_text()
    assert wait_for(lambda: not children(cgi)), "the script (or its sleep) survived"


def test_a_timeout_before_anything_went_out_is_504(cgi):
    """The script's head was read, but its answer is kept whole (the default
    server.stream-response-body): nothing went out, so the timeout is a 504."""
    status, _, body = request(cgi, "/stalls.sh")
    assert status == 504 and b"504" in body
    assert wait_for(lambda: not children(cgi))


def _cut_answer(cgi, target: str) -> tuple[bytes, str]:
    """The head and body a client got before the connection closed, and the lines
    the error log gained meanwhile."""
    answer = []

    def fetch() -> None:
        with cgi.socket(timeout=10) as sock:
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: cgi.test\r\n\r\n".encode())
            answer.append(read_until_closed(sock))
    log = log_during(cgi, fetch)
    return answer[0], log


def test_a_timeout_after_the_head_went_out_truncates_the_answer(cgi):
    data, log = _cut_answer(cgi, "/paced/stalls.sh")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding: chunked" in head
    assert len(body) > 256 * 1024 and not body.endswith(b"0\r\n\r\n")
    assert "read timeout on CGI" in log
    assert "internal error" not in log and "Traceback" not in log     # no module bug
    assert wait_for(lambda: not children(cgi))


def test_a_script_ending_short_of_its_length_once_streamed_cuts_the_answer(cgi):
    data, log = _cut_answer(cgi, "/paced/cut.sh")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: 1000000" in head
    assert len(body) == 300_000
    assert log.count("\n") == 1 and "ended before the end of its answer" in log


def test_a_client_gone_mid_answer_kills_the_script(cgi):
    sock = cgi.socket(timeout=10)
    sock.sendall(b"GET /paced/stalls.sh HTTP/1.1\r\nHost: cgi.test\r\n\r\n")
    received = 0
    while received < 128 * 1024:
        received += len(sock.recv(65536))
    assert children(cgi), "the script should still run while its client reads"
    reset(sock)
    assert wait_for(lambda: not children(cgi)), "the script outlived its client"


def _disconnect_midway(port: int, target: str) -> None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: cgi.test\r\n\r\n".encode())
    if target.startswith("/paced/"):
        sock.recv(65536)                # the answer is under way
    reset(sock)


def test_clients_that_go_away_leave_no_fd_pipe_or_child(cgi):
    request(cgi, "/hello.sh")           # whatever a first script opens for good
    before = open_fds(cgi)
    targets = ["/paced/flood.sh", "/hang.sh"] * 100
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda target: _disconnect_midway(cgi.port, target), targets))
    assert wait_for(lambda: not children(cgi) and open_fds(cgi) <= before, 15), \
        f"{len(children(cgi))} children, {open_fds(cgi)} fds (were {before})"
    assert request(cgi, "/hello.sh")[0] == 200


@pytest.mark.parametrize("where", ["/", "/paced/"])    # kept on disk; script paused
def test_a_slow_client_of_a_big_answer_keeps_the_worker_small(cgi, where):
    worker = psutil.Process(cgi.process.pid)
    size = 50 * MIB
    most_rss = 0
    received = 0
    with cgi.socket(timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET {where}flood.sh?{size} HTTP/1.0\r\n\r\n".encode())
        time.sleep(0.3)                 # the script runs ahead of its reader
        while True:
            data = sock.recv(64 * 1024)
            if not data:
                break
            received += len(data)
            if received % (4 * MIB) < len(data):
                most_rss = max(most_rss, worker.memory_info().rss)
                time.sleep(0.01)
    assert received > size
    assert most_rss < 64 * MIB


# ------------------------------------------------------ streamed request bodies
def _upload(cgi, target: str, data: bytes) -> tuple[bytes, int]:
    """POST `data` in pieces once the script runs (started by the request's head
    alone); the answer, and how much the worker's RSS grew at the most meanwhile."""
    worker = psutil.Process(cgi.process.pid)
    assert wait_for(lambda: not children(cgi))
    before = most = worker.memory_info().rss
    with cgi.socket(timeout=20) as sock:
        sock.sendall(f"POST {target} HTTP/1.1\r\nHost: cgi.test\r\nConnection: close\r\n"
                     f"Content-Length: {len(data)}\r\n\r\n".encode())
        assert wait_for(lambda: children(cgi)), "the script waits for the whole body"
        piece = 256 * 1024
        for start in range(0, len(data), piece):
            sock.sendall(data[start:start + piece])
            most = max(most, worker.memory_info().rss)
        return read_until_closed(sock), most - before


@pytest.mark.parametrize("mode", [1, 2])
def test_an_upload_streams_into_the_script_as_it_arrives(cgi, mode):
    """server.stream-request-body 1 (the body parked on disk) and 2 (the client held
    back while the script lags): the script has all of it, the worker stays small."""
    data = os.urandom(8 * MIB)
    raw, growth = _upload(cgi, f"/stream{mode}/sum.py", data)
    status, _, body = parse_answer(raw)
    assert status == 200
    assert body.decode().split() == [
        "method=POST", f"content-length={len(data)}", f"read={len(data)}",
        hashlib.sha256(data).hexdigest()]
    assert growth < 4 * MIB


def test_a_script_answers_while_its_body_still_arrives(cgi):
    """/duplex/: each piece sent comes back before the next one is sent."""
    pieces = [os.urandom(1000) for _ in range(5)]
    got = bytearray()
    with cgi.socket(timeout=10) as sock:
        sock.sendall(b"POST /duplex/echo.py HTTP/1.1\r\nHost: cgi.test\r\n"
                     b"Content-Length: 5000\r\n\r\n")
        for piece in pieces:
            sock.sendall(piece)
            while piece not in got:
                data = sock.recv(65536)
                assert data, "closed before the echo came"
                got += data
        while not got.endswith(b"0\r\n\r\n"):
            got += sock.recv(65536)
    assert got.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding: chunked" in got


def test_a_chunked_body_still_arriving_is_411(cgi):
    """A CGI must be told CONTENT_LENGTH: a chunked body streamed in has none yet
    (lighttpd's answer); the script is not started."""
    assert wait_for(lambda: not children(cgi))
    with cgi.socket(timeout=10) as sock:
        sock.sendall(b"POST /stream1/sum.py HTTP/1.1\r\nHost: cgi.test\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 411 ") and b"Connection: close" in answer
    assert not children(cgi)


def test_a_script_answering_before_its_body_came_ends_the_connection(cgi):
    """/stream2/hello.sh never reads its stdin: the rest of the body is not read into
    the worker (server.stream-request-body 2 keeps it in memory) but dropped with the
    connection after the answer, as lighttpd does."""
    with cgi.socket(timeout=5) as sock:
        sock.sendall(b"POST /stream2/hello.sh HTTP/1.1\r\nHost: cgi.test\r\n"
                     b"Content-Length: 100000000\r\n\r\n" + bytes(100_000))
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"Connection: close" in answer
    assert answer.endswith(b"hello from sh\n")


# ------------------------------------------------------------------ cgi.upgrade
def _upgrade(worker: WorkerProcess, target: str, first: bytes = b"") -> tuple[socket.socket, bytes, bytes]:
    """Ask `target` to switch protocols (sending `first` right after the request); the
    socket, the answer's head, and what followed it so far."""
    sock = worker.socket(timeout=10)
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: cgi.test\r\nConnection: Upgrade\r\n"
                 "Upgrade: upper\r\n\r\n".encode() + first)
    data = b""
    while b"\r\n\r\n" not in data:
        more = _receive(sock, len(data) + 1, data)
        assert more != data, f"closed before the head: {data!r}"
        data = more
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, head, rest


def _receive(sock: socket.socket, size: int, have: bytes = b"") -> bytes:
    """`have` and what comes after it, until there are `size` bytes (each wait bounded
    by the socket's timeout); fewer only if the server closed."""
    pieces, missing = [have], size - len(have)
    while missing > 0 and (piece := sock.recv(65536)):
        pieces.append(piece)
        missing -= len(piece)
    return b"".join(pieces)


def test_a_script_switching_protocols_relays_both_ways_until_the_client_ends(cgi):
    sock, head, rest = _upgrade(cgi, "/upper.py", b"early ")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 101 Switching Protocols"
    assert {"Upgrade: upper", "Connection: upgrade", "X-Asked: upper/Upgrade"} <= set(lines)
    assert not any(line.lower().startswith(("content-length", "transfer-encoding"))
                   for line in lines)
    assert _receive(sock, 6, rest) == b"EARLY "
    sock.sendall(b"hello")
    assert _receive(sock, 5) == b"HELLO"
    big = os.urandom(2 * MIB).hex().encode()        # more than any pipe holds
    sock.sendall(b"x")
    assert _receive(sock, 1) == b"X"
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(sock.sendall, big)
        echoed = _receive(sock, len(big))
        sent.result(timeout=10)
    assert echoed == big.upper()
    sock.shutdown(socket.SHUT_WR)
    assert read_until_closed(sock) == b""
    sock.close()
    assert wait_for(lambda: not children(cgi)), "the script outlived its tunnel"


def test_tcp_fin_propagate_signals_a_script_whose_client_ended_the_tunnel(cgi):
    sock, head, rest = _upgrade(cgi, "/deaf.py")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert children(cgi)
    sock.shutdown(socket.SHUT_WR)       # tcp-fin-propagate: its signal ends the script
    assert rest + read_until_closed(sock) == b""
    sock.close()
    assert wait_for(lambda: not children(cgi), 2.0), "tcp-fin-propagate sent no signal"


def test_a_tunnel_whose_client_does_not_read_holds_the_client_back(cgi):
    """Backpressure both ways: the script's answers fill the client's socket, the
    worker stops reading the script, the script stops reading its stdin, that pipe
    fills, and the worker stops reading the client, whose sends then block; the
    worker stays small meanwhile."""
    worker = psutil.Process(cgi.process.pid)
    sock, head, _ = _upgrade(cgi, "/upper.py")
    assert head.startswith(b"HTTP/1.1 101 ")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    before = worker.memory_info().rss
    sock.setblocking(False)
    sent, stalled_since = 0, None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            sent += sock.send(b"x" * 65536)
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 1.0:
                break
            time.sleep(0.02)
    grown = worker.memory_info().rss - before
    reset(sock)
    assert stalled_since is not None, f"the client was never held back ({sent} bytes)"
    assert sent < 64 * MIB and grown < 16 * MIB, (sent, grown)
    assert wait_for(lambda: not children(cgi)), "the script outlived its client"


def test_an_upgrade_answered_otherwise_is_an_ordinary_answer(cgi):
    sock, head, rest = _upgrade(cgi, "/env.py")
    sock.sendall(b"GET /hello.sh HTTP/1.1\r\nHost: cgi.test\r\nConnection: close\r\n\r\n")
    data = head + b"\r\n\r\n" + rest + read_until_closed(sock)
    sock.close()
    answers = split_responses(data)
    assert [status for status, _, _ in answers] == [200, 200]
    env = env_of(answers[0][2])
    assert env["HTTP_UPGRADE"] == "upper" and env["HTTP_CONNECTION"] == "Upgrade"
    assert env["CONTENT_LENGTH"] == "0"
    assert wait_for(lambda: not children(cgi))


def test_without_cgi_upgrade_a_101_switches_nothing(cgi):
    """lighttpd drops Upgrade (the script sees no HTTP_UPGRADE) and sends a 101 that
    switches nothing as its head alone; the connection goes on in HTTP/1."""
    sock = cgi.socket(timeout=10)
    sock.sendall(b"GET /stream1/upper.py HTTP/1.1\r\nHost: cgi.test\r\n"
                 b"Connection: Upgrade, keep-alive\r\nUpgrade: upper\r\n\r\n"
                 b"GET /hello.sh HTTP/1.1\r\nHost: cgi.test\r\n"
                 b"Connection: close\r\n\r\n")
    data = read_until_closed(sock)
    sock.close()
    first, _, rest = data.partition(b"\r\n\r\n")
    lines = first.decode().split("\r\n")
    assert lines[0].split(" ", 2)[1] == "101"
    assert "X-Asked: none/Upgrade, keep-alive" in lines
    assert rest.startswith(b"HTTP/1.1 200 OK"), rest[:200]
    assert wait_for(lambda: not children(cgi))
