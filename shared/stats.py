"""The stats segment: one shared anonymous mapping, a header and fixed worker slots.

The master creates it before the first fork, so every worker inherits the same pages.
Each worker is the only writer of its own slot (no locks: a reader may see one counter
a request ahead of another, never a torn 64-bit value on the platforms we run on).
When a worker exits the master folds its counters into the "retired" slot, so sums
over all slots never go backwards across reloads and crashes.

Everything is an unsigned 64-bit integer addressed through `memoryview.cast("Q")`:
about 0.1 µs per update, which is why this beats prometheus_client's multiprocess mode.
The gateway modules' per-backend counters live beside it, in a table of backend names
with counters per slot (shared/backend_stats.py), claimed, folded and read with the
slots.
"""

from __future__ import annotations

import mmap
import os
import time
from enum import IntEnum
from typing import TYPE_CHECKING, NamedTuple

from .backend_stats import BackendRow, BackendTable

if TYPE_CHECKING:
    from master.configload import LoadedConfig

MAGIC = 0x504C4954_53544154  # "PLITSTAT"
LAYOUT_VERSION = 1

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "OTHER")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Upper bounds (seconds) of the request-duration histogram; the last bucket is +Inf.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)


class Header(IntEnum):
    MAGIC = 0
    VERSION = 1
    SLOTS = 2
    SLOT_WORDS = 3
    START_TIME = 4
    SPAWNS = 5
    RESPAWN_CRASH = 6
    RESPAWN_TIMEOUT = 7
    RESPAWN_RELOAD = 8
    RELOADS_OK = 9
    RELOADS_REFUSED = 10
    LAST_RELOAD = 11
    RATE_CURSOR = 12        # next entry of the ring below
    RATE_RING = 13          # RATE_SAMPLES x (monotonic ms, requests, bytes out)
    WORDS = 13 + 3 * 6


RATE_SAMPLES = 6  # one a second: the 5-second averages of mod_status


class State(IntEnum):
    FREE = 0
    STARTING = 1
    READY = 2
    DRAINING = 3


class Field(IntEnum):
    """Word offsets inside a slot."""

    PID = 0
    GENERATION = 1
    STATE = 2
    STARTED = 3
    HEARTBEAT = 4           # CLOCK_MONOTONIC milliseconds
    ACCEPTED = 5
    ACTIVE = 6
    READING = 7
    WRITING = 8
    WAITING = 9             # idle keep-alive connections
    KEEPALIVE_REUSES = 10
    BYTES_IN = 11
    BYTES_OUT = 12
    DURATION_SUM_US = 13
    RSS = 14
    CPU_MS = 15
    FDS = 16
    THREADS = 17
    REQUESTS = 18            # len(METHODS) x len(STATUS_CLASSES) words, method-major
    DURATION = REQUESTS + len(METHODS) * len(STATUS_CLASSES)  # len(DURATION_BUCKETS)+1
    WORDS = DURATION + len(DURATION_BUCKETS) + 1


# Counters that add up across workers (folded into the retired slot on exit); the rest
# are gauges or identity and belong to one live process only.
COUNTERS = (
    [Field.ACCEPTED, Field.KEEPALIVE_REUSES, Field.BYTES_IN, Field.BYTES_OUT,
     Field.DURATION_SUM_US, Field.CPU_MS]
    + list(range(Field.REQUESTS, Field.WORDS))
)


class SegmentCopy(NamedTuple):
    """What a reader copies at once: header words, the retired slot, the live slots by
    index, and the backends of the live generations."""

    header: list[int]
    retired: list[int]
    live: dict[int, list[int]]
    backends: list[BackendRow]


def request_offset(method_index: int, status_class: int) -> int:
    """Word of the requests counter for METHODS[method_index] and class 1..5."""
    return Field.REQUESTS + method_index * len(STATUS_CLASSES) + status_class - 1


