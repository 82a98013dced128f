"""Zero-downtime reloads hold for the gateway modules: a real master with two workers,
mod_proxy to a real backend and mod_cgi running sh scripts.

HUPs every second under proxied and CGI load lose no request; a worker that a HUP
sends draining still finishes what it holds (a CGI script sleeping 3 s, a proxied
answer that the backend trickles out over 3 s), with every byte, before it exits.
Every wait is bounded: a hang fails as a wait that expires.
"""

from __future__ import annotations

import http.client
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from load_util import Load
from procutil import REPO
from serverproc import Server, get, wait_until

sys.path.insert(0, str(REPO / "tests" / "worker"))

from proxy_backends import BackendProcess, pattern  # noqa: E402

HUPS = 8
PROXIED_SIZE = 20000
HELLO = b"hello from a script\n"
SLOW_SECONDS = 3
DRIP_KIB = 300            # /drip sends a KiB each 10 ms: 3 s
SLOW_CGI_BODY = b"begin\n" + b"".join(b"%d\n" % n for n in range(1, 20001))
ANSWER_TIMEOUT = 30.0


def settings(app_port: int, slow_port: int, tag: str) -> str:
    return ('server.modules = ("mod_proxy", "mod_cgi")\n'
            'cgi.assign = (".sh" => "/bin/sh")\n'
            f'proxy.server = ( "/app/" => (( "host" => "127.0.0.1", "port" => {app_port} )),\n'
            f'  "/slow/" => (( "host" => "127.0.0.1", "port" => {slow_port} )) )\n'
            f'server.tag = "{tag}"\n')


class GatewayServer:
    """The server, its two backends (one for the load, one for the slow request only:
    a connection to it is that request's) and the marker a slow script leaves."""

    def __init__(self, base: Path) -> None:
        self.app = BackendProcess("app", base)
        self.slow = BackendProcess("slow", base)
        self.marker = base / "slow-script-started"
        self.server = Server(base, self.settings("start"))
        write_scripts(self.server.docroot / "cgi", self.marker)

    def settings(self, tag: str) -> str:
        return settings(self.app.port, self.slow.port, tag)

    def reload(self, tag: str) -> None:
        self.server.write_config(self.settings(tag))
        self.server.process.send_signal(signal.SIGHUP)

    def serves_as(self, tag: str) -> bool:
        return get(self.server.port)[1].get("Server") == tag

    def stop(self) -> None:
        try:
            self.server.stop()
        finally:
            self.app.stop()
            self.slow.stop()


def write_scripts(directory: Path, marker: Path) -> None:
    directory.mkdir()
    (directory / "hello.sh").write_text(
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhello from a script\\n'\n")
    (directory / "slow.sh").write_text(
        f"#!/bin/sh\n: > '{marker}'\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n"
        f"echo begin\nsleep {SLOW_SECONDS}\nseq 1 20000\n")


@pytest.fixture(scope="module")
def gateways(tmp_path_factory):
    running = GatewayServer(tmp_path_factory.mktemp("reload-gateways"))
    try:
        running.server.wait_serving()
        yield running
    finally:
        running.stop()


def error_log(server: Server) -> str:
    return server.errorlog.read_text(errors="replace") if server.errorlog.exists() else ""


def test_a_hup_every_second_under_proxied_and_cgi_load_fails_no_request(gateways):
    server = gateways.server
    reloads_before = error_log(server).count("reloaded ")
    with Load(server.port, pattern(PROXIED_SIZE), path=f"/app/big?n={PROXIED_SIZE}") as proxied, \
            Load(server.port, HELLO, path="/cgi/hello.sh") as cgi:
        for number in range(HUPS):
            gateways.reload(f"hup-{number}")
            time.sleep(1.0)
        wait_until(lambda: gateways.serves_as(f"hup-{HUPS - 1}"), timeout=30)
    reloads = error_log(server).count("reloaded ") - reloads_before
    for load in (proxied, cgi):
        assert load.result.failures == [] and load.result.retried_idle == 0
        assert load.result.ok > 20
    assert reloads >= HUPS // 2
    wait_until(lambda: len(server.children()) == 2, timeout=30)


def fetch(port: int, path: str) -> tuple[int, str | None, bytes]:
    """(status, Server header, body) of one GET on a new connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=ANSWER_TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Server"), response.read()
    finally:
        connection.close()


def a_worker_is_connected_to(server: Server, port: int) -> bool:
    return any(connection.raddr and connection.raddr.port == port
               for pid in server.children()
               for connection in psutil.Process(pid).net_connections(kind="tcp"))


def test_a_draining_worker_finishes_a_slow_script_and_a_slow_proxied_answer(gateways):
    server = gateways.server
    gateways.reload("before")
    wait_until(lambda: gateways.serves_as("before"), timeout=30)
    wait_until(lambda: len(server.children()) == 2, timeout=30)   # nothing else draining
    old_workers = server.children()
    gateways.marker.unlink(missing_ok=True)
    with ThreadPoolExecutor(2) as pool:
        script: Future = pool.submit(fetch, server.port, "/cgi/slow.sh")
        proxied: Future = pool.submit(fetch, server.port, f"/slow/drip?n={DRIP_KIB}")
        # both are held by a worker of the "before" generation when the HUP comes
        wait_until(gateways.marker.exists, timeout=10)
        wait_until(lambda: a_worker_is_connected_to(server, gateways.slow.port), timeout=10)
        gateways.reload("after")
        wait_until(lambda: gateways.serves_as("after"), timeout=30)
        assert script.result(timeout=ANSWER_TIMEOUT) == (200, "before", SLOW_CGI_BODY)
        assert proxied.result(timeout=ANSWER_TIMEOUT) == (200, "before",
                                                          b"d" * 1024 * DRIP_KIB)
    # the draining workers exit once they have nothing left to do
    wait_until(lambda: len(server.children()) == 2 and
               not set(server.children()) & set(old_workers), timeout=30)
