"""mod_rrdtool under the master with two workers: one writer feeds rrdtool the whole
server's requests (from the shared stats segment), each counted once."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from serverproc import get, serving

RRDTOOL = shutil.which("rrdtool")
pytestmark = pytest.mark.skipif(RRDTOOL is None, reason="rrdtool (Debian) is not installed")
REQUESTS = 20


def _counted(rrd: Path) -> float:
    fetched = subprocess.run([RRDTOOL, "fetch", str(rrd), "AVERAGE", "-s", "-60"],
                             capture_output=True, text=True, check=True, timeout=10).stdout
    return sum(float(line.split()[-1]) for line in fetched.splitlines()
               if ":" in line and "nan" not in line)


def test_two_workers_are_counted_once_by_one_writer(tmp_path: Path) -> None:
    rrd = tmp_path / "traffic.rrd"
    subprocess.run([RRDTOOL, "create", str(rrd), "--step", "1", "--start", "now-10",
                    "DS:InOctets:ABSOLUTE:600:U:U", "DS:OutOctets:ABSOLUTE:600:U:U",
                    "DS:Requests:ABSOLUTE:600:U:U", "RRA:AVERAGE:0.5:1:600"],
                   check=True, timeout=10)
    extra = f'server.modules += ("mod_rrdtool")\nrrdtool.db-name = "{rrd}"\n'
    with serving(tmp_path, extra) as server:
        time.sleep(2.5)                  # the writer has taken its starting counts
        for _ in range(REQUESTS):        # a new connection each: both workers serve
            assert get(server.port, "/index.html")[0] == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _counted(rrd) < REQUESTS - 0.01:
            time.sleep(0.5)
        time.sleep(1.5)                  # a second writer would add its own counts
        assert _counted(rrd) == pytest.approx(REQUESTS, abs=0.01)
        rrdtools = subprocess.run(["pgrep", "-x", "rrdtool", "-P",
                                   ",".join(map(str, server.children()))],
                                  capture_output=True, text=True, timeout=5).stdout.split()
        assert len(rrdtools) == 1
