"""A bounded load generator for tests: keep-alive and new-connection clients in threads.

Every response is checked in full (status and exact body), so a reset, a refused
connection or a truncated body all count as failures.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    # requests resent because the server had closed an idle keep-alive connection
    # before it saw them (RFC 9112 9.3.1: clients retry idempotent requests then)
    retried_idle: int = 0


class Load:
    """`with Load(port, body) as load: ...` runs clients until the block ends, each
    asking for `path` again and again."""

    def __init__(self, port: int, expected_body: bytes, keepalive_clients: int = 2,
                 fresh_clients: int = 2, max_seconds: float = 120.0, path: str = "/") -> None:
        self.port = port
        self.expected_body = expected_body
        self.path = path
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._threads = [threading.Thread(target=self._client, args=(True,), daemon=True)
                         for _ in range(keepalive_clients)]
        self._threads += [threading.Thread(target=self._client, args=(False,), daemon=True)
                          for _ in range(fresh_clients)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _client(self, keepalive: bool) -> None:
        connection = None
        reused = False
        while self._running():
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    reused = False
                connection.request("GET", self.path)
                response = connection.getresponse()
                body = response.read()
                if response.status != 200 or body != self.expected_body:
                    self._record(f"{self.path}: status {response.status}, {len(body)} bytes")
                else:
                    self._record(None)
                reused = True
                if not keepalive or response.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as err:
                idle_close = isinstance(err, (http.client.RemoteDisconnected,
                                              ConnectionResetError, BrokenPipeError))
                if reused and idle_close:
                    with self._lock:
                        self.result.retried_idle += 1
                else:
                    self._record(f"{self.path}: {type(err).__name__}: {err}")
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def _record(self, failure: str | None) -> None:
        with self._lock:
            if failure is None:
                self.result.ok += 1
            else:
                self.result.failures.append(failure)
