"""Side-by-side benchmarks: pylighttpd, lighttpd and nginx on one docroot, 127.0.0.1 only.

Each scenario runs against every server in turn, several rounds alternating the
order, so that machine drift hits all alike.  Reported per server and scenario: the
median req/s (with min and max), p99 latency, and server CPU microseconds per request
(the CPU time of the server's whole process tree over the requests served, steadier
than req/s on a small machine that wrk shares), each also as a ratio to lighttpd.

The gateway scenarios run on a second set of servers whose config also loads mod_proxy
and mod_cgi: they proxy to a lighttpd serving the same 1 KiB file (pooled backend
connections and none) and to discard_backend.py (uploads), and run a sh CGI script
(not nginx, which has no CGI).

    python3 loadtests/bench.py                 # everything, 3 rounds of 5 s
    python3 loadtests/bench.py --quick         # 1 round of 2 s, for a smoke test
    python3 loadtests/bench.py --only 1k-keepalive,10m --json out.json
    python3 loadtests/bench.py --only proxy-1k,proxy-1k-nopool,cgi-hello,upload
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
SERVERS = ("pylighttpd", "lighttpd", "nginx")
WORKERS = 2
STATIC, GATEWAYS = "static", "gateways"     # the two sets of servers (configs)
CGI_SCRIPT = "/cgi/hello.sh"
CGI_BODY = "hello world"
UPLOAD_FILE = "upload.bin"
UPLOAD_TIMEOUT = 120.0
RSS_SAMPLE_SECONDS = 0.01
# the special rows, run once after the rounds (footprint: before them)
SPECIALS = ("footprint", "idle", "reload")


@dataclass
class Scenario:
    name: str
    path: str
    connections: int = 50
    threads: int = 2
    headers: tuple[str, ...] = ()
    pipeline: int = 0
    expect_status: int = 200
    setup: str = STATIC               # which set of servers answers it
    servers: tuple[str, ...] = SERVERS   # the servers that do this at all
    upload: bool = False              # POSTs of --upload-mib each instead of wrk


SCENARIOS = [
    Scenario("1k-keepalive", "/1k.bin"),
    Scenario("16k-keepalive", "/16k.bin"),
    Scenario("10m", "/10m.bin", connections=4),
    Scenario("1k-close", "/1k.bin", headers=("Connection: close",)),
    Scenario("404", "/missing.bin", expect_status=404),
    Scenario("dirlisting", "/dir/"),
    Scenario("pipeline-16", "/1k.bin", connections=16, pipeline=16),
    Scenario("proxy-1k", "/proxy/1k.bin", setup=GATEWAYS),
    Scenario("proxy-1k-nopool", "/nopool/1k.bin", setup=GATEWAYS),
    Scenario("cgi-hello", CGI_SCRIPT, setup=GATEWAYS, servers=("pylighttpd", "lighttpd")),
    Scenario("upload", "/upload/", setup=GATEWAYS, upload=True),
    Scenario("1k-keepalive-gateways", "/1k.bin", setup=GATEWAYS),
]


@dataclass
class Measurement:
    server: str
    scenario: str
    requests_per_second: float
    p99_ms: float
    cpu_us_per_request: float
    errors: int
    bad_status: int
    # the upload rows: body bytes through the proxy per second, the server tree's
    # largest RSS while it took them, and how much above its RSS before that was
    megabytes_per_second: float = 0.0
    peak_rss_bytes: int = 0
    rss_growth_bytes: int = 0


@dataclass
class Report:
    rounds: list[Measurement] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------- fixtures
def make_docroot(base: Path) -> Path:
    docroot = base / "www"
    (docroot / "dir").mkdir(parents=True)
    (docroot / "1k.bin").write_bytes(os.urandom(1024))
    (docroot / "16k.bin").write_bytes(os.urandom(16 * 1024))
    (docroot / "10m.bin").write_bytes(os.urandom(10 * 1024 * 1024))
    (docroot / "index.html").write_text("<html><body>bench</body></html>\n")
    for number in range(50):
        (docroot / "dir" / f"file-{number:03}.txt").write_text("x" * number)
    return docroot


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class GatewayPorts:
    """Where the gateway configs send requests: the static lighttpd backend (/proxy/,
    /nopool/) and discard_backend.py (/upload/)."""

    static: int
    discard: int


def lighttpd_style_config(docroot: Path, port: int, base: Path, accesslog: bool,
                          name: str, gateways: GatewayPorts | None = None) -> Path:
    """One config both pylighttpd and lighttpd read: that is the point of the project."""
    log = f'accesslog.filename = "{base}/{name}-access.log"\n' if accesslog else ""
    modules = '"mod_accesslog", ' if accesslog else ""
    if gateways:
        modules += '"mod_proxy", "mod_cgi", '
    path = base / f"{name}.conf"
    path.write_text(
        f'server.document-root = "{docroot}"\nserver.bind = "127.0.0.1"\n'
        f"server.port = {port}\nserver.max-worker = {WORKERS}\n"
        f"server.modules = ({modules}\"mod_dirlisting\", \"mod_staticfile\")\n"
        'dir-listing.activate = "enable"\nserver.max-fds = 19000\n'
        "server.max-connections = 9000\nserver.max-keep-alive-requests = 1000000\n"
        "server.max-keep-alive-idle = 120\nserver.max-read-idle = 120\n"
        f'mimetype.assign = (".bin" => "application/octet-stream", ".html" => "text/html")\n'
        f'server.errorlog = "{base}/{name}-error.log"\n{log}'
        f'{gateway_settings(base, gateways) if gateways else ""}')
    return path


def gateway_settings(base: Path, gateways: GatewayPorts) -> str:
    """mod_proxy and mod_cgi, the same for pylighttpd and lighttpd.  /nopool/ sets
    pylighttpd's "keepalive" to 0: a new backend connection for every request, as
    lighttpd always does (it takes the key and ignores it)."""
    backend = f'"host" => "127.0.0.1", "port" => {gateways.static}'
    return (f'server.upload-dirs = ("{base}")\ncgi.assign = (".sh" => "/bin/sh")\n'
            f'proxy.server = ( "/proxy/" => (( {backend} )),\n'
            f'  "/nopool/" => (( {backend}, "keepalive" => 0 )),\n'
            f'  "/upload/" => (( "host" => "127.0.0.1", "port" => {gateways.discard} )) )\n')


def nginx_config(docroot: Path, port: int, base: Path, accesslog: bool,
                 gateways: GatewayPorts | None = None) -> Path:
    path = base / "nginx.conf"
    log = f"access_log {base}/nginx-access.log;" if accesslog else "access_log off;"
    path.write_text(f"""
