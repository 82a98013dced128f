"""The worker's counters in its slot of the master's stats segment.

The hot path counts into a plain list (`pending`) and native ints; the event loop
publishes them into the segment at the end of every round of events (`publish`),
before the worker waits again.  An indexed add on the segment's memoryview boxes and
unboxes a 64-bit word each time (about a tenth of a microsecond): paid per round and
per changed word instead of per request and per counter.  A reader in another
process sees a count at most one round late; a request is still counted only once
its last byte has left.

Without a segment (tests, the -1 mode) the same code publishes into a private array,
so the hot path has no "is there a segment?" branch.  The same holds for a gateway
backend's counters (`backend_counters`, in the segment's backend table when the master
registered the worker's config, else scratch words), whose requests and connections
are counted in the round and published with the worker's (`publish_backend_counts`).
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import mypyc_attr

from shared.backend_stats import Counter
from shared.gateway_hosts import HostSpec, Proc
from shared.stats import (DURATION_BUCKETS, METHODS, Field, State, StatsSegment,
                          monotonic_ms, request_offset)

# Word offsets as plain ints (an IntEnum member costs an attribute lookup per use).
# _METHOD_ROW[method] + status // 100 is the requests word for that method and class.
_METHOD_ROW: Final = {name: request_offset(index, 1) - 1 for index, name in enumerate(METHODS)}
_OTHER_ROW: Final = _METHOD_ROW["OTHER"]
_DURATION: Final = int(Field.DURATION)
_DURATION_SUM_US: Final = int(Field.DURATION_SUM_US)
_BYTES_IN: Final = int(Field.BYTES_IN)
_BYTES_OUT: Final = int(Field.BYTES_OUT)
_ACCEPTED: Final = int(Field.ACCEPTED)
_KEEPALIVE_REUSES: Final = int(Field.KEEPALIVE_REUSES)
_WORDS: Final = int(Field.WORDS)
_BUCKETS: Final[tuple[float, ...]] = DURATION_BUCKETS


def _bucket(seconds: float) -> int:
    """The duration histogram's bucket of `seconds` (the first bound not below it):
    a compiled scan, ended at the first bound for nearly every request."""
    index = 0
    for bound in _BUCKETS:
        if seconds <= bound:
            return index
        index += 1
    return index


def _added(words: memoryview, index: int, count: int) -> int:
    """`count` added to word `index` (the segment untouched for none); what is left
    of it to count: 0."""
    if count:
        words[index] += count
    return 0


@mypyc_attr(allow_interpreted_subclasses=True)   # loadtests/fuzz.py counts calls
class WorkerCounters:
    """The words a request or a read changes by a varying index (its method and
    status, its duration's bucket) are counted in `pending`; the five every request
    changes at a fixed word are native ints until the round's publish (no boxing of
    a list item, no index look-up)."""

    __slots__ = ("words", "pending", "touched", "new_accepts", "new_reuses",
                 "new_bytes_in", "new_bytes_out", "new_duration_us")

    def __init__(self, segment: StatsSegment | None = None, slot: int = 0) -> None:
        if segment is not None and slot:
            self.words = segment.slot(slot)
            segment.backends.bind(slot)
        else:
            self.words = memoryview(bytearray(Field.WORDS * 8)).cast("Q")
        self.pending = [0] * _WORDS    # this round's counts, by word
        # the words counted this round, each once: a round of one request (a gateway's
        # answer) publishes its few words, not a pass over all of them
        self.touched: list[int] = []
        self.new_accepts = self.new_reuses = 0
        self.new_bytes_in = self.new_bytes_out = self.new_duration_us = 0

    def publish(self) -> None:
        """Add this round's counts to their words (the backends' too) and start the
        next round at 0."""
        if _TOUCHED_BACKENDS:
            publish_backend_counts()
        self._publish_fixed()
        touched = self.touched
        if not touched:
            return
        pending, words = self.pending, self.words
        for index in touched:
            words[index] += pending[index]
            pending[index] = 0
        touched.clear()

    def _publish_fixed(self) -> None:
        words = self.words
        self.new_accepts = _added(words, _ACCEPTED, self.new_accepts)
        self.new_reuses = _added(words, _KEEPALIVE_REUSES, self.new_reuses)
        self.new_bytes_in = _added(words, _BYTES_IN, self.new_bytes_in)
        self.new_bytes_out = _added(words, _BYTES_OUT, self.new_bytes_out)
        self.new_duration_us = _added(words, _DURATION_SUM_US, self.new_duration_us)

    def _count(self, index: int, count: int) -> None:
        """Add `count` to this round's word `index`."""
        pending = self.pending
        before = pending[index]
        if not before:
            if not count:
                return
            self.touched.append(index)
        pending[index] = before + count

    def set_state(self, state: State) -> None:
        self.words[Field.STATE] = state

    def heartbeat(self, connections: int, reading: int, writing: int, waiting: int) -> None:
        words = self.words
        words[Field.HEARTBEAT] = monotonic_ms()
        words[Field.ACTIVE] = connections
        words[Field.READING] = reading
        words[Field.WRITING] = writing
        words[Field.WAITING] = waiting

    def accepted(self) -> None:
        self.new_accepts += 1

    def keepalive_reuse(self) -> None:
        self.new_reuses += 1

    def bytes_in(self, count: int) -> None:
        self.new_bytes_in += count

    def bytes_out(self, count: int) -> None:
        self.new_bytes_out += count

    def request(self, method: str, status: int, seconds: float) -> None:
        """One finished request: method, status class and duration histogram."""
        status_class = status // 100 if 100 <= status < 600 else 5
        self._count(_METHOD_ROW.get(method, _OTHER_ROW) + status_class, 1)
        self._count(_DURATION + _bucket(seconds), 1)
        self.new_duration_us += int(seconds * 1_000_000)


