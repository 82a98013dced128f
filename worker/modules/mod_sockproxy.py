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

Not acted on yet: the worker core has no way for a module to take a connection's
bytes before they are parsed as HTTP (handle_connection_accept cannot claim the
connection).  Until it has, the three keys are accepted the way lighttpd treats keys
it does not know (a warning, the value ignored), so a config that uses them never
relies silently on a relay it does not get.  What is here is the relay (`SockTunnel`,
on worker/tunnel.py, exercised by tests/worker/test_mod_sockproxy.py through the
core's protocol switch) and the choice of the backend for a connection
(`connection_backend`), ready for that seam.
"""

from __future__ import annotations

import dataclasses
import socket
from typing import Any

from shared.config.directives import Directive, Type
from shared.gateway_hosts import Extension, find_extension, parse_balance, parse_servers

from ..backend import Backend, Backends
from ..module import WAIT, HandlerResult
from ..gw_exchange import GatewayModule
from ..tunnel import OPEN, BackendTunnel

MATCHED_PATH = "/"               # the URL path lighttpd matches sockproxy.server with

DIRECTIVES = tuple(dataclasses.replace(directive, implemented=False) for directive in (
    Directive("sockproxy.server", Type.ARRAY_KVANY, (), convert=parse_servers),
    Directive("sockproxy.balance", Type.STRING, "fair", convert=parse_balance),
    Directive("sockproxy.debug", Type.INT, 0),
))


class SockTunnel(BackendTunnel):
    """A connection's bytes relayed as they are; the backend's end ends the tunnel.
    The client's end reaches the backend as a half-close with the host's
    `tcp-fin-propagate`; without it the backend is left to finish (lighttpd's way)."""

    __slots__ = ()

    def connected(self) -> HandlerResult:
        self.state = OPEN
        return WAIT

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


class Module(GatewayModule):
    name = "sockproxy"
    source = "mod_sockproxy.c"
    directives = DIRECTIVES
