"""Output of one connection: a queue of memory chunks and file ranges.

Memory chunks go out in one `sendmsg` (scatter/gather: headers and a small body in one
system call); file ranges go out with `os.sendfile`, so a large file never passes
through Python memory.  A partial write leaves the rest queued; the connection asks
for EPOLLOUT and calls `send` again when the socket can take more.
"""

from __future__ import annotations

import os
import socket
from typing import Final

from mypy_extensions import mypyc_attr

from .lists import take

MAX_IOV: Final = 64                  # buffers per sendmsg
JOIN_BELOW: Final = 2048             # a head and a body shorter than this are sent joined
SEND_BUDGET: Final = 1 << 22         # bytes per call: one busy client must not starve the others
SENDFILE_STEP: Final = 1 << 22
# read once: compiled, a module's attribute is looked up at each use (os.sendfile
# is not: tests count its calls through the module)
_MSG_MORE: Final = socket.MSG_MORE


class SharedFd:
    """One open file that several chunks send ranges of (the parts of a
    multipart/byteranges body): each user calls `release` once, the last closes it."""

    __slots__ = ("fd", "users")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.users = 0

    def acquire(self) -> "SharedFd":
        self.users += 1
        return self

    def release(self) -> None:
        self.users -= 1
        self.close_unused()

    def close_unused(self) -> None:
        """Close the file if nobody took a share of it (an answer that sent none)."""
        if self.users == 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class FileChunk:
    """`length` bytes of an open file from `offset`; the queue owns and closes `fd`
    (or releases its share of it)."""

    __slots__ = ("fd", "offset", "length", "shared")

    def __init__(self, fd: int, offset: int, length: int,
                 shared: SharedFd | None = None) -> None:
        self.fd = fd
        self.offset = offset
        self.length = length
        self.shared = shared

    def close(self) -> None:
        if self.fd >= 0:
            if self.shared is not None:
                self.shared.release()
            else:
                os.close(self.fd)
            self.fd = -1


@mypyc_attr(native_class=False)    # mypyc builds no subclass of OSError
class FileShrunk(OSError):
    """The file got shorter while we were sending it: the response cannot be finished."""


