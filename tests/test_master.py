"""The supervisor under load: reloads, crashes, resizing and binary upgrade lose nothing.

Every load here is bounded (a few client threads, a deadline) and targets 127.0.0.1.
"""

from __future__ import annotations

import os
import pwd
import select
import signal
import socket
import subprocess
import time

import pytest

from load_util import Load
from serverproc import Server, get, serving, wait_until

BODY = b"hello from pylighttpd\n"


@pytest.fixture
def server(tmp_path):
    with serving(tmp_path, 'server.tag = "gen-0"\nserver.graceful-shutdown-timeout = 5') as running:
        yield running


def _assert_clean(load: Load) -> None:
    result = load.result
    assert result.failures == [], result.failures[:5]
    # busy keep-alive clients are never closed under them: a draining worker answers
    # their next request with Connection: close instead
    assert result.retried_idle == 0
    assert result.ok > 50


def test_twenty_reloads_under_load_lose_no_request(server):
    with Load(server.port, BODY) as load:
        for number in range(1, 21):
            server.write_config(f'server.tag = "gen-{number}"\n'
                                "server.graceful-shutdown-timeout = 5")
            server.process.send_signal(signal.SIGHUP)
            wait_until(lambda: get(server.port)[1].get("Server") == f"gen-{number}",
                       timeout=15)
    _assert_clean(load)
    wait_until(lambda: len(server.children()) == 2, timeout=15)


def test_broken_reload_keeps_the_old_workers(server):
    before = server.children()
    server.write_config('server.tag = "x"\n$HTTP["host"] =* "bad" {}')
    with Load(server.port, BODY) as load:
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in server.errorlog.read_text())
        time.sleep(0.5)
    _assert_clean(load)
    log = server.errorlog.read_text()
    assert f"{server.conf}:8:15" in log and "only == != =~ !~ =^ =$" in log
    assert server.children() == before


def test_killed_worker_is_replaced_within_a_second(server):
    victim = server.children()[0]
    with Load(server.port, BODY, keepalive_clients=0, fresh_clients=2) as load:
        time.sleep(0.3)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(lambda: len(set(server.children()) - {victim}) == 2, timeout=5)
        replaced_after = time.monotonic() - killed_at
        time.sleep(0.3)
    assert replaced_after < 1.0
    # only requests in flight on the killed worker may fail
    assert len(load.result.failures) <= 2, load.result.failures


def test_ttin_and_ttou_change_the_worker_count_without_failures(server):
    with Load(server.port, BODY, keepalive_clients=0, fresh_clients=3) as load:
        server.process.send_signal(signal.SIGTTIN)
        wait_until(lambda: len(server.children()) == 3)
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTTOU)
        wait_until(lambda: len(server.children()) == 2, timeout=15)
        server.process.send_signal(signal.SIGTTOU)
        wait_until(lambda: len(server.children()) == 1, timeout=15)
        time.sleep(0.5)
    _assert_clean(load)


def test_usr2_upgrade_then_quit_of_the_old_master_loses_nothing(server):
    old_master = server.process.pid
    with Load(server.port, BODY) as load:
        server.process.send_signal(signal.SIGUSR2)
        new_master = wait_until(lambda: [p for p in server.children()
                                         if b"master" in _cmdline(p)])[0]
        wait_until(lambda: len(_children(new_master)) == 2, timeout=15)
        server.process.send_signal(signal.SIGQUIT)
        assert server.process.wait(timeout=20) == 0
        time.sleep(0.5)
        assert get(server.port)[0] == 200
    _assert_clean(load)
    os.kill(new_master, signal.SIGTERM)
    wait_until(lambda: not os.path.exists(f"/proc/{new_master}/status")
               or b"Z" in _status_state(new_master), timeout=15)
    assert old_master != new_master


