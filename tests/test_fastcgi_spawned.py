"""mod_fastcgi with its php-cgi spawned by the master (bin-path, max-procs 2): the
workers balance over the processes' sockets; a process killed under load is
restarted by the master, the requests in flight on it fail with 502 or 503 at most,
later ones succeed, no zombie is left, and none of its children either; none of the
processes outlives the server."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Iterator

import pytest

from master.spawner import group_members
from serverproc import get, serving, wait_until

PHP_CGI = shutil.which("php-cgi")
pytestmark = pytest.mark.skipif(PHP_CGI is None, reason="php-cgi is not installed")


def _process_stats() -> Iterator[tuple[int, list[str], Path]]:
    """Each process: its pid, the fields of its stat after the name (state, ppid,
    pgrp, ...) and its /proc directory."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            yield int(entry.name), stat, entry


def _php_children(master: int) -> list[int]:
    """The master's php-cgi processes (their own children aside)."""
    found = []
    for pid, stat, entry in _process_stats():
        if int(stat[1]) == master:
            try:
                if b"php-cgi" in (entry / "cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                continue
    return sorted(found)


def _zombies(master: int) -> list[int]:
    return [pid for pid, stat, _ in _process_stats() if int(stat[1]) == master and stat[0] == "Z"]


def test_spawned_php_cgi_killed_under_load(tmp_path) -> None:
    sockets = Path(f"/tmp/spawned-{tmp_path.name[-20:]}")
    sockets.mkdir(exist_ok=True)
    config = f"""
server.modules = ("mod_indexfile", "mod_fastcgi", "mod_staticfile")
fastcgi.server = ( ".php" => ( ( "bin-path" => "{PHP_CGI}", "socket" => "{sockets}/php.sock",
                                 "max-procs" => 2,
                                 "bin-environment" => ( "PHP_FCGI_CHILDREN" => "2" ) ) ) )
"""
    try:
        with serving(tmp_path, config) as server:
            (server.docroot / "hello.php").write_text("<?php echo 'Hello, world!';\n")
            wait_until(lambda: len(_php_children(server.process.pid)) == 2)
            # each leads a group of its own, its PHP_FCGI_CHILDREN in it
            groups = _php_children(server.process.pid)
            wait_until(lambda: all(len(group_members(group)) == 3 for group in groups))
            for _ in range(6):
                assert get(server.port, "/hello.php")[::2] == (200, b"Hello, world!")
            statuses: list[int] = []
            stop = threading.Event()

            def load() -> None:
                while not stop.is_set():
                    statuses.append(get(server.port, "/hello.php")[0])

            clients = [threading.Thread(target=load) for _ in range(4)]
            for client in clients:
                client.start()
            try:
                victim = _php_children(server.process.pid)[0]
                os.kill(victim, signal.SIGKILL)
                wait_until(lambda: len(_php_children(server.process.pid)) == 2
                           and victim not in _php_children(server.process.pid), timeout=15)
            finally:
                stop.set()
                for client in clients:
                    client.join(timeout=15)
            assert statuses and set(statuses) <= {200, 502, 503}
            wait_until(lambda: all(get(server.port, "/hello.php")[0] == 200
                                   for _ in range(4)), timeout=15)
            assert not _zombies(server.process.pid)
            # the killed one's children went with it, not left to init
            wait_until(lambda: not group_members(victim), timeout=5)
            groups = _php_children(server.process.pid)
        wait_until(lambda: not any(group_members(group) for group in groups), timeout=10)
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
