"""What the tests of backends reached through the network (LDAP, SQL) share: free ports,
a server that accepts and never answers, the proof that a request held by such a
backend does not hold the worker's other requests, and Debian's lighttpd beside."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pytest

SETTLE = 0.2        # seconds the held request is given to reach its backend
LIGHTTPD_PLUGINS = Path("/usr/lib/lighttpd")


def free_port() -> int:
    """A loopback port nothing listens on (for a server that is down, or to start one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Blackhole:
    """A listening socket that accepts and never answers: a server that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def served_meanwhile(held: Callable[[], int],
                     other: Callable[[], int]) -> tuple[int, int, bool]:
    """Send `held` (a request waiting on a hung backend) in a thread, then `other`:
    (held's status, other's status, whether other was answered first)."""
    outcome: dict[str, float | int] = {}

    def run_held() -> None:
        outcome["status"] = held()
        outcome["done"] = time.monotonic()

    thread = threading.Thread(target=run_held)
    thread.start()
    time.sleep(SETTLE)
    other_status = other()
    served = time.monotonic()
    thread.join(timeout=20)
    return int(outcome.get("status", 0)), other_status, served < outcome.get("done", 0.0)


@contextlib.contextmanager
def lighttpd_beside(conf: Path, *modules: str) -> Iterator[int]:
    """Debian's lighttpd 1.4.69 serving `conf` (its server.port line left out: it gets
    a free one): its port.  The test is skipped when lighttpd or one of `modules` (its
    plugins, e.g. mod_authn_ldap) is not installed."""
    from test_differential import LIGHTTPD, Lighttpd
    missing = [name for name in modules if not (LIGHTTPD_PLUGINS / f"{name}.so").exists()]
    if not os.access(LIGHTTPD, os.X_OK) or missing:
        pytest.skip(f"Debian's lighttpd or its {', '.join(missing) or 'binary'} is not "
                    "installed")
    theirs = conf.with_name(f"theirs-{conf.name}")
    theirs.write_text(conf.read_text().replace("server.port = 80\n", ""))
    server = Lighttpd(theirs)
    try:
        yield server.port
    finally:
        server.stop()


def answer_of(port: int, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    """(status, WWW-Authenticate, body) of a GET: what a differential test compares."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("WWW-Authenticate", ""), response.read()
    finally:
        connection.close()


def answers_at(port: int, exchanges: list[tuple[str, dict[str, str]]]) -> list[tuple[int, str, bytes]]:
    """answer_of for each (path, headers), all at once (lighttpd answers a failed login
    after a second: one after the other they would take that many seconds)."""
    with ThreadPoolExecutor(max(1, len(exchanges))) as pool:
        return list(pool.map(lambda exchange: answer_of(port, *exchange), exchanges))
