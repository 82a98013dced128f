"""The master spawns the `bin-path` backends of the gateway directives (master/spawner.py).

A real master with two workers and `proxy.server` hosts with a `bin-path` (any `*.server`
directive works the same: the master finds them by the type of their value).  The
backend is a tiny FastCGI responder in Python that accepts on fd 0, started through a
shell script as lighttpd starts a `bin-path`; the test speaks FastCGI to its socket.
Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import struct
import sys
import tempfile
from pathlib import Path

import pytest

from master.spawner import backend_environment, group_members, launch_argv, program_argv
from serverproc import Server, wait_until
from shared.gateway_hosts import HostSpec, parse_servers
from shared.config.values import Array

PHP_CGI = "/usr/bin/php-cgi"

BACKEND = r'''
import os, socket, struct, sys

def records(conn):
    buffer = b""
    while True:
        while len(buffer) < 8:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buffer += chunk
        _, kind, _, length, padding = struct.unpack(">BBHHB", buffer[:7])
        while len(buffer) < 8 + length + padding:
            buffer += conn.recv(65536)
        yield kind, buffer[8:8 + length]
        buffer = buffer[8 + length + padding:]

def record(kind, body):
    return struct.pack(">BBHHBx", 1, kind, 1, len(body), 0) + body

def answer(conn):
    for kind, body in records(conn):
        if kind == 5 and not body:      # the empty FCGI_STDIN: the request is complete
            break
    listening = socket.socket(fileno=os.dup(0)).getsockopt(socket.SOL_SOCKET,
                                                           socket.SO_ACCEPTCONN)
    text = "\n".join([f"pid={os.getpid()}", f"ppid={os.getppid()}", f"cwd={os.getcwd()}",
                      f"fd0-listening={listening}"]
                     + [f"env:{k}={v}" for k, v in sorted(os.environ.items())])
    reply = b"Content-Type: text/plain\r\n\r\n" + text.encode()
    conn.sendall(record(6, reply) + record(6, b"") + record(3, bytes(8)))

sys.stderr.write(f"backend {os.getpid()} says hello on stderr\n")
sys.stderr.flush()
listener = socket.socket(fileno=0)
while True:
    conn, _ = listener.accept()
    with conn:
        answer(conn)
'''


# ------------------------------------------------------------------ FastCGI client
def _record(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBHHBx", 1, kind, 1, len(body), 0) + body


def _params(pairs: dict[str, str]) -> bytes:
    encoded = b""
    for name, value in pairs.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded += bytes([len(raw_name), len(raw_value)]) + raw_name + raw_value
    return encoded


def fastcgi_get(address: str | tuple, params: dict[str, str] | None = None) -> bytes:
    """One FastCGI responder request; the STDOUT stream it answers."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(address)
        begin = struct.pack(">HB5x", 1, 0)
        conn.sendall(_record(1, begin) + _record(4, _params(params or {})) +
                     _record(4, b"") + _record(5, b""))
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    stdout = b""
    while len(received) >= 8:
        _, kind, _, length, padding = struct.unpack(">BBHHB", received[:7])
        if kind == 6:
            stdout += received[8:8 + length]
        received = received[8 + length + padding:]
    return stdout


def answer_of(address: str | tuple) -> dict[str, str]:
    """The test backend's answer as a dict (pid, ppid, cwd, env:NAME, ...).  A backend
    stopped by a reload while it answers closes without a word: ConnectionError (an
    OSError, which wait_until takes as "not yet")."""
    _, found, body_bytes = fastcgi_get(address).partition(b"\r\n\r\n")
    if not found:
        raise ConnectionError(f"no answer from {address}")
    body = body_bytes.decode()
    return dict(line.split("=", 1) for line in body.splitlines())


# ----------------------------------------------------------------------- fixtures
def write_backend(directory: Path, name: str = "backend.sh", prelude: str = "") -> Path:
    """The bin-path: a shell script exec-ing the Python FastCGI responder, after the
    shell lines of `prelude`."""
    (directory / "backend.py").write_text(BACKEND)
    script = directory / name
    script.write_text(f"#!/bin/sh\n{prelude}exec {sys.executable} {directory / 'backend.py'}\n")
    script.chmod(0o755)
    return script


