"""What the worker lends its modules: the event loop, timers, child processes, the stat
cache, the error log and the stats slot (lighttpd's `srv` as plugins see it).

A module gets this object at construction (`self.services`) and never reaches through a
request into the connection or the server: what a module may touch is all here, so the
core can change behind it (another transport, HTTP/2 streams) without the modules
noticing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

from shared import log

from .loop import EventLoop, Timer
from .statcache import CACHE, StatCache

if TYPE_CHECKING:
    from master.configload import LoadedConfig

    from .counters import WorkerCounters
    from .request import Request


class _ChildWatch:
    """A child's pidfd in the loop: readable once the child has exited; then reaped."""

    __slots__ = ("services", "pid", "fd", "callback")

    def __init__(self, services: "Services", pid: int, fd: int,
                 callback: Callable[[int], None]) -> None:
        self.services, self.pid, self.fd, self.callback = services, pid, fd, callback

    def on_event(self, _mask: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:          # reaped by someone else: nothing to report
            pid, status = self.pid, 0
        if pid == 0:
            return       # readable a moment before the kernel lets it be reaped: again
        self.services.loop.unregister(self.fd)
        os.close(self.fd)
        self.callback(os.waitstatus_to_exitcode(status))


def _nothing(_asking: object) -> None:
    """No server to ask (a Services made alone, in a test)."""


class Services:
    """The worker's context for modules.  `loop.register(fd, events, handler)` puts a
    backend fd in the worker's epoll (`handler.on_event(mask)` is called when it is
    ready); `call_later` arms a one-shot timer; `watch_child` reaps a child without
    blocking and without SIGCHLD."""

    def __init__(self, loop: EventLoop, config: "LoadedConfig", counters: "WorkerCounters",
                 max_connections: int, upload_dirs: tuple[str, ...]) -> None:
        self.loop = loop
        self.config = config
        self.counters = counters
        self.max_connections = max_connections
        self.upload_dirs = upload_dirs
        self.stat_cache: StatCache = CACHE
        self.modules: list[Any] = []        # the loaded modules, in server.modules order
        # the worker's connections by state into the stats segment now, the one given
        # counted as handling a request (Server.publish_states)
        self.publish_states: Callable[[object], None] = _nothing

    @staticmethod
    def log_error(source: str, message: str) -> None:
        log.error(source, message)

    @staticmethod
    def breakage_log(request: "Request", source: str) -> int | None:
        """The fd of the request's server.breakagelog for a child's stderr, or None (no
        breakagelog, or it cannot be opened: said in the error log)."""
        target = request.settings.values["server.breakagelog"]
        if not target:
            return None
        try:
            return log.BREAKAGE.fd(target)
        except OSError as err:
            log.error(source, f"opening breakagelog '{target}' failed: {err.strerror}")
            return None

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.loop.call_later(delay, callback)

    def watch_child(self, pid: int, callback: Callable[[int], None]) -> None:
        """Call `callback(exit_code)` once child `pid` has exited, reaping it (a negative
        code is the signal that ended it)."""
        fd = os.pidfd_open(pid)
        self.loop.register(fd, 1, _ChildWatch(self, pid, fd, callback))  # EPOLLIN
