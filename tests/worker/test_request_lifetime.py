"""A finished request is freed by reference counting alone (HTTP/1.1 with the access log
on or off, HTTP/2 streams): no reference cycle leaves it to the cyclic GC (whose runs
would then grow with traffic)."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import socket
import time
from pathlib import Path
from typing import Callable

import pytest

from loadtests import bench
from loadtests.bench import lighttpd_style_config, make_docroot
from loadtests.h2_microbench import H2Client, one_round
from master.configload import load
from tests.procutil import LIGHTTPD
from worker.server import Server


def answered(server: Server, client: socket.socket, request: bytes, count: int) -> None:
    """`request` sent `count` times, one after another, each answer read whole (by its
    Content-Length)."""
    for _ in range(count):
        client.sendall(request)
        deadline = time.monotonic() + 5
        data = b""
        while not complete(data):
            data += take(server, client, deadline) or b""
    server.loop.run_once(0.0)


def answered_anew(server: Server, client: socket.socket, request: bytes, count: int
                  ) -> None:
    """`answered`, with a new query string each time: no answer is kept for any."""
    for number in range(count):
        answered(server, client, request.replace(b" HTTP/", b"?%d HTTP/" % number), 1)


def take(server: Server, client: socket.socket, deadline: float) -> bytes | None:
    """One round of the server's loop, then what the client has: None when nothing
    came yet, b"" once the server closed."""
    assert time.monotonic() < deadline, "the server did not answer in time"
    server.loop.run_once(0.01)
    try:
        return client.recv(65536, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


def complete(data: bytes) -> bool:
    head, found, body = data.partition(b"\r\n\r\n")
    if not found:
        return False
    if re.search(rb"\r\nTransfer-Encoding: chunked", head, re.IGNORECASE):
        return body.endswith(b"0\r\n\r\n")
    length = re.search(rb"\r\nContent-Length: (\d+)", head, re.IGNORECASE)
    return len(body) >= (int(length[1]) if length else 0)


REQUESTS = {
    "file": b"GET /1k.bin HTTP/1.1\r\nHost: t\r\nUser-Agent: x\r\n\r\n",
    "missing": b"GET /missing.bin HTTP/1.1\r\nHost: t\r\n\r\n",
    "past-a-file": b"GET /index.html/x/y HTTP/1.1\r\nHost: t\r\n\r\n",
    "listing": b"GET /dir/ HTTP/1.1\r\nHost: t\r\n\r\n",
    "to-slash": b"GET /dir HTTP/1.1\r\nHost: t\r\n\r\n",
    "range": b"GET /1k.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=10-20\r\n\r\n",
    "bad-range": b"GET /1k.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=5000-\r\n\r\n",
}


def cycles_after(warm: Callable[[], None], traffic: Callable[[], None]) -> int:
    """How many objects the cyclic GC finds after `traffic`, once `warm` has made what
    is made once (caches, tables)."""
    warm()
    gc.collect()
    gc.disable()
    try:
        traffic()
        return gc.collect()
    finally:
        gc.enable()


def static_server(tmp_path: Path, accesslog: bool) -> Server:
    docroot = make_docroot(tmp_path)
    return Server(load(str(lighttpd_style_config(docroot, 8080, tmp_path, accesslog, "c"))),
                  [])


@pytest.mark.parametrize("accesslog", [False, True])
@pytest.mark.parametrize("kind", sorted(REQUESTS))
def test_requests_leave_no_cycles(tmp_path: Path, accesslog: bool, kind: str):
    server = static_server(tmp_path, accesslog)
    client, end = socket.socketpair()
    server.add_connection(end, "127.0.0.1", "127.0.0.1:8080")
    request = REQUESTS[kind]

    try:
        found = cycles_after(lambda: answered(server, client, request, 5),
                             lambda: answered_anew(server, client, request, 40))
        assert found < 10, f"{found} objects in cycles after 40 requests"
    finally:
        client.close()
        server.close_all()


def test_h2_streams_leave_no_cycles(tmp_path: Path):
    """The same for requests on HTTP/2 streams (h2c by prior knowledge)."""
    server = static_server(tmp_path, False)
    client = H2Client(server)

    def streams(rounds: int) -> None:
        for _ in range(rounds):
            one_round(server, [client], "/1k.bin", 5, None)

    try:
        found = cycles_after(lambda: streams(1), lambda: streams(8))
        assert found < 10, f"{found} objects in cycles after 40 streams"
    finally:
        server.close_all()


@pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                    reason="the proxied backend is Debian's lighttpd")
@pytest.mark.parametrize("path", ["/proxy/1k.bin", "/nopool/1k.bin", bench.CGI_SCRIPT])
def test_gateway_requests_leave_no_cycles(tmp_path: Path, path: str):
    """The same through mod_proxy (pooled and not) and mod_cgi, with the benchmark's
    gateway setup: a lighttpd backend, a /bin/sh CGI script."""
    with contextlib.ExitStack() as stack:
        docroot = make_docroot(tmp_path)
        setup = bench.SETUPS[bench.GATEWAYS]
        site = bench.Site("c", 8080, bench.free_port(), docroot, tmp_path, False,
                          setup.prepare(tmp_path, docroot, stack))
        server = Server(load(str(bench.write_lighttpd_config(site, setup))), [])
        stack.callback(server.close_all)
        client, end = socket.socketpair()
        stack.callback(client.close)
        server.add_connection(end, "127.0.0.1", "127.0.0.1:8080")
        request = f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        found = cycles_after(lambda: answered(server, client, request, 3),
                             lambda: answered_anew(server, client, request, 20))
        assert found < 10, f"{found} objects in cycles after 20 requests"


@pytest.mark.parametrize("request_bytes", [
    b"GET /1k.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /1k.bin HTTP/1.0\r\n\r\n",
    b"NOT HTTP\r\n\r\n",
])
def test_closed_connections_leave_no_cycles(tmp_path: Path, request_bytes: bytes):
    """A connection that ends (after its answer, or on a bad request) is freed with its
    parser and its last request by reference counting alone."""
    server = static_server(tmp_path, False)

    def connections(count: int) -> None:
        for _ in range(count):
            client, end = socket.socketpair()
            server.add_connection(end, "127.0.0.1", "127.0.0.1:8080")
            client.sendall(request_bytes)
            read_until_closed(server, client)
            client.close()

    try:
        found = cycles_after(lambda: connections(3), lambda: connections(20))
        assert found < 10, f"{found} objects in cycles after 20 connections"
    finally:
        server.close_all()


def read_until_closed(server: Server, client: socket.socket) -> None:
    deadline = time.monotonic() + 5
    while take(server, client, deadline) != b"":
        pass
    for _ in range(3):
        server.loop.run_once(0.0)         # what comes soon after the close
