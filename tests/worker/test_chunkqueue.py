"""The output queue (worker/chunkqueue.py) over a real socketpair: whatever the socket
takes at a time, the bytes arrive whole and in order, and `pending` counts what is left."""

from __future__ import annotations

import os
import socket

import pytest

from worker.chunkqueue import JOIN_BELOW, ChunkQueue


def _drain(queue: ChunkQueue, sock: socket.socket, peer: socket.socket) -> bytes:
    """Send the queue in the steps the socket allows, reading the peer between them."""
    received = bytearray()
    while queue.chunks:
        try:
            queue.send(sock)
        except BlockingIOError:
            pass
        while True:
            try:
                received += peer.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
    peer.settimeout(0.2)
    try:
        while data := peer.recv(1 << 16):
            received += data
    except TimeoutError:
        pass
    return bytes(received)


@pytest.fixture
def pair():
    sock, peer = socket.socketpair()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)   # short writes
    sock.setblocking(False)
    yield sock, peer
    sock.close()
    peer.close()


@pytest.mark.parametrize("size", [0, 10, JOIN_BELOW - 1, JOIN_BELOW, 300_000])
def test_an_answer_s_head_and_body_arrive_whole(pair, size):
    sock, peer = pair
    queue = ChunkQueue()
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    queue.append_answer(head, body)
    assert queue.pending == len(head) + len(body)
    assert len(queue.chunks) == (2 if size >= JOIN_BELOW else 1)
    assert _drain(queue, sock, peer) == head + body
    assert queue.pending == 0


def test_a_head_cut_short_goes_on_before_its_body(pair):
    """A write that ends inside the head leaves the rest of the head, then the body."""
    sock, peer = pair
    queue = ChunkQueue()
    head = b"H" * 200_000            # more than the socket takes at once
    body = b"b" * (JOIN_BELOW * 2)
    queue.append_answer(head, body)
    sent = queue.send(sock)
    assert 0 < sent < len(head)
    assert queue.pending == len(head) + len(body) - sent
    assert _drain(queue, sock, peer) == head + body     # the first bytes included


class _FlagsSeen(socket.socket):
    """A real socket whose send calls note their flags (what the kernel does with
    MSG_MORE cannot be seen from the peer's side)."""

    flags: list[int]

    def send(self, data, flags: int = 0) -> int:
        self.flags.append(flags)
        return super().send(data, flags)

    def sendmsg(self, buffers, ancillary=(), flags: int = 0, address=None) -> int:
        self.flags.append(flags)
        return super().sendmsg(buffers, ancillary, flags)


def test_a_head_before_a_file_is_sent_with_msg_more(tmp_path):
    """The head goes out in the file's first segment (MSG_MORE), a head alone at once."""
    sock, peer = socket.socketpair()
    seen = _FlagsSeen(fileno=sock.detach())
    seen.flags = []
    with seen, peer:
        body = tmp_path / "body"
        body.write_bytes(b"f" * 5000)
        queue = ChunkQueue()
        queue.append(b"HEAD\r\n\r\n")
        queue.append_file(os.open(body, os.O_RDONLY), 0, 5000)
        queue.append(b"next answer")
        while queue.chunks:
            queue.send(seen)
        assert seen.flags == [socket.MSG_MORE, 0]
        assert _drain(queue, seen, peer) == b"HEAD\r\n\r\n" + b"f" * 5000 + b"next answer"
