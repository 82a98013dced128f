"""mod_rrdtool with Debian's rrdtool: a worker feeds its `rrdtool -` co-process and
`rrdtool fetch` shows the requests counted; a killed rrdtool is started again; a
missing RRD is created with lighttpd's layout."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from server_util import WorkerProcess, config_text
from worker.modules.mod_rrdtool import CREATE, rrd_step

RRDTOOL = shutil.which("rrdtool")
pytestmark = pytest.mark.skipif(RRDTOOL is None, reason="rrdtool (Debian) is not installed")


def _create_one_second_rrd(path: Path) -> None:
    """lighttpd's data sources with a 1 s step: the module updates at each step."""
    subprocess.run([RRDTOOL, "create", str(path), "--step", "1", "--start", "now-10",
                    "DS:InOctets:ABSOLUTE:600:U:U", "DS:OutOctets:ABSOLUTE:600:U:U",
                    "DS:Requests:ABSOLUTE:600:U:U", "RRA:AVERAGE:0.5:1:600"],
                   check=True, timeout=10)


def _counted_requests(path: Path) -> float:
    """The sum of the Requests rates over the last minute of 1 s steps (0 when the
    fetch fails: the file may be in the middle of an update, seen once in a full run)."""
    done = subprocess.run([RRDTOOL, "fetch", str(path), "AVERAGE", "-s", "-60"],
                          capture_output=True, text=True, timeout=10)
    if done.returncode:
        return 0.0
    fetched = done.stdout
    total = 0.0
    for line in fetched.splitlines():
        if ":" in line and "nan" not in line:
            total += float(line.split()[-1])
    return total


def _rrdtool_children(worker: WorkerProcess) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(worker.process.pid), "-x", "rrdtool"],
                           capture_output=True, text=True, timeout=5).stdout
    return [int(pid) for pid in found.split()]


def _wait_for_count(path: Path, wanted: float) -> float:
    deadline = time.monotonic() + 10
    counted = 0.0
    while time.monotonic() < deadline:
        counted = _counted_requests(path)
        if counted >= wanted - 0.01:
            break
        time.sleep(0.5)
    return counted


def test_requests_are_counted_in_the_rrd_and_rrdtool_restarted(tmp_path: Path) -> None:
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "index.html").write_text("hello\n")
    rrd = tmp_path / "traffic.rrd"
    _create_one_second_rrd(rrd)
    conf = tmp_path / "rrd.conf"
    conf.write_text(config_text(docroot, f'rrdtool.db-name = "{rrd}"\n'
                                         f'rrdtool.binary = "{RRDTOOL}"\n',
                                modules=("mod_rrdtool",)))
    with WorkerProcess(conf) as worker:
        time.sleep(1.5)                      # the writer takes its starting counts
        for _ in range(5):
            assert worker.get("/index.html")[0] == 200
        assert _wait_for_count(rrd, 5) == pytest.approx(5, abs=0.01)
        children = _rrdtool_children(worker)
        assert len(children) == 1            # one co-process, started once
        subprocess.run(["kill", str(children[0])], check=True, timeout=5)
        time.sleep(1.5)
        for _ in range(3):
            assert worker.get("/index.html")[0] == 200
        assert _wait_for_count(rrd, 8) == pytest.approx(8, abs=0.01)


def test_missing_rrd_is_created_with_lighttpds_layout(tmp_path: Path) -> None:
    rrd = tmp_path / "new.rrd"
    subprocess.run([RRDTOOL, "-"], input=CREATE.format(db=rrd).encode(), check=True,
                   capture_output=True, timeout=10)
    info = subprocess.run([RRDTOOL, "info", str(rrd)], capture_output=True, text=True,
                          check=True, timeout=10).stdout
    assert "step = 60" in info
    for source in ("InOctets", "OutOctets", "Requests"):
        assert f'ds[{source}].type = "ABSOLUTE"' in info
    assert 'rra[11].cf = "MIN"' in info
    assert rrd_step(str(rrd)) == 60
