"""The benchmark tools run: a smoke test, not a timing (speed targets are measured by
`loadtests/bench.py` itself, side by side with lighttpd, never asserted here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from procutil import REPO

sys.path.insert(0, str(REPO))

from loadtests import bench  # noqa: E402

needs_wrk = pytest.mark.skipif(not shutil.which("wrk") or not shutil.which("lighttpd"),
                               reason="wrk and lighttpd are needed")


def test_microbench_reports_a_figure_and_a_profile():
    run = subprocess.run([sys.executable, "loadtests/microbench.py", "--rounds", "20",
                          "--connections", "4"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("/1k.bin: ") and " us/request " in run.stdout
    run = subprocess.run([sys.executable, "loadtests/microbench.py", "--rounds", "20",
                          "--connections", "4", "--path", "/dir/", "--profile"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "function calls" in run.stdout and "mod_dirlisting" in run.stdout


@needs_wrk
def test_bench_compares_with_lighttpd(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "loadtests/bench.py", "--rounds", "1", "--seconds", "1",
                          "--servers", "pylighttpd,lighttpd", "--only", "1k-keepalive,idle",
                          "--idle-connections", "200", "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    rows = report["summary"]["1k-keepalive"]
    for name in ("pylighttpd", "lighttpd"):
        assert rows[name]["rps_median"] > 0 and rows[name]["errors"] == 0
        assert rows[name]["cpu_us_median"] > 0
    assert rows["lighttpd"]["rps_ratio_to_lighttpd"] == 1.0
    assert rows["pylighttpd"]["rps_ratio_to_lighttpd"] > 0
    idle = report["extra"]["idle_keepalive"]
    assert idle["pylighttpd"]["answered"] == idle["lighttpd"]["answered"] == 200


GATEWAY_ROWS = ("proxy-1k", "proxy-1k-nopool", "cgi-hello", "upload", "1k-keepalive-gateways")


@needs_wrk
def test_bench_gateway_rows_run_beside_lighttpd(tmp_path):
    """The proxy, CGI, upload and static-with-gateways-loaded rows, scaled down: every
    request answered in full by both servers (an upload of 4 MiB checked by the byte
    count the backend read)."""
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "loadtests/bench.py", "--rounds", "1", "--seconds", "1",
                          "--servers", "pylighttpd,lighttpd", "--only", ",".join(GATEWAY_ROWS),
                          "--upload-mib", "4", "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    summary = json.loads(out.read_text())["summary"]
    assert sorted(summary) == sorted(GATEWAY_ROWS)
    for scenario in GATEWAY_ROWS:
        for name in ("pylighttpd", "lighttpd"):
            row = summary[scenario][name]
            assert row["errors"] == 0, (scenario, name)
            assert row["rps_median"] > 0 and row["cpu_us_median"] > 0, (scenario, name)
            assert row["rps_ratio_to_lighttpd"] > 0
    for name in ("pylighttpd", "lighttpd"):
        upload = summary["upload"][name]
        assert upload["mb_per_second_median"] > 0 and upload["peak_rss_bytes"] > 0
    assert "upload, 4 MiB a request:" in run.stdout


def test_bench_refuses_an_unknown_scenario():
    run = subprocess.run([sys.executable, "loadtests/bench.py", "--only", "proxy-1k,no-such"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "unknown scenarios: no-such" in run.stderr


# the rows of the modules' setups (FastCGI, SCGI, rewrite, auth, deflate, TLS, HTTP/2)
MODULE_ROWS = tuple(s.name for s in bench.SCENARIOS
                    if s.setup not in (bench.STATIC, bench.GATEWAYS))
SMOKE_SERVERS = ["pylighttpd", "lighttpd"]


@needs_wrk
def test_bench_module_rows_run_beside_lighttpd(tmp_path):
    """Each module row for a second (h2load: 4,000 requests), pylighttpd and lighttpd:
    every request answered with the status expected, none failed.  A row whose
    programs are missing here is left out (and named in the skip reason if all are)."""
    scenarios = {s.name: s for s in bench.SCENARIOS}
    runnable = [name for name in MODULE_ROWS
                if not bench.missing_programs(scenarios[name], SMOKE_SERVERS)]
    if not runnable:
        pytest.skip("missing: " + ", ".join(sorted({
            need for name in MODULE_ROWS
            for need in bench.missing_programs(scenarios[name], SMOKE_SERVERS)})))
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "loadtests/bench.py", "--rounds", "1", "--seconds", "1",
                          "--servers", ",".join(SMOKE_SERVERS), "--only", ",".join(runnable),
                          "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr
    summary = json.loads(out.read_text())["summary"]
    assert sorted(summary) == sorted(runnable)
    for scenario in runnable:
        for name in SMOKE_SERVERS:
            row = summary[scenario][name]
            assert row["errors"] == 0, (scenario, name)
            assert row["rps_median"] > 0 and row["cpu_us_median"] > 0, (scenario, name)


class TargetRecorder(BaseHTTPRequestHandler):
    """Answers every GET 200 with an empty body and records its target."""
    protocol_version = "HTTP/1.1"
    targets: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.targets.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is needed")
def test_nocache_rows_send_a_new_target_with_every_request(tmp_path):
    """What keeps pylighttpd's answer cache out of a -nocache row: no two requests of
    the run (both wrk threads, all connections) ask for the same target."""
    scenario = next(s for s in bench.SCENARIOS if s.name == "rewrite-1k-nocache")
    server = ThreadingHTTPServer(("127.0.0.1", 0), TargetRecorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        script = bench.wrk_script(tmp_path, scenario)
        assert script is not None
        subprocess.run(["wrk", "-t2", "-c4", "-d1s", "-s", str(script),
                        f"http://127.0.0.1:{server.server_address[1]}{scenario.path}"],
                       capture_output=True, timeout=60, check=True)
    finally:
        server.shutdown()
        server.server_close()
    targets = TargetRecorder.targets
    assert len(targets) > 10
    assert len(set(targets)) == len(targets)
    assert all(target.startswith("/rw/1k.bin?") for target in targets)


def test_a_missing_program_is_named_for_the_rows_that_need_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    scenarios = {s.name: s for s in bench.SCENARIOS}
    assert bench.missing_programs(scenarios["h2-1k"], ["pylighttpd"]) == ["openssl", "h2load"]
    assert bench.missing_programs(scenarios["fastcgi-php-hello"], SMOKE_SERVERS) == [
        "lighttpd", "php-cgi", "uwsgi", "wrk"]
