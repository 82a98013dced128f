"""The worker process proper: listeners, connections, signals, shutdown.

Signal handlers only record the signal; the wakeup fd makes epoll return, and the loop
acts on the flags between events.  SIGTERM/SIGINT stop now; SIGQUIT drains: stop
accepting (close our listener copies), answer in-flight requests with
`Connection: close`, close idle keep-alive connections, exit when the last connection
is gone or server.graceful-shutdown-timeout runs out.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import socket
import time
from typing import TYPE_CHECKING, Final, Iterable, Protocol

from shared import log
from shared.config.compiled import CompiledConfig, RequestSettings
from shared.config.feature_flags import flag_int
from shared.stats import State

from . import debuglog
from .answercache import condition_fields
from .connection import CLOSED, LINGER, READ, REQUEST_START, WRITE, Connection
from .counters import WorkerCounters
from .h2_offer import enabled as h2_enabled, h2c_upgrade_asked
from .handler import Pipeline
from .http import DATE
from .loop import EventLoop
from .module import Module
from .services import Services
from .statcache import CACHE
from .transport import socket_transport
from .wire import Wire

if TYPE_CHECKING:
    from master.configload import LoadedConfig
    from shared.stats import StatsSegment

    from .request import Request

ACCEPT_BATCH: Final = 64
EPOLLIN: Final = select.EPOLLIN
EPOLLOUT: Final = select.EPOLLOUT
FAST_STOP: Final = (signal.SIGTERM, signal.SIGINT)
UNLIMITED_FDS: Final = 4096     # what a worker plans with when RLIMIT_NOFILE is unlimited
# accept() errors about the one connection being taken (Linux passes pending network
# errors of a new connection on through accept): skip it, the next may be fine
CLIENT_ERRORS: Final = frozenset({errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.EPERM,
                                  errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTDOWN,
                                  errno.EHOSTUNREACH, errno.ENONET, errno.ENOPROTOOPT,
                                  errno.EOPNOTSUPP, errno.ETIMEDOUT})


class ServedConnection(Protocol):
    """What the server asks of an entry of its connection table: a Connection, or the
    H2Session that took one's place."""

    @property
    def fd(self) -> int: ...

    @property
    def state(self) -> object: ...

    def check_timeout(self, now: float) -> None: ...

    def begin_drain(self) -> None: ...

    def close(self) -> None: ...


def instantiate_modules(config: "LoadedConfig", services: Services) -> list[Module]:
    """Each module class once per worker, in server.modules order."""
    services.modules = [cls(config.compiled, services) for cls in config.modules]
    return services.modules


def graceful_timeout(settings: dict) -> float:
    """server.graceful-shutdown-timeout, or its server.feature-flags spelling (Debian's
    default config uses the latter); 0 means no limit."""
    return float(flag_int(settings, "server.graceful-shutdown-timeout",
                          settings["server.graceful-shutdown-timeout"]))


def fd_limit(settings: dict) -> int:
    """The open files a worker may have: RLIMIT_NOFILE, or server.max-fds when that is
    lower (lighttpd lowers the rlimit to it; the master only ever raises it)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limits = [fds for fds in (soft, settings["server.max-fds"]) if fds > 0]
    return min(limits) if limits else UNLIMITED_FDS


def connection_limit(settings: dict) -> int:
    """Connections one worker takes at once, as lighttpd's server.c sets max_conns:
    server.max-connections but at most half the fd limit, by default a third of it.
    A connection may hold its socket and an open file, so at this limit a worker stops
    accepting before accept() itself runs out of fds."""
    fds = fd_limit(settings)
    wanted = settings["server.max-connections"]
    if wanted > fds // 2:
        log.error("server.c", f"can't have more connections than fds/2: {wanted} {fds}")
        return max(fds // 2, 1)
    return wanted or max(fds // 3, 1)


def remote_address(address: object) -> str:
    """The client's IP as conditions compare it (v4-mapped IPv6 shown as IPv4)."""
    if isinstance(address, tuple):
        host = address[0]
        return host[7:] if host.startswith("::ffff:") and "." in host else host
    return ""


