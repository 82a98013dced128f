"""Listen addresses belong to the generations that serve them.

A reload builds the new generation's listeners before it commits: addresses that stay
keep their open sockets, new ones are bound; a reload that aborts closes what it bound
and leaves the running generation's sockets alone; an address a reload removes is
closed once the last generation serving it has exited, and one removed and added back
during a drain is the same socket all along.  Every check here is on real sockets on
127.0.0.1, against the real master.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import pytest

from serverproc import Server, free_port, get, wait_until

BIG = 32 * 1024 * 1024
GRACE = "server.graceful-shutdown-timeout = 60"
BROKEN_WORKERS = 'server.errorlog := "/nonexistent/dir/error.log"'


def _socket_block(*ports: int) -> str:
    return "".join(f'$SERVER["socket"] == "127.0.0.1:{port}" {{ }}\n' for port in ports)


def _reload(server: Server, extra: str, outcome: str = "reloaded") -> None:
    """HUP with a new config; returns once the master logged `outcome` once more."""
    done = server.errorlog.read_text().count(outcome)
    server.write_config(f"{GRACE}\n{extra}")
    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: server.errorlog.read_text().count(outcome) > done, timeout=20)


def _listening_inodes(pid: int, port: int) -> set[str]:
    """The listening sockets on 127.0.0.1:`port` that process `pid` holds open."""
    wanted = f"0100007F:{port:04X}"
    listening = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":
                listening.add(fields[9])
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in listening:
            held.add(link[8:-1])
    return held


def _port_is_free(port: int) -> bool:
    """Whether this test can listen on the port itself (no SO_REUSEPORT: it cannot join
    a group the server still holds)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            return False
    return True


def _fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _generations(server: Server) -> set[bytes]:
    """The `(gen N)` of every worker alive."""
    found = set()
    for pid in server.children():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                title = file.read()
        except OSError:
            continue
        found.add(title[title.find(b"(gen"):].split(b")")[0] + b")")
    return found


class SlowDownload:
    """A 32 MiB answer on `port`, started and then left unread: its worker stays busy
    (a draining generation stays alive) until `finish` reads the rest."""

    def __init__(self, port: int) -> None:
        self.client = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.client.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")
        self.first = self.client.recv(65536)

    def finish(self) -> int:
        """The body's length as received, once the server closed the connection."""
        rest = sum(iter(lambda: len(self.client.recv(1 << 20)), 0))
        self.client.close()
        head = self.first.split(b"\r\n\r\n", 1)[0]
        assert b"200 OK" in head
        return len(self.first) - len(head) - 4 + rest


@dataclass
class Probes:
    ok: int = 0
    failures: list[str] = field(default_factory=list)


