"""The fdevent layer: one epoll, a callback per fd, a coarse once-a-second tick and
one-shot timers.

Level-triggered epoll keeps the connection code simple: a connection asks for EPOLLOUT
only while it has queued output, and for EPOLLIN only while it wants a request, so a
wakeup always means there is work.  Connection timeouts need only second precision
(lighttpd's are in seconds too), so the tick walks the connections once a second
instead of a heap of per-connection deadlines.  Modules waiting on a backend get
one-shot timers (`call_later`) for their own deadlines; the heap holds only those.

Answers made during a round go out together once its events are dispatched
(`sends_later`, as Redis writes its replies before it waits again).  Each send that finds
the client waiting wakes it, and a wake-up costs the sender a context switch or an
inter-processor interrupt when the client's process is scheduled onto its core; sent
as they are made, the answers of a busy round wake a client once per answer, sent
together once per round.  Measured beside wrk on two cores: a quarter of the worker's
time went to those wake-ups.  A round holds at most SEND_BATCH answers back, so the
first answer of a long round is not kept waiting for all the others.
"""

from __future__ import annotations

import heapq
import itertools
import select
import time
import traceback
from typing import Callable, Final, Protocol

from shared import log

from .lists import take
from .wire import Wire

MAX_EVENTS: Final = 512
EPOLLOUT: Final = select.EPOLLOUT
SEND_BATCH: Final = 64     # answers a round holds back at most (see sends_later)


def _report_bug(where: str) -> None:
    """The fault barrier of the loop: a callback's exception is logged with its
    traceback and the loop goes on (a connection has its own, finer one)."""
    log.error("fdevent.c", f"internal error in the callback of {where}:\n"
                           f"{traceback.format_exc().rstrip()}")


class EventHandler(Protocol):
    """What owns a registered fd.  The loop keeps the object itself, not a bound
    method: one allocation less per connection, and ten thousand idle keep-alive
    connections are what this layer is for."""

    def on_event(self, mask: int) -> None: ...


def _notify(handler: EventHandler, mask: int) -> None:
    """`handler.on_event(mask)`: for a client's connection (a Wire, most events) a
    native call, where through the Protocol it is a Python method call."""
    if isinstance(handler, Wire):
        handler.on_event(mask)
    else:
        handler.on_event(mask)


class Timer:
    """A callback due at a monotonic time; `cancel` keeps it from running."""

    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    __slots__ = ("epoll", "handlers", "ticks", "next_tick", "now", "timers", "_sequence",
                 "soon", "after_round", "dispatching", "senders")

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.handlers: dict[int, EventHandler] = {}
        self.ticks: list[Callable[[float], None]] = []
        self.now = time.monotonic()
        self.next_tick = self.now + 1.0
        self.timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()      # orders timers due at the same time
        self.soon: list[Callable[[], None]] = []  # run after this round's events
        # run at the end of every round, before the next wait (the counters publish
        # the round's counts in one go: see worker/counters.py)
        self.after_round: list[Callable[[], None]] = []
        self.dispatching = False    # a round's events, timers and wakes are being run
        # with answers to send when that is over (in order, each once): told then
        # that their sockets are writable, as epoll would (sends_later)
        self.senders: dict[EventHandler, None] = {}

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

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run `callback()` once, `delay` seconds from now (a backend's deadline)."""
        timer = Timer(time.monotonic() + delay, callback)
        heapq.heappush(self.timers, (timer.when, next(self._sequence), timer))
        return timer

    def sends_later(self, sender: EventHandler) -> bool:
        """While a round is being dispatched, `sender`'s queued output waits for its
        end: True then, and `sender.on_event(EPOLLOUT)` is called once the round's
        events are dispatched (or sooner, when SEND_BATCH senders wait), once however
        often the sender asks."""
        if not self.dispatching:
            return False
        senders = self.senders
        if sender not in senders:
            senders[sender] = None
            if len(senders) >= SEND_BATCH:
                self._send_held()
        return True

    def _send_held(self) -> None:
        senders = self.senders
        self.senders = {}
        for sender in senders:
            try:
                _notify(sender, EPOLLOUT)   # its own fault barrier, as for its fd
            except Exception:  # noqa: BLE001 - as for fd callbacks
                _report_bug("a sender")

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run `callback()` after the events of this round (lighttpd's joblist): a
        module waking a held request never re-enters the connection's own code."""
        self.soon.append(callback)

    def run_once(self, max_wait: float = 1.0) -> None:
        """Wait for events (at most until the next tick or timer) and dispatch them."""
        due = self.next_tick
        timers = self.timers
        if timers and timers[0][0] < due:
            due = timers[0][0]
        timeout = 0.0 if self.soon else min(max_wait, max(0.0, due - time.monotonic()))
        events = self.epoll.poll(timeout, MAX_EVENTS)
        self.now = now = time.monotonic()
        handlers = self.handlers
        self.dispatching = True
        for fd, mask in events:
            handler = handlers.get(fd)
            if handler is not None:
                try:
                    _notify(handler, mask)
                except Exception:  # noqa: BLE001 - a module's bug must not end the worker
                    _report_bug(f"fd {fd}")
        if timers:
            self._run_timers(now)
        if self.soon:
            self._run_soon()
        self.dispatching = False
        if self.senders:
            self._send_held()
        if now >= self.next_tick:
            self.next_tick = now + 1.0
            for callback in self.ticks:
                callback(now)
        for publish in self.after_round:
            publish()

    def _run_timers(self, now: float) -> None:
        timers = self.timers
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if not timer.cancelled:
                try:
                    timer.callback()
                except Exception:  # noqa: BLE001 - as for fd callbacks
                    _report_bug("a timer")

    def _run_soon(self) -> None:
        soon = self.soon
        while soon:
            callback = take(soon, 0)
            try:
                callback()
            except Exception:  # noqa: BLE001 - as for fd callbacks
                _report_bug("a woken request")

    def close(self) -> None:
        self.epoll.close()
