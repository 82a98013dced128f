"""Socket activation with LISTEN_PID in lighttpd's `parent:PID` form: a process manager
that starts the server as its child cannot know the child's pid beforehand, so it
names itself (the parent of the server process) and passes its listening socket on
fd 3.  lighttpd 1.4.69 serves on that socket; so must pylighttpd.

The passed socket has no SO_REUSEPORT and the config names its port: a server that
ignored it could not bind the port and would not answer at all.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from master.listeners import inherited_sockets
from procutil import REPO, run_lighttpd
from serverproc import get, wait_until

CONFIG = """server.document-root = "{docroot}"
server.bind = "127.0.0.1"
server.port = {port}
server.systemd-socket-activation = "enable"
server.errorlog = "{base}/error.log"
"""


def _start_with_socket(argv: list[str], listener: socket.socket, listen_pid: str
                       ) -> subprocess.Popen:
    fd = listener.fileno()
    return subprocess.Popen(
        argv, cwd=REPO, pass_fds=(3,), preexec_fn=lambda: os.dup2(fd, 3),
        env={**os.environ, "PYTHONPATH": str(REPO), "LISTEN_PID": listen_pid,
             "LISTEN_FDS": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _serves_on_a_socket_from_its_parent(tmp_path, argv_for) -> bytes:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("served on the passed socket\n")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port = listener.getsockname()[1]
        conf = tmp_path / "activated.conf"
        conf.write_text(CONFIG.format(docroot=tmp_path / "www", port=port, base=tmp_path))
        process = _start_with_socket(argv_for(conf), listener, f"parent:{os.getpid()}")
    try:
        status, _, body = wait_until(lambda: get(port, "/index.html"))
        assert status == 200
        return body
    finally:
        process.terminate()
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=5)


def test_pylighttpd_takes_the_socket_its_parent_passes(tmp_path):
    body = _serves_on_a_socket_from_its_parent(
        tmp_path, lambda conf: [sys.executable, "-m", "master.cli", "-D", "-f", str(conf)])
    assert body == b"served on the passed socket\n"


def test_lighttpd_takes_it_too(tmp_path):
    lighttpd = run_lighttpd("-v").args[0]          # skips when it is not installed
    body = _serves_on_a_socket_from_its_parent(
        tmp_path, lambda conf: [lighttpd, "-D", "-f", str(conf)])
    assert body == b"served on the passed socket\n"


def test_a_parent_form_naming_another_process_passes_nothing():
    environ = {"LISTEN_PID": f"parent:{os.getpid() + 1_000_000}", "LISTEN_FDS": "1"}
    assert inherited_sockets(environ) == []
    assert environ["LISTEN_PID"].startswith("parent:")      # left for its real owner