user root;
worker_processes {WORKERS};
worker_rlimit_nofile 19000;
pid {base}/nginx.pid;
error_log {base}/nginx-error.log;
events {{ worker_connections 9000; }}
http {{
    types {{ application/octet-stream bin; text/html html; }}
    sendfile on; tcp_nopush on;
    keepalive_requests 1000000; keepalive_timeout 120s;
    {log}
    client_body_temp_path {base}/nginx-body;
    proxy_temp_path {base}/nginx-proxy;
    fastcgi_temp_path {base}/nginx-fastcgi;
    uwsgi_temp_path {base}/nginx-uwsgi;
    scgi_temp_path {base}/nginx-scgi;
    {nginx_upstreams(gateways) if gateways else ""}
    server {{
        listen 127.0.0.1:{port} reuseport;
        root {docroot};
        location /dir/ {{ autoindex on; }}
        {nginx_proxy_locations(gateways) if gateways else ""}
    }}
}}
""")
    return path


def nginx_upstreams(gateways: GatewayPorts) -> str:
    """Backends with idle connections kept per worker, as pylighttpd's default (64)."""
    return (f"upstream static-backend {{ server 127.0.0.1:{gateways.static}; keepalive 64; }}\n"
            f"    upstream discard-backend {{ server 127.0.0.1:{gateways.discard}; "
            "keepalive 64; }")


