"""The stats segment seen as Prometheus metrics, and the server-wide figures that
mod_status shows in lighttpd's formats.

`SegmentCollector` is a prometheus_client Collector: every `collect()` takes one
consistent copy of the segment (`Snapshot`) and yields metric families from it, so a
scrape makes no system call and costs about as much as reading the live slots.
Counters are the retired slot plus the live slots: they never go backwards when a
worker exits (reload, crash), because the master folds its counters into the retired
slot as it frees the slot.  Master and workers may both use this module (it imports
neither).

`STATISTICS` is lighttpd's `plugin_stats`: integer `key: value` pairs that modules set
in their own process, shown by `status.statistics-url` with the gateway backends'
counters under lighttpd's names (`gateway_statistics`).
"""

from __future__ import annotations

import importlib.metadata
import platform
import time
from typing import Callable, Iterator

from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily, Metric)
from prometheus_client.registry import Collector

from .backend_stats import BackendRow, Counter
from .stats import (DURATION_BUCKETS, METHODS, STATUS_CLASSES, Field, Header, State,
                    StatsSegment, monotonic_ms)

PREFIX = "pylighttpd_"
_REQUEST_WORDS = [(method, code, Field.REQUESTS + m * len(STATUS_CLASSES) + c)
                  for m, method in enumerate(METHODS)
                  for c, code in enumerate(STATUS_CLASSES)]
BACKEND_LABELS = ("module", "extension", "backend", "proc", "address")
# the backend families: (name, what it counts, word); counters first, then the gauge
_BACKEND_COUNTERS = (
    ("backend_requests", "Requests that got a connection to the backend (a new one or "
                         "a kept one)", Counter.REQUESTS),
    ("backend_connections", "Connections established to the backend", Counter.CONNECTED),
    ("backend_died", "Connects to the backend refused or failed", Counter.DIED),
    ("backend_overloaded", "Connects to the backend that failed with EAGAIN",
     Counter.OVERLOADED),
    ("backend_disabled", "Times the backend was taken out of the rotation for its "
                         "disable-time", Counter.DISABLED),
)
# lighttpd's per-proc keys, gw.backend.<label>.<proc><suffix>
_LIGHTTPD_PROC_KEYS = ((".connected", Counter.CONNECTED), (".died", Counter.DIED),
                       (".disabled", Counter.DISABLED), (".overloaded", Counter.OVERLOADED),
                       (".load", Counter.ACTIVE))
# the modules lighttpd 1.4.69 counts `<name>.requests` for (mod_wstunnel does not)
_LIGHTTPD_REQUEST_COUNTERS = frozenset({"proxy", "fastcgi", "scgi", "sockproxy", "ajp13"})
STATE_NAMES = {State.FREE: "free", State.STARTING: "starting", State.READY: "ready",
               State.DRAINING: "draining"}


def package_version() -> str:
    try:
        return importlib.metadata.version("pylighttpd")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Snapshot:
    """One copy of the segment: header words, the retired slot, live slots by index."""

    __slots__ = ("header", "retired", "workers", "backends", "now_ms", "now")

    def __init__(self, segment: StatsSegment) -> None:
        self.header, self.retired, self.workers, self.backends = segment.read_consistent()
        self.now_ms = monotonic_ms()
        self.now = time.time()

    # ---------------------------------------------------------------- sums
    def total(self, offset: int) -> int:
        """A counter over the whole server's life: retired plus live workers."""
        return self.retired[offset] + sum(w[offset] for w in self.workers.values())

    def live(self, offset: int) -> int:
        """A gauge summed over the live workers."""
        return sum(w[offset] for w in self.workers.values())

    def requests(self) -> int:
        return sum(self.total(offset) for offset in range(Field.REQUESTS, Field.DURATION))

    @staticmethod
    def worker_requests(words: list[int]) -> int:
        return sum(words[Field.REQUESTS:Field.DURATION])

    @property
    def start_time(self) -> int:
        return self.header[Header.START_TIME]

    @property
    def uptime(self) -> int:
        return max(int(self.now) - self.start_time, 0)

    def heartbeat_age(self, words: list[int]) -> float:
        return max(self.now_ms - words[Field.HEARTBEAT], 0) / 1000

    def ordered_workers(self) -> list[tuple[int, list[int]]]:
        return sorted(self.workers.items())