def test_load_spreads_over_the_workers(server):
    workers = server.children()
    clients = []
    for _ in range(60):
        client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        clients.append(client)

    def count_owners() -> dict[int, int] | None:
        """Who holds each connection, once every one has been accepted (a worker still
        starting accepts what waits in its slot's queue a moment later)."""
        found = dict.fromkeys(workers, 0)
        for client in clients:
            owner = _owner_of(client.getsockname()[1], server.port, workers)
            if owner is None:
                return None
            found[owner] += 1
        return found

    try:
        owners = wait_until(count_owners, timeout=10)
    finally:
        for client in clients:
            client.close()
    assert max(owners.values()) <= 0.7 * len(clients), owners


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot and setuid need root")
def test_workers_run_as_the_configured_user_inside_the_chroot(tmp_path):
    jail = tmp_path / "jail"
    (jail / "www").mkdir(parents=True)
    (jail / "www" / "index.html").write_bytes(BODY)
    os.chmod(tmp_path, 0o755)
    running = Server(tmp_path, f'server.chroot = "{jail}"\nserver.username = "nobody"\n'
                     'server.groupname = "nogroup"', document_root="/www")
    try:
        wait_until(lambda: get(running.port)[2] == BODY)
        nobody = pwd.getpwnam("nobody").pw_uid
        for pid in running.children():
            assert os.readlink(f"/proc/{pid}/root") == str(jail)
            assert {int(uid) for uid in _status_field(pid, "Uid").split()} == {nobody}
    finally:
        running.stop()


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read()
    except OSError:
        return b""


def _status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return ""


def _status_state(pid: int) -> bytes:
    try:
        return _status_field(pid, "State").encode()
    except OSError:
        return b"Z"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _owner_of(client_port: int, server_port: int, workers: list[int]) -> int | None:
    """The worker holding the server side of the connection from `client_port`; None
    while the connection still waits in an accept queue."""
    inode = None
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == server_port and \
                    int(remote.split(":")[1], 16) == client_port:
                inode = fields[9]
    assert inode is not None, "connection not found"
    for pid in workers:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    return None


def test_a_stuck_worker_is_aborted_and_replaced(tmp_path):
    running = Server(tmp_path, "server.worker-heartbeat-timeout = 2")
    try:
        running.wait_serving()
        victim = running.children()[0]
        os.kill(victim, signal.SIGSTOP)   # its loop stops: no more heartbeats
        wait_until(lambda: victim not in running.children()
                   and len(running.children()) == 2, timeout=15)
        assert "heartbeat timeout" in running.errorlog.read_text()
        assert get(running.port)[0] == 200
    finally:
        running.stop()


