"""One request's round trip to a gateway backend, shared by mod_proxy, mod_fastcgi and
mod_scgi: lighttpd's gw_handler_ctx and the state machine of gw_backend.c, without a
protocol in it.

An `Exchange` takes an idle connection to the chosen backend or connects without
blocking, sends what its protocol put in `outgoing` and the request body (from
memory, with sendfile from its temp file, or as it arrives, framed by the protocol),
as fast as the backend takes it, then reads the answer and hands every byte to the
protocol (`take`), at most BACKLOG_HIGH ahead of the client (then it pauses until the
core says the client caught up).  What goes wrong is lighttpd's: a backend that
refuses or does not answer a connect is disabled for its `disable-time` and another
of the extension is tried (503 when none is left), one that closes without an answer
is 502, `read-timeout` / `write-timeout` are 504, `connect-timeout` a failed connect;
once the client has seen the answer's head the connection is cut instead.  A kept
connection the backend closed just as it was reused is retried once on a new one for
idempotent methods (RFC 9110 9.2.2).

A protocol subclasses `Exchange` and fills in `prepare` (the bytes to send first, and
how the body goes), `take` (bytes from the backend: a result once the answer is
complete) and, if it needs them, `frame` / `frame_end` (a body part as the protocol
sends it), `closed` (the backend closed: is that the end of the answer?) and
`answer_started`.  A module subclasses `GatewayModule`, which keeps the exchanges,
their backends and their timeouts.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any, ClassVar, Final

from mypy_extensions import mypyc_attr

from shared.gateway_hosts import Extension

from .backend import (EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, IDLE_SECONDS, Backend, Backends,
                      Connection)
from .body import RequestBody
from .gateway import abandon_answer
from .module import BACKLOG_HIGH, ERROR, WAIT, HandlerResult, Module
from .request import Request

if TYPE_CHECKING:
    from .services import Services

READ_SIZE: Final = 64 * 1024
MAX_RECONNECTS: Final = 5               # other backends tried after failed connects (lighttpd's)
IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
_HUNG_UP_OR_FAILED: Final = EPOLLHUP | EPOLLERR
# states of an Exchange
OPENING: Final = 0
CONNECTING: Final = 1
SENDING: Final = 2
READING: Final = 3
TUNNEL: Final = 4
DONE: Final = 5


@mypyc_attr(allow_interpreted_subclasses=True)   # the gateway modules
class GatewayModule(Module):
    """A module whose requests go to backends of a `NAME.server` directive (NAME is
    the module's `name`: its directives are NAME.server, NAME.balance, NAME.debug,
    and its exchange is kept in the request's plugin_ctx under NAME)."""

    source: ClassVar[str] = "gw_backend.c"     # the error log's source of its lines
    reads_request_body = True
    # Whether a request is claimed depends on its settings and URL alone, and a
    # backend's answer is never kept: static answers beside a gateway may be replayed.
    replay_safe = True
    idle_seconds: ClassVar[float] = IDLE_SECONDS       # a kept connection's idle life
    initial_keep_limit: ClassVar[int | None] = None     # see worker/backend.py

    def __init__(self, config: Any, services: "Services") -> None:
        super().__init__(config, services)
        self.services: "Services" = services
        # read natively, where the class attribute `name` costs an attribute look-up
        self.ctx_key = self.name          # its exchange's key in a request's plugin_ctx
        self.balance_key = self.name + ".balance"
        self.debug_key = self.name + ".debug"
        self.backends = Backends(services, self.source, self.idle_seconds,
                                 self.initial_keep_limit)
        self.active: set[BackendWork] = set()

    def log(self, message: str) -> None:
        self.services.log_error(self.source, message)

    def choose(self, request: Request, extension: Extension) -> Backend | None:
        """A backend of `extension` as NAME.balance says; None when all are down."""
        return self.backends.choose(
            extension, request.settings.values[self.balance_key], request.uri_path,
            request.host, request.remote_ip)

    def release(self, request: Request) -> None:
        """Forget the request's exchange (over, or the phases run again)."""
        exchange: BackendWork | None = request.plugin_ctx.pop(self.ctx_key, None)
        if exchange is not None:
            exchange.release()

    def handle_subrequest(self, request: Request) -> HandlerResult:
        exchange: BackendWork = request.plugin_ctx[self.ctx_key]
        return exchange.step()

    def handle_request_reset(self, request: Request) -> None:
        self.release(request)

    def handle_trigger(self, now: float) -> None:
        self.backends.tick(now)
        for exchange in list(self.active):
            exchange.check_timeout(now)


@mypyc_attr(allow_interpreted_subclasses=True)   # worker/tunnel.BackendTunnel
class BackendWork:
    """What a request's work with one backend holds, whatever the protocol (an
    Exchange, a tunnel): counted in the backend's load and its module's active set
    from the start."""

    __slots__ = ("module", "request", "extension", "backend", "connection", "state",
                 "events", "reconnects", "since", "paused")

    def __init__(self, module: GatewayModule, request: Request, extension: Extension,
                 backend: Backend, state: int) -> None:
        self.module = module
        self.request = request
        self.extension = extension
        self.backend = backend
        self.connection: Connection | None = None
        self.state = state
        self.events = 0                # what the loop reported since the last step
        self.reconnects = 0
        self.since = module.backends.loop.now   # when the current wait began
        self.paused = False            # the client is behind: not reading the backend
        backend.load += 1
        module.active.add(self)

    def backend_event(self, mask: int) -> None:
        """The backend's socket is ready: note it and let the core resume the request."""
        self.events |= mask
        self.request.wake()

    def step(self) -> HandlerResult:
        """The request's next result, from what happened since the last step."""
        raise NotImplementedError

    def check_timeout(self, now: float) -> None:
        """Once a second: wake the request if its current wait outlasted its timeout
        (which waits have one depends on the kind of work)."""
        raise NotImplementedError

    def release(self) -> None:
        """The request is over (answered or aborted): close what is still open and
        leave the backend's load."""
        raise NotImplementedError


@mypyc_attr(allow_interpreted_subclasses=True)   # the gateway modules' exchanges
class Exchange(BackendWork):
    """One request's round trip to a backend.  Its states: OPENING (no connection
    yet), CONNECTING, SENDING, READING, TUNNEL (a protocol's switched connection),
    DONE; `step` moves it on and returns the request's next result."""

    __slots__ = ("outgoing", "body_fd", "body_offset", "body_left", "body_stream",
                 "blocked", "reused", "retried", "timeout", "keep_alive", "received",
                 "debug_level")

    def __init__(self, module: GatewayModule, request: Request, extension: Extension,
                 backend: Backend) -> None:
        super().__init__(module, request, extension, backend, OPENING)
        self.outgoing: bytes | memoryview = b""    # what to send next (a view once cut)
        self.body_fd = -1              # a whole body's temp file, sent with sendfile
        self.body_offset = 0
        self.body_left = 0
        self.body_stream: RequestBody | None = None   # a body taken part by part
        self.blocked = False           # the backend's socket took no more: EPOLLOUT
        self.reused = False            # the connection served a request before
        self.retried = False
        self.timeout = ""              # "connect", "read" or "write" once one ran out
        self.keep_alive = False        # the connection may serve another request after
        self.received = 0              # bytes the backend sent
        self.debug_level: int = request.settings.values[module.debug_key]

    # ------------------------------------------------------ protocol hooks
    def prepare(self) -> HandlerResult:
        """Put the request's first bytes in `outgoing` and set up its body (see
        `send_body`); a status to answer without a backend, else None."""
        raise NotImplementedError

    def take(self, data: bytes) -> HandlerResult:
        """Bytes from the backend: the request's result once the answer is complete
        (see `finish`), or None to read on."""
        raise NotImplementedError

    def frame(self, data: bytes) -> bytes:
        """A part of a body taken as it comes, as the protocol sends it."""
        return data

    def frame_end(self) -> bytes:
        """What follows the last part of such a body."""
        return b""

    def closed(self, err: OSError | None) -> HandlerResult:
        """The backend closed (`err` None) or reset the connection: the result if that
        ends a complete answer, else None (a failure)."""
        return None

    def answer_started(self) -> None:
        """Nothing more to read for now: a protocol whose head is in lets it go out."""

    def may_reuse(self) -> bool:
        return not self.retried

    # ------------------------------------------------------------ loop side
    def check_timeout(self, now: float) -> None:
        """Once a second: connect-timeout, write-timeout, read-timeout."""
        if self.connection is None or self.timeout:
            return
        spec = self.backend.spec
        if self.state == CONNECTING:
            limit, kind = spec.connect_timeout, "connect"
        elif self.state == SENDING and self.blocked:
            limit, kind = spec.write_timeout, "write"
        elif self.state in (READING, TUNNEL) and not self.paused:
            limit, kind = spec.read_timeout, "read"
        else:
            return
        if limit and now - self.since > limit:
            self.timeout = kind
            self.request.wake()

    def release(self) -> None:
        """The request is over (answered or aborted): close what is still open."""
        if self.connection is not None:
            self._drop_connection()
        self.backend.load -= 1
        self.module.active.discard(self)

    # ----------------------------------------------------------- core side
    def step(self) -> HandlerResult:
        if self.timeout:
            return self._timed_out()
        if self.state == OPENING:
            return WAIT if self.request.waits_for_body() else self._open()
        events, self.events = self.events, 0
        if self.state == CONNECTING:
            if not events:
                return WAIT
            code = self.connection.connect_error()       # type: ignore[union-attr]
            if code:
                return self._connect_failed(OSError(code, os.strerror(code)))
            self.backend.counters.on_connected()
            return self._start_sending()
        if self.state == SENDING and (events & EPOLLOUT or not self.blocked) \
                and not self._send():
            return self._receive()
        if self.paused:
            if self.request.response.wants_drain:
                return WAIT
            self.paused = False
            self._poll()
            return self._receive()
        if events & ~EPOLLOUT:
            return self._receive(events & _HUNG_UP_OR_FAILED == EPOLLHUP)
        return WAIT

    def _poll(self) -> None:
        """Ask the loop for what the exchange waits on: the backend's bytes unless the
        client is behind, room to send while a send would block."""
        connection = self.connection
        events = (0 if self.paused else EPOLLIN) | (EPOLLOUT if self.blocked else 0)
        if events != connection.events:                   # type: ignore[union-attr]
            connection.want(events)                        # type: ignore[union-attr]

    def _open(self) -> HandlerResult:
        """Take an idle connection to the backend or start connecting."""
        early = self.prepare()
        if early is not None:
            return early
        module = self.module
        backend = self.backend
        connection = module.backends.take_idle(backend, self) \
            if backend.idle and self.may_reuse() else None
        if connection is not None:
            self.connection, self.reused = connection, True
            backend.counters.on_reused()
            if self.debug_level:
                module.log(f"{module.name} - reusing a connection to {backend.name}")
            return self._start_sending()
        try:
            connection, established = module.backends.connect(backend, self)
        except OSError as err:
            return self._connect_failed(err)
        self.connection, self.reused = connection, False
        if self.keep_alive:
            self.keep_alive = module.backends.hold(connection)
        if self.debug_level:
            module.log(f"{module.name} - connecting to {backend.name}")
        if not established:
            self.state = CONNECTING
            self.since = module.backends.loop.now
            return WAIT
        backend.counters.on_connected()
        return self._start_sending()

    def send_body(self, head: bytes, whole_raw: bool) -> None:
        """What to send: `head`, then the body.  `whole_raw`: a complete body goes as it
        is, from memory or with sendfile from its file; otherwise (and for a body still
        arriving) it is taken part by part, each `frame`d."""
        body = self.request.body
        self.body_left = 0
        self.body_stream = None
        self.outgoing = head
        if body is None or (body.complete and not body.size):
            self.outgoing = head + self.frame_end()
        elif not body.complete or not whole_raw:
            self.body_stream = body
        elif body.file is None:
            self.outgoing = head + body.read()
        else:
            self.body_fd, self.body_offset, self.body_left = body.whole_file(), 0, body.size

    def _start_sending(self) -> HandlerResult:
        self.state = SENDING
        self.since = self.module.backends.loop.now
        if not self._send():
            return self._receive()
        return WAIT

    def _send(self) -> bool:
        """Send what is left of the request, and of its body as it arrives; False when
        the backend went away (what it answered before may still be read)."""
        connection = self.connection
        assert connection is not None
        loop = self.module.backends.loop
        try:
            while True:
                outgoing = self.outgoing
                while outgoing:
                    sent = connection.sock.send(outgoing)
                    # what is left, without copying it; most requests go in one send
                    outgoing = self.outgoing = \
                        memoryview(outgoing)[sent:] if sent < len(outgoing) else b""
                    self.since = loop.now
                while self.body_left:
                    sent = os.sendfile(connection.fd, self.body_fd, self.body_offset,
                                       self.body_left)
                    if not sent:
                        raise OSError(errno.EIO, "the request body's file ended early")
                    self.body_offset += sent
                    self.body_left -= sent
                    self.since = loop.now
                if self.body_stream is None or not self._next_body_part():
                    break
        except (BlockingIOError, InterruptedError):
            self.blocked = True
            self._poll()
            return True
        except OSError as err:
            if self.debug_level:
                self.module.log(f"{self.module.name} - sending to {self.backend.name} "
                                f"failed: {err.strerror}")
            self.state = READING
            self.keep_alive = self.blocked = False
            self._poll()
            return False
        self.blocked = False
        if self.body_stream is None:          # all of it is out: the answer is next
            self.state = READING
            self.since = loop.now
        self._poll()
        return True

    def _next_body_part(self) -> bool:
        """The next piece of a body taken part by part, framed, in `outgoing`; False
        when none is here yet, or all went."""
        body = self.body_stream
        if body is None:
            return False
        data = body.read_chunk()
        if data:
            self.outgoing = self.frame(data)
            return True
        if not body.complete:
            return False                      # the core wakes us when more came
        self.body_stream = None
        end = self.frame_end()
        if not end:
            return False
        self.outgoing = end
        return True

    def _receive(self, hung_up: bool = False) -> HandlerResult:
        """Read what the backend sent: at most BACKLOG_HIGH in one turn, and only while
        the client's backlog allows (it counts with server.stream-response-body = 2;
        otherwise the core parks what the client has not taken on disk).  `hung_up`:
        the loop saw the backend close (EPOLLHUP without an error), so a short read
        took all it sent and its end is known without asking the socket once more."""
        request = self.request
        assert self.connection is not None
        sock = self.connection.sock
        budget = BACKLOG_HIGH - request.backlog()
        while budget > 0:
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return self._waiting()
            except OSError as err:
                return self._lost(err)
            if not data:
                return self._lost(None)
            self.received += len(data)
            self.since = self.module.backends.loop.now
            result = self.take(data)
            if result is not None:
                return result
            if hung_up and len(data) < READ_SIZE:
                return self._lost(None)
            budget -= len(data)
        if request.backlog() >= BACKLOG_HIGH:
            return self._pause()
        return self._waiting()       # a turn for the core; the loop brings us back

    def _waiting(self) -> HandlerResult:
        self.answer_started()
        return WAIT

    def _pause(self) -> HandlerResult:
        """The client is BACKLOG_HIGH behind: stop reading until the core says it caught
        up (the backend's socket buffer fills and the backend waits in turn)."""
        self.paused = True
        self._poll()
        response = self.request.response
        response.wants_drain = True
        if not response.streaming:
            response.stream()
        return WAIT

    def finish(self, result: HandlerResult, reusable: bool) -> HandlerResult:
        """The whole answer is in: the connection goes back to the pool if the
        protocol and the exchange allow it, else it is closed."""
        connection, self.connection = self.connection, None
        if connection is not None:
            if reusable and self.keep_alive and self.state == READING:
                self.module.backends.give_back(connection)
            else:
                connection.close()
        self.state = DONE
        return result

    # --------------------------------------------------------------- failures
    def _lost(self, err: OSError | None) -> HandlerResult:
        """The backend closed (`err` None) or reset the connection."""
        result = self.closed(err)
        if result is not None:
            return result
        if not self.received and self._may_retry():
            if self.debug_level:
                self.module.log(f"{self.module.name} - a kept connection was closed; "
                                "retrying")
            self.retried = True
            self._drop_connection()
            self.state = OPENING
            return self._open()
        reason = err.strerror if err is not None else "connection closed"
        if not self.received:
            return self.error(502, f"response not received ({reason})")
        return self.error(502, f"response incomplete ({reason})")

    def _may_retry(self) -> bool:
        """A kept connection the backend closed as it was reused: once more on a new
        one, for a method that may be repeated and a body we still have whole."""
        body = self.request.body
        return self.reused and not self.retried and self.request.method in IDEMPOTENT \
            and (body is None or (body.complete and not body.consumed))

    def _connect_failed(self, err: OSError) -> HandlerResult:
        self.module.backends.disable(self.backend, err)
        self._drop_connection()
        return self._elsewhere(MAX_RECONNECTS)

    def _timed_out(self) -> HandlerResult:
        kind, self.timeout = self.timeout, ""
        if kind == "connect":
            return self._connect_failed(OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT)))
        fd = self.connection.fd if self.connection is not None else -1
        self.module.log(f"{kind} timeout on socket: {self.backend.name} (fd: {fd})")
        return self.error(504, "")

    def _elsewhere(self, limit: int) -> HandlerResult:
        """Another backend of the extension for a request that could not connect
        (lighttpd's gw_reconnect); 503 when there is none or too many were tried."""
        self.reconnects += 1
        backend = None
        if self.reconnects <= limit:
            backend = self.module.choose(self.request, self.extension)
        if backend is None:
            return self.error(503, "")
        self.backend.load -= 1
        backend.load += 1
        self.backend = backend
        self.state = OPENING
        return self._open()

    def error(self, status: int, reason: str) -> HandlerResult:
        """End the exchange with an error: the status, with lighttpd's page, while the
        client has seen nothing; ERROR (the connection cut) once it has."""
        request = self.request
        self._drop_connection()
        self.state = DONE
        if reason:
            self.module.log(f"{reason} on socket: {self.backend.name} for {request.host} "
                            f"{request.uri_path}?{request.uri_query}")
        return abandon_answer(request, status)

    def _drop_connection(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()
