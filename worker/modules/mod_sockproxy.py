"""mod_sockproxy: whole connections relayed to a backend as raw bytes, as lighttpd
1.4.69's mod_sockproxy (nothing the client sends is parsed as HTTP).

lighttpd decides when a connection is accepted: the settings of the conditions that
hold for a connection alone (`$SERVER["socket"]`, the remote address) are looked up
with the URL path "/", and when `sockproxy.server` has an extension matching it ("" or
"/", as Debian's 10-sockproxy.conf writes it) a backend is chosen
(`sockproxy.balance`) and the connection becomes a tunnel to it: the client's bytes go
to the backend as they come, the backend's to the client; the client's end is passed
on as a half-close with the host's `tcp-fin-propagate` (else the backend is left to
end it), and the backend's end closes the connection.  No backend up: the
connection is closed.

The connection is handed over whole in handle_connection_accept
(Connection.hand_over): the relay (`SockTunnel`, on worker/tunnel.py) holds it as a
tunnel that wrote no head, and nothing of it is logged as an HTTP request.
"""

from __future__ import annotations

import socket
from typing import Any

from mypy_extensions import mypyc_attr

from shared.config.directives import Directive, Type
from shared.gateway_hosts import Extension, parse_balance, parse_servers

from ..backend import Backend, Backends
from ..gateway import find_extension
from ..module import HandlerResult
from ..gw_exchange import GatewayModule
from ..tunnel import OPEN, BackendTunnel

MATCHED_PATH = "/"               # the URL path lighttpd matches sockproxy.server with

DIRECTIVES = (
    Directive("sockproxy.server", Type.ARRAY_KVANY, (), convert=parse_servers),
    Directive("sockproxy.balance", Type.STRING, "fair", convert=parse_balance),
    Directive("sockproxy.debug", Type.INT, 0),
)


@mypyc_attr(allow_interpreted_subclasses=True)   # tests/worker/test_mod_sockproxy.py
class SockTunnel(BackendTunnel):
    """A connection's bytes relayed as they are; the backend's end ends the tunnel.
    The client's end reaches the backend as a half-close with the host's
    `tcp-fin-propagate`; without it the backend is left to finish (lighttpd's way)."""

    __slots__ = ()

    def connected(self) -> HandlerResult:
        self.state = OPEN
        return self.relay(0)     # what the client sent while the backend was reached

    def client_ended(self) -> HandlerResult:
        self.shut = True
        if not self.backend.spec.tcp_fin_propagate:
            return None
        try:
            self.connection.sock.shutdown(socket.SHUT_WR)   # type: ignore[union-attr]
        except OSError:
            return self.finish()
        return None


def connection_backend(backends: Backends, settings: Any, remote_ip: str
                       ) -> tuple[Extension, Backend | None] | None:
    """The extension of sockproxy.server a connection is relayed by and the backend
    chosen for it (None when all are down), or None when it is served as HTTP."""
    values = settings.values
    extension = find_extension(values["sockproxy.server"], MATCHED_PATH)
    if extension is None:
        return None
    return extension, backends.choose(extension, values["sockproxy.balance"],
                                      MATCHED_PATH, "", remote_ip)


@mypyc_attr(allow_interpreted_subclasses=True)   # tests/worker/test_mod_sockproxy.py
class Module(GatewayModule):
    name = "sockproxy"
    source = "mod_sockproxy.c"
    directives = DIRECTIVES

    def handle_connection_accept(self, connection: Any) -> None:
        """A connection whose settings (its socket's, with the URL path "/") relay it
        is handed over at once; no backend up: it is closed."""
        settings = self.config.settings_for(_AtRoot(connection))
        found = connection_backend(self.backends, settings, connection.remote_ip)
        if found is None:
            return
        extension, backend = found
        if backend is None:
            connection.close()
            return
        request = connection.hand_over(self)
        request.settings = settings
        request.plugin_ctx[self.name] = SockTunnel(self, request, extension, backend)
        request.wake()                   # the tunnel's first step connects


class _AtRoot:
    """What the conditions see of a connection before any request: its own fields,
    and "/" as the URL path (as lighttpd matches sockproxy.server)."""

    __slots__ = ("connection",)

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def condition_value(self, field: str) -> str:
        return MATCHED_PATH if field == "url" else self.connection.condition_value(field)
