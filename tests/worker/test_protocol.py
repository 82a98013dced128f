"""HTTP/1.x handling: keep-alive, pipelining, limits, errors, timeouts, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from server_util import REPO, read_until_closed, split_responses
from sites import site, start_worker  # noqa: F401 (fixture)


def test_pipelined_requests_in_one_packet_are_answered_in_order(site):
    data = (b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /sub/ HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    responses = split_responses(site.raw(data))
    assert [r[0] for r in responses] == [200, 200, 404]
    assert responses[0][2] == b"hello from pylighttpd\n"
    assert responses[1][2] == b"sub index\n"
    assert responses[2][1]["connection"] == "close"
    assert "connection" not in responses[0][1]


def test_keep_alive_reuses_the_connection(site):
    connection = site.connection()
    try:
        for _ in range(3):
            connection.request("GET", "/index.html")
            response = connection.getresponse()
            assert response.status == 200 and response.read()
            assert response.getheader("Connection") is None
        first_sock = connection.sock
        connection.request("GET", "/sub/")
        connection.getresponse().read()
        assert connection.sock is first_sock
    finally:
        connection.close()


def test_http10_keep_alive_is_acknowledged(site):
    with site.socket() as sock:
        sock.sendall(b"GET /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head = sock.recv(65536)
        assert b"Connection: keep-alive" in head
        sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        rest = read_until_closed(sock)
    assert rest.startswith(b"HTTP/1.0 200 OK") and b"Connection: close" in rest


def test_garbage_is_400_and_closed(site):
    data = site.raw(b"garbage\r\n\r\n")
    assert data.startswith(b"HTTP/1.0 400 Bad Request")
    assert b"Connection: close" in data


def test_missing_host_on_http11_is_400(site):
    data = site.raw(b"GET /index.html HTTP/1.1\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 Bad Request")
    data = site.raw(b"GET /index.html HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.0 200 OK")


def test_bad_host_is_400(site):
    data = site.raw(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400")


def test_nul_in_url_is_400(site):
    assert site.raw(b"GET /index.html%00 HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 400")


def test_traversal_never_leaves_the_docroot(site):
    for target in (b"/../outside/passwd", b"/%2e%2e/outside/passwd", b"/..%2foutside/passwd",
                   b"/sub/../../outside/passwd", b"/./../outside/passwd",
                   b"//..//outside/passwd", b"/%2E%2E%2Foutside%2Fpasswd"):
        data = site.raw(b"GET " + target + b" HTTP/1.0\r\n\r\n")
        assert data.startswith(b"HTTP/1.0 404"), target
        assert b"root:x" not in data
    data = site.raw(b"GET /sub/../index.html HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.0 200") and data.endswith(b"hello from pylighttpd\n")


def test_body_over_max_request_size_is_413(site):
    data = site.raw(b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n"
                    + b"x" * 5000)
    assert data.startswith(b"HTTP/1.1 413 Payload Too Large")


def test_a_body_nobody_reads_is_answered_at_once_and_the_connection_closed(site):
    """As lighttpd: the static file answers without waiting for the body (no 100
    Continue either), and the connection closes after the answer, so the pipelined
    request behind the body is never mistaken for a part of it."""
    chunked = (b"POST /index.html HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n0\r\n\r\n"
               b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
               b"Connection: close\r\n\r\nabc")
    responses = split_responses(site.raw(chunked))
    assert [r[0] for r in responses] == [200]
    assert responses[0][1]["connection"] == "close"
    with site.socket() as sock:
        sock.sendall(b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 OK\r\n")


def test_oversized_header_is_431(site):
    data = site.raw(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.0 431")


def test_unsupported_version_is_505(site):
    data = site.raw(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n")
    assert data.startswith(b"HTTP/1.0 505") or data.startswith(b"HTTP/1.0 400")


def test_idle_keep_alive_connection_is_closed(tmp_path):
    with start_worker(tmp_path, "server.max-keep-alive-idle = 1") as worker:
        with worker.socket(timeout=6) as sock:
            sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n")
            started = time.monotonic()
            data = read_until_closed(sock)
            waited = time.monotonic() - started
        assert data.startswith(b"HTTP/1.1 200")
        assert 0.5 < waited < 4.5


def test_slow_request_headers_time_out(tmp_path):
    with start_worker(tmp_path, "server.max-read-idle = 1") as worker:
        with worker.socket(timeout=6) as sock:
            sock.sendall(b"GET /index.html HTTP/1.1\r\n")
            started = time.monotonic()
            assert read_until_closed(sock) == b""
            assert time.monotonic() - started < 4.5


@pytest.mark.parametrize("limit, answered", [(0, 1), (1, 2), (2, 3)])
def test_max_keep_alive_requests(tmp_path, limit, answered):
    """As lighttpd counts: the connection closes once more than `limit` requests came
    on it."""
    with start_worker(tmp_path, f"server.max-keep-alive-requests = {limit}") as worker:
        data = (b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n" * 4)
        responses = split_responses(worker.raw(data))
        assert len(responses) == answered
        assert responses[-1][1]["connection"] == "close"


def test_sigquit_finishes_in_flight_requests_then_exits(tmp_path):
    worker = start_worker(tmp_path)
    with worker.socket() as sock:
        sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\n")   # half a request
        time.sleep(0.2)
        worker.process.send_signal(signal.SIGQUIT)
        time.sleep(0.3)
        sock.sendall(b"\r\n")
        data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200") and b"Connection: close" in data
    # it exits by itself: a second SIGQUIT could meet it past its handlers, exiting
    assert worker.process.wait(timeout=10) == 0
    worker.stop()          # sends nothing to an exited process; closes its pipes


def test_sigterm_exits_at_once(tmp_path):
    worker = start_worker(tmp_path)
    idle = worker.socket()
    try:
        started = time.monotonic()
        assert worker.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 3
    finally:
        idle.close()


def test_idle_exit(tmp_path):
    worker = start_worker(tmp_path, idle_exit=1)
    assert worker.process.wait(timeout=8) == 0
    worker.stop()


def test_oneshot_over_a_pipe(tmp_path):
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "index.html").write_text("one shot\n")
    conf = tmp_path / "one.conf"
    conf.write_text(f'server.document-root = "{docroot}"\nindex-file.names = ("index.html")\n'
                    'server.modules = ("mod_indexfile", "mod_staticfile")\n')
    code = ("import sys; from master.configload import load; from worker.oneshot import "
            f"serve_stdin; sys.exit(serve_stdin(load({str(conf)!r})))")
    result = subprocess.run([sys.executable, "-c", code], input=b"GET / HTTP/1.0\r\n\r\n",
                            capture_output=True, timeout=20, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"HTTP/1.0 200 OK")
    assert result.stdout.endswith(b"\r\n\r\none shot\n")
