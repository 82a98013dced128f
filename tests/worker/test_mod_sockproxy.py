"""mod_sockproxy: its keys (accepted with lighttpd's unknown-key warning until the core
can hand a connection's raw bytes to a module), the choice of a backend for a
connection, and its relay (`SockTunnel`) driven through the core's protocol switch
in this process: raw bytes both ways, the client's end passed on as a half-close, the
backend's end closing the connection, a backend down, a flood held back, and aborted
connections leaving no fd behind."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time

import pytest

from master.configload import load
from server_util import WorkerProcess
from tcp_backends import BLOCK, TcpBackend
from shared.config.values import Array
from shared.gateway_hosts import parse_servers
from worker.backend import Backends
from worker.loop import EventLoop
from worker.module import BACKLOG_HIGH
from worker.modules import mod_sockproxy
from worker.request import Request
from worker.server import Server
from worker.services import Services

FLOOD_BLOCKS = 256                       # 16 MiB from the backend


def servers(*ports: int, fin: bool = False) -> Array:
    hosts = [(None, Array([("host", "127.0.0.1"), ("port", port),
                           ("tcp-fin-propagate", "enable" if fin else "disable")]))
             for port in ports]
    return Array([("", Array(hosts))])


class Upgraded(mod_sockproxy.SockTunnel):
    """The relay after a 101 head: what the core's raw hand-over will spare."""

    __slots__ = ()

    def connected(self):
        self.request.response.status = 101
        self.request.response.stream()
        return super().connected()


class RawUpgrade(mod_sockproxy.Module):
    """Stands for the seam the core lacks: a request asking to upgrade to "raw" is
    relayed as mod_sockproxy relays a connection."""

    backend_ports: tuple[int, ...] = ()

    def handle_uri_clean(self, request: Request):
        if request.headers.get("upgrade") != "raw":
            return None
        fin = request.headers.get("x-fin") == "propagate"
        extension = parse_servers(servers(*self.backend_ports, fin=fin))[0]
        backend = self.backends.choose(extension, "fair", "/", "", request.remote_ip)
        if backend is None:
            return 503
        request.handler = self
        request.plugin_ctx[self.name] = Upgraded(self, request, extension, backend)
        return None


@pytest.fixture(scope="module")
def backend():
    made = TcpBackend("upper", FLOOD_BLOCKS * BLOCK)
    yield made
    made.close()


@pytest.fixture()
def server(tmp_path, backend):
    conf = tmp_path / "sockproxy.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\n'
                    'server.modules = ("mod_sockproxy")\nserver.stream-response-body = 2\n'
                    f'server.errorlog = "{tmp_path}/error.log"\n')
    config = load(str(conf))
    RawUpgrade.backend_ports = (backend.port,)
    config.modules = [RawUpgrade if module is mod_sockproxy.Module else module
                      for module in config.modules]
    worker = Server(config, [])
    try:
        yield worker
    finally:
        worker.close_all()
        worker.loop.close()


UPGRADE = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\n"