def _probe_once(port: int, probes: Probes) -> None:
    """One new connection with a request that must be answered 200 (a reset, a
    refusal or a timeout is a failure)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as client:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b"".join(iter(lambda: client.recv(65536), b""))
    except OSError as err:
        probes.failures.append(f"{type(err).__name__}: {err}")
        return
    if reply.startswith(b"HTTP/1.0 200"):
        probes.ok += 1
    else:
        probes.failures.append(repr(reply[:40]))


@contextlib.contextmanager
def probing(port: int) -> Iterator[Probes]:
    """Probes of `port`, one after another in a thread, until the block ends."""
    probes, stop = Probes(), threading.Event()

    def run() -> None:
        while not stop.wait(0.01):
            _probe_once(port, probes)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield probes
    finally:
        stop.set()
        thread.join(timeout=30)


@pytest.fixture
def extra_port():
    return free_port()


def _start(tmp_path, extra: str = "") -> Server:
    server = Server(tmp_path, f"{GRACE}\n{extra}")
    (server.docroot / "big.bin").write_bytes(b"x" * BIG)
    server.wait_serving()
    return server


def test_a_reload_that_adds_a_port_serves_it_and_keeps_the_old_one(tmp_path, extra_port):
    server = _start(tmp_path)
    try:
        main_sockets = _listening_inodes(server.process.pid, server.port)
        with probing(server.port) as probes:
            _reload(server, _socket_block(extra_port))
            assert get(extra_port)[0] == 200
            time.sleep(0.3)
        assert probes.failures == [] and probes.ok > 5
        assert _listening_inodes(server.process.pid, server.port) == main_sockets
        assert len(_listening_inodes(server.process.pid, extra_port)) == 2   # one a slot
    finally:
        server.stop()


def test_a_removed_port_closes_only_after_its_requests_finish(tmp_path, extra_port):
    server = _start(tmp_path, _socket_block(extra_port))
    try:
        download = SlowDownload(extra_port)
        _reload(server, "")
        time.sleep(0.5)
        assert not _port_is_free(extra_port)
        assert download.finish() == BIG
        wait_until(lambda: _port_is_free(extra_port), timeout=15)
        assert get(server.port)[0] == 200
    finally:
        server.stop()


def test_a_reload_whose_workers_fail_leaves_no_new_port_bound(tmp_path, extra_port):
    server = _start(tmp_path)
    try:
        main_sockets = _listening_inodes(server.process.pid, server.port)
        _reload(server, f"{_socket_block(extra_port)}{BROKEN_WORKERS}", "reload aborted")
        wait_until(lambda: _port_is_free(extra_port), timeout=15)
        assert _generations(server) == {b"(gen 1)"}
        assert _listening_inodes(server.process.pid, server.port) == main_sockets
        assert get(server.port)[0] == 200
    finally:
        server.stop()


def test_a_reload_refused_for_a_busy_port_closes_the_ports_it_bound(tmp_path, extra_port):
    server = _start(tmp_path)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        _reload(server, _socket_block(extra_port, busy.getsockname()[1]), "reload refused")
        assert _port_is_free(extra_port)
        assert get(server.port)[0] == 200
    finally:
        busy.close()
        server.stop()


def test_a_port_removed_and_added_back_during_a_drain_stays_the_same_socket(tmp_path):
    """A -> B -> A while the first generation still drains a download on A: A accepts
    all along (what queues on it while B runs is served by the third generation), the
    download completes, and A is still the master's very sockets once every earlier
    generation has exited."""
    port_a, port_b = free_port(), free_port()
    server = _start(tmp_path, _socket_block(port_a))
    try:
        sockets_a = _listening_inodes(server.process.pid, port_a)
        assert len(sockets_a) == 2
        with probing(port_a) as probes:
            download = SlowDownload(port_a)
            _reload(server, _socket_block(port_b))
            queued = socket.create_connection(("127.0.0.1", port_a), timeout=20)
            queued.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert _listening_inodes(server.process.pid, port_a) == sockets_a
            _reload(server, _socket_block(port_a))
            assert queued.recv(100).startswith(b"HTTP/1.0 200")
            queued.close()
            assert download.finish() == BIG
            wait_until(lambda: _generations(server) == {b"(gen 3)"}, timeout=15)
            wait_until(lambda: _port_is_free(port_b), timeout=15)
            time.sleep(0.5)
        assert probes.failures == [] and probes.ok > 5
        assert _listening_inodes(server.process.pid, port_a) == sockets_a
    finally:
        server.stop()


def test_the_masters_fd_count_stays_flat_over_twenty_reloads(tmp_path):
    """Ports added, removed, swapped and named by reloads that abort: after each one
    the master holds its baseline plus one socket a slot for each extra port."""
    ports = [free_port(), free_port(), free_port()]
    server = _start(tmp_path)
    try:
        baseline = _fd_count(server.process.pid)
        steps = [([ports[0]], "reloaded"), ([ports[0], ports[1]], "reloaded"),
                 ([ports[1]], "reloaded"), ([ports[2]], "reload aborted"),
                 ([], "reloaded")]
        serving: list[int] = []
        for number in range(20):
            extra_ports, outcome = steps[number % len(steps)]
            broken = BROKEN_WORKERS if outcome == "reload aborted" else ""
            _reload(server, _socket_block(*extra_ports) + broken, outcome)
            if outcome == "reloaded":
                serving = extra_ports
            expected = baseline + 2 * len(serving)
            try:
                wait_until(lambda: _fd_count(server.process.pid) == expected, timeout=15)
            except AssertionError:
                pytest.fail(f"after reload {number + 1} ({outcome}): "
                            f"{_fd_count(server.process.pid)} fds, not {expected}")
        assert get(server.port)[0] == 200
    finally:
        server.stop()