def gateway(bin_path: Path | str, sock: Path | None, tag: str = "one", procs: int = 2,
            port: int = 0, host_keys: str = "") -> str:
    """The config of one spawned host on unix sockets `sock-N`, or on TCP ports
    `port+N` when `sock` is None."""
    where = f'"socket" => "{sock}"' if sock else f'"host" => "127.0.0.1", "port" => {port}'
    return ('server.modules = ("mod_proxy")\n'
            f'proxy.server = ( "/app/" => (( "bin-path" => "{bin_path}",\n'
            f'    {where}, {host_keys}"max-procs" => {procs},\n'
            f'    "bin-environment" => ( "TAG" => "{tag}" ),\n'
            '    "bin-copy-environment" => ( "PATH", "SPAWN_KEPT" ) )) )\n')


class Spawning:
    """A master with the test backend on `max-procs` unix sockets."""

    def __init__(self, base: Path, tag: str = "one", procs: int = 2) -> None:
        self.dir = base / "b"
        self.dir.mkdir()
        self.bin_path = write_backend(self.dir)
        self.sock = self.dir / "s"
        self.procs = procs
        self.server = Server(base, gateway(self.bin_path, self.sock, tag, procs))

    def configure(self, **changes) -> None:
        options = {"bin_path": self.bin_path, "sock": self.sock, "procs": self.procs,
                   **changes}
        self.server.write_config(gateway(**options))

    def sockets(self) -> list[str]:
        return [f"{self.sock}-{n}" for n in range(self.procs)]

    def answers(self) -> list[dict[str, str]]:
        """Every process's answer, once each answers."""
        return wait_until(lambda: [answer_of(path) for path in self.sockets()])

    def pids(self) -> list[int]:
        return [int(answer["pid"]) for answer in self.answers()]

    def hup_and_wait_for_reload(self, count: int) -> None:
        self.server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: self.server.errorlog.read_text().count("reloaded ") >= count)


@pytest.fixture
def spawning(tmp_path, monkeypatch):
    monkeypatch.setenv("SPAWN_KEPT", "kept")
    monkeypatch.setenv("SPAWN_DROPPED", "dropped")
    running = Spawning(tmp_path)
    try:
        running.server.wait_serving()
        yield running
    finally:
        running.server.stop()


@contextlib.contextmanager
def stopped_at_end(server: Server):
    """The server, stopped at the end; a clean exit is expected unless the test
    failed already (its own failure is the one to report)."""
    try:
        yield server
    except BaseException:
        server.stop()
        raise
    assert server.stop() == 0


def renewed(addresses: list, tag: str) -> list[dict[str, str]] | None:
    """The answers at `addresses` once every one comes from a process tagged `tag`."""
    answers = [answer_of(address) for address in addresses]
    return answers if all(answer["env:TAG"] == tag for answer in answers) else None


def free_port_pair() -> int:
    """A port P with P+1 free too, below the ephemeral range the server's own port
    comes from (so the two never collide)."""
    for port in range(20000 + os.getpid() % 5000 * 2, 32000, 2):
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two free ports")


def zombies_of(pid: int) -> list[int]:
    """Children of `pid` in state Z."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def assert_no_zombies(pid: int) -> None:
    """No child of `pid` stays a zombie: one that just exited is reaped within the
    master's next round (it is the lingering ones that would be a leak)."""
    try:
        wait_until(lambda: zombies_of(pid) == [], 5)
    except AssertionError:
        raise AssertionError(f"children of {pid} left unreaped: {zombies_of(pid)}") from None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -------------------------------------------------------------------------- tests
def test_backends_run_as_lighttpd_starts_them(spawning):
    answers = spawning.answers()
    master = str(spawning.server.process.pid)
    assert len({answer["pid"] for answer in answers}) == 2       # one set for 2 workers
    for answer in answers:
        assert answer["ppid"] == master               # the master's children
        assert answer["fd0-listening"] == "1"         # FCGI_LISTENSOCK_FILENO
        assert answer["cwd"] == str(spawning.dir)     # the directory of bin-path
        assert answer["env:TAG"] == "one"             # bin-environment
        assert answer["env:SPAWN_KEPT"] == "kept"     # bin-copy-environment
        assert answer["env:PHP_FCGI_CHILDREN"] == "1"
        assert "env:SPAWN_DROPPED" not in answer      # not in bin-copy-environment
        assert f"backend {answer['pid']} says hello on stderr" in \
            spawning.server.errorlog.read_text()      # stderr: the error log
    assert len(spawning.server.children()) == 4       # 2 workers + 2 backends


