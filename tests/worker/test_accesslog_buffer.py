"""mod_accesslog's LineBuffer: lines go into their LogFile's own list of pending lines
and are written once they fill BUFFER_BYTES, and a flush by the LogFile itself (the
second's trigger, a reopen, the exit) starts the count again."""

from __future__ import annotations

from shared import log
from worker.modules.mod_accesslog import LineBuffer

LINE = b"x" * 99 + b"\n"


def test_lines_wait_until_the_buffer_is_full(tmp_path):
    path = tmp_path / "access.log"
    buffer = LineBuffer(log.LogFile(str(path), buffered=True))
    lines = log.BUFFER_BYTES // len(LINE)
    for _ in range(lines):
        buffer.add(LINE)
    assert path.read_bytes() == b""
    buffer.add(LINE)
    assert path.read_bytes() == LINE * (lines + 1)
    buffer.logfile.close()


def test_a_flush_of_the_logfile_writes_the_lines_and_starts_the_count_again(tmp_path):
    path = tmp_path / "access.log"
    logfile = log.LogFile(str(path), buffered=True)
    buffer = LineBuffer(logfile)
    lines = log.BUFFER_BYTES // len(LINE)
    for _ in range(lines):
        buffer.add(LINE)
    logfile.reopen()                 # SIGUSR1: what was logged goes to the old file
    assert path.read_bytes() == LINE * lines
    buffer.add(LINE)                 # one line since: not written yet
    assert path.read_bytes() == LINE * lines
    logfile.close()                  # the exit writes it
    assert path.read_bytes() == LINE * (lines + 1)
