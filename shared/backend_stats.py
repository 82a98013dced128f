"""Per-backend counters of the gateway modules, in a shared mapping beside the stats
segment (shared/stats.py): lighttpd's `gw.backend.<label>.<proc>.*` statistics for the
whole server, and the `pylighttpd_backend_*` Prometheus metrics.

A backend is one address of a configured host (`HostSpec.procs`), named by what the
config says of it: the module's directive prefix ("proxy", "fastcgi", ...), the
extension or URL prefix, the host's label, the process number and the address.  The
table of those names lives in the mapping; only the master writes it, when it claims
a worker slot for a generation (before the fork), so a worker finds its backends'
entries in place and only bumps counters:

    entry i:  USED, FIRST_GEN, LAST_GEN, NAME_LEN, then the name (JSON) in its own area
    counters: for every stats slot (0 is the retired one), MAX_BACKENDS x COUNTERS words

A name keeps its entry across reloads, so the counters of a backend that stays never
go backwards; one removed by a reload keeps its entry while a worker of a generation
that has it lives, then the entry is freed (its retired counters zeroed) and may be
given to another name: two backends are never mixed.  When a worker exits the master
folds its counters into the retired slot, as for the other counters.  The table has
MAX_BACKENDS entries: backends beyond are not counted, which the master logs once.

The master changes the table under a sequence word (odd while it writes) so readers
(mod_status in any worker) copy it again when it moved under them.
"""

from __future__ import annotations

import json
import mmap
import time
import weakref
from enum import IntEnum
from typing import TYPE_CHECKING, Iterable, NamedTuple

from . import log
from .gateway_hosts import Extension, HostSpec

if TYPE_CHECKING:
    from master.configload import LoadedConfig

MAX_BACKENDS = 512           # entries of the table (backend addresses, all generations)
NAME_BYTES = 512             # the longest name (JSON) an entry holds
MISSING = -1                 # an address without an entry (over the cap)
STABLE_TRIES = 50            # 0.2 ms waits for the master to finish writing the table


class Counter(IntEnum):
    """Word offsets inside one backend's counters of one slot."""

    REQUESTS = 0      # requests that got a connection to it (a new one or a kept one)
    CONNECTED = 1     # connections established
    DIED = 2          # connects refused or failed (lighttpd's ".died")
    OVERLOADED = 3    # connects that failed with EAGAIN (lighttpd's ".overloaded")
    DISABLED = 4      # times it was taken out of the rotation for its disable-time
    ACTIVE = 5        # requests under way (a gauge, as of the worker's last second)
    WORDS = 6


FOLDED = (Counter.REQUESTS, Counter.CONNECTED, Counter.DIED, Counter.OVERLOADED,
          Counter.DISABLED)


class _Head(IntEnum):
    SEQ = 0            # odd while the master writes the table
    COUNT = 1          # entries ever used (a high-water mark: never goes down)
    UNTRACKED = 2      # addresses the last registration found no room for
    WORDS = 8


class _Meta(IntEnum):
    USED = 0
    FIRST_GEN = 1      # the generations that registered the name: a range
    LAST_GEN = 2
    NAME_LEN = 3
    WORDS = 4


class BackendName(NamedTuple):
    module: str        # the directive's prefix: "proxy" for proxy.server
    extension: str     # ".php", "/app/"
    label: str         # the host's key in the array ("" when unkeyed)
    proc: int          # the process number (0 for a host that is not spawned)
    address: str       # "tcp:127.0.0.1:9000", "unix:/run/php.sock-0"

    def encode(self) -> bytes:
        return json.dumps(list(self), separators=(",", ":")).encode("ascii")

    @classmethod
    def decode(cls, data: bytes) -> "BackendName":
        module, extension, label, proc, address = json.loads(data)
        return cls(module, extension, label, proc, address)


class BackendRow(NamedTuple):
    """One backend as a reader sees it: counters summed over the retired slot and the
    live workers, requests under way over the live workers."""

    name: BackendName
    counts: dict[Counter, int]


# ------------------------------------------------------------------ from the config
def configured_backends(config: "LoadedConfig") -> list[tuple[HostSpec, list[BackendName]]]:
    """Every host of every `*.server` directive of every config block (found by the type
    of its value, a tuple of Extension, not by module) with the names of its addresses."""
    compiled = config.compiled
    found = []
    for values in (compiled.globals, *(block.settings for block in compiled.blocks)):
        for key, value in values.items():
            if key.endswith(".server") and _is_extensions(value):
                module = key[:-len(".server")]
                found += [(spec, _names(module, extension, spec))
                          for extension in value for spec in extension.hosts]
    return found


