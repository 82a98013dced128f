"""/server-status as a Prometheus target: content negotiation, the metric families,
counters that never go backwards across reloads and crashes, a real Prometheus
scraping it, promtool's lint, and what a scrape costs with 16 workers.

Every server and client here is on 127.0.0.1, and every load is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from load_util import Load
from serverproc import free_port, serving, wait_until
from shared.metrics import SegmentCollector, exposition
from shared.stats import Field, StatsSegment
from test_status import BODY, STATUS_CONFIG, fresh_get, status_server  # noqa: F401

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-"
                     "text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
METRICS = "/server-status?format=prometheus"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def counter_samples(text: str) -> dict[tuple, float]:
    """Every sample that may only grow: counters and histogram buckets/sum/count."""
    samples = {}
    for family in text_string_to_metric_families(text):
        if family.type in ("counter", "histogram"):
            for sample in family.samples:
                if not sample.name.endswith("_created"):
                    samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total_requests(text: str) -> int:
    family = families(text)["pylighttpd_http_requests"]
    return int(sum(s.value for s in family.samples if s.name.endswith("_total")))


class Scraper:
    """Scrapes METRICS on one keep-alive connection, as fast as it can, in a thread;
    keeps every body and counts every request it sent (each is a counted request)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bodies: list[str] = []
        self.sent = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Scraper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        connection = None
        deadline = time.monotonic() + 120
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port,
                                                            timeout=5)
                self.sent += 1
                connection.request("GET", METRICS)
                response = connection.getresponse()
                body = response.read()
                if response.status == 200:
                    self.bodies.append(body.decode())
            except (OSError, http.client.HTTPException):
                self.failed += 1
                if connection is not None:
                    connection.close()
                connection = None
            time.sleep(0.02)
        if connection is not None:
            connection.close()


def test_accept_header_chooses_the_format(status_server):
    port = status_server.port
    status, headers, body = fresh_get(port, "/server-status", {"Accept": PROMETHEUS_ACCEPT})
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    status, headers, body = fresh_get(port, "/server-status",
                                      {"Accept": "text/plain;version=0.0.4"})
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"# TYPE pylighttpd_http_requests_total counter" in body
    assert fresh_get(port, METRICS)[1]["Content-Type"].startswith("text/plain; version=0.0.4")
    for accept in ("text/html,application/xhtml+xml,*/*;q=0.8", "*/*", "text/plain"):
        assert fresh_get(port, "/server-status", {"Accept": accept})[1][
            "Content-Type"] == "text/html", accept
    # an explicit lighttpd format wins over the Accept header
    assert fresh_get(port, "/server-status?auto", {"Accept": PROMETHEUS_ACCEPT})[1][
        "Content-Type"] == "text/plain"


def test_metric_families_describe_the_whole_server(status_server):
    port = status_server.port
    for _ in range(20):
        fresh_get(port, "/")
    fresh_get(port, "/nope")
    time.sleep(1.2)                          # one psutil sample by the master
    text = fresh_get(port, METRICS)[2].decode()
    found = families(text)
    counters = {"connections_accepted", "connections_handled", "keepalive_reuses",
                "http_requests", "http_received_bytes", "http_sent_bytes",
                "workers_spawned", "worker_respawns", "reloads", "workers_cpu_seconds"}
    gauges = {"connections_active", "connections_reading", "connections_writing",
              "connections_waiting", "worker_resident_memory_bytes", "worker_cpu_seconds",
              "worker_open_fds", "worker_threads", "worker_connections", "worker_requests",
              "worker_heartbeat_age_seconds", "worker_state", "worker_pid",
              "last_reload_timestamp_seconds", "start_time_seconds", "build_info"}
    for name in counters:
        assert found["pylighttpd_" + name].type == "counter", name
    for name in gauges:
        assert found["pylighttpd_" + name].type == "gauge", name
    requests = {(s.labels["code"], s.labels["method"]): s.value
                for s in found["pylighttpd_http_requests"].samples}
    assert requests["4xx", "GET"] == 1 and requests["2xx", "GET"] >= 20
    histogram = found["pylighttpd_http_request_duration_seconds"]
    assert histogram.type == "histogram"
    buckets = [s for s in histogram.samples if s.name.endswith("_bucket")]
    count = next(s.value for s in histogram.samples if s.name.endswith("_count"))
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == count
    assert count == sum(requests.values())
    assert [b.value for b in buckets] == sorted(b.value for b in buckets)
    pids = {int(s.value) for s in found["pylighttpd_worker_pid"].samples}
    assert pids == set(status_server.children())
    rss = [s for s in found["pylighttpd_worker_resident_memory_bytes"].samples]
    assert len(rss) == 2 and all(s.value > 1_000_000 for s in rss)
    assert {s.labels["generation"] for s in rss} == {"1"}
    ready = [s for s in found["pylighttpd_worker_state"].samples
             if s.labels["state"] == "ready"]
    assert [s.value for s in ready] == [1.0, 1.0]
    assert found["pylighttpd_workers_spawned"].samples[0].value == 2


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
def test_promtool_finds_nothing_to_complain_about(status_server):
    for _ in range(5):
        fresh_get(status_server.port, "/")
    text = fresh_get(status_server.port, METRICS)[2]
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                            capture_output=True, timeout=30)
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b"", \
        (result.stdout + result.stderr).decode()


