"""The worker's counters in its slot of the master's stats segment.

Without a segment (tests, the -1 mode) the same code writes to a private array, so the
hot path has no "is there a segment?" branch: one indexed add per counter.
"""

from __future__ import annotations

from bisect import bisect_left

from shared.stats import (DURATION_BUCKETS, METHODS, Field, State, StatsSegment,
                          monotonic_ms, request_offset)

# requests counter word of (method, status class 1..5), one dict lookup per request
_REQUEST_WORD = {(name, status_class): request_offset(index, status_class)
                 for index, name in enumerate(METHODS) for status_class in range(1, 6)}
_OTHER = "OTHER"


class WorkerCounters:
    __slots__ = ("words",)

    def __init__(self, segment: StatsSegment | None = None, slot: int = 0) -> None:
        if segment is not None and slot:
            self.words = segment.slot(slot)
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
        self.words[Field.ACCEPTED] += 1

    def keepalive_reuse(self) -> None:
        self.words[Field.KEEPALIVE_REUSES] += 1

    def bytes_in(self, count: int) -> None:
        self.words[Field.BYTES_IN] += count

    def bytes_out(self, count: int) -> None:
        self.words[Field.BYTES_OUT] += count

    def request(self, method: str, status: int, seconds: float) -> None:
        """One finished request: method, status class and duration histogram."""
        words = self.words
        status_class = min(max(status // 100, 1), 5)
        word = _REQUEST_WORD.get((method, status_class))
        words[_REQUEST_WORD[_OTHER, status_class] if word is None else word] += 1
        words[Field.DURATION + bisect_left(DURATION_BUCKETS, seconds)] += 1
        words[Field.DURATION_SUM_US] += int(seconds * 1_000_000)
