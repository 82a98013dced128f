"""A worker at its fd limit stops accepting instead of spinning on accept().

Two ways to get there: a low RLIMIT_NOFILE at start with server.max-connections unset
(the worker derives its connection limit from the fd limit, as lighttpd does), and a
limit lowered under a running worker, so accept() itself fails with EMFILE.  Either
way, clients beyond the limit wait in the listen queue: the worker neither burns a
core nor floods the error log, and serves again once they leave.  Every client is on
127.0.0.1, their number is bounded and every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import psutil

from procutil import REPO
from serverproc import get, serving, wait_until

CLIENTS = 100            # more than a worker with a few dozen fds can take
HOLD = 2.0               # seconds the clients stay connected while the worker is watched
MAX_CPU = 0.5            # CPU seconds a waiting worker may use over HOLD
MAX_FAILURE_LINES = 20
START_TIMEOUT = 15.0
WORKER_SCRIPT = REPO / "tests" / "worker" / "server_util.py"


@contextlib.contextmanager
def worker_with_fd_limit(tmp_path: Path, nofile: int) -> Iterator[tuple[int, int, Path]]:
    """One worker started with RLIMIT_NOFILE = `nofile` and server.max-connections
    unset; yields (pid, port, error log)."""
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "index.html").write_text("hello\n")
    errorlog = tmp_path / "error.log"
    conf = tmp_path / "worker.conf"
    conf.write_text(f'server.document-root = "{docroot}"\nserver.port = 80\n'
                    f'server.errorlog = "{errorlog}"\nindex-file.names = ("index.html")\n')
    process = subprocess.Popen(
        [sys.executable, str(WORKER_SCRIPT), str(conf)], cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
    try:
        yield process.pid, _ready_port(process), errorlog
    finally:
        process.kill()
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def _ready_port(process: subprocess.Popen) -> int:
    """The port from the worker's `READY <port>` line, waited for with a deadline."""
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("READY "):
            return int(line.split()[1])
        if not line:
            break
    raise AssertionError("the worker did not start")


@contextlib.contextmanager
def idle_clients(port: int, count: int = CLIENTS) -> Iterator[list[socket.socket]]:
    """`count` connected clients that send nothing, closed at the end."""
    clients: list[socket.socket] = []
    try:
        for _ in range(count):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        yield clients
    finally:
        for client in clients:
            client.close()


def cpu_seconds(pids: list[int], during: float) -> float:
    """CPU time (user + system) the processes used while we slept `during` seconds."""
    processes = [psutil.Process(pid) for pid in pids]
    before = [sum(p.cpu_times()[:2]) for p in processes]
    time.sleep(during)
    return sum(sum(p.cpu_times()[:2]) - used for p, used in zip(processes, before))


def established(pid: int) -> int:
    return sum(1 for c in psutil.Process(pid).net_connections("tcp")
               if c.status == psutil.CONN_ESTABLISHED)


def failure_lines(errorlog: Path) -> int:
    return errorlog.read_text(errors="replace").count("accept failed")


def test_a_low_fd_limit_caps_connections_without_spinning(tmp_path):
    with worker_with_fd_limit(tmp_path, nofile=64) as (pid, port, errorlog):
        with idle_clients(port):
            used = cpu_seconds([pid], HOLD)
            assert failure_lines(errorlog) < MAX_FAILURE_LINES
            assert used < MAX_CPU, f"worker used {used:.2f} s of CPU in {HOLD} s"
            # max_fds / 3 connections (lighttpd's default), the rest wait in the queue
            assert established(pid) == 64 // 3
        wait_until(lambda: get(port)[0] == 200)


def test_emfile_pauses_accepting_and_logs_once(tmp_path):
    with serving(tmp_path) as server:
        workers = server.children()
        for pid in workers:   # a few fds to spare, far under the limit the worker planned for
            worker = psutil.Process(pid)
            _soft, hard = worker.rlimit(psutil.RLIMIT_NOFILE)
            worker.rlimit(psutil.RLIMIT_NOFILE, (worker.num_fds() + 8, hard))
        with idle_clients(server.port):
            used = cpu_seconds(workers, HOLD)
            failures = failure_lines(server.errorlog)
        assert 1 <= failures < MAX_FAILURE_LINES
        assert used < MAX_CPU * len(workers), f"workers used {used:.2f} s of CPU in {HOLD} s"
        wait_until(lambda: get(server.port)[0] == 200)
        wait_until(lambda: "accepting connections again" in server.errorlog.read_text())

