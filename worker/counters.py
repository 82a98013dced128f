"""The worker's counters in its slot of the master's stats segment.

Without a segment (tests, the -1 mode) the same code writes to a private array, so the
hot path has no "is there a segment?" branch: one indexed add per counter.  The same
holds for a gateway backend's counters (`backend_counters`, in the segment's backend
table when the master registered the worker's config, else scratch words).
"""

from __future__ import annotations

from bisect import bisect_left

from mypy_extensions import mypyc_attr

from shared.backend_stats import BackendCounters, scratch_counters
from shared.gateway_hosts import HostSpec, Proc
from shared.stats import (DURATION_BUCKETS, METHODS, Field, State, StatsSegment,
                          monotonic_ms, request_offset)

# Word offsets as plain ints (an IntEnum member costs an attribute lookup per use).
# _METHOD_ROW[method] + status // 100 is the requests word for that method and class.
_METHOD_ROW = {name: request_offset(index, 1) - 1 for index, name in enumerate(METHODS)}
_OTHER_ROW = _METHOD_ROW["OTHER"]
_DURATION = int(Field.DURATION)
_DURATION_SUM_US = int(Field.DURATION_SUM_US)
_BYTES_IN, _BYTES_OUT = int(Field.BYTES_IN), int(Field.BYTES_OUT)
_ACCEPTED, _KEEPALIVE_REUSES = int(Field.ACCEPTED), int(Field.KEEPALIVE_REUSES)


@mypyc_attr(allow_interpreted_subclasses=True)   # loadtests/fuzz.py counts calls
class WorkerCounters:
    __slots__ = ("words",)

    def __init__(self, segment: StatsSegment | None = None, slot: int = 0) -> None:
        if segment is not None and slot:
            self.words = segment.slot(slot)
            segment.backends.bind(slot)
        else:
            self.words = memoryview(bytearray(Field.WORDS * 8)).cast("Q")

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
        self.words[_ACCEPTED] += 1

    def keepalive_reuse(self) -> None:
        self.words[_KEEPALIVE_REUSES] += 1

    def bytes_in(self, count: int) -> None:
        self.words[_BYTES_IN] += count

    def bytes_out(self, count: int) -> None:
        self.words[_BYTES_OUT] += count

    def request(self, method: str, status: int, seconds: float) -> None:
        """One finished request: method, status class and duration histogram."""
        words = self.words
        status_class = status // 100 if 100 <= status < 600 else 5
        words[_METHOD_ROW.get(method, _OTHER_ROW) + status_class] += 1
        words[_DURATION + bisect_left(DURATION_BUCKETS, seconds)] += 1
        words[_DURATION_SUM_US] += int(seconds * 1_000_000)


def backend_counters(spec: HostSpec, proc: Proc) -> BackendCounters:
    """The counters of one backend address for this worker: found once, when its
    `Backend` is made, then bumped with no lookup."""
    segment = StatsSegment.current
    if segment is None:
        return scratch_counters()
    return segment.backends.counters(spec, proc.number)
