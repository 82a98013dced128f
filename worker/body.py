"""A request body: in memory while small, spilled to a file in server.upload-dirs.

The size limit (server.max-request-size) is enforced by the connection before data
gets here; this only decides where the accepted bytes live, so a large upload never
sits in the worker's memory.
"""

from __future__ import annotations

import os
import tempfile
from typing import BinaryIO

MEMORY_LIMIT = 64 * 1024


class RequestBody:
    __slots__ = ("buffer", "file", "size", "upload_dirs")

    def __init__(self, upload_dirs: tuple[str, ...] = ()) -> None:
        self.buffer = bytearray()
        self.file: BinaryIO | None = None
        self.size = 0
        self.upload_dirs = upload_dirs

    def append(self, data: bytes) -> None:
        self.size += len(data)
        if self.file is not None:
            self.file.write(data)
        elif len(self.buffer) + len(data) > MEMORY_LIMIT:
            self.file = self._spill_file()
            self.file.write(self.buffer)
            self.file.write(data)
            self.buffer = bytearray()
        else:
            self.buffer += data

    def _spill_file(self) -> BinaryIO:
        for directory in self.upload_dirs:
            if os.path.isdir(directory) and os.access(directory, os.W_OK):
                return tempfile.TemporaryFile(dir=directory)  # type: ignore[return-value]
        return tempfile.TemporaryFile()  # type: ignore[return-value]

    def read(self) -> bytes:
        """The whole body (for small bodies; a handler of large ones uses `open`)."""
        if self.file is None:
            return bytes(self.buffer)
        self.file.seek(0)
        return self.file.read()

    def open(self) -> BinaryIO:
        """A file object positioned at the start of the body."""
        if self.file is None:
            self.file = self._spill_file()
            self.file.write(self.buffer)
            self.buffer = bytearray()
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
