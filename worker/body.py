"""A request body: in memory while small, spilled to a file in server.upload-dirs.

The size limit (server.max-request-size) is enforced by the parser before data gets
here; this only decides where the accepted bytes live, so a large upload never sits in
the worker's memory.

A handler reads a body one of two ways.  Whole, once it is `complete` (`read` for small
ones, `open` for a file object): with `server.stream-request-body = 0` (the default) it
starts its work only then (Request.waits_for_body).  Or as it arrives, in any mode:
`read_chunk` hands out what came since the last call, and the handler is woken
(handle_subrequest) when more arrives; `complete` says the last byte is in.  With `spill` off (mode 2) the body
never goes to disk: the connection stops reading the client while `unread` is high.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from .errors import BodyNotStored
from .spool import unlinked_temp_fd

MEMORY_LIMIT = 64 * 1024


class RequestBody:
    __slots__ = ("buffer", "file", "size", "upload_dirs", "complete", "consumed",
                 "file_start", "spill", "taken")

    def __init__(self, upload_dirs: tuple[str, ...] = (), spill: bool = True) -> None:
        self.buffer = bytearray()
        self.file: BinaryIO | None = None
        self.size = 0                 # bytes received so far
        self.upload_dirs = upload_dirs
        self.complete = False         # the last byte is in
        self.consumed = 0             # bytes handed out by read_chunk
        self.file_start = 0           # the body offset of the file's first byte
        self.spill = spill
        self.taken = False            # a module read some of it, or took it whole

    def append(self, data: bytes) -> None:
        """The next bytes of the body; BodyNotStored when its file cannot take them."""
        try:
            self._store(data)
        except OSError as err:
            raise BodyNotStored(err.errno, f"a request body could not be written to "
                                f"server.upload-dirs: {err.strerror}") from None

    def _store(self, data: bytes) -> None:
        self.size += len(data)
        if self.file is not None:
            self.file.write(data)
        elif self.spill and len(self.buffer) + len(data) > MEMORY_LIMIT:
            self.file = self._spill_file()
            self.file_start = self.consumed
            self.file.write(self.buffer)
            self.file.write(data)
            self.buffer = bytearray()
        else:
            self.buffer += data

    @property
    def unread(self) -> int:
        """Bytes received and not yet handed out by read_chunk."""
        return self.size - self.consumed

    def read_chunk(self, most: int = 1 << 16) -> bytes:
        """The next bytes not handed out yet (at most `most`), b"" if none are here."""
        self.taken = True
        if self.file is None:
            data = bytes(self.buffer[:most])
            del self.buffer[:len(data)]
        else:
            self.file.flush()
            data = os.pread(self.file.fileno(), min(most, self.unread),
                            self.consumed - self.file_start)
        self.consumed += len(data)
        return data

    def _spill_file(self) -> BinaryIO:
        return os.fdopen(unlinked_temp_fd(self.upload_dirs), "w+b")

    def read(self) -> bytes:
        """The whole body (for small bodies; a handler of large ones uses `open`)."""
        self.taken = True
        if self.file is None:
            return bytes(self.buffer)
        self.file.seek(0)
        return self.file.read()

    def open(self) -> BinaryIO:
        """A file object positioned at the start of the body."""
        self.taken = True
        if self.file is None:
            self.file = self._spill_file()
            self.file.write(self.buffer)
            self.buffer = bytearray()
        self.file.seek(0)
        return self.file

    def whole_file(self) -> int:
        """The fd of the file a complete spilled body is in (its bytes from offset 0),
        for sendfile."""
        assert self.file is not None and self.complete
        self.taken = True
        self.file.flush()
        return self.file.fileno()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
