"""Backends of the gateway modules (mod_proxy, mod_fastcgi, mod_scgi): the host list
of a `*.server` directive, balancing, health, non-blocking connects, and the idle
connections a worker keeps open to each backend.

This is lighttpd's gw_backend.c without a protocol in it.  A `*.server` value is
parsed once, when the config loads, into `Extension`s of immutable `HostSpec`s
(shared/gateway_hosts.py).  A host is served at one address, or, spawned with
`bin-path`, at one per process (`HostSpec.procs`: lighttpd's gw_proc).  What changes
while a worker runs (requests under way, disabled until when, idle connections) lives
in a `Backend` per address, made by the worker's `Backends`, which balances over
every address of every host of an extension (lighttpd's fair / least-connection,
round-robin, hash and sticky; `max-load-per-proc` requests on an address before
another with room is preferred) and connects without blocking.  An address that
refuses a connect, or whose process died, sits out its host's `disable-time`; with
none left the module answers 503.

Idle connections go beyond lighttpd, which opens one connection per request: like
nginx's `upstream keepalive`, a finished exchange whose protocol allows it gives its
connection back, and the next request to that backend skips the handshake.  An idle
connection stays in the worker's epoll with EPOLLIN: a backend that closes it (its
keep-alive timeout) or sends anything unasked is noticed at once and the connection
dropped.  Requests in flight switch the connection's owner, not its registration, so a
pooled request costs no epoll_ctl.

A backend whose processes serve one connection each (php-cgi, FastCGI in general) would
be starved by kept connections: each one pins a process, busy or idle.  Such a backend
gets a `keep_limit`: the connections this worker may keep to it, busy and idle counted
together (`kept`); a request beyond them gets a connection of its own, closed after.
The module sets the limit once it learns the backend's capacity; until then it is the
module's `initial_keep_limit` (None: only the idle count bounds keeping, as for HTTP).
"""

from __future__ import annotations

import errno
import os
import select
import socket
from typing import TYPE_CHECKING, Final, Protocol

from shared.gateway_hosts import Extension, HostSpec, Proc, djbhash

from .counters import backend_counters
from .lists import take

if TYPE_CHECKING:
    from .services import Services

EPOLLIN: Final = select.EPOLLIN
EPOLLOUT: Final = select.EPOLLOUT
EPOLLHUP: Final = select.EPOLLHUP
EPOLLERR: Final = select.EPOLLERR
IDLE_SECONDS: Final = 60.0          # an idle connection unused this long is closed (nginx's default)
_CONNECTING: Final = frozenset({errno.EINPROGRESS, errno.EALREADY})
# what a connect uses of the socket module, looked up once (compiled, each use of
# `socket.NAME` is an attribute look-up on the module)
_SOCKET_TYPE: Final = socket.SocketType
_STREAM_NONBLOCK: Final = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_AF_UNIX: Final = socket.AF_UNIX
_IPPROTO_TCP: Final = socket.IPPROTO_TCP
_TCP_NODELAY: Final = socket.TCP_NODELAY


# ------------------------------------------------------------------ runtime state
class Owner(Protocol):
    """Who uses a connection: told of its socket's events."""

    def backend_event(self, mask: int) -> None: ...


class Backend:
    """One address of a configured host (the host's own, or one spawned process's) as
    this worker knows it."""

    __slots__ = ("spec", "proc", "load", "disabled_until", "idle", "kept", "keep_limit",
                 "counters")

    def __init__(self, spec: HostSpec, proc: Proc, keep_limit: int | None = None) -> None:
        self.spec = spec
        self.proc = proc
        self.load = 0                  # requests under way (fair balancing)
        self.disabled_until = 0.0      # out of the rotation until then (monotonic)
        self.idle: list[Connection] = []
        self.kept = 0                  # open connections meant to be kept, busy or idle
        self.keep_limit = keep_limit   # at most that many kept; None: no bound but idle
        self.counters = backend_counters(spec, proc)   # in the stats segment

    @property
    def name(self) -> str:
        """"tcp:10.0.0.2:8080" or "unix:/run/app.sock-0", for logs."""
        return self.proc.name

    @property
    def full(self) -> bool:
        """As many requests under way as its host lets one process take."""
        return self.load >= self.spec.max_load_per_proc