def nginx_proxy_locations(gateways: GatewayPorts) -> str:
    """/proxy/ and /upload/ pooled (HTTP/1.1 to the backend, no Connection: close),
    /nopool/ nginx's default (HTTP/1.0, a connection per request).  The upload's body
    is spooled to disk before it goes on, as pylighttpd and lighttpd do by default."""
    pooled = 'proxy_http_version 1.1; proxy_set_header Connection "";'
    return (f"location /proxy/ {{ proxy_pass http://static-backend; {pooled} }}\n"
            f"        location /nopool/ {{ proxy_pass http://127.0.0.1:{gateways.static}; }}\n"
            f"        location /upload/ {{ proxy_pass http://discard-backend; {pooled} "
            "client_max_body_size 0; }")


class RunningServer:
    def __init__(self, name: str, docroot: Path, base: Path, accesslog: bool,
                 gateways: GatewayPorts | None = None) -> None:
        self.name = name
        self.port = free_port()
        if name == "nginx":
            conf = nginx_config(docroot, self.port, base, accesslog, gateways)
            command = ["nginx", "-c", str(conf), "-g", "daemon off;"]
        else:
            conf = lighttpd_style_config(docroot, self.port, base, accesslog, name, gateways)
            command = ([sys.executable, "-m", "master.cli", "-D", "-f", str(conf)]
                       if name == "pylighttpd" else ["lighttpd", "-D", "-f", str(conf)])
        self.config = conf
        # a session of its own: lighttpd signals its whole process group on stop
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        env={**os.environ, "PYTHONPATH": str(REPO)})
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"GET /1k.bin HTTP/1.0\r\n\r\n")
                    if sock.recv(12).startswith(b"HTTP/1."):
                        time.sleep(0.3)   # let every worker come up
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """CPU time of the process tree, processes that have exited included: workers
        a reload replaced are in the master's children_* once reaped, CGI scripts in
        their worker's."""
        total = 0.0
        for process in self.tree():
            try:
                times = process.cpu_times()
                total += (times.user + times.system + times.children_user +
                          times.children_system)
            except psutil.Error:
                continue
        return total

    def memory(self, kind: str) -> int:
        total = 0
        for process in self.tree():
            try:
                info = process.memory_full_info() if kind == "pss" else process.memory_info()
                total += getattr(info, kind)
            except psutil.Error:
                continue
        return total

    def reload(self) -> None:
        if self.name == "nginx":
            subprocess.run(["nginx", "-c", str(self.config), "-s", "reload"],
                           capture_output=True, timeout=10)
        else:
            self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM if self.name != "nginx" else signal.SIGQUIT)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            for process in self.tree():
                process.kill()


