"""What the event loop and the byte counters see of a client's connection, whichever
protocol it speaks (worker/connection.Connection for HTTP/1, worker/h2.H2Session for
HTTP/2): one native base class declaring it, so that the compiled code reaches these
attributes and methods directly.  Typed as a union of the two classes (or as a
Protocol), each use was a Python attribute look-up or method call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .chunkqueue import ChunkQueue
from .transport import Transport

if TYPE_CHECKING:
    from .server import Server


class Wire:
    __slots__ = ("server", "transport", "out", "last_read", "last_write", "bytes_read")

    server: "Server"
    transport: Transport
    out: ChunkQueue          # the answers' bytes queued for the client
    last_read: float         # loop times of the last bytes read and written
    last_write: float
    bytes_read: int

    def on_event(self, mask: int) -> None:
        """The socket is ready for `mask` (EPOLLIN, EPOLLOUT ...), or the loop sends
        what was queued during a round (EventLoop.sends_later)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