class Client:
    """One client connection to the in-process server, the loop run as it waits."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.sock, end = socket.socketpair()
        server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
        self.sock.setblocking(False)
        self.received = b""
        self.closed = False

    def run(self, until: bytes | None = None, seconds: float = 5.0,
            read: bool = True) -> bytes:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.closed:
            self.server.loop.run_once(0.005)
            if not read:
                continue
            with contextlib.suppress(BlockingIOError):
                chunk = self.sock.recv(1 << 20)
                self.received += chunk
                self.closed = not chunk
            if until is not None and self.received.endswith(until):
                break
        return self.received


def _sockproxied(tmp_path, port: int, fin: bool = False) -> WorkerProcess:
    conf = tmp_path / "l.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.modules = ("mod_sockproxy")\n'
                    f'server.errorlog = "{tmp_path}/error.log"\n'
                    f'sockproxy.server = ( "" => (( "host" => "127.0.0.1", "port" => {port},'
                    f' "tcp-fin-propagate" => "{"enable" if fin else "disable"}" )))\n')
    assert not load(str(conf)).warnings
    return WorkerProcess(conf)


def test_a_whole_connection_is_relayed_raw_to_the_backend(tmp_path, backend):
    with _sockproxied(tmp_path, backend.port, fin=True) as worker:
        with socket.create_connection(("127.0.0.1", worker.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nnot parsed as HTTP at all\r\n\r\n")
            received = b""
            while not received.endswith(b"\r\n\r\n"):
                received += sock.recv(4096)
            assert received == b"GET / HTTP/1.1\r\nNOT PARSED AS HTTP AT ALL\r\n\r\n"
            sock.shutdown(socket.SHUT_WR)          # propagated: the backend says bye
            while chunk := sock.recv(4096):
                received += chunk
            assert received.endswith(b"bye")


def test_no_backend_up_closes_the_connection(tmp_path):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]
    with _sockproxied(tmp_path, dead_port) as worker:
        with socket.create_connection(("127.0.0.1", worker.port), timeout=5) as sock:
            sock.sendall(b"hello")
            assert sock.recv(4096) == b""


def test_connection_backend_matches_the_empty_and_root_keys(backend):
    class Settings:
        values = {"sockproxy.server": parse_servers(servers(backend.port)),
                  "sockproxy.balance": "fair"}

    class FakeServices:
        loop = EventLoop()
        log_error = staticmethod(Services.log_error)

    found = mod_sockproxy.connection_backend(Backends(FakeServices()), Settings(), "10.0.0.1")
    assert found is not None and found[1].spec.port == backend.port
    Settings.values = {**Settings.values, "sockproxy.server": ()}
    assert mod_sockproxy.connection_backend(Backends(FakeServices()), Settings(), "x") is None


def test_raw_bytes_both_ways_and_the_clients_half_close_propagated(server, backend):
    client = Client(server)
    client.sock.sendall(UPGRADE.replace(b"\r\n\r\n", b"\r\nX-Fin: propagate\r\n\r\n")
                        + b"first ")
    assert client.run(until=b"FIRST ").startswith(b"HTTP/1.1 101 ")
    client.sock.sendall(b"\x00\xffbinary\r\n\r\nGET / HTTP/1.1\r\n")
    assert client.run(until=b"GET / HTTP/1.1\r\n").endswith(
        b"FIRST \x00\xffBINARY\r\n\r\nGET / HTTP/1.1\r\n")
    ended = backend.ended
    client.sock.shutdown(socket.SHUT_WR)        # the backend still answers after it
    assert client.run().endswith(b"bye") and client.closed
    assert backend.wait_ended(ended + 1)


def test_the_clients_half_close_is_kept_from_the_backend_by_default(server, backend):
    """lighttpd's default: the backend is left to end the tunnel; the client's full
    close ends it."""
    client = Client(server)
    client.sock.sendall(UPGRADE + b"ping")
    assert client.run(until=b"PING").endswith(b"\r\n\r\nPING")
    ended = backend.ended
    client.sock.shutdown(socket.SHUT_WR)
    assert not client.run(seconds=0.5).endswith(b"bye") and not client.closed
    client.sock.close()
    for _ in range(50):
        server.loop.run_once(0.01)
    assert backend.wait_ended(ended + 1)


def test_backend_down_is_503(server):
    RawUpgrade.backend_ports = (free_port(),)
    client = Client(server)
    client.sock.sendall(UPGRADE)
    assert client.run(until=b"</html>\n").startswith(b"HTTP/1.1 503 ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_flood_waits_for_a_client_that_does_not_read(server):
    """16 MiB from the backend: while the client reads nothing, the server holds no
    more than about BACKLOG_HIGH of it; then all of it arrives."""
    client = Client(server)
    client.sock.sendall(UPGRADE + b"flood")
    client.run(seconds=1.0, read=False)
    connection = next(iter(server.connections.values()))
    assert connection.out.pending <= 2 * BACKLOG_HIGH + BLOCK
    total = FLOOD_BLOCKS * BLOCK + len(b"FLOOD")
    while len(client.received) < total + 200 and not client.closed:
        before = len(client.received)
        client.run(seconds=0.2)
        if len(client.received) == before:
            break
    assert client.received.count(b"f") >= FLOOD_BLOCKS * BLOCK
    assert client.received.endswith(b"FLOOD")


def test_aborted_connections_leave_no_fd(server, backend):
    fds = len(os.listdir("/proc/self/fd"))
    ended = backend.ended
    for number in range(100):
        client = Client(server)
        client.sock.sendall(UPGRADE + b"x" * number)
        client.run(until=b"X" * number if number else b"\r\n\r\n", seconds=2)
        if number % 2:
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.sock.close()
        for _ in range(5):
            server.loop.run_once(0.002)
    deadline = time.monotonic() + 10
    while (server.connections or backend.ended < ended + 100) and time.monotonic() < deadline:
        server.loop.run_once(0.01)
    assert not server.connections
    assert backend.ended >= ended + 100      # each closed (an earlier test's may end late)
    # 100 connections, none left; a few fds of other tests' threads may come and go
    assert len(os.listdir("/proc/self/fd")) <= fds + 5
