"""lighttpd's `-1`: serve the one connection passed as standard input, then return.

On a socket (inetd, systemd Accept=yes) it is an ordinary connection on a private
loop.  On a pipe the request is read from stdin and the response written to stdout
through the pipe transport, with blocking writes: there is nobody else to serve, so
nothing is lost by blocking.
"""

from __future__ import annotations

import os
import socket
import stat
from typing import TYPE_CHECKING

from .connection import Connection
from .server import Server, remote_address
from .transport import PipeTransport

if TYPE_CHECKING:
    from master.configload import LoadedConfig

STDIN = 0


def serve_stdin(config: "LoadedConfig") -> int:
    """Serve fd 0 (socket or pipe); returns the exit status."""
    server = Server(config, [])
    if stat.S_ISSOCK(os.fstat(STDIN).st_mode):
        return _serve_socket(server)
    return _serve_pipe(server)


def socket_spec(address: object) -> str:
    """"host:port" / "[v6]:port" / a unix path: how $SERVER["socket"] names it."""
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address or "")


def _serve_socket(server: Server) -> int:
    sock = socket.socket(fileno=os.dup(STDIN))
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        remote = remote_address(sock.getpeername())
    except OSError:
        remote = ""
    connection = server.add_connection(sock, remote, socket_spec(sock.getsockname()))
    while not connection.closed and server.stop_status is None:
        server.loop.run_once()
    server.close_all()
    return 0


def _serve_pipe(server: Server) -> int:
    transport = PipeTransport()
    connection = Connection(server, transport, "", "stdin")
    while not connection.closed:
        data = transport.recv()
        if not data:
            connection.peer_eof = True
            connection.closing = True
            connection.protocol.current = None
            _answer(server, connection)
            connection.close()
            break
        connection.feed(data)
        _answer(server, connection)
    return 0


def _answer(server: Server, connection: Connection) -> None:
    """Answer what was read; a request a module holds is waited for on the loop (its
    backend's fds and timers), as nothing else could be served meanwhile, unless it
    waits for more of its body: that comes from stdin, read by the caller."""
    connection.process()
    while connection.held is not None and not connection.closed:
        body = connection.held.request.body
        if body is not None and not body.complete and not connection.peer_eof:
            return
        server.loop.run_once()