class GatewayBackends:
    """What the gateway scenarios' front servers proxy to: a lighttpd (two workers, as
    the fronts) serving the 1 KiB file under /proxy/ and /nopool/, and
    discard_backend.py for uploads.  Their CPU time is not counted: the same backend
    does the same work behind every front server."""

    def __init__(self, base: Path, docroot: Path) -> None:
        backend_root = base / "backend"
        for prefix in ("", "proxy", "nopool"):
            (backend_root / "www" / prefix).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(docroot / "1k.bin", backend_root / "www" / prefix / "1k.bin")
        self.static = RunningServer("lighttpd", backend_root / "www", backend_root,
                                    accesslog=False)
        discard_port = free_port()
        self.discard = subprocess.Popen(
            [sys.executable, str(REPO / "loadtests" / "discard_backend.py"),
             str(discard_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ports = GatewayPorts(self.static.port, discard_port)
        try:
            wait_listening(discard_port, self.discard)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        self.static.stop()
        self.discard.terminate()
        self.discard.wait(timeout=15)


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} (exit status {process.poll()})")


def add_cgi_script(docroot: Path) -> None:
    """The CGI hello world, run by /bin/sh (cgi.assign) in both servers."""
    script = docroot / CGI_SCRIPT.lstrip("/")
    script.parent.mkdir(exist_ok=True)
    script.write_text("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n"
                      f"{CGI_BODY}\\n'\n")


def start_servers(setup: str, names: list[str], docroot: Path, base: Path,
                  accesslog: bool, stack: contextlib.ExitStack) -> dict[str, RunningServer]:
    """The servers of one setup, each stopped when `stack` closes (the gateway setup's
    backends too, after its fronts)."""
    gateways = None
    if setup == GATEWAYS:
        base = base / GATEWAYS
        base.mkdir()
        add_cgi_script(docroot)
        backends = GatewayBackends(base, docroot)
        stack.callback(backends.stop)
        gateways = backends.ports
    started = {}
    for name in names:
        started[name] = RunningServer(name, docroot, base, accesslog, gateways)
        stack.callback(started[name].stop)
    return started


# ------------------------------------------------------------------- wrk
_WRK_REQUESTS = re.compile(r"(\d+) requests in")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_P99 = re.compile(r"\s99%\s+([\d.]+)(us|ms|s)\b")


def wrk_script(base: Path, scenario: Scenario) -> Path | None:
    if not scenario.pipeline:
        return None
    script = base / f"pipeline-{scenario.pipeline}.lua"
    script.write_text(
        "init = function(args)\n  local r = {}\n"
        f"  for i = 1, {scenario.pipeline} do r[i] = wrk.format(nil, \"{scenario.path}\") end\n"
        "  req = table.concat(r)\nend\nrequest = function() return req end\n")
    return script


def wrk_counts(output: str) -> tuple[int, int, int]:
    """From wrk's report: (requests, socket errors, non-2xx/3xx answers)."""
    requests = int(_WRK_REQUESTS.search(output).group(1))
    errors = _WRK_ERRORS.search(output)
    non2xx = _WRK_NON2XX.search(output)
    return (requests, sum(int(n) for n in errors.groups()) if errors else 0,
            int(non2xx.group(1)) if non2xx else 0)


def run_wrk(server: RunningServer, scenario: Scenario, seconds: float, base: Path
            ) -> Measurement:
    command = ["wrk", f"-t{scenario.threads}", f"-c{scenario.connections}",
               f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    for header in scenario.headers:
        command += ["-H", header]
    script = wrk_script(base, scenario)
    if script:
        command += ["-s", str(script)]
    command.append(f"http://127.0.0.1:{server.port}{scenario.path}")
    cpu_before = server.cpu_seconds()
    output = subprocess.run(command, capture_output=True, text=True,
                            timeout=seconds + 60).stdout
    cpu = server.cpu_seconds() - cpu_before
    requests, errors, non2xx = wrk_counts(output)
    bad_status = non2xx if scenario.expect_status < 400 else 0
    p99 = _WRK_P99.search(output)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)] if p99 else 0
    return Measurement(server.name, scenario.name, requests / seconds, p99_ms,
                       cpu * 1e6 / max(requests, 1), errors, bad_status)


# ---------------------------------------------------------------- uploads
class PeakRss:
    """`with PeakRss(measure) as rss:` calls `measure()` (an RSS in bytes) every
    `every` seconds in a thread; `rss.before`, `rss.peak` and `rss.samples` after the
    block."""

    def __init__(self, measure: Callable[[], int],
                 every: float = RSS_SAMPLE_SECONDS) -> None:
        self.measure = measure
        self.every = every
        self.before = self.peak = measure()
        self.samples = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.measure())
            self.samples += 1