class Connection:
    """A socket to a backend, in the loop from connect to close.  Its events go to its
    owner; without one it is idle, and any event means the backend is done with it."""

    __slots__ = ("backends", "backend", "sock", "fd", "owner", "events", "served",
                 "idle_since", "kept")

    def __init__(self, backends: "Backends", backend: Backend, sock: socket.SocketType,
                 owner: Owner, events: int) -> None:
        self.backends = backends
        self.backend = backend
        self.sock = sock
        self.fd = sock.fileno()
        self.owner: Owner | None = owner
        self.events = events
        self.served = 0                # exchanges finished on it
        self.idle_since = 0.0
        self.kept = False              # counted in its backend's `kept`
        backends.loop.register(self.fd, events, self)

    def on_event(self, mask: int) -> None:
        owner = self.owner
        if owner is not None:
            owner.backend_event(mask)
        else:
            self.backends.drop_idle(self)

    def want(self, events: int) -> None:
        """Poll for `events`.  None at all takes the socket out of epoll: a hang-up is
        reported whatever the mask, and would wake a paused reader again and again."""
        if events == self.events:
            return
        loop = self.backends.loop
        if not events:
            loop.unregister(self.fd)
        elif not self.events:
            loop.register(self.fd, events, self)
        else:
            loop.modify(self.fd, events)
        self.events = events

    def connect_error(self) -> int:
        """After a non-blocking connect reported writable: 0 or its errno."""
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)

    def close(self) -> None:
        """Closing takes the socket out of epoll: no EPOLL_CTL_DEL (nothing shares
        a backend socket: it is opened after the worker forked, never duplicated)."""
        self.owner = None
        if self.kept:
            self.kept = False
            self.backend.kept -= 1
        self.backends.loop.discard(self.fd)
        self.sock.close()