class SegmentCollector(Collector):
    """prometheus_client Collector over the stats segment (`StatsSegment.current` when
    none is given)."""

    def __init__(self, segment: StatsSegment | None = None,
                 version: str | None = None) -> None:
        self._segment = segment
        self.version = version or package_version()

    @property
    def segment(self) -> StatsSegment:
        segment = self._segment or StatsSegment.current
        if segment is None:
            raise RuntimeError("no stats segment in this process tree")
        return segment

    def collect(self) -> Iterator[Metric]:
        snap = Snapshot(self.segment)
        yield from self._connections(snap)
        yield from self._requests(snap)
        yield from self._workers(snap)
        yield from self._backends(snap)
        yield from self._supervisor(snap)

    # ------------------------------------------------------------- families
    @staticmethod
    def _connections(snap: Snapshot) -> Iterator[Metric]:
        accepted = snap.total(Field.ACCEPTED)
        yield CounterMetricFamily(PREFIX + "connections_accepted",
                                  "Client connections accepted", value=accepted)
        yield CounterMetricFamily(PREFIX + "connections_handled",
                                  "Client connections handled (none is dropped after "
                                  "accept)", value=accepted)
        for name, offset, doc in (
                ("active", Field.ACTIVE, "Open client connections"),
                ("reading", Field.READING, "Connections reading a request"),
                ("writing", Field.WRITING, "Connections writing a response"),
                ("waiting", Field.WAITING, "Idle keep-alive connections")):
            yield GaugeMetricFamily(PREFIX + "connections_" + name,
                                    doc + " (as of each worker's last heartbeat)",
                                    value=snap.live(offset))
        yield CounterMetricFamily(PREFIX + "keepalive_reuses",
                                  "Requests that reused a keep-alive connection",
                                  value=snap.total(Field.KEEPALIVE_REUSES))

    @staticmethod
    def _requests(snap: Snapshot) -> Iterator[Metric]:
        requests = CounterMetricFamily(PREFIX + "http_requests",
                                       "HTTP requests answered, by status class and "
                                       "method", labels=("code", "method"))
        for method, code, offset in _REQUEST_WORDS:
            requests.add_metric((code, method), snap.total(offset))
        yield requests
        yield CounterMetricFamily(PREFIX + "http_received_bytes",
                                  "Bytes read from clients",
                                  value=snap.total(Field.BYTES_IN))
        yield CounterMetricFamily(PREFIX + "http_sent_bytes", "Bytes sent to clients",
                                  value=snap.total(Field.BYTES_OUT))
        buckets, cumulative = [], 0
        for index, bound in enumerate((*DURATION_BUCKETS, float("inf"))):
            cumulative += snap.total(Field.DURATION + index)
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(PREFIX + "http_request_duration_seconds",
                                    "Time from the start of a request to its response "
                                    "being queued", buckets=buckets,
                                    sum_value=snap.total(Field.DURATION_SUM_US) / 1e6)

    @staticmethod
    def _workers(snap: Snapshot) -> Iterator[Metric]:
        labels = ("worker", "generation")
        families = [
            (GaugeMetricFamily(PREFIX + "worker_pid", "Process id", labels=labels),
             lambda w: w[Field.PID]),
            (GaugeMetricFamily(PREFIX + "worker_resident_memory_bytes",
                               "Resident set size (sampled once a second)", labels=labels),
             lambda w: w[Field.RSS]),
            (GaugeMetricFamily(PREFIX + "worker_cpu_seconds",
                               "User+system CPU time of the process (sampled once a "
                               "second)", labels=labels),
             lambda w: w[Field.CPU_MS] / 1000),
            (GaugeMetricFamily(PREFIX + "worker_open_fds", "Open file descriptors",
                               labels=labels), lambda w: w[Field.FDS]),
            (GaugeMetricFamily(PREFIX + "worker_threads", "OS threads", labels=labels),
             lambda w: w[Field.THREADS]),
            (GaugeMetricFamily(PREFIX + "worker_connections", "Open client connections",
                               labels=labels), lambda w: w[Field.ACTIVE]),
            (GaugeMetricFamily(PREFIX + "worker_requests",
                               "Requests answered by this process", labels=labels),
             Snapshot.worker_requests),
            (GaugeMetricFamily(PREFIX + "worker_heartbeat_age_seconds",
                               "Seconds since the worker's last heartbeat", labels=labels),
             snap.heartbeat_age),
            (GaugeMetricFamily(PREFIX + "worker_start_time_seconds",
                               "Start time of the process since the epoch", labels=labels),
             lambda w: w[Field.STARTED]),
        ]
        state = GaugeMetricFamily(PREFIX + "worker_state", "1 for the worker's state",
                                  labels=(*labels, "state"))
        for index, words in snap.ordered_workers():
            values = (str(index), str(words[Field.GENERATION]))
            for family, value in families:
                family.add_metric(values, value(words))
            for number, name in STATE_NAMES.items():
                if number != State.FREE:
                    state.add_metric((*values, name), float(words[Field.STATE] == number))
        yield GaugeMetricFamily(PREFIX + "workers", "Live worker processes",
                                value=len(snap.workers))
        for family, _ in families:
            yield family
        yield state
        yield CounterMetricFamily(PREFIX + "workers_cpu_seconds",
                                  "CPU time of all workers, exited ones included",
                                  value=snap.total(Field.CPU_MS) / 1000)

    def _backends(self, snap: Snapshot) -> Iterator[Metric]:
        """Per backend address of the gateway modules, over every worker."""
        counters = [(CounterMetricFamily(PREFIX + name, doc, labels=BACKEND_LABELS), word)
                    for name, doc, word in _BACKEND_COUNTERS]
        active = GaugeMetricFamily(PREFIX + "backend_active",
                                   "Requests under way on the backend (as of each "
                                   "worker's last second)", labels=BACKEND_LABELS)
        for row in snap.backends:
            name = row.name
            labels = (name.module, name.extension, name.label, str(name.proc), name.address)
            for family, word in counters:
                family.add_metric(labels, row.counts[word])
            active.add_metric(labels, row.counts[Counter.ACTIVE])
        for family, _ in counters:
            yield family
        yield active
        yield GaugeMetricFamily(PREFIX + "backends_untracked",
                                "Backend addresses of the running configs that have no "
                                "counters (the backend table is full)",
                                value=self.segment.backends.untracked)

    def _supervisor(self, snap: Snapshot) -> Iterator[Metric]:
        header = snap.header
        yield CounterMetricFamily(PREFIX + "workers_spawned", "Worker processes started",
                                  value=header[Header.SPAWNS])
        respawns = CounterMetricFamily(PREFIX + "worker_respawns",
                                       "Workers started to replace another",
                                       labels=("reason",))
        for reason, word in (("crash", Header.RESPAWN_CRASH),
                             ("timeout", Header.RESPAWN_TIMEOUT),
                             ("reload", Header.RESPAWN_RELOAD)):
            respawns.add_metric((reason,), header[word])
        yield respawns
        reloads = CounterMetricFamily(PREFIX + "reloads", "Config reloads (SIGHUP)",
                                      labels=("result",))
        reloads.add_metric(("ok",), header[Header.RELOADS_OK])
        reloads.add_metric(("refused",), header[Header.RELOADS_REFUSED])
        yield reloads
        yield GaugeMetricFamily(PREFIX + "last_reload_timestamp_seconds",
                                "Time of the last successful reload (0: none)",
                                value=header[Header.LAST_RELOAD])
        yield GaugeMetricFamily(PREFIX + "start_time_seconds",
                                "Start time of the master since the epoch",
                                value=snap.start_time)
        info = GaugeMetricFamily(PREFIX + "build_info", "Version of pylighttpd",
                                 labels=("version", "python"))
        info.add_metric((self.version, platform.python_version()), 1)
        yield info