def test_hosts_of_conditional_blocks_are_spawned_once_per_address(tmp_path):
    directory = tmp_path / "b"
    directory.mkdir()
    bin_path = write_backend(directory)
    config = gateway(bin_path, directory / "s", procs=1) + (
        '$HTTP["host"] == "other" { proxy.server += ( "/more/" => (( "bin-path" => '
        f'"{bin_path}", "socket" => "{directory / "t"}", "max-procs" => 1 ))) }}\n')
    with stopped_at_end(Server(tmp_path, config)) as server:
        server.wait_serving()
        wait_until(lambda: answer_of(str(directory / "s-0")) and
                   answer_of(str(directory / "t-0")))
        assert len(server.children()) == 4            # 2 workers + s-0 and t-0


def test_a_killed_backend_is_restarted_without_zombies(spawning):
    first, second = spawning.pids()
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: answer_of(spawning.sockets()[0])["pid"] != str(first))
    renewed, unchanged = spawning.pids()
    assert renewed != first and unchanged == second
    log = spawning.server.errorlog.read_text()
    assert f"backend unix:{spawning.sock}-0: pid {first} died: signal 9; restarting" in log
    assert_no_zombies(spawning.server.process.pid)


def test_a_backend_that_keeps_dying_backs_off(tmp_path):
    directory = tmp_path / "b"
    directory.mkdir()
    dying = directory / "dying.sh"
    dying.write_text("#!/bin/sh\nsleep 0.3\nexit 3\n")
    dying.chmod(0o755)
    with stopped_at_end(Server(tmp_path, gateway(dying, directory / "s", procs=1))) as server:
        server.wait_serving()
        wait_until(lambda: server.errorlog.read_text().count("exit status 3") >= 3, 15)
        log = server.errorlog.read_text()
        assert "exit status 3; restarting in 0.5s" in log
        assert "exit status 3; restarting in 1s" in log
        assert "exit status 3; restarting in 2s" in log
        assert_no_zombies(server.process.pid)


def test_hup_keeps_unchanged_backends_and_replaces_changed_ones(spawning):
    before = spawning.pids()
    spawning.hup_and_wait_for_reload(1)
    assert spawning.pids() == before                  # same config: untouched
    spawning.configure(tag="two")
    spawning.hup_and_wait_for_reload(2)
    answers = spawning.answers()
    assert [answer["env:TAG"] for answer in answers] == ["two", "two"]
    assert not set(before) & {int(answer["pid"]) for answer in answers}
    wait_until(lambda: not any(alive(pid) for pid in before))   # once the old drained
    assert_no_zombies(spawning.server.process.pid)


def test_a_host_removed_by_a_hup_is_stopped_and_its_sockets_removed(spawning):
    before = spawning.pids()
    spawning.server.write_config('server.modules = ("mod_proxy")')
    spawning.hup_and_wait_for_reload(1)
    wait_until(lambda: not any(alive(pid) for pid in before))
    assert not any(os.path.exists(path) for path in spawning.sockets())
    assert_no_zombies(spawning.server.process.pid)


def test_a_hup_that_cannot_spawn_is_refused(spawning):
    before = spawning.pids()
    spawning.configure(bin_path=spawning.dir / "missing.sh", procs=2)
    spawning.server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in spawning.server.errorlog.read_text())
    assert 'invalid "bin-path"' in spawning.server.errorlog.read_text()
    assert spawning.pids() == before


def test_a_hup_whose_socket_cannot_be_bound_is_refused(spawning):
    before = spawning.pids()
    spawning.configure(sock=spawning.dir / "no-such-dir" / "s", tag="three")
    spawning.server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in spawning.server.errorlog.read_text())
    log = spawning.server.errorlog.read_text()
    assert "cannot start" in log and "No such file or directory" in log
    assert spawning.pids() == before
    assert_no_zombies(spawning.server.process.pid)