def upload_once(port: int, path: str, body: Path) -> tuple[int, bytes]:
    """POST the file (its length announced, on a new connection): (status, answer)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=UPLOAD_TIMEOUT,
                                            blocksize=1 << 20)
    try:
        with body.open("rb") as file:
            connection.request("POST", path, body=file, headers={
                "Content-Length": str(body.stat().st_size),
                "Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def run_uploads(server: RunningServer, scenario: Scenario, seconds: float, body: Path
                ) -> Measurement:
    """Uploads one after another for `seconds` (at least one), each checked: the backend
    answers with the number of body bytes it got."""
    size = body.stat().st_size
    expected = b"%d\n" % size
    uploads = errors = bad_status = 0
    slowest = 0.0
    cpu_before = server.cpu_seconds()
    start = time.monotonic()
    with PeakRss(lambda: server.memory("rss")) as rss:
        while uploads == 0 or time.monotonic() - start < seconds:
            began = time.monotonic()
            uploads += 1
            try:
                status, answer = upload_once(server.port, scenario.path, body)
            except (OSError, http.client.HTTPException):
                errors += 1
                continue
            bad_status += status != 200 or answer != expected
            slowest = max(slowest, time.monotonic() - began)
    elapsed = time.monotonic() - start
    cpu = server.cpu_seconds() - cpu_before
    return Measurement(server.name, scenario.name, uploads / elapsed, slowest * 1000,
                       cpu * 1e6 / uploads, errors, bad_status,
                       megabytes_per_second=size * uploads / elapsed / 1e6,
                       peak_rss_bytes=rss.peak, rss_growth_bytes=rss.peak - rss.before)


def make_upload_body(base: Path, mebibytes: int) -> Path:
    path = base / UPLOAD_FILE
    with path.open("wb") as file:
        for _ in range(mebibytes):
            file.write(os.urandom(1 << 20))
    return path


# -------------------------------------------------------- special scenarios
def idle_connections(server: RunningServer, count: int) -> dict:
    """Hold `count` keep-alive connections, each after one request; RSS per connection."""
    before = server.memory("rss")
    clients, answered = [], 0
    request = b"GET /1k.bin HTTP/1.1\r\nHost: bench\r\n\r\n"
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(request)
            clients.append(sock)
        for sock in clients:
            if sock.recv(16).startswith(b"HTTP/1.1 200"):
                answered += 1
        time.sleep(1.0)
        after = server.memory("rss")
    finally:
        for sock in clients:
            sock.close()
    return {"connections": count, "answered": answered,
            "rss_bytes_per_connection": (after - before) / count}


def reload_under_load(server: RunningServer, seconds: float, base: Path,
                      pairs: int = 3) -> dict:
    """Throughput while a reload happens every second, against the same without.

    Quiet and reloading windows alternate, `pairs` of each, and the dip compares their
    totals: on a 2-core machine that wrk shares, req/s drifts by ±20 % from one window
    to the next, and alternating makes the drift fall on both sides alike.  The CPU
    time per request is compared too: what the reloads cost the server itself.
    """
    scenario = SCENARIOS[0]
    quiet_requests = reload_requests = reloads = failed = 0
    quiet_cpu = reload_cpu = 0.0
    for _ in range(pairs):
        quiet = run_wrk(server, scenario, seconds, base)
        quiet_requests += quiet.requests_per_second * seconds
        quiet_cpu += quiet.cpu_us_per_request * quiet.requests_per_second * seconds
        cpu_before = server.cpu_seconds()
        requests, errors, count = _wrk_with_reloads(server, scenario, seconds)
        reload_cpu += (server.cpu_seconds() - cpu_before) * 1e6
        reload_requests += requests
        reloads += count
        failed += errors
    quiet_rps = quiet_requests / (pairs * seconds)
    during_rps = reload_requests / (pairs * seconds)
    return {"reloads": reloads, "rps_quiet": quiet_rps, "rps_during_reloads": during_rps,
            "dip_percent": 100 * (1 - during_rps / quiet_rps),
            "cpu_us_quiet": quiet_cpu / max(quiet_requests, 1),
            "cpu_us_during_reloads": reload_cpu / max(reload_requests, 1),
            "failed": failed}


def _wrk_with_reloads(server: RunningServer, scenario: Scenario, seconds: float
                      ) -> tuple[int, int, int]:
    """wrk for `seconds` with a reload every second: (requests, failed, reloads)."""
    stop_at = time.monotonic() + seconds
    command = ["wrk", "-t2", "-c50", f"-d{seconds:g}s", "--timeout", "10s",
               f"http://127.0.0.1:{server.port}{scenario.path}"]
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    reloads = 0
    while time.monotonic() < stop_at - 0.5:
        time.sleep(1.0)
        server.reload()
        reloads += 1
    requests, errors, non2xx = wrk_counts(wrk.communicate(timeout=seconds + 60)[0])
    return requests, errors + non2xx, reloads


# ------------------------------------------------------------------- main
def ratio(value: float, reference: float) -> float:
    return value / reference if reference else float("nan")


def summarise(report: Report) -> dict:
    summary: dict = {}
    for measurement in report.rounds:
        entry = summary.setdefault(measurement.scenario, {}).setdefault(
            measurement.server, {"rps": [], "p99_ms": [], "cpu_us": [], "errors": 0})
        entry["rps"].append(measurement.requests_per_second)
        entry["p99_ms"].append(measurement.p99_ms)
        entry["cpu_us"].append(measurement.cpu_us_per_request)
        entry["errors"] += measurement.errors + measurement.bad_status
        if measurement.megabytes_per_second:
            entry.setdefault("mb_per_second", []).append(measurement.megabytes_per_second)
            entry["peak_rss_bytes"] = max(entry.get("peak_rss_bytes", 0),
                                          measurement.peak_rss_bytes)
            entry["rss_growth_bytes"] = max(entry.get("rss_growth_bytes", 0),
                                            measurement.rss_growth_bytes)
    for scenario in summary.values():
        for entry in scenario.values():
            entry["rps_median"] = statistics.median(entry["rps"])
            entry["rps_min"], entry["rps_max"] = min(entry["rps"]), max(entry["rps"])
            entry["p99_ms_median"] = statistics.median(entry["p99_ms"])
            entry["cpu_us_median"] = statistics.median(entry["cpu_us"])
            if "mb_per_second" in entry:
                entry["mb_per_second_median"] = statistics.median(entry["mb_per_second"])
        reference = scenario.get("lighttpd")
        for entry in scenario.values():
            if reference:
                entry["rps_ratio_to_lighttpd"] = ratio(entry["rps_median"],
                                                       reference["rps_median"])
                entry["cpu_ratio_to_lighttpd"] = ratio(entry["cpu_us_median"],
                                                       reference["cpu_us_median"])
    return summary


def print_table(summary: dict, extra: dict) -> None:
    print(f"{'scenario':22} {'server':11} {'req/s':>9} {'min':>9} {'max':>9} "
          f"{'p99 ms':>8} {'cpu us/req':>10} {'x lighttpd':>10} {'cpu x l':>7} "
          f"{'errors':>6}")
    for scenario, servers in summary.items():
        for server, entry in servers.items():
            print(f"{scenario:22} {server:11} {entry['rps_median']:9.0f} "
                  f"{entry['rps_min']:9.0f} {entry['rps_max']:9.0f} "
                  f"{entry['p99_ms_median']:8.2f} {entry['cpu_us_median']:10.1f} "
                  f"{entry.get('rps_ratio_to_lighttpd', float('nan')):10.2f} "
                  f"{entry.get('cpu_ratio_to_lighttpd', float('nan')):7.2f} "
                  f"{entry['errors']:6}")
    print_uploads(summary, extra.get("upload_mib"))
    for name, values in extra.items():
        print(f"{name}: {json.dumps(values)}")


def print_uploads(summary: dict, mebibytes: int | None) -> None:
    """The upload rows' own figures (their req/s are uploads a second, p99 the slowest)."""
    for scenario, servers in summary.items():
        if not any("mb_per_second_median" in entry for entry in servers.values()):
            continue
        print(f"\n{scenario}, {mebibytes} MiB a request:\n"
              f"{'server':11} {'MB/s':>8} {'peak RSS MiB':>12} {'growth MiB':>10}")
        for server, entry in servers.items():
            print(f"{server:11} {entry['mb_per_second_median']:8.1f} "
                  f"{entry['peak_rss_bytes'] / 2**20:12.1f} "
                  f"{entry['rss_growth_bytes'] / 2**20:10.1f}")