def _is_extensions(value: object) -> bool:
    return isinstance(value, tuple) and bool(value) and \
        all(isinstance(item, Extension) for item in value)


def _names(module: str, extension: Extension, spec: HostSpec) -> list[BackendName]:
    return [BackendName(module, extension.key, spec.label, proc.number, proc.name)
            for proc in spec.procs]


# ------------------------------------------------------------------ the table
class BackendTable:
    """The mapping: its table of names (the master writes it) and the counters of every
    stats slot.  A worker process binds its slot (`bind`) and asks `counter_words(spec,
    proc_number)`: the master registered the worker's config before forking it, and
    the worker inherits which entry each of its hosts' addresses has."""

    def __init__(self, slot_count: int, capacity: int = MAX_BACKENDS) -> None:
        self.slot_count = slot_count
        self.capacity = capacity
        self.meta_base = int(_Head.WORDS)
        self.names_offset = (self.meta_base + capacity * _Meta.WORDS) * 8
        self.counters_base = (self.names_offset + capacity * NAME_BYTES) // 8
        self.slot_words = capacity * Counter.WORDS
        size = (self.counters_base + slot_count * self.slot_words) * 8
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.raw = memoryview(self._map)
        self.words = self.raw.cast("Q")
        # which entry each host's addresses have (filled by the master, inherited by
        # the workers it forks); weak, so the configs of past generations can go
        self.entries: "weakref.WeakKeyDictionary[HostSpec, tuple[int, ...]]" = \
            weakref.WeakKeyDictionary()
        self.worker_slot = -1          # set in a worker process by `bind`
        self._untracked_logged = 0

    # ----------------------------------------------------------- layout access
    def _meta(self, index: int, field: _Meta) -> int:
        return self.meta_base + index * _Meta.WORDS + field

    def _name(self, index: int) -> bytes:
        start = self.names_offset + index * NAME_BYTES
        return bytes(self.raw[start:start + self.words[self._meta(index, _Meta.NAME_LEN)]])

    def slot(self, index: int) -> memoryview:
        start = self.counters_base + index * self.slot_words
        return self.words[start:start + self.slot_words]

    @property
    def count(self) -> int:
        return self.words[_Head.COUNT]

    # ------------------------------------------------------------- master side
    def register(self, generation: int, config: "LoadedConfig",
                 live_generations: Iterable[int]) -> None:
        """Entries for every backend address of `config` (kept where the name has one
        already), for a worker of `generation` about to be forked; entries no live
        generation has any more are freed first."""
        live = set(live_generations) | {generation}
        words = self.words
        words[_Head.SEQ] += 1
        try:
            self._free_unused(live)
            known, free = {}, []
            for index in range(self.count):
                if words[self._meta(index, _Meta.USED)]:
                    known[self._name(index)] = index
                else:
                    free.append(index)
            free.reverse()                     # the lowest first, by pop()
            untracked = 0
            for spec, names in configured_backends(config):
                indexes = tuple(self._entry(name.encode(), generation, known, free)
                                for name in names)
                untracked += indexes.count(MISSING)
                self.entries[spec] = indexes
            words[_Head.UNTRACKED] = untracked
        finally:
            words[_Head.SEQ] += 1
        if untracked and untracked != self._untracked_logged:
            log.error("stats", f"backend counters: the table is full ({self.capacity} "
                      f"entries): {untracked} backend addresses of generation "
                      f"{generation} are not counted (it fills in config order and "
                      "keeps the names of draining generations)")
        self._untracked_logged = untracked

    def _entry(self, name: bytes, generation: int, known: dict[bytes, int],
               free: list[int]) -> int:
        words = self.words
        index = known.get(name)
        if index is None:
            index = self._allocate(name, free)
            if index == MISSING:
                return MISSING
            known[name] = index
            words[self._meta(index, _Meta.FIRST_GEN)] = generation
        first = self._meta(index, _Meta.FIRST_GEN)
        words[first] = min(words[first], generation)
        last = self._meta(index, _Meta.LAST_GEN)
        words[last] = max(words[last], generation)
        return index

    def _allocate(self, name: bytes, free: list[int]) -> int:
        """A free entry (a freed one first) with `name` written in; MISSING when none
        is left or the name is too long."""
        if len(name) > NAME_BYTES:
            return MISSING
        words = self.words
        if free:
            index = free.pop()
        elif self.count < self.capacity:
            index = self.count
            words[_Head.COUNT] = index + 1
        else:
            return MISSING
        start = self.names_offset + index * NAME_BYTES
        self.raw[start:start + len(name)] = name
        words[self._meta(index, _Meta.NAME_LEN)] = len(name)
        words[self._meta(index, _Meta.LAST_GEN)] = 0
        words[self._meta(index, _Meta.USED)] = 1
        return index

    def _free_unused(self, live: set[int]) -> None:
        """Free the entries no live generation registered; their retired counters go
        (no live worker writes them: only workers of those generations could)."""
        words, retired = self.words, self.slot(0)
        for index in range(self.count):
            if words[self._meta(index, _Meta.USED)] and not self._in_use(index, live):
                words[self._meta(index, _Meta.USED)] = 0
                base = index * Counter.WORDS
                for field in range(Counter.WORDS):
                    retired[base + field] = 0

    def _in_use(self, index: int, live: set[int]) -> bool:
        first = self.words[self._meta(index, _Meta.FIRST_GEN)]
        last = self.words[self._meta(index, _Meta.LAST_GEN)]
        return any(first <= generation <= last for generation in live)

    def clear_slot(self, slot: int) -> None:
        """A slot being claimed starts from zero (up to the high-water mark: no
        process ever wrote beyond it)."""
        words = self.slot(slot)
        for offset in range(self.count * Counter.WORDS):
            words[offset] = 0

    def fold(self, slot: int) -> None:
        """An exited worker's counters go to the retired slot (not the gauge)."""
        words, retired = self.slot(slot), self.slot(0)
        for index in range(self.count):
            base = index * Counter.WORDS
            for field in FOLDED:
                retired[base + field] += words[base + field]

    # ------------------------------------------------------------- worker side
    def bind(self, slot: int) -> None:
        """This process is the worker writing `slot`."""
        self.worker_slot = slot

    def counter_words(self, spec: HostSpec, proc_number: int) -> tuple[memoryview, int] | None:
        """Where the counters of one address of `spec` lie in this worker's slot: the
        slot's words and the address's entry (its counters start at entry x
        Counter.WORDS); None outside a worker, or for an address the table had no room
        for.  The worker bumps them through worker/counters.py's BackendCounters."""
        indexes = self.entries.get(spec, ())
        if self.worker_slot <= 0 or proc_number >= len(indexes) \
                or indexes[proc_number] == MISSING:
            return None
        return self.slot(self.worker_slot), indexes[proc_number]

    # ------------------------------------------------------------- readers
    def stamp(self) -> tuple[int, list[int]]:
        """What changes when the master writes the table or folds a worker: the
        sequence word (once even: the master writes for microseconds, at a worker's
        spawn; a master killed in the middle would leave it odd: then the copy is
        taken as it is) and the retired counters."""
        for _ in range(STABLE_TRIES):
            if not self.words[_Head.SEQ] & 1:
                break
            time.sleep(0.0002)
        return self.words[_Head.SEQ], self.slot(0)[:self.count * Counter.WORDS].tolist()

    def rows(self, live: dict[int, int]) -> list[BackendRow] | None:
        """The backends of the live generations (`live`: slot -> generation), their
        counters summed; for a reader that checks `stamp` before and after.  None when
        a name was being rewritten under it (the reader copies again)."""
        count = self.count
        size = count * Counter.WORDS
        retired = self.slot(0)[:size].tolist()
        slots = [self.slot(index)[:size].tolist() for index in live]
        workers = [sum(words) for words in zip(*slots)] if slots else [0] * size
        generations = set(live.values())
        rows = []
        for index in range(count):
            if not self.words[self._meta(index, _Meta.USED)] or \
                    not self._in_use(index, generations):
                continue
            base = index * Counter.WORDS
            counts = {field: retired[base + field] + workers[base + field]
                      for field in FOLDED}
            counts[Counter.ACTIVE] = workers[base + Counter.ACTIVE]
            try:
                name = BackendName.decode(self._name(index))
            except (ValueError, TypeError):
                return None
            rows.append(BackendRow(name, counts))
        return rows

    @property
    def untracked(self) -> int:
        return self.words[_Head.UNTRACKED]

