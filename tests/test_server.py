"""The real server process: start on a free loopback port, serve, reload, stop."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


class Server:
    def __init__(self, tmp_path: Path, extra: str = "", flags: tuple[str, ...] = ("-D",)):
        self.port = free_port()
        self.docroot = tmp_path / "www"
        self.docroot.mkdir(exist_ok=True)
        (self.docroot / "index.html").write_text("hello from pylighttpd\n")
        self.errorlog = tmp_path / "error.log"
        self.conf = tmp_path / "server.conf"
        self.write_config(extra)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "master.cli", *flags, "-f", str(self.conf)], cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def write_config(self, extra: str) -> None:
        self.conf.write_text(
            f'server.document-root = "{self.docroot}"\nserver.bind = "127.0.0.1"\n'
            f'server.port = {self.port}\nserver.max-worker = 2\n'
            f'server.errorlog = "{self.errorlog}"\n{extra}\n')

    def wait_serving(self) -> None:
        wait_until(lambda: get(self.port)[0] == 200)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


@pytest.fixture
def server(tmp_path):
    running = Server(tmp_path, 'server.tag = "first"')
    try:
        running.wait_serving()
        yield running
    finally:
        running.stop()


def test_serves_the_docroot_with_the_configured_tag(server):
    status, headers, body = get(server.port)
    assert (status, body) == (200, b"hello from pylighttpd\n")
    assert headers["Server"] == "first"


def test_hup_reload_applies_a_new_config(server):
    server.write_config('server.tag = "second"')
    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: get(server.port)[1].get("Server") == "second")


def test_hup_with_a_broken_config_keeps_serving_and_logs_why(server):
    server.write_config('server.tag = "broken')
    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in server.errorlog.read_text())
    log = server.errorlog.read_text()
    assert f"{server.conf}:6:14" in log
    assert get(server.port)[1]["Server"] == "first"


def test_term_stops_master_and_workers(server):
    assert server.stop() == 0
    with pytest.raises(OSError):
        get(server.port)


def test_a_killed_worker_is_replaced(server):
    children = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True,
                              text=True).stdout.split()
    assert len(children) == 2
    os.kill(int(children[0]), signal.SIGKILL)
    wait_until(lambda: len(set(subprocess.run(
        ["pgrep", "-P", str(server.process.pid)], capture_output=True,
        text=True).stdout.split()) - {children[0]}) == 2)
    assert get(server.port)[0] == 200


def test_port_in_use_is_a_one_line_error(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        running = Server(tmp_path)
        running.write_config(f"server.port := {port}")
        running.process.kill()
        running.process.wait()
        result = subprocess.run([sys.executable, "-m", "master.cli", "-D", "-f",
                                 str(running.conf)], cwd=REPO, capture_output=True,
                                text=True, timeout=20,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1
    assert "cannot listen on" in result.stderr and "Traceback" not in result.stderr


def test_idle_exit_stops_the_server(tmp_path):
    running = Server(tmp_path, flags=("-D", "-i", "1"))
    try:
        running.wait_serving()
        assert running.process.wait(timeout=15) == 0
    finally:
        running.stop()


def test_daemon_writes_and_removes_its_pidfile(tmp_path):
    pidfile = tmp_path / "server.pid"
    running = Server(tmp_path, f'server.pid-file = "{pidfile}"', flags=())
    assert running.process.wait(timeout=15) == 0  # the foreground parent returns
    running.wait_serving()
    pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip()))
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pidfile.exists())
