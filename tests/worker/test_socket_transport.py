"""SocketTransport asks the kernel for a connection's addresses once, not per request."""

from __future__ import annotations

import socket

from worker.transport import SocketTransport


class Counting:
    """A connected socket that counts the address questions it is asked."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.asked = 0

    def getpeername(self):
        self.asked += 1
        return self.sock.getpeername()

    def getsockname(self):
        self.asked += 1
        return self.sock.getsockname()


def test_addresses_are_asked_once_per_connection():
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname(), timeout=5) as client:
            accepted, _ = server.accept()
            with accepted:
                counting = Counting(accepted)
                transport = SocketTransport(counting)   # type: ignore[arg-type]
                for _ in range(3):
                    assert transport.peer_port() == client.getsockname()[1]
                    assert transport.local_address() == "127.0.0.1"
                assert counting.asked == 2