class Backends:
    """The worker's backends of one module: state per HostSpec, balancing, connects,
    idle connections."""

    def __init__(self, services: "Services", source: str = "gw_backend.c",
                 idle_seconds: float = IDLE_SECONDS,
                 initial_keep_limit: int | None = None) -> None:
        self.services = services
        self.loop = services.loop
        self.source = source
        self.idle_seconds = idle_seconds               # idle longer than this: closed
        self.initial_keep_limit = initial_keep_limit   # a backend's until it is known
        self.by_spec: dict[HostSpec, tuple[Backend, ...]] = {}
        self.by_extension: dict[Extension, tuple[Backend, ...]] = {}
        self.last_used: dict[Extension, int] = {}      # round-robin position
        self.down_noted: set[Extension] = set()        # "all handlers down" said once

    def host_backends(self, spec: HostSpec) -> tuple[Backend, ...]:
        """The addresses of one host, in process order."""
        backends = self.by_spec.get(spec)
        if backends is None:
            backends = self.by_spec[spec] = tuple(
                Backend(spec, proc, self.initial_keep_limit) for proc in spec.procs)
        return backends

    def extension_backends(self, extension: Extension) -> tuple[Backend, ...]:
        """Every address of every host of `extension`, host by host."""
        backends = self.by_extension.get(extension)
        if backends is None:
            backends = self.by_extension[extension] = tuple(
                backend for spec in extension.hosts for backend in self.host_backends(spec))
        return backends

    def log(self, message: str) -> None:
        self.services.log_error(self.source, message)

    # ------------------------------------------------------------- balancing
    def choose(self, extension: Extension, balance: str, path: str, authority: str,
               client: str) -> Backend | None:
        """A backend of `extension` that is up, as lighttpd's gw_host_get picks it; None
        when all are down (the caller answers 503)."""
        if balance == "round-robin":
            chosen = self._round_robin(extension)
        elif balance == "fair" or len(extension.hosts) == 1:
            chosen = self._least_loaded(self.by_extension.get(extension)
                                        or self.extension_backends(extension))
        else:
            key = djbhash(authority, djbhash(path)) if balance == "hash" else djbhash(client)
            chosen = self._highest_hash(extension, key)
        if chosen is None:
            self._note_down(extension, path)
        elif self.down_noted:
            self.down_noted.discard(extension)
        return chosen

    def _least_loaded(self, backends: tuple[Backend, ...]) -> Backend | None:
        """The first available address with the fewest requests under way, one with
        room under max-load-per-proc before any that is full."""
        chosen = None
        for backend in backends:
            if (not backend.disabled_until or self.available(backend)) and (
                    chosen is None or (backend.full, backend.load) < (chosen.full, chosen.load)):
                chosen = backend
        return chosen

    def _round_robin(self, extension: Extension) -> Backend | None:
        """The next available address after the last one used, one with room first."""
        backends = self.extension_backends(extension)
        start = self.last_used.get(extension, -1) + 1
        fallback = -1
        for step in range(len(backends)):
            index = (start + step) % len(backends)
            backend = backends[index]
            if not self.available(backend):
                continue
            if not backend.full:
                self.last_used[extension] = index
                return backend
            if fallback < 0:
                fallback = index
        self.last_used[extension] = fallback
        return backends[fallback] if fallback >= 0 else None

    def _highest_hash(self, extension: Extension, key: int) -> Backend | None:
        """The host whose hash is furthest from the key, among those with an address up
        (lighttpd's hash and sticky), and its least loaded address."""
        chosen, best = None, 0
        for spec in extension.hosts:
            backend = self._least_loaded(self.host_backends(spec))
            if backend is not None and (key ^ spec.hash) >= best:
                chosen, best = backend, key ^ spec.hash
        return chosen

    def _note_down(self, extension: Extension, path: str) -> None:
        if extension not in self.down_noted:
            self.down_noted.add(extension)
            self.log(f"all handlers for {path} on {extension.key} are down.")

    # ---------------------------------------------------------------- health
    def available(self, backend: Backend) -> bool:
        """Up, or back after its disable-time (then said so in the log)."""
        until = backend.disabled_until
        if not until:
            return True
        if self.loop.now < until:
            return False
        backend.disabled_until = 0.0
        spec = backend.spec
        self.log(f"gw-server re-enabled: {backend.name} {spec.host} {spec.port}")
        return True

    def disable(self, backend: Backend, err: OSError) -> None:
        """A backend that refused or did not answer a connect, or whose process died
        under a request, sits out its disable-time; its idle connections go too."""
        self.log(f"establishing connection failed: socket: {backend.name}: {err.strerror}")
        backend.counters.on_failed(err.errno == errno.EAGAIN)
        backend.disabled_until = self.loop.now + backend.spec.disable_time
        while backend.idle:
            backend.idle.pop().close()

    # ----------------------------------------------------------- connections
    def connect(self, backend: Backend, owner: Owner) -> tuple[Connection, bool]:
        """A new non-blocking connection and whether it is established already (else
        it reports EPOLLOUT when it is, or has failed).  Raises OSError when the
        backend refuses at once (unix sockets, or a port nobody listens on)."""
        proc = backend.proc
        # the C socket type: socket.socket's Python layer (its __init__, its close)
        # does nothing a backend connection uses, at three calls a connection
        family = proc.family
        sock = _SOCKET_TYPE(family, _STREAM_NONBLOCK)
        try:
            if family != _AF_UNIX:
                sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
            code = sock.connect_ex(proc.address)
        except OSError:
            sock.close()
            raise
        if code and code not in _CONNECTING:
            sock.close()
            raise OSError(code, os.strerror(code))
        return Connection(self, backend, sock, owner, EPOLLOUT if code else EPOLLIN), not code

    @staticmethod
    def may_keep(backend: Backend) -> bool:
        """Whether a request to `backend` may ask for a connection that outlives it:
        an idle one is there, or a new one stays within the backend's keep_limit."""
        limit = backend.keep_limit
        return bool(backend.idle) or limit is None or backend.kept < limit

    @staticmethod
    def hold(connection: Connection) -> bool:
        """Count a new connection among its backend's kept ones, if the limit allows
        (else it serves one request and is closed)."""
        backend = connection.backend
        limit = backend.keep_limit
        if limit is not None and backend.kept >= limit:
            return False
        connection.kept = True
        backend.kept += 1
        return True

    def take_idle(self, backend: Backend, owner: Owner) -> Connection | None:
        """The most recently used idle connection to `backend`, now `owner`'s."""
        idle = backend.idle
        if not idle:
            return None
        connection = take(idle, -1)
        connection.owner = owner
        return connection

    def give_back(self, connection: Connection) -> None:
        """An exchange finished cleanly on `connection`: keep it for the next one, up to
        the backend's keepalive count, else close it."""
        backend = connection.backend
        connection.served += 1
        if len(backend.idle) >= backend.spec.keepalive:
            connection.close()
            return
        connection.owner = None
        connection.want(EPOLLIN)
        connection.idle_since = self.loop.now
        backend.idle.append(connection)

    def drop_idle(self, connection: Connection) -> None:
        """An idle connection had an event: the backend closed it (or spoke unasked)."""
        idle = connection.backend.idle
        if connection in idle:
            idle.remove(connection)
        connection.close()

    def tick(self, now: float) -> None:
        """Once a second: close connections idle for longer than `idle_seconds`; the
        requests under way on each backend to the stats segment."""
        for backends in self.by_spec.values():
            for backend in backends:
                backend.counters.set_load(backend.load)
                idle = backend.idle
                while idle and now - idle[0].idle_since > self.idle_seconds:
                    idle.pop(0).close()
