"""Start a real pylighttpd worker for tests, bound on a free loopback port.

The worker runs in its own process (`python server_util.py CONFIG`): it loads the
config as the master does, binds 127.0.0.1:0, prints `READY <port>` from the worker's
on_ready hook and serves until signalled.  `WorkerProcess` wraps that for tests and
offers the two ways tests talk to it: http.client and raw bytes on a socket.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0


def detached_request(values: dict | None = None, **connection: object):
    """A worker.request.Request of no connection, for unit tests of what reads one:
    the settings `values` (the defaults' none), from 127.0.0.1 over plain HTTP, to a
    client that has taken all that was sent; `connection` replaces any of that."""
    from types import SimpleNamespace

    from shared.config.compiled import RequestSettings
    from worker.request import Request

    settings = RequestSettings(dict(values or {}))
    fields = {"scheme": "http", "remote_ip": "127.0.0.1", "socket_spec": "",
              "server": SimpleNamespace(global_settings=settings, compiled=None),
              "condition_cache": None,
              "backlog_of": lambda _request: 0} | connection
    return Request(SimpleNamespace(**fields), 0.0)


def config_text(docroot: Path, extra: str = "", modules: tuple[str, ...] = ()) -> str:
    """A minimal config serving `docroot`; `extra` is appended verbatim."""
    names = ", ".join(f'"{m}"' for m in modules)
    return (f'server.document-root = "{docroot}"\n'
            f"server.port = 80\n"
            f"server.modules = ({names})\n"
            'mimetype.assign = (".html" => "text/html", ".txt" => "text/plain", '
            '".css" => "text/css", "" => "application/octet-stream")\n'
            f"{extra}\n")


class WorkerProcess:
    """One worker process; use as a context manager or call stop()."""

    def __init__(self, config_path: Path, idle_exit: float | None = None) -> None:
        args = [sys.executable, __file__, str(config_path)]
        if idle_exit is not None:
            args.append(str(idle_exit))
        self.process = subprocess.Popen(
            args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.port = self._wait_ready()

    def _wait_ready(self) -> int:
        deadline = time.monotonic() + START_TIMEOUT
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.startswith("READY "):
                return int(line.split()[1])
            if not line and self.process.poll() is not None:
                break
        self.process.kill()
        _, err = self.process.communicate(timeout=5)
        raise RuntimeError(f"worker did not start: {err}")

    def __enter__(self) -> "WorkerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
            raise
        finally:
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()

    # ---------------------------------------------------------------- clients
    def connection(self, timeout: float = 5.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: (status, headers, body)."""
        connection = self.connection()
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def get(self, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path, {k.replace("_", "-"): v for k, v in headers.items()})

    def socket(self, timeout: float = 5.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def raw(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Send bytes, read until the server closes (or `timeout`)."""
        with self.socket(timeout) as sock:
            sock.sendall(data)
            return read_until_closed(sock)


def read_head(sock: socket.socket) -> bytes:
    """What the peer sent up to its head's blank line and maybe past it (all of it if
    it closes sooner)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except (socket.timeout, ConnectionResetError):
        pass
    return b"".join(chunks)


def open_fds() -> set[str]:
    """The fds this process has open now, once the garbage of earlier tests is
    collected: a file closed by a collection during an exchange would free its number
    for one the exchange opens, and that new file would go unseen."""
    import gc

    gc.collect()
    return set(os.listdir("/proc/self/fd"))


def split_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Parse back-to-back HTTP/1.x responses (Content-Length framed)."""
    responses = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        responses.append((status, headers, rest[:length]))
        data = rest[length:]
    return responses


def _serve(config_path: str, idle_exit: float | None) -> int:
    """The child: load the config like the master, bind, run the worker."""
    sys.path.insert(0, str(REPO))
    from master.configload import load
    from worker.context import WorkerContext
    from worker.main import run_worker

    config = load(config_path)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]

    def ready() -> None:
        print(f"READY {port}", flush=True)

    return run_worker(WorkerContext(slot=0, generation=1,
                                    listeners=[(listener, f"127.0.0.1:{port}")],
                                    config=config, idle_exit=idle_exit, on_ready=ready))


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else None))
