"""The real server process: start on a free loopback port, serve, reload, stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from procutil import REPO
from serverproc import Server, free_port, get, serving, wait_until


@pytest.fixture
def server(tmp_path):
    with serving(tmp_path, 'server.tag = "first"') as running:
        yield running


def test_serves_the_docroot_with_the_configured_tag(server):
    status, headers, body = get(server.port)
    assert (status, body) == (200, b"hello from pylighttpd\n")
    assert headers["Server"] == "first"


def test_hup_reload_applies_a_new_config(server):
    server.write_config('server.tag = "second"')
    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: get(server.port)[1].get("Server") == "second")


def test_hup_with_a_broken_config_keeps_serving_and_logs_why(server):
    server.write_config('server.tag = "broken')
    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in server.errorlog.read_text())
    log = server.errorlog.read_text()
    assert f"{server.conf}:7:14" in log
    assert get(server.port)[1]["Server"] == "first"


def test_term_stops_master_and_workers(server):
    assert server.stop() == 0
    with pytest.raises(OSError):
        get(server.port)


def test_a_killed_worker_is_replaced(server):
    children = server.children()
    assert len(children) == 2
    os.kill(children[0], signal.SIGKILL)
    wait_until(lambda: len(set(server.children()) - {children[0]}) == 2)
    assert get(server.port)[0] == 200


def test_port_in_use_is_a_one_line_error(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        running = Server(tmp_path)
        running.write_config(f"server.port := {port}")
        running.process.kill()
        running.process.wait()
        result = subprocess.run([sys.executable, "-m", "master.cli", "-D", "-f",
                                 str(running.conf)], cwd=REPO, capture_output=True,
                                text=True, timeout=20,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1
    assert "cannot listen on" in result.stderr and "Traceback" not in result.stderr


def _start_beside(running: Server, conf_text: str, tmp_path) -> subprocess.CompletedProcess:
    """A second server, on `conf_text`, started while `running` serves."""
    conf = tmp_path / "second.conf"
    conf.write_text(conf_text)
    return subprocess.run([sys.executable, "-m", "master.cli", "-D", "-f", str(conf)],
                          cwd=REPO, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_second_server_on_a_port_in_use_refuses_to_start(server, tmp_path):
    """The slots' SO_REUSEPORT sockets would let a second server join the port and take
    a share of the first one's connections in silence; it refuses to start instead,
    as lighttpd does ("can't bind to socket: ... Address already in use")."""
    result = _start_beside(server, server.conf.read_text(), tmp_path)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{server.port}: Address already in use" in \
        result.stderr and "Traceback" not in result.stderr
    assert all(get(server.port)[0] == 200 for _ in range(20))


def test_a_unix_socket_a_server_listens_on_is_not_taken_over(tmp_path):
    """A live server's unix socket is left to it (lighttpd: "server socket is still in
    use"); a stale one, its server gone, is replaced."""
    unix_path = tmp_path / "server.sock"
    running = Server(tmp_path, f'$SERVER["socket"] == "{unix_path}" {{ }}')
    try:
        running.wait_serving()
        listening = os.stat(unix_path).st_ino
        second = running.conf.read_text().replace(f"server.port = {running.port}",
                                                  f"server.port = {free_port()}")
        result = _start_beside(running, second, tmp_path)
        assert result.returncode == 1
        assert f"cannot listen on {unix_path}: a server still listens on it" in result.stderr
        assert os.stat(unix_path).st_ino == listening
    finally:
        running.stop()
    if not unix_path.exists():                      # a file nobody listens on
        with socket.socket(socket.AF_UNIX) as stale:
            stale.bind(str(unix_path))
    restarted = Server(tmp_path, f'$SERVER["socket"] == "{unix_path}" {{ }}')
    try:
        restarted.wait_serving()
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(str(unix_path))
    finally:
        restarted.stop()


def test_idle_exit_stops_the_server(tmp_path):
    running = Server(tmp_path, flags=("-D", "-i", "1"))
    try:
        running.wait_serving()
        assert running.process.wait(timeout=15) == 0
    finally:
        running.stop()


def test_daemon_writes_and_removes_its_pidfile(tmp_path):
    pidfile = tmp_path / "server.pid"
    running = Server(tmp_path, f'server.pid-file = "{pidfile}"', flags=())
    assert running.process.wait(timeout=15) == 0  # the foreground parent returns
    running.wait_serving()
    pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip()))
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pidfile.exists())


def test_systemd_notifications_follow_the_master_state(tmp_path):
    notify_path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.settimeout(15)
    os.environ["NOTIFY_SOCKET"] = str(notify_path)
    try:
        running = Server(tmp_path)
    finally:
        del os.environ["NOTIFY_SOCKET"]
    try:
        assert receiver.recv(256).startswith(b"READY=1")
        running.process.send_signal(signal.SIGHUP)
        assert receiver.recv(256) == b"RELOADING=1"
        assert receiver.recv(256) == b"READY=1"
        running.process.send_signal(signal.SIGTERM)
        assert receiver.recv(256) == b"STOPPING=1"
    finally:
        running.stop()
        receiver.close()


def test_socket_activation_uses_the_passed_socket(tmp_path):
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    running = Server(tmp_path)
    running.process.kill()
    running.process.wait()
    running.write_config(f"server.port := {port}\nserver.systemd-socket-activation = \"enable\"")
    fd = listener.fileno()
    process = subprocess.Popen(
        ["sh", "-c", f'LISTEN_PID=$$ LISTEN_FDS=1 exec "{sys.executable}" -m master.cli '
                     f'-D -f "{running.conf}"'],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, pass_fds=(3,),
        preexec_fn=lambda: os.dup2(fd, 3), stderr=subprocess.PIPE, text=True)
    listener.close()
    try:
        running.port, running.process = port, process
        running.wait_serving()   # the first worker may serve before the second is forked
        wait_until(lambda: len(running.children()) == 2)
    finally:
        running.stop()