def test_counters_never_go_back_across_reloads_and_kills(tmp_path):
    with serving(tmp_path, STATUS_CONFIG + 'server.tag = "gen-0"\n'
                 "server.graceful-shutdown-timeout = 5") as server:
        baseline_text = fresh_get(server.port, METRICS)[2].decode()
        own = {"ok": 0, "failed": 0}

        def tagged(tag: str) -> bool:
            try:
                answer = fresh_get(server.port, "/")
            except OSError:
                own["failed"] += 1
                raise
            own["ok"] += 1
            return answer[1].get("Server") == tag

        clients = {"keepalive_clients": 2, "fresh_clients": 2}
        with Load(server.port, BODY, **clients) as load, \
                Scraper(server.port) as scraper:
            time.sleep(0.5)
            for number in range(1, 6):
                server.write_config(STATUS_CONFIG + f'server.tag = "gen-{number}"\n'
                                    "server.graceful-shutdown-timeout = 5")
                server.process.send_signal(signal.SIGHUP)
                wait_until(lambda: tagged(f"gen-{number}"), timeout=15)
                time.sleep(0.3)
                if number in (2, 4):
                    victim = server.children()[0]
                    os.kill(victim, signal.SIGKILL)
                    wait_until(lambda: victim not in server.children()
                               and len(server.children()) == 2, timeout=10)
                    time.sleep(0.3)
        time.sleep(0.1)     # a request is counted once sent: the last ones, by now
        final_text = fresh_get(server.port, METRICS)[2].decode()
    bodies = [baseline_text, *scraper.bodies, final_text]
    assert len(bodies) > 20
    previous = counter_samples(bodies[0])
    for number, body in enumerate(bodies[1:], 1):
        current = counter_samples(body)
        went_back = {key: (previous[key], value) for key, value in current.items()
                     if value < previous.get(key, 0)}
        assert not went_back, f"scrape {number}: {went_back}"
        previous = current
    found = families(final_text)
    respawns = {s.labels["reason"]: s.value for s in found["pylighttpd_worker_respawns"].samples}
    assert respawns["crash"] == 2 and respawns["reload"] == 10
    reloads = {s.labels["result"]: s.value for s in found["pylighttpd_reloads"].samples}
    assert reloads == {"ok": 5.0, "refused": 0.0}
    # every request sent from the baseline scrape on is counted once (a page counts
    # the requests that ended before it: the baseline's own, not the final one's); one
    # lost in a kill may or may not have been
    sent = load.result.ok + scraper.sent - scraper.failed + own["ok"] + 1
    # (a keep-alive request cut by a kill's reset is retried by the load's client, not
    # failed: it may have been answered and counted before the reset lost the answer)
    maybe = len(load.result.failures) + load.result.retried_idle + scraper.failed + \
        own["failed"]
    counted = total_requests(final_text) - total_requests(baseline_text)
    print(f"\nrequests sent {sent} (+{maybe} failed), counted {counted}, "
          f"scrapes {len(scraper.bodies)}")
    # a request is counted when its last byte has left: a worker killed (SIGKILL, two
    # of them here) in the microseconds between that send and the count loses it
    assert sent - 2 <= counted <= sent + maybe
    # only requests on a killed worker's connections may fail: at most one per client
    # and kill (a keep-alive client's next request on a connection the kill closed,
    # a fresh client's request in flight); the scraper's keep-alive connection is also
    # closed when its worker retires: that request was never seen
    assert len(load.result.failures) <= 2 * sum(clients.values()), load.result.failures