def test_workers_of_a_killed_master_finish_and_exit(tmp_path):
    """A master killed with SIGKILL leaves its workers to init: each sees its master
    gone at its next tick, stops accepting, answers what it holds and exits, rather
    than serving on with a config nobody reloads beside a new master's listeners."""
    running = Server(tmp_path)
    try:
        running.wait_serving()
        workers = running.children()
        assert len(workers) == 2
        client = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        running.process.kill()
        running.process.wait(timeout=10)
        gone = "is gone: this worker finishes its requests and exits"
        wait_until(lambda: running.errorlog.read_text().count(gone) == 2, timeout=5)
        # a keep-alive connection taken before is still answered, and told to close
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += client.recv(65536) or b"!"
        assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" in answer
        client.close()
        wait_until(lambda: not any(_alive(pid) for pid in workers), timeout=10)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", running.port), timeout=2)
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, which init reaps soon, counts as gone)."""
    return not _status_state(pid).startswith(b"Z")


def test_quit_finishes_the_request_in_flight(tmp_path):
    running = Server(tmp_path)
    (running.docroot / "big.bin").write_bytes(b"x" * (32 * 1024 * 1024))
    try:
        running.wait_serving()
        client = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        client.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        first = client.recv(65536)       # the response has started, most is unsent
        running.process.send_signal(signal.SIGQUIT)
        received = len(first) + sum(iter(lambda: len(client.recv(1 << 20)), 0))
        client.close()
        head = first.split(b"\r\n\r\n", 1)[0]
        assert b"200 OK" in head
        assert received - len(head) - 4 == 32 * 1024 * 1024
        assert running.process.wait(timeout=15) == 0
    finally:
        running.stop()


def test_usr1_reopens_the_error_log(tmp_path):
    running = Server(tmp_path)
    try:
        running.wait_serving()
        rotated = tmp_path / "error.log.1"
        running.errorlog.rename(rotated)
        running.process.send_signal(signal.SIGUSR1)
        wait_until(lambda: running.errorlog.exists())
        running.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloaded" in running.errorlog.read_text())
        assert "reloaded" not in rotated.read_text()
    finally:
        running.stop()


def test_usr2_moves_the_pid_file_aside(tmp_path):
    pidfile = tmp_path / "server.pid"
    running = Server(tmp_path, f'server.pid-file = "{pidfile}"')
    try:
        running.wait_serving()
        running.process.send_signal(signal.SIGUSR2)
        wait_until(lambda: pidfile.exists() and
                   pidfile.read_text().strip() not in ("", str(running.process.pid)))
        assert (tmp_path / "server.pid.oldbin").read_text().strip() == str(running.process.pid)
        new_master = int(pidfile.read_text())
        running.process.send_signal(signal.SIGQUIT)
        assert running.process.wait(timeout=20) == 0
        assert not (tmp_path / "server.pid.oldbin").exists()
        assert get(running.port)[0] == 200
        os.kill(new_master, signal.SIGTERM)
        wait_until(lambda: not pidfile.exists(), timeout=15)
    finally:
        running.stop()


@pytest.mark.parametrize("extra, words", [
    ('server.username = "no-such-user-here"', "unknown user"),
    ('server.groupname = "no-such-group-here"', "unknown group"),
    ('server.chroot = "/no/such/dir"', "not a directory"),
    ("server.max-fds = 2000000000", "server.max-fds"),
])
def test_start_up_faults_are_one_line_errors(tmp_path, extra, words):
    running = Server(tmp_path, extra)
    assert running.process.wait(timeout=20) == 1
    stderr = running.process.stderr.read()
    assert words in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
    assert running.children() == []


def test_ipv6_and_unix_socket_listeners(tmp_path):
    unix_path = tmp_path / "server.sock"
    v6_port = free_port_v6()
    running = Server(tmp_path, f'$SERVER["socket"] == "[::1]:{v6_port}" {{ }}\n'
                     f'$SERVER["socket"] == "{unix_path}" {{ server.tag = "unix" }}')
    try:
        running.wait_serving()
        with socket.create_connection(("::1", v6_port), timeout=5) as client:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert client.recv(100).startswith(b"HTTP/1.0 200")
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(str(unix_path))
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b"".join(iter(lambda: client.recv(65536), b""))
            assert reply.startswith(b"HTTP/1.0 200") and b"Server: unix" in reply
    finally:
        running.stop()


def free_port_v6() -> int:
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        return sock.getsockname()[1]


def test_a_worker_that_keeps_dying_is_respawned_with_back_off(server):
    """Three quick deaths are replaced at once; the fourth within a minute waits."""
    for _ in range(4):
        before = set(server.children())
        victim = next(pid for pid in before if b"worker 0 " in _cmdline(pid))
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in server.children(), timeout=5)
        if "respawning in" not in server.errorlog.read_text():
            wait_until(lambda: len(set(server.children()) - before) == 1, timeout=5)
    log = server.errorlog.read_text()
    assert "respawning in 2s" in log
    assert log.count("died: signal 9") == 4
    wait_until(lambda: len(server.children()) == 2, timeout=10)   # after the back-off
    assert get(server.port)[0] == 200


def test_reload_changes_the_worker_count_without_failures(server):
    with Load(server.port, BODY, keepalive_clients=1, fresh_clients=3) as load:
        for count in (3, 1):
            server.write_config(f"server.max-worker := {count}\n"
                                "server.graceful-shutdown-timeout = 5")
            server.process.send_signal(signal.SIGHUP)
            wait_until(lambda: len(server.children()) == count, timeout=20)
            time.sleep(0.5)
    _assert_clean(load)
    assert "worker count is now 1" in server.errorlog.read_text()


# A slot waiting out its respawn back-off has its own SO_REUSEPORT socket, which the
# kernel would keep routing connections to: they must all be answered all the same.
# The back-off is made as an operator sees it happen: three deaths of a slot's worker
# in a minute are replaced at once, the fourth waits 2 s, the fifth 4 s.

PROBES = 40
REQUEST = b"GET / HTTP/1.0\r\n\r\n"
# fewer than the 4 s that the fifth death in a minute waits, so that an answer within
# it can only come from a live worker, never from the slot's next regular worker
ANSWER_WITHIN = 2.0


def test_connections_avoid_a_slot_waiting_out_its_back_off(server):
    _kill_until_backing_off(server, slot=0)
    assert _count_answered(_send_probes(server.port, PROBES)) == PROBES


def test_connections_queued_on_a_worker_that_dies_are_answered_during_its_back_off(server):
    """What waits in the dead worker's accept queue is not left there for the back-off:
    a worker is started for it at once (it gets no new connections before the
    back-off is over)."""
    victim = _kill_until_backing_off(server, slot=0, last_kill=signal.SIGSTOP)
    clients = _send_probes(server.port, PROBES)   # about half wait on the stopped worker
    os.kill(victim, signal.SIGKILL)
    assert _count_answered(clients) == PROBES
    log = server.errorlog.read_text()
    assert "respawning in 4s" in log and "wait in its queue: starting it" in log


def test_a_lone_worker_in_back_off_is_replaced_for_the_connections_that_wait(tmp_path):
    """Every slot down: connections wait in one slot, whose worker is started for them."""
    with serving(tmp_path, "server.max-worker := 1") as running:
        _kill_until_backing_off(running, slot=0)
        assert _count_answered(_send_probes(running.port, PROBES)) == PROBES


def test_aborted_reloads_do_not_count_towards_the_back_off(server):
    """New workers that die before a reload completes abort it; they are not respawned,
    the log does not say they are, and the next real crash is replaced at once."""
    server.write_config('server.errorlog := "/nonexistent/dir/error.log"')
    for reload in range(1, 5):
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: server.errorlog.read_text().count("reload aborted") == reload)
    log = server.errorlog.read_text()
    assert "respawning" not in log
    assert "FileNotFoundError: [Errno 2] No such file or directory: " \
           "'/nonexistent/dir/error.log'" in log
    assert log.count("before the reload completed: exit status 70") >= 4
    assert all(b"(gen 1)" in _cmdline(pid) for pid in server.children())
    victim = _kill_serving_worker(server, 0)
    assert f"worker 0 (pid {victim}) died: signal 9; respawning\n" in \
           server.errorlog.read_text()


def test_a_reload_starts_the_back_off_afresh(server):
    """Deaths of the previous generation's workers do not delay the new one's."""
    for _ in range(4):
        _kill_serving_worker(server, 0)
    assert "respawning in 2s" in server.errorlog.read_text()
    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "reloaded" in server.errorlog.read_text(), timeout=15)
    victim = _kill_serving_worker(server, 0)
    assert f"worker 0 (pid {victim}) died: signal 9; respawning\n" in \
           server.errorlog.read_text()


def _kill_until_backing_off(server: Server, slot: int,
                            last_kill: int = signal.SIGKILL) -> int:
    """Kill the slot's worker five times, each once it serves; the fifth death (sent
    `last_kill`, which only SIGKILL ends) makes the slot wait 4 s.  Its pid."""
    for _ in range(4):
        _kill_serving_worker(server, slot)
    victim = _serving_worker_of_slot(server, slot)
    os.kill(victim, last_kill)
    if last_kill == signal.SIGKILL:
        wait_until(lambda: "respawning in 4s" in server.errorlog.read_text())
    return victim


def _kill_serving_worker(server: Server, slot: int) -> int:
    """SIGKILL the slot's worker once it serves; its pid, once the master logged why."""
    victim = _serving_worker_of_slot(server, slot)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: f"(pid {victim}) died" in server.errorlog.read_text())
    return victim


