"""What the event loop and the byte counters see of a client's connection, whichever
protocol it speaks (worker/connection.Connection for HTTP/1, worker/h2.H2Session for
HTTP/2): one native base class declaring it, so that the compiled code reaches these
attributes and methods directly.  Typed as a union of the two classes (or as a
Protocol), each use was a Python attribute look-up or method call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .chunkqueue import ChunkQueue
from .throttle import Throttle
from .transport import Transport

if TYPE_CHECKING:
    from shared.config.compiled import CompiledConfig, RequestSettings

    from .gateway import ServerVariables
    from .server import Server


class Wire:
    __slots__ = ("server", "transport", "out", "last_read", "last_write", "bytes_read",
                 "remote_ip", "socket_spec", "scheme", "condition_cache", "global_settings",
                 "compiled_config", "remote_port", "server_variables", "throttle", "paused")

    server: "Server"
    transport: Transport
    out: ChunkQueue          # the answers' bytes queued for the client
    last_read: float         # loop times of the last bytes read and written
    last_write: float
    bytes_read: int
    # what each of its requests starts from (worker/request.Request), read there
    # natively: the client's address (mod_extforward may change it), the listener,
    # http or https, the results of the conditions that depend on the connection alone
    # (None: the config has none), and the server's settings and compiled config
    remote_ip: str
    socket_spec: str
    scheme: str
    condition_cache: "dict[int, tuple[bool, object]] | None"
    global_settings: "RequestSettings"
    compiled_config: "CompiledConfig | None"
    # the client's port, -1 until a request asks (peer_port), and the gateways' server
    # variables its requests used last (worker/gateway.server_variables)
    remote_port: int
    server_variables: "ServerVariables | None"
    # its bandwidth limits (worker/throttle.py; None: none), and whether they stopped
    # its writes until the server's next tick
    throttle: Throttle | None
    paused: bool

    def set_origin(self, remote_ip: str, socket_spec: str, scheme: str,
                   condition_cache: "dict[int, tuple[bool, object]] | None",
                   global_settings: "RequestSettings",
                   compiled_config: "CompiledConfig | None", remote_port: int = -1) -> None:
        """What its requests start from (the fields above), set in one place for a
        Connection, an HTTP/2 session (its connection's) and a stand-in's Wire."""
        self.remote_ip = remote_ip
        self.socket_spec = socket_spec
        self.scheme = scheme
        self.condition_cache = condition_cache
        self.global_settings = global_settings
        self.compiled_config = compiled_config
        self.remote_port = remote_port
        self.server_variables = None
        self.throttle = None
        self.paused = False

    def pause_writes(self) -> None:
        """Its bandwidth for this second is spent: no polling for writes until the
        server's next tick resumes it (Server.resume_paused)."""
        if not self.paused:
            self.paused = True
            self.server.paused.append(self)

    def peer_port(self) -> int:
        """The client's port, asked of the transport once per connection."""
        if self.remote_port < 0:
            self.remote_port = self.transport.peer_port()
        return self.remote_port

    def on_event(self, mask: int) -> None:
        """The socket is ready for `mask` (EPOLLIN, EPOLLOUT ...), or the loop sends
        what was queued during a round (EventLoop.sends_later)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