class StatsSegment:
    """The mapping plus typed access; slot 0 is the retired slot, 1.. are workers.

    `StatsSegment.current` is the segment of this process tree (set by the master
    when it creates one; workers inherit it through fork), so modules such as
    mod_status can read it without being handed it.
    """

    RETIRED = 0
    current: "StatsSegment | None" = None

    def __init__(self, worker_slots: int) -> None:
        self.slot_count = worker_slots + 1
        words = Header.WORDS + self.slot_count * Field.WORDS
        self._map = mmap.mmap(-1, words * 8, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.words = memoryview(self._map).cast("Q")
        header = self.words
        header[Header.MAGIC] = MAGIC
        header[Header.VERSION] = LAYOUT_VERSION
        header[Header.SLOTS] = self.slot_count
        header[Header.SLOT_WORDS] = Field.WORDS
        header[Header.START_TIME] = int(time.time())
        self.backends = BackendTable(self.slot_count)
        StatsSegment.current = self

    def slot(self, index: int) -> memoryview:
        """The words of one slot, for its single writer or for readers."""
        start = Header.WORDS + index * Field.WORDS
        return self.words[start:start + Field.WORDS]

    def claim(self, pid: int, generation: int,
              config: "LoadedConfig | None" = None) -> int:
        """A free worker slot for a new process (master only), with entries in the
        backend table for the gateway backends of its `config`.  Everything is zeroed
        while the slot is still free: a reader counts a slot once it is not."""
        for index in range(1, self.slot_count):
            words = self.slot(index)
            if words[Field.STATE] == State.FREE:
                if config is not None:
                    self.backends.register(generation, config, self.live_generations())
                self.backends.clear_slot(index)
                for offset in range(Field.WORDS):
                    words[offset] = 0
                words[Field.PID] = pid
                words[Field.GENERATION] = generation
                words[Field.STATE] = State.STARTING
                words[Field.STARTED] = int(time.time())
                words[Field.HEARTBEAT] = monotonic_ms()
                return index
        raise RuntimeError("no free stats slot")

    def retire(self, index: int) -> None:
        """Fold a dead worker's counters into the retired slot and free its slot."""
        words, retired = self.slot(index), self.slot(self.RETIRED)
        for offset in COUNTERS:
            retired[offset] += words[offset]
        self.backends.fold(index)
        words[Field.STATE] = State.FREE
        words[Field.PID] = 0

    def live_slots(self) -> list[int]:
        return [i for i in range(1, self.slot_count)
                if self.slot(i)[Field.STATE] != State.FREE]

    def live_generations(self) -> set[int]:
        return {self.slot(i)[Field.GENERATION] for i in self.live_slots()}

    def total(self, offset: int) -> int:
        """A counter summed over the retired slot and every live worker."""
        return sum(self.slot(i)[offset] for i in [self.RETIRED, *self.live_slots()])

    def total_requests(self) -> int:
        """Every request counted, over the retired slot and the live workers (each
        slot's request words summed in one C loop: the master asks once a second)."""
        return sum(sum(self.slot(i)[Field.REQUESTS:Field.DURATION])
                   for i in [self.RETIRED, *self.live_slots()])

    def read_consistent(self, attempts: int = 200) -> SegmentCopy:
        """Copies of the header, the retired slot, every live slot and the backends of
        the live generations that count each worker once, for readers (nothing is
        locked; the writers are unchanged).

        The master reaps a worker, adds its slot to the retired one, then frees the
        slot; a copy taken in between would count that worker twice.  So the copy is
        taken again when the retired slot (or the backends' retired counters, or their
        table) changed under it, when a slot seen live was freed (or freed and claimed
        again: another pid) meanwhile, or when a slot seen live belongs to a process
        that is gone (reaped: its retirement is under way, if the master was
        descheduled in the middle of it, wait for it to finish)."""
        words, base, size = self.words, int(Header.WORDS), int(Field.WORDS)
        state, pid, free = int(Field.STATE), int(Field.PID), int(State.FREE)
        generation = int(Field.GENERATION)
        copy = SegmentCopy([], [], {}, [])
        for _ in range(attempts):
            retired_before = words[base:base + size].tolist()
            backends_before = self.backends.stamp()
            header = words[:base].tolist()
            states = words[base + state::size].tolist()
            live = {index: words[base + index * size:base + (index + 1) * size].tolist()
                    for index, value in enumerate(states) if value != free and index}
            rows = self.backends.rows({index: slot[generation]
                                       for index, slot in live.items()})
            copy = SegmentCopy(header, words[base:base + size].tolist(), live, rows or [])
            if rows is not None and copy.retired == retired_before \
                    and self.backends.stamp() == backends_before and all(
                    words[base + index * size + state] != free
                    and words[base + index * size + pid] == slot[pid]
                    for index, slot in live.items()):
                if all(_process_exists(slot[pid]) for slot in live.values()):
                    break
                time.sleep(0.0005)
        return copy

    def record_rate_sample(self) -> None:
        """Master, once a second: totals for the sliding averages of /server-status."""
        cursor = self.words[Header.RATE_CURSOR]
        base = Header.RATE_RING + 3 * (cursor % RATE_SAMPLES)
        self.words[base] = monotonic_ms()
        self.words[base + 1] = self.total_requests()
        self.words[base + 2] = self.total(Field.BYTES_OUT)
        self.words[Header.RATE_CURSOR] = cursor + 1

    def recent_rates(self) -> tuple[float, float]:
        """(requests/s, bytes/s) over the sampled window (up to 5 s); 0 without history."""
        cursor = self.words[Header.RATE_CURSOR]
        if cursor < 2:
            return 0.0, 0.0
        newest = Header.RATE_RING + 3 * ((cursor - 1) % RATE_SAMPLES)
        oldest = Header.RATE_RING + 3 * ((cursor - min(cursor, RATE_SAMPLES)) % RATE_SAMPLES)
        elapsed = (self.words[newest] - self.words[oldest]) / 1000
        if elapsed <= 0:
            return 0.0, 0.0
        return ((self.words[newest + 1] - self.words[oldest + 1]) / elapsed,
                (self.words[newest + 2] - self.words[oldest + 2]) / elapsed)


def _process_exists(pid: int) -> bool:
    """False once a worker has been reaped (pid 0: forked, pid not yet recorded)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:             # EPERM: it exists, under another user
        pass
    return True


def monotonic_ms() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1_000_000
