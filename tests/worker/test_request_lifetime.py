"""A finished request is freed by reference counting alone, access log on or off: no
reference cycle leaves it to the cyclic GC (whose runs would then grow with traffic)."""

from __future__ import annotations

import gc
import socket
import time
from pathlib import Path

import pytest

from loadtests.bench import lighttpd_style_config, make_docroot
from master.configload import load
from worker.server import Server


def answered(server: Server, client: socket.socket, count: int) -> None:
    """`count` requests for the 1 KiB file, one after another, each answered whole."""
    for _ in range(count):
        client.sendall(b"GET /1k.bin HTTP/1.1\r\nHost: t\r\nUser-Agent: x\r\n\r\n")
        deadline = time.monotonic() + 5
        data = b""
        while len(data.partition(b"\r\n\r\n")[2]) < 1024:
            assert time.monotonic() < deadline, data[:200]
            server.loop.run_once(0.01)
            try:
                data += client.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
    server.loop.run_once(0.0)


@pytest.mark.parametrize("accesslog", [False, True])
def test_requests_leave_no_cycles(tmp_path: Path, accesslog: bool):
    docroot = make_docroot(tmp_path)
    server = Server(load(str(lighttpd_style_config(docroot, 8080, tmp_path, accesslog, "c"))),
                    [])
    client, end = socket.socketpair()
    server.add_connection(end, "127.0.0.1", "127.0.0.1:8080")
    try:
        answered(server, client, 5)          # what is made once (caches, tables) is made
        gc.collect()
        gc.disable()
        try:
            answered(server, client, 40)
            found = gc.collect()
        finally:
            gc.enable()
        assert found < 10, f"{found} objects in cycles after 40 requests"
    finally:
        client.close()
        server.close_all()
