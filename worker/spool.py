"""Bytes parked on disk: an answer's body kept whole before it is sent
(`server.stream-response-body = 0`), or what a slow client has not taken yet (= 1).

The file is unlinked at once (mkstemp, then unlink) in the first writable
`server.upload-dirs` entry, as lighttpd keeps its temp chunks there; each range
handed out shares its fd (chunkqueue.SharedFd), which closes after the last range
has been sent or dropped.  So memory stays bounded whatever a backend produces.
"""

from __future__ import annotations

import os
import tempfile
from typing import Final

from .chunkqueue import SharedFd

SPILL_AT: Final = 64 * 1024      # bytes held in memory before they go to a spool file


class Spool:
    __slots__ = ("upload_dirs", "shared", "size")

    def __init__(self, upload_dirs: tuple[str, ...]) -> None:
        self.upload_dirs = upload_dirs
        self.shared: SharedFd | None = None
        self.size = 0

    def write(self, parts: list[bytes]) -> tuple[int, int, int, SharedFd]:
        """Append `parts` to the file; the range they now fill as a body part
        (fd, offset, length, shared) holding one share of the fd."""
        shared = self.shared
        if shared is None:
            shared = self.shared = SharedFd(unlinked_temp_fd(self.upload_dirs)).acquire()
        offset = self.size
        for part in parts:
            view = memoryview(part)
            while view:
                written = os.pwrite(shared.fd, view, self.size)
                self.size += written
                view = view[written:]
        return shared.fd, offset, self.size - offset, shared.acquire()

    def close(self) -> None:
        """Give up the spool's own share: the file goes once its ranges are sent."""
        if self.shared is not None:
            self.shared.release()
            self.shared = None


def unlinked_temp_fd(upload_dirs: tuple[str, ...]) -> int:
    """A new file in the first writable server.upload-dirs entry (else the system's
    temp dir), unlinked at once: nothing is left behind whatever happens.  Spools
    and request bodies both live in one."""
    writable = [d for d in upload_dirs if os.path.isdir(d) and os.access(d, os.W_OK)]
    fd, path = tempfile.mkstemp(dir=writable[0] if writable else None)
    os.unlink(path)
    return fd
