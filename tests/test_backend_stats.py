"""Per-backend counters of the gateway modules (shared/backend_stats.py) in the stats
segment: the table of backend names the master registers per generation, folding into
the retired slot, and on the real server (a master with two workers, mod_proxy to a
live and to a dead backend) the Prometheus families and lighttpd's
`status.statistics-url` keys, across a reload that changes the set of backends and a
worker killed, and beside lighttpd 1.4.69 on the same requests.

Every wait is bounded: a hang fails as a wait that expires.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from master.configload import load
from procutil import LIGHTTPD, REPO
from serverproc import Server, free_port, wait_until
from shared import log
from shared.backend_stats import (BackendName, BackendRow, BackendTable, Counter,
                                  configured_backends)
from shared.metrics import gateway_statistics
from shared.stats import Field, StatsSegment
from worker.counters import BackendCounters, publish_backend_counts

sys.path.insert(0, str(REPO / "tests" / "worker"))

from proxy_backends import BackendProcess  # noqa: E402

METRICS = "/server-status?format=prometheus"
STATISTICS = "/server-statistics"
PROMTOOL = shutil.which("promtool")
STATUS = ('server.modules = ("mod_proxy", "mod_status")\n'
          'status.status-url = "/server-status"\n'
          f'status.statistics-url = "{STATISTICS}"\n')


def proxy_config(hosts: dict[str, tuple[str, str, int]], tag: str = "one") -> str:
    """`hosts`: extension -> (label, host, port)."""
    entries = ",\n  ".join(
        f'"{extension}" => ( "{label}" => ( "host" => "{host}", "port" => {port} ) )'
        for extension, (label, host, port) in hosts.items())
    return f'{STATUS}server.tag = "{tag}"\nproxy.server = (\n  {entries}\n)\n'


def fetch(port: int, path: str) -> tuple[int, bytes, str | None]:
    """One GET on a new connection (so that either worker may answer it): the status,
    the body and the Server header."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("Server")
    finally:
        connection.close()


def statistics(port: int) -> list[tuple[str, int]]:
    status, body, _ = fetch(port, STATISTICS)
    assert status in (200, 204)
    return [(key, int(value)) for key, _, value in
            (line.partition(": ") for line in body.decode().splitlines())]


def backend_samples(port: int) -> dict[tuple[str, str], float]:
    """{(sample name, backend label): value} of the pylighttpd_backend_* families,
    parsed by prometheus_client's own parser."""
    status, body, _ = fetch(port, METRICS)
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name.startswith("pylighttpd_backend"):
            for sample in family.samples:
                if not sample.name.endswith("_created"):
                    samples[(sample.name, sample.labels.get("backend", ""))] = sample.value
    return samples


@contextlib.contextmanager
def proxying(tmp_path: Path, hosts: dict[str, tuple[str, str, int]], live: int = 0):
    """The real server (a master, two workers) with `hosts`, after `live` requests to
    /live/x, each answered 200."""
    server = Server(tmp_path, proxy_config(hosts))
    try:
        server.wait_serving()
        for _ in range(live):
            assert fetch(server.port, "/live/x")[0] == 200
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    process = BackendProcess("app", tmp_path_factory.mktemp("backend-stats"))
    try:
        yield process
    finally:
        process.stop()


# ------------------------------------------------------------------ the table
def _config(tmp_path: Path, hosts: dict[str, tuple[str, str, int]]):
    path = tmp_path / f"c{len(list(tmp_path.iterdir()))}.conf"
    path.write_text(f'server.document-root = "{tmp_path}"\n' + proxy_config(hosts))
    return load(str(path))


def _spec(config, extension: str):
    return next(e for e in config.settings["proxy.server"] if e.key == extension).hosts[0]


def _counters(table: BackendTable, spec, proc_number: int = 0) -> BackendCounters:
    """What a worker bumps for that address (worker/counters.backend_counters, for a
    table of the test's own)."""
    found = table.counter_words(spec, proc_number)
    assert found is not None, "the address has no entry in the worker's slot"
    return BackendCounters(*found)


