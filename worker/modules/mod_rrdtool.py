"""mod_rrdtool: the server's traffic in an RRD file, as lighttpd 1.4.69 keeps it.

`rrdtool.binary` (global) is started once as `rrdtool -`, a co-process fed commands on
its stdin; at every whole minute (`time % 60 == 0`, lighttpd's trigger) it gets
`update DB N:<bytes in>:<bytes out>:<requests>` with what came since the last update
(the data sources are ABSOLUTE).  A missing `rrdtool.db-name` is created first with
lighttpd's layout (step 60, InOctets / OutOctets / Requests, AVERAGE, MAX and MIN
archives); an RRD that exists keeps its own step, and the updates follow that step.

The counts are the whole server's: with several workers, one writer (the worker that
holds an flock on the RRD's directory; another takes over when it exits) takes them
from the shared stats segment (shared.metrics.Snapshot: live workers plus retired
ones, so they never go backwards across reloads) and sends the difference since its
last update.  Without a segment (a single worker) the worker's own counters serve.
`rrdtool.db-name` is global here: lighttpd also allows one per conditional block,
which needs per-block counts the segment does not keep.

Nothing blocks the loop: the pipes are non-blocking, rrdtool's replies are read when
they come (an `ERROR:` line is logged), an update the pipe cannot take is kept for the
next one, and a dead rrdtool is reaped through its pidfd and started again at the next
update.
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import time
from typing import Any

from shared import log
from shared.config.directives import Directive, Scope, Type
from shared.metrics import Snapshot
from shared.stats import Field, StatsSegment

from ..module import Module as BaseModule

DIRECTIVES = (
    Directive("rrdtool.binary", Type.STRING, "/usr/bin/rrdtool", scope=Scope.SERVER),
    Directive("rrdtool.db-name", Type.STRING, "", scope=Scope.SERVER),
)
LOG_SOURCE = "mod_rrdtool.c"
DEFAULT_STEP = 60
RRA = " ".join(f"RRA:{cf}:0.5:{steps}:{rows}" for cf in ("AVERAGE", "MAX", "MIN")
               for steps, rows in ((1, 600), (6, 700), (24, 775), (288, 797)))
CREATE = ("create {db} --step 60 DS:InOctets:ABSOLUTE:600:U:U "
          "DS:OutOctets:ABSOLUTE:600:U:U DS:Requests:ABSOLUTE:600:U:U " + RRA + "\n")
# The RRD header on 64-bit Linux: cookie[4], version[5], padding, float cookie (8),
# ds_cnt (8), rra_cnt (8), pdp_step (8).
_STEP_AT = struct.Struct("=40xQ")


def rrd_step(path: str) -> int:
    """The step of an existing RRD (its pdp_step), or lighttpd's 60 when unreadable."""
    try:
        with open(path, "rb") as file:
            head = file.read(_STEP_AT.size)
    except OSError:
        return DEFAULT_STEP
    if len(head) < _STEP_AT.size or not head.startswith(b"RRD\0"):
        return DEFAULT_STEP
    step = _STEP_AT.unpack(head)[0]
    return step if 0 < step <= 86400 else DEFAULT_STEP


def server_totals(counters: Any) -> tuple[int, int, int]:
    """Bytes in, bytes out and requests of the whole server so far."""
    segment = StatsSegment.current
    if segment is not None:
        snap = Snapshot(segment)
        return snap.total(Field.BYTES_IN), snap.total(Field.BYTES_OUT), snap.requests()
    words = counters.words
    return (words[Field.BYTES_IN], words[Field.BYTES_OUT],
            sum(words[Field.REQUESTS:Field.DURATION]))


