"""Start the real server process on a free loopback port, and talk to it."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from procutil import REPO


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
    def __init__(self, tmp_path: Path, extra: str = "", flags: tuple[str, ...] = ("-D",),
                 document_root: str | None = None, preexec_fn=None,
                 env: dict[str, str] | None = None):
        """`document_root` is the config's value when it differs from where the test
        puts files (inside a chroot); by default both are tmp_path/www.  `preexec_fn`
        runs in the server's process before it starts (a resource limit); `env` adds
        to its environment."""
        self.port = free_port()
        self.docroot = tmp_path / "www"
        self.docroot.mkdir(exist_ok=True)
        (self.docroot / "index.html").write_text("hello from pylighttpd\n")
        self.document_root = document_root or str(self.docroot)
        self.errorlog = tmp_path / "error.log"
        self.conf = tmp_path / "server.conf"
        self.write_config(extra)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "master.cli", *flags, "-f", str(self.conf)], cwd=REPO,
            env={**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}, preexec_fn=preexec_fn,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def write_config(self, extra: str) -> None:
        self.conf.write_text(
            f'server.document-root = "{self.document_root}"\nserver.bind = "127.0.0.1"\n'
            f'server.port = {self.port}\nserver.max-worker = 2\n'
            f'server.errorlog = "{self.errorlog}"\nindex-file.names = ("index.html")\n'
            f'{extra}\n')

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

    def children(self) -> list[int]:
        """Worker pids (the master's direct children)."""
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                             text=True).stdout.split()
        return sorted(int(pid) for pid in out)


@contextlib.contextmanager
def serving(tmp_path: Path, extra: str = ""):
    """A server that answers, stopped at the end whatever happens."""
    running = Server(tmp_path, extra)
    try:
        running.wait_serving()
        yield running
    finally:
        running.stop()
