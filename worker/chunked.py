"""The chunked transfer coding, decoded (RFC 9112 7.1): for what backends send, and
for the body of a request the HTTP/1 parser reads itself (one that asked to upgrade)."""

from __future__ import annotations

import re

_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")


class Dechunker:
    """Decodes a body a backend sent with Transfer-Encoding: chunked; `done` after
    the last chunk, `failed` on a malformed one."""

    __slots__ = ("buffer", "left", "done", "failed")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.left = -1          # data bytes of the chunk still to come; -1: at a size
        self.done = False
        self.failed = False

    def feed(self, data: bytes) -> bytes:
        """The body bytes in `data` (and what earlier calls left incomplete)."""
        self.buffer += data
        out = bytearray()
        step = True
        while step and not self.done and not self.failed:
            if self.left < 0:
                step = self._size_line()
            elif self.left > 0:
                step = self._chunk_data(out)
            else:
                step = self._chunk_end()
        return bytes(out)

    def _size_line(self) -> bool:
        end = self.buffer.find(b"\n")
        if end < 0:
            self.failed = len(self.buffer) > 1024
            return False
        text = bytes(self.buffer[:end]).split(b";", 1)[0].strip()
        del self.buffer[:end + 1]
        if not _CHUNK_SIZE.fullmatch(text):
            self.failed = True
            return False
        self.left = int(text, 16)
        self.done = self.left == 0     # trailers, if any, are not passed on
        return True

    def _chunk_data(self, out: bytearray) -> bool:
        take = min(self.left, len(self.buffer))
        out += self.buffer[:take]
        del self.buffer[:take]
        self.left -= take
        return self.left == 0

    def _chunk_end(self) -> bool:
        """The CRLF after a chunk's data."""
        buffer = self.buffer
        if buffer.startswith(b"\r\n"):
            del buffer[:2]
        elif buffer.startswith(b"\n"):
            del buffer[:1]
        else:
            self.failed = buffer not in (b"", b"\r")     # else: the rest is on its way
            return False
        self.left = -1
        return True
