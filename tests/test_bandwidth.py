"""Bandwidth limits: connection.kbytes-per-second slows each connection under its block
to that many KiB a second, server.kbytes-per-second all connections under its block
together (per worker, as per lighttpd process); other URLs go at full speed.  Real
downloads with curl and http.client, over HTTP/1.1 and HTTP/2, timed: a budget is
spent at once and renewed at the server's tick, once a second, so 96 KiB at 32 KiB/s
takes more than one tick's interval and about two seconds."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from procutil import run_cli
from serverproc import Server, get

KIB = 1024
LIMITS = """
server.modules = ("mod_setenv")
server.max-worker := 1
$HTTP["url"] =^ "/slow/" { connection.kbytes-per-second = 32 }
$HTTP["url"] =^ "/shared/" { server.kbytes-per-second = 32 }
$HTTP["url"] =^ "/told/" {
  setenv.add-response-header = ( "X-LIGHTTPD-KBytes-per-second" => "32", "X-Sendfile" => "/x" )
}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("bandwidth")
    running = Server(base, LIMITS)
    for name, size in (("fast.bin", 96), ("slow/f.bin", 96), ("shared/a.bin", 48),
                       ("shared/b.bin", 48), ("told/f.bin", 96)):
        path = running.docroot / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes(range(256)) * (size * KIB // 256))
    try:
        running.wait_serving()
        yield running
    finally:
        running.stop()


def _timed_get(port: int, path: str) -> tuple[float, int, int]:
    start = time.monotonic()
    status, _, body = get(port, path)
    return time.monotonic() - start, status, len(body)


def test_the_keys_are_acted_on(server):
    checked = run_cli("-tt", "-f", str(server.conf))
    assert (checked.returncode, checked.stderr) == (0, "")


def test_a_limited_url_downloads_at_its_rate_and_others_at_full_speed(server):
    elapsed, status, size = _timed_get(server.port, "/slow/f.bin")
    assert (status, size) == (200, 96 * KIB)
    assert 1.0 <= elapsed <= 6          # 32 KiB now and at each of the next two ticks
    elapsed, status, size = _timed_get(server.port, "/fast.bin")
    assert (status, size) == (200, 96 * KIB) and elapsed < 1.5


def test_an_answer_field_slows_its_own_answer_and_is_never_sent(server):
    """X-LIGHTTPD-KBytes-per-second (a backend's, or set by mod_setenv as here) limits
    the answer that carries it, as lighttpd's http_response_omit_header does; it and
    X-Sendfile stay the server's; the connection's next answer goes at full speed."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        timings = []
        for path in ("/told/f.bin", "/fast.bin"):
            start = time.monotonic()
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            timings.append(time.monotonic() - start)
            assert (response.status, len(body)) == (200, 96 * KIB)
            assert response.getheader("X-LIGHTTPD-KBytes-per-second") is None
            assert response.getheader("X-Sendfile") is None
    finally:
        connection.close()
    assert 1.0 <= timings[0] <= 6 and timings[1] < 1.5


def test_a_shared_limit_holds_for_its_connections_together(server):
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda name: _timed_get(server.port, f"/shared/{name}"),
                                ("a.bin", "b.bin")))
    assert [(status, size) for _, status, size in results] == [(200, 48 * KIB)] * 2
    assert max(elapsed for elapsed, _, _ in results) >= 1.0   # 96 KiB: three seconds' worth


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_http2_streams_keep_the_limit(server):
    start = time.monotonic()
    done = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null",
                           "-w", "%{http_version} %{http_code} %{size_download}",
                           f"http://127.0.0.1:{server.port}/slow/f.bin"],
                          capture_output=True, text=True, timeout=20)
    elapsed = time.monotonic() - start
    assert done.stdout == f"2 200 {96 * KIB}"
    assert 1.0 <= elapsed <= 6
    head = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-D",
                           "-", f"http://127.0.0.1:{server.port}/told/f.bin"],
                          capture_output=True, text=True, timeout=20).stdout.lower()
    assert head.startswith("http/2 200") and "x-sendfile" not in head and \
        "x-lighttpd" not in head