def test_a_name_keeps_its_entry_across_generations_and_a_removed_one_is_freed(tmp_path):
    first = _config(tmp_path, {"/a/": ("a", "127.0.0.1", 8001),
                               "/b/": ("b", "127.0.0.1", 8002)})
    segment = StatsSegment(worker_slots=4)
    table = segment.backends
    old = segment.claim(100, 1, first)
    table.bind(old)
    _counters(table, _spec(first, "/a/")).on_connected()
    _counters(table, _spec(first, "/b/")).on_failed(overloaded=False)
    second = _config(tmp_path, {"/a/": ("a", "127.0.0.1", 8001),
                                "/c/": ("c", "127.0.0.1", 8003)})
    new = segment.claim(101, 2, second)
    table.bind(new)
    _counters(table, _spec(second, "/a/")).on_reused()
    publish_backend_counts()
    rows = {row.name.label: row.counts for row in segment.read_consistent().backends}
    assert set(rows) == {"a", "b", "c"}       # b: the old generation still runs
    assert rows["a"][Counter.REQUESTS] == 2 and rows["a"][Counter.CONNECTED] == 1
    assert (rows["b"][Counter.DIED], rows["b"][Counter.DISABLED]) == (1, 1)
    segment.retire(old)
    rows = {row.name.label: row.counts for row in segment.read_consistent().backends}
    assert set(rows) == {"a", "c"} and rows["a"][Counter.REQUESTS] == 2
    third = _config(tmp_path, {"/a/": ("a", "127.0.0.1", 8001),
                               "/d/": ("d", "127.0.0.1", 8004)})
    segment.claim(102, 3, third)              # b's entry is free: d may take it, at zero
    rows = {row.name.label: row.counts for row in segment.read_consistent().backends}
    assert all(value == 0 for value in rows["d"].values())
    assert table.count == 3


def test_concurrent_retirements_never_make_backend_counts_go_back(tmp_path):
    """A child plays the master (claim a slot with the config, fork a worker that
    counts on a backend and exits, reap, retire) as fast as it can while this process,
    a live worker of the same generation, reads: no read may see less than the one
    before."""
    config = _config(tmp_path, {"/a/": ("a", "127.0.0.1", 8001)})
    spec = _spec(config, "/a/")
    segment = StatsSegment(worker_slots=8)
    segment.claim(os.getpid(), 1, config)
    master = os.fork()
    if master == 0:
        try:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                slot = segment.claim(0, 1, config)
                worker = os.fork()
                if worker == 0:
                    segment.backends.bind(slot)
                    counters = _counters(segment.backends, spec)
                    counters.on_connected()
                    counters.on_failed(overloaded=False)
                    publish_backend_counts()
                    os._exit(0)
                segment.slot(slot)[Field.PID] = worker
                os.waitpid(worker, 0)
                segment.retire(slot)
        finally:
            os._exit(0)
    try:
        previous, reads = (0, 0), 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            (row,) = segment.read_consistent().backends
            totals = (row.counts[Counter.REQUESTS], row.counts[Counter.DIED])
            assert all(now >= before for now, before in zip(totals, previous)), \
                (previous, totals)
            previous, reads = totals, reads + 1
        assert previous[0] > 0 and reads > 100
    finally:
        os.waitpid(master, 0)


def test_a_spawned_host_has_one_backend_per_process(tmp_path):
    """lighttpd's proc ids: process N of a bin-path host, at socket-N."""
    conf = tmp_path / "spawned.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\n'
                    'server.modules = ("mod_fastcgi")\n'
                    'fastcgi.server = ( ".php" => ( "php" => ( "socket" => "/run/php.sock",'
                    ' "bin-path" => "/usr/bin/php-cgi", "max-procs" => 2 ) ) )\n')
    ((_, names),) = configured_backends(load(str(conf)))
    assert names == [BackendName("fastcgi", ".php", "php", 0, "unix:/run/php.sock-0"),
                     BackendName("fastcgi", ".php", "php", 1, "unix:/run/php.sock-1")]