def test_term_stops_the_backends_and_removes_their_sockets(spawning):
    pids = spawning.pids()
    assert spawning.server.stop() == 0
    assert not any(alive(pid) for pid in pids)
    assert not any(os.path.exists(path) for path in spawning.sockets())


@contextlib.contextmanager
def replaced_on_tcp(tmp_path, bin_path: Path):
    """Backends of `bin_path` on two consecutive TCP ports, then replaced by a HUP to
    a changed config: (the server, the answers before, the answers after), the server
    stopped at the end."""
    port = free_port_pair()
    with stopped_at_end(Server(tmp_path, gateway(bin_path, None, port=port))) as server:
        server.wait_serving()
        addresses = [("127.0.0.1", port), ("127.0.0.1", port + 1)]
        before = wait_until(lambda: [answer_of(address) for address in addresses])
        server.write_config(gateway(bin_path, None, tag="two", port=port))
        server.process.send_signal(signal.SIGHUP)
        yield server, before, wait_until(lambda: renewed(addresses, "two"))


def test_tcp_backends_take_consecutive_ports_and_a_changed_one_is_replaced(tmp_path):
    directory = tmp_path / "b"
    directory.mkdir()
    with replaced_on_tcp(tmp_path, write_backend(directory)) as (server, before, after):
        assert not {a["pid"] for a in before} & {a["pid"] for a in after}
        assert "replaced by a changed config on the same address" in \
            server.errorlog.read_text()
    assert_no_zombies(server.process.pid)


def test_a_replaced_backend_s_children_free_its_address(tmp_path):
    """A backend that left a child behind (one that ignores SIGTERM and holds the
    listening socket it inherited) is replaced on the same TCP address all the same,
    and stopped with the server: its whole process group goes with it."""
    directory = tmp_path / "b"
    directory.mkdir()
    forking = write_backend(directory, "forking.sh",
                            "exec 3<&0\n(trap '' TERM; exec sleep 60) &\nexec 3<&-\n")
    with replaced_on_tcp(tmp_path, forking) as (_server, before, after):
        assert all(group_members(int(a["pid"])) for a in after)    # the sleep with each
    groups = [int(a["pid"]) for a in before + after]
    assert wait_until(lambda: not any(group_members(group) for group in groups))


