"""loadtests/accesslog_microbench.py runs in process and reports what the log adds."""

from __future__ import annotations

import subprocess
import sys

from procutil import REPO


def test_accesslog_microbench_reports_the_logs_cost():
    run = subprocess.run([sys.executable, "loadtests/accesslog_microbench.py", "--runs", "1",
                          "--rounds", "5", "--connections", "4"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("log off: worker us/req") and lines[1].startswith("log on ")
    assert lines[2].startswith("the log adds ") and " us per request (" in lines[2]
