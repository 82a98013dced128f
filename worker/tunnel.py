"""A client connection relayed to a backend socket, both ways, with backpressure: the
part mod_wstunnel and mod_sockproxy share (lighttpd's gw_backend.c in its transparent
mode, gw_set_transparent).

A `BackendTunnel` connects to the chosen backend without blocking (a backend that
refuses or does not answer within its `connect-timeout` sits out its `disable-time`
and another of the extension is tried, 503 when none is left), then relays: the
client's bytes (the core's tunnel hands them over as the request's body) go to the
backend, through `upstream`; the backend's go to the client through `downstream`.
Memory stays bounded: the backend is not read while the client is BACKLOG_HIGH
behind (the core wakes the tunnel when it caught up), and the client's bytes are not
taken while the backend has not taken the previous ones (the core stops reading a
client whose bytes wait).  A subclass says what happens once connected
(`connected`), how bytes are framed each way, and what either side's end means.  Its
module is a GatewayModule (worker/gw_exchange.py), which keeps it under its name in
the request's plugin_ctx, steps it and ticks it.
"""

from __future__ import annotations

import errno
import os

from mypy_extensions import mypyc_attr

from shared.gateway_hosts import Extension

from .backend import EPOLLIN, EPOLLOUT, Backend
from .gw_exchange import BackendWork, GatewayModule
from .module import BACKLOG_HIGH, WAIT, HandlerResult
from .request import Request

READ_SIZE = 64 * 1024
MAX_RECONNECTS = 5               # other backends tried after failed connects (lighttpd's)
# states of a tunnel
CONNECTING, OPEN, DONE = range(3)


@mypyc_attr(allow_interpreted_subclasses=True)   # tests/worker/test_mod_sockproxy.py
class BackendTunnel(BackendWork):
    """One client relayed to one backend; `step` moves it on and returns the request's
    next result (see the module docstring)."""

    __slots__ = ("outgoing", "timed_out", "shut")

    def __init__(self, module: GatewayModule, request: Request, extension: Extension,
                 backend: Backend) -> None:
        super().__init__(module, request, extension, backend, CONNECTING)
        self.outgoing = bytearray()      # bytes the backend has not taken yet
        self.timed_out = False
        self.shut = False                # the backend was told the client ended

    # ------------------------------------------------------------ loop side
    def check_timeout(self, now: float) -> None:
        """Once a second: the backend's connect-timeout."""
        if self.state == CONNECTING:
            limit = self.backend.spec.connect_timeout
            if limit and now - self.since > limit:
                self.timed_out = True
                self.request.wake()

    def release(self) -> None:
        """The request is over (answered or aborted): the backend's socket closes."""
        self.drop_connection()
        self.state = DONE
        self.backend.load -= 1
        self.module.active.discard(self)

    # ----------------------------------------------------------- core side
    def step(self) -> HandlerResult:
        events, self.events = self.events, 0
        if self.state == CONNECTING:
            return self._connecting(events)
        if self.state == DONE:
            return self.request.response.status
        return self.relay(events)

    def _connecting(self, events: int) -> HandlerResult:
        if self.timed_out:
            self.timed_out = False
            return self._connect_failed(OSError(errno.ETIMEDOUT,
                                                os.strerror(errno.ETIMEDOUT)))
        if self.connection is None:
            return self._open()
        if not events:
            return WAIT
        code = self.connection.connect_error()
        if code:
            return self._connect_failed(OSError(code, os.strerror(code)))
        return self._reached()

    def _open(self) -> HandlerResult:
        try:
            connection, established = self.module.backends.connect(self.backend, self)
        except OSError as err:
            return self._connect_failed(err)
        self.connection = connection
        self.since = self.module.backends.loop.now
        return self._reached() if established else WAIT

    def _reached(self) -> HandlerResult:
        result = self.connected()
        if self.state == OPEN:
            self.connection.want(EPOLLIN)                # type: ignore[union-attr]
        return result

    def _connect_failed(self, err: OSError) -> HandlerResult:
        """The backend refused or did not answer: it sits out its disable-time and
        another is tried (lighttpd's gw_reconnect); 503 when none is left."""
        module = self.module
        module.backends.disable(self.backend, err)
        self.drop_connection()
        self.reconnects += 1
        request = self.request
        backend = None
        if self.reconnects <= MAX_RECONNECTS:
            backend = module.choose(request, self.extension)
        if backend is None:
            return 503
        self.backend.load -= 1
        backend.load += 1
        self.backend = backend
        return self._open()

    # ------------------------------------------------------------------ relay
    def relay(self, events: int) -> HandlerResult:
        """One turn: the backend's bytes to the client (when the loop said there are
        some, or the client caught up), the client's to the backend; either side's
        end is the subclass's to judge."""
        if self.request.body is None:          # the answer's head is not out yet
            return WAIT
        ended = self._relay_down(events)
        if ended is None:
            ended = self._relay_up()
        if ended is not None:
            return ended
        self.connection.want((0 if self.paused else EPOLLIN)      # type: ignore[union-attr]
                             | (EPOLLOUT if self.outgoing else 0))
        return WAIT

    def _relay_down(self, events: int) -> HandlerResult:
        """Read the backend while the client keeps up; a read shorter than asked took
        all there was (the loop is level-triggered: it says when more came)."""
        request = self.request
        response = request.response
        if self.paused:
            if response.wants_drain:
                return None
            self.paused = False
        elif not events & ~EPOLLOUT:
            return None
        sock = self.connection.sock                    # type: ignore[union-attr]
        while request.backlog() < BACKLOG_HIGH:
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as err:
                return self.backend_ended(err)
            if not data:
                return self.backend_ended(None)
            response.write(self.downstream(data))
            if len(data) < READ_SIZE:
                return None
        self.paused = response.wants_drain = True
        return None

    def _relay_up(self) -> HandlerResult:
        """Send what the backend has not taken; take more of the client's bytes only
        once it took all."""
        body = self.request.body
        while True:
            if self.outgoing and not self._send_outgoing():
                return self.backend_ended(None)
            if self.outgoing or not body.unread:
                break
            ended = self.upstream(body.read_chunk(READ_SIZE))
            if ended is not None:
                return ended
        if body.complete and not body.unread and not self.outgoing and not self.shut:
            return self.client_ended()
        return None

    def _send_outgoing(self) -> bool:
        """False when the backend's socket broke."""
        sock = self.connection.sock                    # type: ignore[union-attr]
        try:
            sent = sock.send(self.outgoing)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as err:
            self.module.log(f"sending to {self.backend.name} failed: {err.strerror}")
            return False
        del self.outgoing[:sent]
        return True

    def finish(self) -> HandlerResult:
        """The tunnel is over: the backend's socket closes, the answer ends (and the
        connection with it)."""
        self.drop_connection()
        self.state = DONE
        return self.request.response.status

    def drop_connection(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()

    # ------------------------------------------------------ for the subclasses
    def connected(self) -> HandlerResult:
        """The backend is reached: answer the client, and set OPEN to relay."""
        raise NotImplementedError

    def downstream(self, data: bytes) -> bytes:
        """The backend's bytes as they go to the client."""
        return data

    def upstream(self, data: bytes) -> HandlerResult:
        """The client's bytes: add what the backend gets to `outgoing`; a result ends
        the tunnel."""
        self.outgoing += data
        return None

    def backend_ended(self, err: OSError | None) -> HandlerResult:
        """The backend closed (`err` None) or broke."""
        return self.finish()

    def client_ended(self) -> HandlerResult:
        """The client ended its side and the backend has all it sent."""
        return self.finish()