def parse_options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    parser.add_argument("--only", default="", help="comma-separated scenario names: "
                        + ",".join([s.name for s in SCENARIOS] + list(SPECIALS)))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--accesslog", action="store_true", help="access logs on")
    parser.add_argument("--idle-connections", type=int, default=10000)
    parser.add_argument("--upload-mib", type=int, default=100, help="size of an upload")
    parser.add_argument("--json", default="", help="write the results here too")
    options = parser.parse_args(argv)
    if options.quick:
        options.rounds, options.seconds, options.idle_connections = 1, 2.0, 1000
    known = {s.name for s in SCENARIOS} | set(SPECIALS)
    options.only = set(options.only.split(",")) if options.only else known
    if options.only - known:
        parser.error(f"unknown scenarios: {', '.join(sorted(options.only - known))}")
    return options


def run_rounds(options: argparse.Namespace, wanted: list[Scenario], servers: list[str],
               running: dict[str, dict[str, RunningServer]], base: Path,
               report: Report) -> None:
    """Every scenario against each of its servers in turn, the order rotating."""
    upload_body = None
    if any(scenario.upload for scenario in wanted):
        upload_body = make_upload_body(base, options.upload_mib)
        report.extra["upload_mib"] = options.upload_mib
    for round_number in range(options.rounds):
        for scenario in wanted:
            names = [name for name in servers if name in scenario.servers]
            shift = round_number % len(names) if names else 0
            for name in names[shift:] + names[:shift]:
                server = running[scenario.setup][name]
                if scenario.upload:
                    assert upload_body is not None
                    measurement = run_uploads(server, scenario, options.seconds, upload_body)
                else:
                    measurement = run_wrk(server, scenario, options.seconds, base)
                report.rounds.append(measurement)