def exposition(collector: Collector, accept: str | None) -> tuple[bytes, str]:
    """The scrape body and its Content-Type, in the format the Accept header asks for
    (OpenMetrics or the Prometheus text format 0.0.4)."""
    if not accept:
        return generate_latest(collector), "text/plain; version=0.0.4; charset=utf-8"
    encoder, content_type = choose_encoder(accept)
    return encoder(collector), content_type


def accepts_metrics(accept: str | None) -> bool:
    """Does an Accept header ask for a Prometheus format?  Prometheus sends
    `application/openmetrics-text;version=1.0.0,...,text/plain;version=0.0.4;q=0.5,
    */*;q=0.1`; browsers and curl send `text/html,...` or `*/*`."""
    if not accept:
        return False
    for media_range in accept.split(","):
        kind, _, params = media_range.partition(";")
        kind = kind.strip().lower()
        if kind == "application/openmetrics-text" or (
                kind == "text/plain" and "version=" in params.replace(" ", "")):
            return True
    return False


class Statistics:
    """lighttpd's plugin_stats for this process: integer values by key, shown sorted
    as `key: value` lines.  A module sets or counts keys, or registers a function that
    computes the value when the page is read."""

    def __init__(self) -> None:
        self._values: dict[str, int] = {}
        self._providers: dict[str, Callable[[], int]] = {}

    def set(self, key: str, value: int) -> None:
        self._values[key] = value

    def get(self, key: str) -> int:
        """A key's value; one never set is made, 0 (lighttpd's plugin_stats_get_ptr:
        a script that reads a counter shows it on the page)."""
        compute = self._providers.get(key)
        if compute is not None:
            return int(compute())
        return self._values.setdefault(key, 0)

    def inc(self, key: str, by: int = 1) -> None:
        self._values[key] = self._values.get(key, 0) + by

    def provide(self, key: str, compute: Callable[[], int]) -> None:
        self._providers[key] = compute

    def remove(self, key: str) -> None:
        self._values.pop(key, None)
        self._providers.pop(key, None)

    def items(self) -> list[tuple[str, int]]:
        values = dict(self._values)
        values.update((key, int(compute())) for key, compute in self._providers.items())
        return sorted(values.items())


