"""The benchmark tools run: a smoke test, not a timing (speed targets are measured by
`loadtests/bench.py` itself, side by side with lighttpd, never asserted here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from procutil import REPO

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