def run_specials(options: argparse.Namespace, static: dict[str, RunningServer],
                 base: Path, report: Report) -> None:
    if "idle" in options.only:
        report.extra["idle_keepalive"] = {
            name: idle_connections(server, options.idle_connections)
            for name, server in static.items()}
    if "reload" in options.only:
        report.extra["reload_every_second"] = {
            name: reload_under_load(server, max(options.seconds, 5), base)
            for name, server in static.items()}


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    servers = options.servers.split(",")
    tools = ["wrk"] + [name for name in servers if name != "pylighttpd"]
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        print(f"missing tools: {', '.join(missing)} (apt-get install wrk lighttpd nginx)",
              file=sys.stderr)
        return 2
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the idle scenario needs fds
    wanted = [s for s in SCENARIOS if s.name in options.only]
    setups = {s.setup for s in wanted} | ({STATIC} if options.only & set(SPECIALS) else set())
    report = Report()
    with tempfile.TemporaryDirectory(prefix="pylighttpd-bench-") as tmp, \
            contextlib.ExitStack() as stack:
        base = Path(tmp)
        docroot = make_docroot(base)
        running = {setup: start_servers(setup, servers, docroot, base, options.accesslog,
                                        stack)
                   for setup in (STATIC, GATEWAYS) if setup in setups}
        if "footprint" in options.only:
            time.sleep(1)   # fresh and idle: before any scenario grows the processes
            report.extra["idle_pss_bytes"] = {name: server.memory("pss")
                                              for name, server in running[STATIC].items()}
        run_rounds(options, wanted, servers, running, base, report)
        run_specials(options, running.get(STATIC, {}), base, report)
    summary = summarise(report)
    print_table(summary, report.extra)
    if options.json:
        Path(options.json).write_text(json.dumps(
            {"summary": summary, "extra": report.extra,
             "rounds": [asdict(m) for m in report.rounds]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
