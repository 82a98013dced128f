"""A wall clock that jumps: the master logs a jump of more than five minutes, and one
beyond server.feature-flags "server.clock-jump-restart" (30 minutes by default, 0
never) restarts the workers gracefully, as lighttpd does.  The server runs under
libfaketime (Debian's faketime package) reading its offset from a file the test
rewrites: the wall clock moves, the monotonic clock does not."""

from __future__ import annotations

import glob
import re
import time
from pathlib import Path

import pytest

from master.clockwatch import ClockWatch
from serverproc import Server, get, wait_until

JUMPED = re.compile(r"warning: clock jumped (-?\d+) secs")
LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))


class _Clocks:
    def __init__(self) -> None:
        self.wall, self.monotonic = 1_000_000.0, 50.0

    def advance(self, seconds: float, wall_jump: float = 0.0) -> None:
        self.wall += seconds + wall_jump
        self.monotonic += seconds


@pytest.mark.parametrize("jump, flags, restart", [
    (0, {}, False), (299, {}, False), (-299, {}, False),
    (600, {}, False), (1801, {}, True), (-7200, {}, True),
    (7200, {"server.clock-jump-restart": 0}, False),
    (7200, {"server.clock-jump-restart": "disable"}, True),   # not a number: the default
    (400, {"server.clock-jump-restart": "350"}, True),
])
def test_the_watch_tells_a_jump_from_time_passing(jump, flags, restart):
    clocks = _Clocks()
    watch = ClockWatch(lambda: clocks.wall, lambda: clocks.monotonic)
    settings = {"server.feature-flags": flags}
    clocks.advance(3600)                       # an hour passes: no jump
    assert not watch.jumped(settings)
    clocks.advance(1, jump)
    assert watch.jumped(settings) is restart
    clocks.advance(1)
    assert not watch.jumped(settings)          # measured from the clock after the jump


@pytest.fixture
def faked(tmp_path):
    if not LIBFAKETIME:
        pytest.skip("libfaketime is not installed")
    offset = tmp_path / "offset"
    offset.write_text("+0\n")
    environment = {"LD_PRELOAD": LIBFAKETIME[0], "FAKETIME_TIMESTAMP_FILE": str(offset),
                   "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}

    def start(extra: str = "") -> tuple[Server, Path]:
        running = Server(tmp_path, extra, env=environment)
        running.wait_serving()
        return running, offset
    return start


def _jump(running: Server, offset: Path, jump: str) -> int:
    """The jump the server logged once the clock was set `jump` away."""
    offset.write_text(f"{jump}\n")
    logged = wait_until(lambda: JUMPED.search(running.errorlog.read_text()))
    return int(logged.group(1))


def test_a_jump_beyond_the_limit_restarts_the_workers_and_serving_goes_on(faked):
    running, offset = faked()
    try:
        workers = running.children()
        assert abs(_jump(running, offset, "+2h") - 7200) <= 2
        wait_until(lambda: "attempting graceful restart" in running.errorlog.read_text())
        wait_until(lambda: "(generation 2)" in running.errorlog.read_text())
        wait_until(lambda: not set(running.children()) & set(workers))
        assert get(running.port)[0] == 200
    finally:
        assert running.stop() == 0


def test_a_smaller_jump_or_a_disabled_restart_is_only_logged(faked):
    running, offset = faked('server.feature-flags = ("server.clock-jump-restart" => 0)')
    try:
        workers = running.children()
        assert abs(_jump(running, offset, "-3h") + 10800) <= 2
        time.sleep(1.5)
        log = running.errorlog.read_text()
        assert "attempting graceful restart" not in log and "(generation 2)" not in log
        assert running.children() == workers and get(running.port)[0] == 200
    finally:
        assert running.stop() == 0