class RRDTool:
    """The `rrdtool -` co-process: started on demand, replies read as they come."""

    def __init__(self, services: Any, binary: str) -> None:
        self.services = services
        self.binary = binary
        self.process: subprocess.Popen | None = None
        self.reading = False       # its stdout is in the loop
        self.replies = b""

    def send(self, command: bytes) -> bool:
        """Write one command without blocking; False when it could not go (logged)."""
        if self.process is None and not self._start():
            return False
        assert self.process is not None and self.process.stdin is not None
        try:
            written = os.write(self.process.stdin.fileno(), command)
        except BlockingIOError:
            log.error(LOG_SOURCE, "rrdtool-write: the pipe is full, update kept for later")
            return False
        except OSError as err:
            log.error(LOG_SOURCE, f"rrdtool-write: failed {err.strerror}")
            self.stop()
            return False
        if written != len(command):
            log.error(LOG_SOURCE, "rrdtool-write: short write")
        return True

    def _start(self) -> bool:
        try:
            process = subprocess.Popen([self.binary, "-"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       close_fds=True)
        except OSError as err:
            log.error(LOG_SOURCE, f"spawning rrdtool failed: {err.strerror} {self.binary}")
            return False
        assert process.stdin is not None and process.stdout is not None
        os.set_blocking(process.stdin.fileno(), False)
        os.set_blocking(process.stdout.fileno(), False)
        self.process = process
        self.services.loop.register(process.stdout.fileno(), 1, self)   # EPOLLIN
        self.reading = True
        self.services.watch_child(process.pid, lambda code: self._exited(process, code))
        return True

    def on_event(self, _mask: int) -> None:
        """rrdtool answered: `OK ...` per command, or an `ERROR: ...` line to log."""
        process = self.process
        if process is None or process.stdout is None:
            return
        try:
            data = os.read(process.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:              # rrdtool closed its output: its exit is on the way
            self._unregister(process)
            return
        self.replies += data
        *lines, self.replies = self.replies.split(b"\n")
        for line in lines:
            if line.startswith(b"ERROR"):
                log.error(LOG_SOURCE, "rrdtool-response: " + line.decode("latin-1"))

    def _exited(self, process: subprocess.Popen, code: int) -> None:
        if process is self.process:
            log.error(LOG_SOURCE, f"rrdtool exited ({code}); started again at the next "
                      "update")
            self._close(process)
            self.process = None

    def _unregister(self, process: subprocess.Popen) -> None:
        if self.reading and process.stdout is not None:
            self.reading = False
            self.services.loop.unregister(process.stdout.fileno())

    def _close(self, process: subprocess.Popen) -> None:
        self._unregister(process)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()

    def stop(self) -> None:
        """Close the pipes: rrdtool ends at the end of its input, and the watch set
        when it started reaps it."""
        process = self.process
        if process is not None:
            self.process = None
            self._close(process)


class Module(BaseModule):
    name = "rrdtool"
    replay_safe = True          # it only counts what went out
    directives = DIRECTIVES

    def __init__(self, config: Any, services: Any = None) -> None:
        super().__init__(config, services)
        self.db = config.globals["rrdtool.db-name"]
        self.rrdtool = RRDTool(services, config.globals["rrdtool.binary"])
        self.step = rrd_step(self.db) if self.db else DEFAULT_STEP
        self.lock_fd = -1
        self.last_slot = int(time.time()) // self.step
        self.sent: tuple[int, int, int] | None = None

    def handle_trigger(self, now: float) -> None:
        if not self.db or self.services is None:
            return
        slot = int(time.time()) // self.step
        if slot == self.last_slot:
            return
        self.last_slot = slot
        if not self._is_writer():
            return
        self.services.counters.publish()
        totals = server_totals(self.services.counters)
        if self.sent is None:            # a new writer counts from now on
            self.sent = totals
            return
        delta = [max(now_value - before, 0) for now_value, before in zip(totals, self.sent)]
        if self.rrdtool.send(self._commands(delta)):
            self.sent = totals

    def _commands(self, delta: list[int]) -> bytes:
        create = "" if os.path.exists(self.db) else CREATE.format(db=self.db)
        return (create + f"update {self.db} N:{delta[0]}:{delta[1]}:{delta[2]}\n").encode()

    def _is_writer(self) -> bool:
        """Whether this worker holds the writer's lock (tried without waiting)."""
        if self.lock_fd >= 0:
            return True
        directory = os.path.dirname(os.path.abspath(self.db))
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            log.error(LOG_SOURCE, f"{directory}: {err.strerror}")
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.lock_fd = fd
        return True