class Server:
    def __init__(self, config: "LoadedConfig",
                 listeners: Iterable[tuple[socket.socket, str]],
                 idle_exit: float | None = None, stats: "StatsSegment | None" = None,
                 stats_slot: int = 0, master_pid: int = 0) -> None:
        self.config = config
        self.compiled: CompiledConfig = config.compiled   # what a request's settings are
        settings = config.settings
        # a worker forked by the master writes to the error log it inherited; one
        # started alone (tests, -1) opens server.errorlog itself
        log.ensure_default(settings["server.errorlog"], settings["server.errorlog-use-syslog"],
                           settings["server.syslog-facility"])
        self.debug = debuglog.any_flag(config.compiled)   # the one check per request
        self.state_log = debuglog.any_flag(config.compiled, ("debug.log-state-handling",))
        self.loop = EventLoop()
        DATE.refresh(time.time())   # imported in the master, maybe hours before the fork
        # what a request sees before its headers are in (and error answers use)
        self.global_settings = RequestSettings(settings)
        CACHE.configure(settings["server.stat-cache-engine"])
        self.counters = WorkerCounters(stats, stats_slot)
        self.loop.after_round.append(self.counters.publish)
        self.socket_transport = socket_transport(settings["server.network-backend"])
        self.header_limit: int = settings["server.max-request-field-size"] or 8192
        self.upload_dirs: tuple[str, ...] = tuple(settings["server.upload-dirs"])
        self.max_connections = connection_limit(settings)
        self.services = Services(self.loop, config, self.counters, self.max_connections,
                                 self.upload_dirs)
        self.services.publish_states = self.publish_states
        fields = condition_fields(config.compiled.conditions)
        self.h2c = h2_enabled(settings, cleartext=True)
        # no answer is replayed under bandwidth limits: each one sets its connection's
        self.pipeline = Pipeline(instantiate_modules(config, self.services),
                                 replay=CACHE.enabled and not self.debug
                                 and not config.compiled.rate_limited,
                                 condition_fields=fields)
        if self.state_log:
            self.pipeline.connection_close.append(debuglog.closed)
        self.paused: list[Wire] = []     # out of bandwidth until the next tick
        self.connections: dict[int, ServedConnection] = {}
        self.listeners = list(listeners)
        self.accepting = False
        self.accept_failing = False     # accept() failing (EMFILE...); a success ends it
        self.draining = False
        self.drain_deadline = 0.0
        self.stop_status: int | None = None
        self.signals: list[int] = []
        self.idle_exit = idle_exit
        self.last_request = time.monotonic()
        # the master that forked this worker (0 for a server started alone): once it is
        # gone, nobody reloads, respawns or stops this worker
        self.master_pid = master_pid
        self.loop.every_second(self._tick)

    # --------------------------------------------------------------- listeners
    def start_accepting(self) -> None:
        for lsock, spec in self.listeners:
            lsock.setblocking(False)
            if lsock.family in (socket.AF_INET, socket.AF_INET6):
                # accepted sockets inherit it: no setsockopt per connection
                lsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.loop.register(lsock.fileno(), EPOLLIN, _Listener(self, lsock, spec))
        self.accepting = True

    def _pause_accepting(self, paused: bool) -> None:
        """Stop listening for new clients (at server.max-connections, or out of fds),
        or listen again."""
        if paused == (not self.accepting) or self.draining:
            return
        for lsock, _spec in self.listeners:
            self.loop.modify(lsock.fileno(), 0 if paused else EPOLLIN)
        self.accepting = not paused

    def publish_states(self, asking: object = None) -> None:
        """This worker's connections by state, into its stats slot: each tick, and when
        mod_status reads the slots, `asking` the connection its page answers, counted
        as handling its request whatever state its last read left it in (lighttpd's
        page counts it so)."""
        reading = writing = waiting = 0
        for connection in self.connections.values():
            state = connection.state
            if state is CLOSED:
                continue
            if connection is asking or not (state is READ or state is REQUEST_START
                                            or state is LINGER):
                writing += 1
            elif state is READ:
                reading += 1
            else:
                waiting += 1
        self.counters.heartbeat(len(self.connections), reading, writing, waiting)

    def _resume_below_limit(self) -> None:
        """Listen again once below server.max-connections: after a close, and on the
        tick (retrying an accept that ran out of fds at most once a second)."""
        if not self.accepting and len(self.connections) < self.max_connections:
            self._pause_accepting(False)

    def accept_from(self, lsock: socket.socket, spec: str) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in CLIENT_ERRORS:
                    continue
                self._accept_failed(err)
                return
            if self.accept_failing:
                self._accept_recovered()
            self.add_connection(sock, remote_address(address), spec)
            if len(self.connections) >= self.max_connections:
                self._pause_accepting(True)
                return

    def _accept_failed(self, err: OSError) -> None:
        """EMFILE, ENFILE, ENOBUFS...: the listener stays readable, so polling it would
        spin.  Stop polling until a connection closes or the next tick, and log the
        episode once, not each retry."""
        self._pause_accepting(True)
        if not self.accept_failing:
            self.accept_failing = True
            log.error("server.c", f"accept failed: {err.strerror}; not accepting until a "
                      f"connection closes (retried once a second), "
                      f"{len(self.connections)} connections open")

    def _accept_recovered(self) -> None:
        self.accept_failing = False
        log.error("server.c", "accepting connections again")

    def add_connection(self, sock: socket.socket, remote_ip: str, spec: str) -> Connection:
        sock.setblocking(False)
        connection = Connection(self, self.socket_transport(sock), remote_ip, spec)
        self.connections[connection.fd] = connection
        self.loop.register(connection.fd, EPOLLIN,
                           debuglog.StateLog(connection) if self.state_log else connection)
        connection.events = EPOLLIN
        for hook in self.pipeline.connection_accept:   # TLS, PROXY, a hand-over ...
            hook(connection)
            if connection.closed:
                break
        self.counters.accepted()
        self.last_request = self.loop.now
        return connection

    def take_over_h2(self, connection: Connection, first: bytes) -> bool:
        """The connection's first bytes start the HTTP/2 preface: if this connection
        may speak HTTP/2 (ALPN "h2" over TLS; h2c by prior knowledge in cleartext, as
        server.feature-flags allow), an H2Session takes its place."""
        if connection.scheme == "https":
            if connection.transport.negotiated() != b"h2":
                return False
        elif not self.h2c:
            return False
        from .h2 import H2Session      # the HTTP/2 stack, once a connection speaks it
        H2Session(connection, first)
        return True

    def take_over_h2c(self, connection: Connection, request: Request) -> bool:
        """`request` asked `Upgrade: h2c` (RFC 7540 3.2): in cleartext, as server.h2c
        allows, an H2Session answers 101, takes the connection's place and answers the
        request as its stream 1; what the client sent after it is the session's."""
        if connection.scheme != "http" or not self.h2c or not h2c_upgrade_asked(request):
            return False
        from .h2 import H2Session
        from .h2_connection import upgrade_settings_refused
        if upgrade_settings_refused(request.headers["http2-settings"].encode()):
            return False
        H2Session(connection, connection.protocol.upgrade_answered(request, True), request)
        return True

    def forget(self, connection: ServedConnection) -> None:
        """A connection is closing its socket: drop it from the loop and the table."""
        self.loop.discard(connection.fd)
        self.connections.pop(connection.fd, None)
        if not self.accepting:
            self._resume_below_limit()

    # ------------------------------------------------------------------ signals
    def install_signals(self) -> int:
        """Signal handlers that only queue; returns the wakeup pipe's read end."""
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1):
            signal.signal(signum, self._queue_signal)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)       # reloads are the master's
        self.loop.register(read_fd, EPOLLIN, _WakeupPipe(read_fd))
        return read_fd

    def _queue_signal(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum in FAST_STOP:
                self.stop_status = 0
            elif signum == signal.SIGQUIT:
                self.begin_drain()
            elif signum == signal.SIGUSR1:
                log.reopen_all()       # error log and access logs (logrotate)

    # ------------------------------------------------------------------ running
    def run(self) -> int:
        """The loop; returns the process exit status."""
        loop = self.loop
        while self.stop_status is None:
            loop.run_once()
            if self.signals:
                self._handle_signals()
            if self.draining and not self.connections:
                self.stop_status = 0
        self.close_all()
        self.counters.publish()    # what the last round counted, before the exit folds it
        log.close_all()            # piped loggers see EOF and finish their lines
        return self.stop_status

    def begin_drain(self) -> None:
        """Graceful stop: no new connections, finish the requests under way."""
        if self.draining:
            return
        self.draining = True
        self.counters.set_state(State.DRAINING)
        timeout = graceful_timeout(self.config.settings)
        self.drain_deadline = self.loop.now + timeout if timeout > 0 else float("inf")
        for lsock, _spec in self.listeners:
            self.loop.unregister(lsock.fileno())
            lsock.close()
        self.listeners = []
        # Idle keep-alive connections are not closed here: a client may be sending its
        # next request right now, and closing would reset it.  Their next answer says
        # `Connection: close` (HTTP/2: GOAWAY); a connection that stays idle ends at its
        # keep-alive timeout as always, and every one at the graceful deadline.
        for connection in list(self.connections.values()):
            connection.begin_drain()
        self.accepting = False

    def _tick(self, now: float) -> None:
        DATE.refresh(time.time())
        self.pipeline.trigger(now)
        if self.paused:
            self.resume_paused()
        for connection in list(self.connections.values()):
            connection.check_timeout(now)
            state = connection.state     # reading or handling a request: not idle
            if not (state is CLOSED or state is REQUEST_START or state is LINGER
                    or state is WRITE):
                self.last_request = now
        self.publish_states()
        self._resume_below_limit()
        if self.master_pid and not self.draining and os.getppid() != self.master_pid:
            self._orphaned()
        if self.draining and now > self.drain_deadline:
            self.stop_status = 0
        if self.idle_exit is not None and not self.connections and \
                now - self.last_request > self.idle_exit:
            self.stop_status = 0

    def _orphaned(self) -> None:
        """The master died without stopping this worker (killed with SIGKILL, say): the
        worker drains as on a graceful stop, so that it neither serves on with a config
        nobody reloads nor keeps the port's listeners beside a new master's."""
        log.error("server.c", f"the master (pid {self.master_pid}) is gone: "
                  "this worker finishes its requests and exits")
        self.begin_drain()

    def resume_paused(self) -> None:
        """A new second: the connections whose bandwidth ran out write again."""
        paused, self.paused = self.paused, []
        for wire in paused:
            wire.paused = False
            if wire.transport.fileno() >= 0:      # still open
                wire.on_event(EPOLLOUT)

    def close_all(self) -> None:
        for connection in list(self.connections.values()):
            connection.close()
        for lsock, _spec in self.listeners:
            self.loop.unregister(lsock.fileno())
            lsock.close()
        self.listeners = []


class _Listener:
    """A listening socket in the loop: readable means connections to accept."""

    __slots__ = ("server", "sock", "spec")

    def __init__(self, server: Server, sock: socket.socket, spec: str) -> None:
        self.server, self.sock, self.spec = server, sock, spec

    def on_event(self, _mask: int) -> None:
        self.server.accept_from(self.sock, self.spec)


class _WakeupPipe:
    """The signal wakeup fd: emptied, so that it wakes the loop again next time."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def on_event(self, _mask: int) -> None:
        try:
            while os.read(self.fd, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
