"""How a connection's bytes move: the transport layer under the HTTP protocol.

A connection reads what its transport received and hands its output queue to the
transport to send; it never calls a socket itself.  Two transports exist: a socket in
the worker's epoll (`SocketTransport`), and the `-1` mode's stdin/stdout pipe pair
written with blocking writes (`PipeTransport`); and TLS over a socket
(worker/tls.py).  `server.network-backend = "write"` or `"writev"` puts a
`CopyingSocketTransport` in the socket's place: file bodies are read and written, not
handed to sendfile.
"""

from __future__ import annotations

import os
import socket
from typing import Final

from mypy_extensions import mypyc_attr

from .chunkqueue import SEND_BUDGET, ChunkQueue

READ_SIZE: Final = 64 * 1024
COPY_SIZE: Final = 256 * 1024    # a file read per write with the copying backend


@mypyc_attr(allow_interpreted_subclasses=True)   # tls, proxyproto
class Transport:
    """What a connection asks of its transport.  A compiled base class, where a
    Protocol made each of the connection's calls (a read, a send with every request)
    a Python method call.  `pollable` and `read_wants_write` are plain attributes a
    subclass sets: compiled code reads them from the object, past any property."""

    __slots__ = ("pollable", "read_wants_write")

    def __init__(self, pollable: bool = True) -> None:
        # registered in the worker's epoll (else the caller drives it)
        self.pollable = pollable
        # a read could not go on before the socket takes a write (a TLS handshake's
        # flight): the connection polls for EPOLLOUT and reads again then
        self.read_wants_write = False

    def fileno(self) -> int:
        raise NotImplementedError

    def recv(self) -> bytes:
        """Bytes received; b"" at the peer's end; BlockingIOError when none are there
        yet, OSError when the connection broke."""
        raise NotImplementedError

    def send(self, out: ChunkQueue) -> int:
        """Bytes of `out` sent (and taken from it)."""
        raise NotImplementedError

    def send_limited(self, out: ChunkQueue, budget: int) -> int:
        raise NotImplementedError

    def shutdown_write(self) -> None:
        raise NotImplementedError

    def negotiated(self) -> bytes:
        """The application protocol agreed in a handshake (ALPN), b"" for none."""
        return b""

    def close(self) -> None:
        raise NotImplementedError

    def peer_port(self) -> int:
        raise NotImplementedError

    def local_address(self) -> str:
        raise NotImplementedError


@mypyc_attr(allow_interpreted_subclasses=True)   # tls.TLSTransport
class SocketTransport(Transport):
    """A connected, non-blocking socket.  recv raises BlockingIOError when nothing is
    there and OSError when the connection broke; b"" is the peer's EOF."""

    __slots__ = ("sock", "_peer_port", "_local_address")

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self._peer_port = -1            # asked of the kernel once, when first wanted
        self._local_address: str | None = None

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv(self) -> bytes:
        return self.sock.recv(READ_SIZE)

    def send(self, out: ChunkQueue) -> int:
        return out.send(self.sock)

    def send_limited(self, out: ChunkQueue, budget: int) -> int:
        """Up to `budget` bytes of the queue (a connection under a bandwidth limit:
        files are read into memory, a slow client's share at a time)."""
        written = self.sock.send(out.peek(budget))
        out.consume(written)
        return written

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def peer_port(self) -> int:
        """The client's port (a gateway's REMOTE_PORT), once per connection."""
        if self._peer_port < 0:
            try:
                self._peer_port = self.sock.getpeername()[1]
            except (OSError, IndexError, TypeError):
                self._peer_port = 0
        return self._peer_port

    def local_address(self) -> str:
        """The address the client reached (which one, on a wildcard listener), once
        per connection."""
        if self._local_address is None:
            try:
                self._local_address = str(self.sock.getsockname()[0])
            except (OSError, IndexError, TypeError):
                self._local_address = ""
        return self._local_address


class CopyingSocketTransport(SocketTransport):
    """A socket whose file bodies are read into memory and written, as lighttpd's
    `write` and `writev` backends send them (for a filesystem sendfile cannot read
    from, or to compare).  Memory goes out as on the plain socket."""

    __slots__ = ()

    def send(self, out: ChunkQueue) -> int:
        """Write what the socket takes now, COPY_SIZE at a time, up to SEND_BUDGET;
        BlockingIOError only when nothing could be written (as ChunkQueue.send)."""
        sent = 0
        while out.chunks and sent < SEND_BUDGET:
            try:
                written = self.send_limited(out, COPY_SIZE)
            except BlockingIOError:
                if sent:
                    return sent
                raise
            sent += written
            if written < COPY_SIZE:
                break      # the socket took less than it was given, or the queue is empty
        return sent


def socket_transport(network_backend: str) -> type[SocketTransport]:
    """The transport class of server.network-backend's checked value."""
    return CopyingSocketTransport if network_backend == "copy" else SocketTransport


class PipeTransport(Transport):
    """stdin and stdout of the `-1` mode on pipes: reads block in the caller's loop,
    writes block until done; both fds stay open (they are not the connection's)."""

    __slots__ = ()
    STDIN = 0
    STDOUT = 1

    def __init__(self) -> None:
        super().__init__(pollable=False)

    def fileno(self) -> int:
        return self.STDIN

    def recv(self) -> bytes:
        return os.read(self.STDIN, READ_SIZE)

    def send(self, out: ChunkQueue) -> int:
        return out.write_blocking(self.STDOUT)

    def send_limited(self, out: ChunkQueue, budget: int) -> int:
        """A pipe is written whole, blocking: no bandwidth limit applies."""
        return self.send(out)

    def shutdown_write(self) -> None:
        """Nothing to half-close: the caller ends the process after the answer."""

    def close(self) -> None:
        """stdin and stdout are the process's, not the connection's."""

    def peer_port(self) -> int:
        return 0

    def local_address(self) -> str:
        return ""