def _serving_worker_of_slot(server: Server, slot: int) -> int:
    """The slot's worker, once new connections reach it (it is ready then, and the
    master steers connections to its slot)."""
    pid = _worker_of_slot(server, slot)
    wait_until(lambda: _accepts_next_connection(server, pid))
    return pid


def _worker_of_slot(server: Server, slot: int) -> int:
    title = f"worker {slot} ".encode()
    return wait_until(lambda: next((pid for pid in server.children()
                                    if title in _cmdline(pid)), None))


def _accepts_next_connection(server: Server, pid: int) -> bool:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
        port = client.getsockname()[1]
        return wait_until(lambda: _owner_of(port, server.port, server.children())) == pid


def _send_probes(port: int, count: int) -> list[socket.socket]:
    """`count` new connections, each with a request sent (the kernel completes the
    handshake and keeps the request even while no worker accepts)."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        client.sendall(REQUEST)
        clients.append(client)
    return clients


def _count_answered(clients: list[socket.socket]) -> int:
    """How many of the clients get a 200 within ANSWER_WITHIN seconds; closes them."""
    waiting, answered = set(clients), 0
    deadline = time.monotonic() + ANSWER_WITHIN
    try:
        while waiting and (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select(list(waiting), [], [], left)
            for client in readable:
                waiting.discard(client)
                answered += client.recv(64).startswith(b"HTTP/1.0 200")
    finally:
        for client in clients:
            client.close()
    return answered