def test_a_full_table_counts_what_fits_and_says_so(tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(log, "_default", log.ErrorLog())    # stderr, whatever ran before
    config = _config(tmp_path, {f"/{n}/": (f"h{n}", "127.0.0.1", 8000 + n)
                                for n in range(3)})
    table = BackendTable(slot_count=2, capacity=2)
    table.register(1, config, {1})
    assert table.untracked == 1
    table.bind(1)
    spec = _spec(config, "/2/")
    assert table.counter_words(spec, 0) is None     # the worker counts it nowhere
    assert [row.name.label for row in table.rows({1: 1})] == ["h0", "h1"]
    assert "the table is full (2 entries): 1 backend addresses of generation 1 are not " \
        "counted" in capfd.readouterr().err


def test_lighttpd_keys_share_a_label_and_count_requests_per_module():
    def row(module: str, label: str, proc: int, **counts: int) -> BackendRow:
        values = dict.fromkeys(Counter, 0)
        values.update({Counter[name.upper()]: value for name, value in counts.items()})
        return BackendRow(BackendName(module, "/x/", label, proc, "tcp:x"), values)
    keys = gateway_statistics([row("proxy", "", 0, requests=2, died=1, active=1),
                               row("scgi", "", 0, requests=3, connected=3),
                               row("wstunnel", "ws", 1, requests=4)])
    assert keys["gw.backend..0.died"] == 1 and keys["gw.backend..0.connected"] == 3
    assert keys["gw.backend..load"] == 1 and keys["gw.active-requests"] == 1
    assert (keys["proxy.requests"], keys["scgi.requests"]) == (2, 3)
    assert "wstunnel.requests" not in keys and keys["gw.backend.ws.1.load"] == 0


def test_a_worker_slots_counters_reach_readers(tmp_path):
    config = _config(tmp_path, {"/a/": ("a", "127.0.0.1", 8001)})
    segment = StatsSegment(worker_slots=2)
    segment.backends.bind(segment.claim(100, 1, config))
    counters = _counters(segment.backends, _spec(config, "/a/"))
    assert type(counters.requests) is int       # an offset: no lookup per event
    for _ in range(3):
        counters.on_reused()
    counters.set_load(7)
    (row,) = segment.read_consistent().backends
    assert (row.counts[Counter.REQUESTS], row.counts[Counter.ACTIVE]) == (0, 7)
    publish_backend_counts()                    # the round's counts, published at its end
    (row,) = segment.read_consistent().backends
    assert (row.counts[Counter.REQUESTS], row.counts[Counter.ACTIVE]) == (3, 7)


# ------------------------------------------------------------------ real server
def test_live_and_dead_backends_in_prometheus_and_lighttpds_statistics(tmp_path, backend):
    hosts = {"/live/": ("app", "127.0.0.1", backend.port),
             "/dead/": ("gone", "127.0.0.1", free_port())}
    with proxying(tmp_path, hosts, live=5) as server:
        assert fetch(server.port, "/dead/x")[0] == 503
        keys = dict(statistics(server.port))
        assert keys["proxy.requests"] == 5 and keys["gw.backend.app.0.died"] == 0
        assert 1 <= keys["gw.backend.app.0.connected"] <= 5    # kept connections reused
        assert (keys["gw.backend.gone.0.died"], keys["gw.backend.gone.0.disabled"]) == (1, 1)
        assert keys["gw.backend.gone.0.connected"] == 0
        samples = backend_samples(server.port)
        assert samples[("pylighttpd_backend_requests_total", "app")] == 5
        assert samples[("pylighttpd_backend_died_total", "gone")] == 1
        assert samples[("pylighttpd_backend_disabled_total", "gone")] == 1
        assert samples[("pylighttpd_backends_untracked", "")] == 0
        if PROMTOOL:
            check = subprocess.run([PROMTOOL, "check", "metrics"], capture_output=True,
                                   input=fetch(server.port, METRICS)[1], timeout=30)
            assert (check.returncode, check.stdout + check.stderr) == (0, b"")
        slow = threading.Thread(target=fetch, args=(server.port, "/live/slow?s=3"))
        slow.start()
        try:
            wait_until(lambda: backend_samples(server.port)[
                ("pylighttpd_backend_active", "app")] == 1, timeout=10)
            assert dict(statistics(server.port))["gw.active-requests"] == 1
        finally:
            slow.join(timeout=15)
        wait_until(lambda: backend_samples(server.port)[
            ("pylighttpd_backend_active", "app")] == 0, timeout=10)


def test_a_reload_keeps_the_remaining_backend_and_drops_the_removed_one(tmp_path, backend):
    dead = free_port()
    hosts = {"/live/": ("app", "127.0.0.1", backend.port), "/dead/": ("gone", "127.0.0.1", dead)}
    with proxying(tmp_path, hosts, live=4) as server:
        assert fetch(server.port, "/dead/x")[0] == 503
        before = dict(statistics(server.port))
        server.write_config(proxy_config({"/live/": ("app", "127.0.0.1", backend.port),
                                          "/new/": ("fresh", "127.0.0.1", dead)}, "two"))
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: fetch(server.port, "/")[2] == "two", timeout=20)
        keys = wait_until(lambda: _without(statistics(server.port), "gone"), timeout=20)
        assert keys["proxy.requests"] == 4 and keys["gw.backend.fresh.0.died"] == 0
        assert keys["gw.backend.app.0.connected"] == before["gw.backend.app.0.connected"]
        assert fetch(server.port, "/live/x")[0] == 200
        samples = backend_samples(server.port)
        assert samples[("pylighttpd_backend_requests_total", "app")] == 5
        assert ("pylighttpd_backend_requests_total", "gone") not in samples