# ------------------------------------------------------------- real Prometheus
def _prometheus_api(port: int, query: str, **params) -> list:
    url = (f"http://127.0.0.1:{port}/api/v1/query?"
           + urllib.parse.urlencode({"query": query, **params}))
    with urllib.request.urlopen(url, timeout=5) as response:
        data = json.load(response)
    assert data["status"] == "success", data
    return data["data"]["result"]


def _samples(port: int) -> list[tuple[float, float]]:
    result = _prometheus_api(
        port, 'pylighttpd_http_requests_total{code="2xx",method="GET"}[10m]')
    return [(float(t), float(v)) for t, v in result[0]["values"]] if result else []


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed "
                    "(apt-get install prometheus)")
def test_a_real_prometheus_scrapes_the_status_url(status_server, tmp_path):
    api_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: pylighttpd\n    metrics_path: /server-status\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{status_server.port}']\n")
    log = open(tmp_path / "prometheus.log", "wb")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{api_port}", "--log.level=warn"],
        stdout=log, stderr=log, cwd=tmp_path)
    try:
        wait_until(lambda: _prometheus_api(api_port, "up"), timeout=30)
        wait_until(lambda: len(_samples(api_port)) >= 2, timeout=15)
        up = _prometheus_api(api_port, "up")
        assert up[0]["value"][1] == "1" and \
            up[0]["metric"]["instance"] == f"127.0.0.1:{status_server.port}"
        with Load(status_server.port, BODY, keepalive_clients=2, fresh_clients=1) as load:
            time.sleep(5)
        load_done = len(_samples(api_port))
        wait_until(lambda: len(_samples(api_port)) >= load_done + 2, timeout=15)
        samples = _samples(api_port)
        assert not load.result.failures
        # between two samples: the load's requests plus Prometheus's own scrapes (a
        # scrape's page is built before that scrape is counted)
        (first_at, first), (last_at, last) = samples[0], samples[-1]
        assert last - first == load.result.ok + len(samples) - 1
        window = last_at - first_at
        increase = _prometheus_api(
            api_port, f'increase(pylighttpd_http_requests_total{{code="2xx",method="GET"}}'
                      f'[{int((window + 0.5) * 1000)}ms])', time=f"{last_at:.3f}")
        value = float(increase[0]["value"][1])
        per_interval = (last - first) / window          # requests in one scrape interval
        print(f"\nprometheus: {len(samples)} samples, sent {load.result.ok}, "
              f"increase() {value:.0f}, exact {last - first:.0f}")
        assert abs(value - (last - first)) <= per_interval + 2
        assert _prometheus_api(api_port, "up")[0]["value"][1] == "1"
    finally:
        process.kill()                   # its storage is thrown away with tmp_path
        process.wait(timeout=15)
        log.close()


# ------------------------------------------------------------------ scrape cost
def test_scrape_cost_with_sixteen_workers(tmp_path, capsys):
    with serving(tmp_path, STATUS_CONFIG + "server.max-worker := 16") as server:
        wait_until(lambda: len(server.children()) == 16, timeout=30)
        time.sleep(1.2)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        timings = []
        for _ in range(50):
            started = time.perf_counter()
            connection.request("GET", METRICS)
            response = connection.getresponse()
            body = response.read()
            timings.append(time.perf_counter() - started)
            assert response.status == 200
        connection.close()
        workers = {s.labels["worker"] for s in
                   families(body.decode())["pylighttpd_worker_pid"].samples}
        assert len(workers) == 16
    # the same collection in this process, without HTTP: a 16-worker segment
    segment = StatsSegment(worker_slots=512)
    for pid in range(16):
        segment.slot(segment.claim(os.getpid(), 1))[Field.REQUESTS + 1] = 1000 + pid
    collector = SegmentCollector(segment)
    local = []
    for _ in range(50):
        started = time.perf_counter()
        exposition(collector, "text/plain;version=0.0.4")
        local.append(time.perf_counter() - started)
    with capsys.disabled():
        print(f"\nscrape with 16 workers: median {statistics.median(timings) * 1000:.2f} ms "
              f"over HTTP ({len(body)} bytes), collect+encode in-process "
              f"{statistics.median(local) * 1000:.2f} ms")
