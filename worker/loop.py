"""The fdevent layer: one epoll, a callback per fd, and a coarse once-a-second timer.

Level-triggered epoll keeps the connection code simple: a connection asks for EPOLLOUT
only while it has queued output, and for EPOLLIN only while it wants a request, so a
wakeup always means there is work.  Timeouts need only second precision (lighttpd's
are in seconds too), so one timer walks the connections once a second instead of a
heap of per-connection deadlines.
"""

from __future__ import annotations

import select
import time
from typing import Callable, Protocol

MAX_EVENTS = 512


class EventHandler(Protocol):
    """What owns a registered fd.  The loop keeps the object itself, not a bound
    method: one allocation less per connection, and ten thousand idle keep-alive
    connections are what this layer is for."""

    def on_event(self, mask: int) -> None: ...


class EventLoop:
    __slots__ = ("epoll", "handlers", "ticks", "next_tick", "now")

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.handlers: dict[int, EventHandler] = {}
        self.ticks: list[Callable[[float], None]] = []
        self.now = time.monotonic()
        self.next_tick = self.now + 1.0

    def register(self, fd: int, events: int, handler: EventHandler) -> None:
        self.epoll.register(fd, events)
        self.handlers[fd] = handler

    def modify(self, fd: int, events: int) -> None:
        self.epoll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        if self.handlers.pop(fd, None) is not None:
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):
                pass   # already closed: the kernel dropped it from the set

    def discard(self, fd: int) -> None:
        """Forget an fd its owner closes right after: closing removes it from the epoll
        set (no other process or dup shares a connection's socket), so the
        EPOLL_CTL_DEL system call unregister() makes is saved."""
        self.handlers.pop(fd, None)

    def every_second(self, callback: Callable[[float], None]) -> None:
        """Run `callback(monotonic_now)` about once a second."""
        self.ticks.append(callback)

    def run_once(self, max_wait: float = 1.0) -> None:
        """Wait for events (at most until the next tick) and dispatch them."""
        timeout = min(max_wait, max(0.0, self.next_tick - time.monotonic()))
        events = self.epoll.poll(timeout, MAX_EVENTS)
        self.now = now = time.monotonic()
        handlers = self.handlers
        for fd, mask in events:
            handler = handlers.get(fd)
            if handler is not None:
                handler.on_event(mask)
        if now >= self.next_tick:
            self.next_tick = now + 1.0
            for callback in self.ticks:
                callback(now)

    def close(self) -> None:
        self.epoll.close()
