"""loadtests/gateway_limits.py scaled down: 64 MiB through mod_cgi and mod_proxy with the
worker's RSS under 64 MiB, and 100 clients cut of each kind leaving nothing behind,
in each server.stream-request-body/-response-body mode (one real master, one worker)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from procutil import REPO

ROWS = ("cgi upload", "proxy download", "proxy at 1024 KiB/s", "cgi POST cut mid-body",
        "proxy POST cut mid-body", "cgi answer cut", "proxy answer cut")

@pytest.mark.skipif(not shutil.which("lighttpd"), reason="lighttpd is the proxy's backend")
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_gateways_stay_bounded_and_leave_nothing_behind(mode):
    run = subprocess.run([sys.executable, "loadtests/gateway_limits.py", "--modes", str(mode),
                          "--size-mib", "64", "--aborts", "100", "--throttle-seconds", "2",
                          "--settle-seconds", "3"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    table = [line for line in run.stdout.splitlines() if line.startswith(f"| {mode} |")]
    assert [row for row in ROWS if not any(row in line for line in table)] == [], run.stdout
    assert run.returncode == 0, run.stdout + run.stderr
    assert all(line.endswith("| ok |") for line in table), run.stdout