STATISTICS = Statistics()


def gateway_statistics(rows: list[BackendRow]) -> dict[str, int]:
    """The backends' counters under lighttpd 1.4.69's plugin_stats names:
    `gw.backend.<label>.<proc>.{connected,died,disabled,overloaded,load}`,
    `gw.backend.<label>.load`, `gw.active-requests`, and `<module>.requests` once it
    counted one.  Backends that share a label (unlabelled ones, or one label in two
    extensions) share the keys, as in lighttpd: their values add up."""
    values: dict[str, int] = {}
    for row in rows:
        name, counts = row.name, row.counts
        proc_key = f"gw.backend.{name.label}.{name.proc}"
        for suffix, word in _LIGHTTPD_PROC_KEYS:
            values[proc_key + suffix] = values.get(proc_key + suffix, 0) + counts[word]
        active = counts[Counter.ACTIVE]
        host_key = f"gw.backend.{name.label}.load"
        values[host_key] = values.get(host_key, 0) + active
        values["gw.active-requests"] = values.get("gw.active-requests", 0) + active
        if name.module in _LIGHTTPD_REQUEST_COUNTERS and counts[Counter.REQUESTS]:
            requests_key = name.module + ".requests"
            values[requests_key] = values.get(requests_key, 0) + counts[Counter.REQUESTS]
    return values
