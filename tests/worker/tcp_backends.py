"""Backends in threads for the gateway modules' tests: `ThreadedServer` serves each
connection in a thread with its `handle` and counts the connections it saw end (to
check that every tunnel closed its backend socket); `TcpBackend` is a plain TCP
backend for the tunnelling modules (mod_wstunnel, mod_sockproxy)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time

BLOCK = 64 * 1024
TIMEOUT = 5.0
STALL_SECONDS = 30.0            # a stalled backend's longest wait for its peer to go


class ThreadedServer:
    """A loopback listener (or one on the unix socket `path`) whose connections are
    each served by `handle` in a thread."""

    def __init__(self, path: str = "") -> None:
        if path:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(path)
            self.sock.listen(64)
            self.port = 0
        else:
            self.sock = socket.create_server(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        self.ended = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, ConnectionError):
            self.handle(conn)
        with self.lock:
            self.ended += 1

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def wait_ended(self, count: int) -> bool:
        """Whether `count` connections have ended, waiting a bounded time for them."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.ended >= count:
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.sock.close()


class TcpBackend(ThreadedServer):
    """Modes: `echo` returns what it reads; `flood` first sends `flood_bytes` as fast
    as the peer takes them, then echoes; `hangup` closes at once; `stall` reads nothing
    until the peer goes away; `upper` answers what
    it reads upper-cased (after `flood_bytes` of b"f" when what it read starts with
    b"flood") and says b"bye" once the peer half-closed."""

    def __init__(self, mode: str, flood_bytes: int = 0, path: str = "") -> None:
        self.mode = mode
        self.flood_bytes = flood_bytes
        super().__init__(path)

    def handle(self, conn: socket.socket) -> None:
        if self.mode == "flood":
            self._flood(conn)
        if self.mode in ("echo", "flood"):
            while data := conn.recv(BLOCK):
                conn.sendall(data)
        elif self.mode == "stall":
            poller = select.poll()
            poller.register(conn, select.POLLRDHUP)
            deadline = time.monotonic() + STALL_SECONDS
            while time.monotonic() < deadline and not poller.poll(50):
                pass                             # until the peer hangs up
        elif self.mode == "upper":
            while data := conn.recv(BLOCK):
                if data.startswith(b"flood"):
                    self._flood(conn)
                conn.sendall(data.upper())
            conn.sendall(b"bye")

    def _flood(self, conn: socket.socket) -> None:
        block = b"f" * BLOCK
        for _ in range(self.flood_bytes // BLOCK):
            conn.sendall(block)