def test_backends_run_as_the_server_user(tmp_path):
    """As lighttpd (which spawns after its setuid): the process and its socket file
    belong to server.username.  In a directory of /tmp that user may reach (the
    backend is a shell script: the test's Python lives where that user may not go)."""
    shared = Path(tempfile.mkdtemp(prefix="spawn-"))
    try:
        shared.chmod(0o777)
        script = shared / "idle.sh"
        script.write_text("#!/bin/sh\nexec sleep 60\n")
        script.chmod(0o755)
        with stopped_at_end(Server(tmp_path, gateway(script, shared / "s", procs=1) +
                                   'server.username = "nobody"')) as server:
            nobody = pwd.getpwnam("nobody").pw_uid
            backend = wait_until(lambda: next((
                pid for pid in server.children()
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep")), None))
            assert Path(f"/proc/{backend}").stat().st_uid == nobody
            assert os.stat(shared / "s-0").st_uid == nobody
    finally:
        shutil.rmtree(shared)


def test_a_backend_that_ignores_its_kill_signal_is_killed(tmp_path):
    directory = tmp_path / "b"
    directory.mkdir()
    stubborn = write_backend(directory, "stubborn.sh", "trap '' USR2\n")
    config = gateway(stubborn, directory / "s", procs=1,
                     host_keys=f'"kill-signal" => {int(signal.SIGUSR2)}, ')
    with stopped_at_end(Server(tmp_path, config)) as server:
        server.wait_serving()
        pid = int(wait_until(lambda: answer_of(str(directory / "s-0")))["pid"])
    assert not alive(pid)
    assert f"(pid {pid}) did not stop within 5s: killing it" in server.errorlog.read_text()
    assert not os.path.exists(directory / "s-0")


def test_a_broken_bin_path_is_a_start_up_error(tmp_path):
    not_executable = tmp_path / "plain.sh"
    not_executable.write_text("#!/bin/sh\n")
    for bin_path, words in ((tmp_path / "missing", "No such file or directory"),
                            (not_executable, "not an executable regular file")):
        server = Server(tmp_path, gateway(bin_path, tmp_path / "s"))
        assert server.process.wait(timeout=30) == 1
        message = server.process.stderr.read()
        assert f'invalid "bin-path" => "{bin_path}"' in message and words in message


def test_a_program_that_cannot_be_executed_is_a_start_up_error(tmp_path):
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    server = Server(tmp_path, gateway(broken, tmp_path / "s"))
    assert server.process.wait(timeout=30) == 1
    message = server.process.stderr.read()
    assert f"cannot start {broken}: executing {broken}: No such file" in message
    assert not os.path.exists(tmp_path / "s-0")


def test_config_test_spawns_nothing(tmp_path):
    marker = tmp_path / "started"
    script = tmp_path / "marker.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexec sleep 30\n")
    script.chmod(0o755)
    server = Server(tmp_path, gateway(script, tmp_path / "s"), flags=("-tt",))
    assert server.process.wait(timeout=30) == 0
    assert not marker.exists() and not os.path.exists(tmp_path / "s-0")


@pytest.mark.skipif(not os.access(PHP_CGI, os.X_OK), reason="php-cgi is not installed")
def test_php_cgi_is_spawned_and_answers_fastcgi(tmp_path):
    script = tmp_path / "hello.php"
    script.write_text('<?php echo "php says ", getenv("TAG"), " ", php_sapi_name();\n')
    config = gateway(PHP_CGI, tmp_path / "php", procs=1)
    with stopped_at_end(Server(tmp_path, config)) as server:
        server.wait_serving()
        params = {"SCRIPT_FILENAME": str(script), "REQUEST_METHOD": "GET",
                  "SERVER_PROTOCOL": "HTTP/1.1", "GATEWAY_INTERFACE": "CGI/1.1",
                  "REDIRECT_STATUS": "200"}
        answer = wait_until(lambda: fastcgi_get(str(tmp_path / "php-0"), params))
        assert answer.endswith(b"php says one cgi-fcgi")
    assert not os.path.exists(tmp_path / "php-0")


# --------------------------------------------------------------------- unit tests
def test_bin_path_is_split_at_every_space_and_tab_as_lighttpd_does():
    assert program_argv("/usr/bin/php-cgi") == ("/usr/bin/php-cgi",)
    assert program_argv("/bin/app -c\tx  y") == ("/bin/app", "-c", "x", "", "y")


def _spec(keys: dict, bin_shell: bool = False) -> HostSpec:
    host = Array([(key, Array([(None if isinstance(value, list) else k, v) for k, v in
                               (enumerate(value) if isinstance(value, list) else
                                value.items())]) if isinstance(value, (dict, list))
                   else value) for key, value in keys.items()])
    (extension,) = parse_servers(Array([(".php", Array([(None, host)]))]), bin_shell)
    return extension.hosts[0]


def test_a_module_may_have_bin_path_run_by_the_shell_as_lighttpds_scgi():
    keys = {"bin-path": "/usr/bin/app --port 1", "socket": "/tmp/x"}
    assert launch_argv(_spec(keys)) == ("/usr/bin/app", "--port", "1")
    assert launch_argv(_spec(keys, bin_shell=True)) == (
        "/bin/sh", "-c", "exec /usr/bin/app --port 1")


def test_environment_follows_lighttpds_rules():
    environ = {"PATH": "/bin", "HOME": "/root", "LISTEN_FDS": "3", "LISTEN_PID": "1"}
    copy_all = _spec({"bin-path": "/bin/true", "socket": "/tmp/x"})
    assert backend_environment(copy_all, environ) == {
        "PATH": "/bin", "HOME": "/root", "PHP_FCGI_CHILDREN": "1"}
    chosen = _spec({"bin-path": "/bin/true", "socket": "/tmp/x",
                    "bin-copy-environment": ["PATH", "NONE"],
                    "bin-environment": {"PHP_FCGI_CHILDREN": "4"}})
    assert backend_environment(chosen, environ) == {"PATH": "/bin",
                                                     "PHP_FCGI_CHILDREN": "4"}
