"""loadtests/ssi_webdav_microbench.py runs: in process, and beside lighttpd with wrk."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = "loadtests/ssi_webdav_microbench.py"


def test_in_process_figures_for_every_row():
    run = subprocess.run([sys.executable, SCRIPT, "--in-process", "--rounds", "5"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = [line.split()[0] for line in run.stdout.splitlines()]
    assert rows == ["ssi-small", "propfind-100-allprop", "propfind-100-named"]


@pytest.mark.skipif(not shutil.which("wrk") or not shutil.which("lighttpd")
                    or not Path("/usr/lib/lighttpd/mod_webdav.so").exists(),
                    reason="wrk, lighttpd and lighttpd-mod-webdav are needed")
def test_side_by_side_with_lighttpd():
    run = subprocess.run([sys.executable, SCRIPT, "--seconds", "1", "--rounds", "1",
                          "--only", "ssi-small,propfind-100-named"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    servers = [line.split()[:2] for line in run.stdout.splitlines()[1:]]
    assert servers == [["ssi-small", "pylighttpd"], ["ssi-small", "lighttpd"],
                       ["propfind-100-named", "pylighttpd"], ["propfind-100-named", "lighttpd"]]
