"""What the tests of backends reached through the network (LDAP, SQL) share: free ports,
a server that accepts and never answers, and the proof that a request held by such a
backend does not hold the worker's other requests."""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable

SETTLE = 0.2        # seconds the held request is given to reach its backend


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
