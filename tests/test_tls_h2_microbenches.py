"""The in-process TLS and HTTP/2 benchmarks run: a smoke test, not a timing."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from procutil import REPO

pytestmark = pytest.mark.skipif(not shutil.which("openssl"),
                                reason="openssl makes the benchmark's certificate")


def _run(*args: str) -> str:
    run = subprocess.run([sys.executable, *args, "--rounds", "10", "--connections", "2"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_tls_microbench_reports_a_figure_with_and_without_the_answer_cache():
    assert _run("loadtests/tls_microbench.py").startswith("/1k.bin: ")
    out = _run("loadtests/tls_microbench.py", "--no-answer-cache", "--profile")
    assert "function calls" in out and "tls.py" in out and "no answer cache" in out


@pytest.mark.parametrize("transport", [(), ("--tls",)], ids=["h2c", "h2-over-tls"])
def test_h2_microbench_reports_a_figure(transport):
    out = _run("loadtests/h2_microbench.py", "--streams", "3", *transport)
    assert out.startswith("/1k.bin: ") and " us/request over HTTP/2" in out