def test_a_killed_workers_counts_are_kept(tmp_path, backend):
    with proxying(tmp_path, {"/live/": ("app", "127.0.0.1", backend.port)}, live=6) as server:
        assert dict(statistics(server.port))["proxy.requests"] == 6
        victim = server.children()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in server.children()
                   and len(server.children()) == 2, timeout=15)
        assert dict(statistics(server.port))["proxy.requests"] == 6
        assert fetch(server.port, "/live/x")[0] == 200
        assert backend_samples(server.port)[("pylighttpd_backend_requests_total", "app")] == 7


def _without(items: list[tuple[str, int]], label: str) -> dict[str, int] | None:
    keys = dict(items)
    return None if any(key.startswith(f"gw.backend.{label}.") for key in keys) else keys


# ------------------------------------------------------------------ beside lighttpd
@pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK), reason="Debian's lighttpd is not "
                    "installed")
def test_statistics_text_is_lighttpds(tmp_path, backend):
    """The same config and requests (one to a live backend, one to a dead one) give
    the same keys, values and order, but `.disabled`, which lighttpd 1.4.69 declares
    and never counts: pylighttpd counts each time a backend is taken out of the
    rotation."""
    from test_differential import Lighttpd
    dead = free_port()
    config = proxy_config({"/live/": ("app", "127.0.0.1", backend.port),
                           "/dead/": ("gone", "127.0.0.1", dead),
                           "/other/": ("", "127.0.0.1", dead)})
    (tmp_path / "www").mkdir()
    conf = tmp_path / "lighttpd" / "common.conf"
    conf.parent.mkdir()
    conf.write_text(f'server.document-root = "{tmp_path}/www"\n{config}')
    theirs = Lighttpd(conf)
    ours = Server(tmp_path, config)
    try:
        ours.wait_serving()
        answers = []
        for port in (theirs.port, ours.port):
            answers.append((fetch(port, "/live/x")[0], fetch(port, "/dead/x")[0]))
        assert answers[0] == answers[1] == (200, 503)
        lighttpd, pylighttpd = statistics(theirs.port), statistics(ours.port)
        assert [key for key, _ in lighttpd] == [key for key, _ in pylighttpd]
        differ = {key: (value, dict(pylighttpd)[key]) for key, value in lighttpd
                  if dict(pylighttpd)[key] != value}
        assert differ == {"gw.backend.gone.0.disabled": (0, 1)}
    finally:
        ours.stop()
        theirs.stop()


def test_no_segment_means_scratch_counters(tmp_path):
    """A worker without a master (tests, -1) counts into words nobody reads."""
    from worker.counters import backend_counters
    spec = _spec(_config(tmp_path, {"/a/": ("a", "127.0.0.1", 8001)}), "/a/")
    current, StatsSegment.current = StatsSegment.current, None
    try:
        counters = backend_counters(spec, spec.procs[0])
        counters.on_connected()
        counters.on_failed(overloaded=True)
        assert counters.words[counters.overloaded] == 1
    finally:
        StatsSegment.current = current