class ChunkQueue:
    __slots__ = ("chunks", "pending")

    def __init__(self) -> None:
        self.chunks: list[bytes | memoryview | FileChunk] = []   # a list: 56 bytes empty
        self.pending = 0   # bytes still queued (memory and file)

    def append(self, data: bytes) -> None:
        if data:
            self.chunks.append(data)
            self.pending += len(data)

    def append_answer(self, head: bytes, body: bytes) -> None:
        """An answer's head and body in memory: joined when the body is small, else
        queued apart, to go out in one sendmsg without copying the body."""
        if len(body) < JOIN_BELOW:
            self.append(head + body)
        else:
            chunks = self.chunks
            chunks.append(head)
            chunks.append(body)
            self.pending += len(head) + len(body)

    def append_file(self, fd: int, offset: int, length: int,
                    shared: SharedFd | None = None) -> None:
        """Queue a file range; takes ownership of `fd` (closed when sent or dropped), or
        of one share of it when `shared` is given."""
        chunk = FileChunk(fd, offset, length, shared)
        if length <= 0:
            chunk.close()
            return
        self.chunks.append(chunk)
        self.pending += length

    def clear(self) -> None:
        """Drop everything (connection closed): close the files we own."""
        for chunk in self.chunks:
            if type(chunk) is FileChunk:
                chunk.close()
        self.chunks.clear()
        self.pending = 0

    def send(self, sock: socket.socket) -> int:
        """Send as much as the socket takes now, up to SEND_BUDGET; returns bytes sent.

        Raises BlockingIOError only when nothing at all could be sent; other OSErrors
        (peer reset, broken pipe) go to the caller, which closes the connection.
        """
        chunks = self.chunks
        count = len(chunks)
        if count == 1 and type(chunks[0]) is bytes:   # one answer: the usual case
            data = chunks[0]
            written = sock.send(data)
            self.pending -= written
            if written == len(data):
                chunks.clear()
            else:
                chunks[0] = memoryview(data)[written:]
            return written
        if count == 2 and type(chunks[0]) is bytes and type(chunks[1]) is bytes:
            return self._send_head_and_body(sock)
        sent = 0
        while chunks and sent < SEND_BUDGET:
            head = chunks[0]
            try:
                if type(head) is FileChunk:
                    written, complete = self._send_file(sock, head)
                else:
                    written, complete = self._send_memory(sock)
            except BlockingIOError:
                if sent:
                    return sent
                raise
            sent += written
            if not complete:
                break   # a short write: the socket buffer is full
        return sent

    def _send_head_and_body(self, sock: socket.socket) -> int:
        """An answer's head and its body (a small file), in one system call: not
        joined, which would copy the body (see JOIN_BELOW)."""
        chunks = self.chunks
        head: bytes = chunks[0]       # type: ignore[assignment]
        body: bytes = chunks[1]       # type: ignore[assignment]
        written = sock.sendmsg((head, body))
        self.pending -= written
        head_size = len(head)
        if written < head_size:
            chunks[0] = memoryview(head)[written:]
        elif written - head_size < len(body):
            chunks[:] = [memoryview(body)[written - head_size:]]
        else:
            chunks.clear()
        return written

    def _send_memory(self, sock: socket.socket) -> tuple[int, bool]:
        """The memory chunks at the queue's front in one call; with MSG_MORE when a
        file range follows (an answer's head before its file), so that the head goes
        out in the file's first segment, not in a packet of its own."""
        chunks = self.chunks
        buffers: list[bytes | memoryview] = []
        size = 0
        flags = 0
        for chunk in chunks:
            if isinstance(chunk, FileChunk):
                flags = _MSG_MORE
                break
            if len(buffers) == MAX_IOV:
                break
            buffers.append(chunk)
            size += len(chunk)  # type: ignore[arg-type]
        written = sock.sendmsg(buffers, (), flags) if len(buffers) > 1 else \
            sock.send(buffers[0], flags)
        self.pending -= written
        left = written
        done = 0
        for chunk in buffers:
            chunk_size = len(chunk)  # type: ignore[arg-type]
            if left < chunk_size:
                if left:
                    chunks[done] = memoryview(chunk)[left:]  # type: ignore[arg-type]
                break
            left -= chunk_size
            done += 1
        if done == 1:
            take(chunks, 0)
        elif done:
            del chunks[:done]
        return written, written == size

    def _send_file(self, sock: socket.socket, chunk: FileChunk) -> tuple[int, bool]:
        wanted = min(chunk.length, SENDFILE_STEP)
        written = os.sendfile(sock.fileno(), chunk.fd, chunk.offset, wanted)
        if written == 0:
            # The file got shorter than the Content-Length already sent: no correct
            # answer is possible any more, the caller closes the connection.
            raise FileShrunk("file shrank while being sent")
        chunk.offset += written
        chunk.length -= written
        self.pending -= written
        if chunk.length == 0:
            chunk.close()
            take(self.chunks, 0)
        return written, written == wanted

    def peek(self, limit: int) -> bytes:
        """Up to `limit` bytes from the head of the queue, files read from the page
        cache, nothing consumed: for a writer that is not a socket (TLS), which takes
        bytes and may take fewer.  Raises FileShrunk as sending would."""
        parts: list[bytes] = []
        size = 0
        for chunk in self.chunks:
            if size >= limit:
                break
            if type(chunk) is FileChunk:
                data = os.pread(chunk.fd, min(chunk.length, limit - size), chunk.offset)
                if not data:
                    raise FileShrunk("file shrank while being sent")
                parts.append(data)
                size += len(data)
                break              # one read per call: the next file may be elsewhere
            part = bytes(chunk[:limit - size])     # type: ignore[index]
            parts.append(part)
            size += len(part)
        return b"".join(parts)

    def consume(self, count: int) -> None:
        """Drop `count` bytes from the head: what a writer took of `peek`."""
        self.pending -= count
        chunks = self.chunks
        while count:
            head = chunks[0]
            if type(head) is FileChunk:
                step = min(count, head.length)
                head.offset += step
                head.length -= step
                done = head.length == 0
                if done:
                    head.close()
            else:
                step = min(count, len(head))       # type: ignore[arg-type]
                done = step == len(head)           # type: ignore[arg-type]
                if not done:
                    chunks[0] = memoryview(head)[step:]  # type: ignore[arg-type]
            if done:
                del chunks[0]
            count -= step

    def write_blocking(self, fd: int) -> int:
        """Write everything to a blocking fd (a pipe: the -1 mode on stdout)."""
        total = 0
        while self.chunks:
            head = self.chunks.pop(0)
            if type(head) is FileChunk:
                while head.length:
                    data = os.pread(head.fd, min(head.length, 1 << 16), head.offset)
                    if not data:
                        head.close()
                        raise FileShrunk("file shrank while being sent")
                    os.write(fd, data)  # blocking
                    head.offset += len(data)
                    head.length -= len(data)
                    total += len(data)
                head.close()
            else:
                view = memoryview(head)  # type: ignore[arg-type]
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                    total += written
        self.pending = 0
        return total