class BackendCounters:
    """What a worker's `Backend` bumps (shared/backend_stats.py's words of one backend
    address in this worker's slot): word offsets computed once.  A request's counts
    (every gateway request has one or two) are kept as plain ints until the round's
    publish, as the worker's own; a failure, rare, goes to its words at once."""

    __slots__ = ("words", "requests", "connected", "died", "overloaded", "disabled",
                 "active", "new_requests", "new_connections")

    def __init__(self, words: memoryview, index: int) -> None:
        base = index * Counter.WORDS     # made once per backend: no lookup per event
        self.words = words
        self.requests: int = base + Counter.REQUESTS
        self.connected: int = base + Counter.CONNECTED
        self.died: int = base + Counter.DIED
        self.overloaded: int = base + Counter.OVERLOADED
        self.disabled: int = base + Counter.DISABLED
        self.active: int = base + Counter.ACTIVE
        self.new_requests = 0          # counted this round, not yet in `words`
        self.new_connections = 0

    def on_connected(self) -> None:
        """A new connection is established, for a request."""
        self.on_reused()
        self.new_connections += 1

    def on_reused(self) -> None:
        """A request took a kept connection."""
        if not self.new_requests:
            _TOUCHED_BACKENDS.append(self)
        self.new_requests += 1

    def publish(self) -> None:
        """This round's counts into the words."""
        words = self.words
        self.new_requests = _added(words, self.requests, self.new_requests)
        self.new_connections = _added(words, self.connected, self.new_connections)

    def on_failed(self, overloaded: bool) -> None:
        """A connect failed (EAGAIN: `overloaded`) and the backend sits out its
        disable-time."""
        words = self.words
        words[self.overloaded if overloaded else self.died] += 1
        words[self.disabled] += 1

    def set_load(self, requests: int) -> None:
        """Requests under way on it in this worker (once a second)."""
        self.words[self.active] = requests


# the backends that counted requests this round, each once
_TOUCHED_BACKENDS: Final[list[BackendCounters]] = []


def publish_backend_counts() -> None:
    """Every backend's counts of this round into its words."""
    for counters in _TOUCHED_BACKENDS:
        counters.publish()
    _TOUCHED_BACKENDS.clear()


def backend_counters(spec: HostSpec, proc: Proc) -> BackendCounters:
    """The counters of one backend address for this worker: found once, when its
    `Backend` is made, then bumped with no lookup.  Without a stats segment, or for an
    address the table had no room for, words nobody reads (the same code runs, without
    a branch on the hot path)."""
    segment = StatsSegment.current
    found = segment.backends.counter_words(spec, proc.number) if segment is not None \
        else None
    if found is None:
        return BackendCounters(memoryview(bytearray(Counter.WORDS * 8)).cast("Q"), 0)
    return BackendCounters(*found)
