"""FastCGI connection reuse shares the backend: pylighttpd (two workers, keep-conn on
by default) in front of a php-cgi with PHP_FCGI_CHILDREN=4 spawned by its master,
under load, while another client (what another server would be: a FastCGI connection
of its own per request) asks the same php-cgi directly.  Each worker keeps at most
(4 - 1) // 2 connections, so one php-cgi process at least is never pinned by a kept
connection and the other client keeps getting answers; without the limit the kept
connections take every process and it waits forever (here: until its deadline)."""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import pytest

from serverproc import get, serving, wait_until
from worker import fastcgi

PHP_CGI = shutil.which("php-cgi")
pytestmark = pytest.mark.skipif(PHP_CGI is None, reason="php-cgi is not installed")
DEADLINE = 10.0                  # seconds an answer may take before the test fails
LOADERS = 8                      # clients hammering pylighttpd at once, each request
                                 # 10 ms long: more than the php-cgi has processes


def fastcgi_get(path: str, script: str) -> bytes:
    """One request on a connection of its own, as lighttpd sends it: the STDOUT."""
    request = (fastcgi.begin_request(1, fastcgi.RESPONDER, False)
               + fastcgi.params(1, {"SCRIPT_FILENAME": script, "REQUEST_METHOD": "GET",
                                    "SCRIPT_NAME": "/hello.php", "GATEWAY_INTERFACE":
                                    "CGI/1.1", "SERVER_PROTOCOL": "HTTP/1.1"})
               + fastcgi.record(fastcgi.STDIN, 1))
    reader = fastcgi.RecordReader()
    stdout = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(DEADLINE)
        sock.connect(path)
        sock.sendall(request)
        while True:
            data = sock.recv(65536)
            if not data:
                return stdout
            for record in reader.feed(data):
                if record.type == fastcgi.STDOUT:
                    stdout += record.content
                elif record.type == fastcgi.END_REQUEST:
                    return stdout


@pytest.fixture
def sockets(tmp_path):
    """A short directory for the php-cgi socket (sun_path holds 108 bytes)."""
    directory = Path(f"/tmp/keepconn-{tmp_path.name[-20:]}")
    directory.mkdir(exist_ok=True)
    yield directory
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


def php_cgi_of_four(sockets: Path) -> str:
    """One php-cgi spawned by the master, with four children on one socket."""
    return f"""
server.modules = ("mod_indexfile", "mod_fastcgi", "mod_staticfile")
fastcgi.server = ( ".php" => ( ( "bin-path" => "{PHP_CGI}", "socket" => "{sockets}/php.sock",
                                 "max-procs" => 1,
                                 "bin-environment" => ( "PHP_FCGI_CHILDREN" => "4",
                                                        "PHP_FCGI_MAX_REQUESTS" => "0" ) ) ) )
"""


def test_kept_connections_leave_a_php_process_to_others(tmp_path, sockets) -> None:
    with serving(tmp_path, php_cgi_of_four(sockets)) as server:
        script = server.docroot / "hello.php"
        script.write_text("<?php usleep(10000); echo 'Hello, world!';\n")
        wait_until(lambda: list(sockets.glob("php.sock*")))
        backend = str(next(sockets.glob("php.sock*")))
        assert get(server.port, "/hello.php")[::2] == (200, b"Hello, world!")
        statuses: list[int] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    statuses.append(get(server.port, "/hello.php")[0])
                except OSError:
                    statuses.append(0)        # no answer within get()'s timeout

        loaders = [threading.Thread(target=load) for _ in range(LOADERS)]
        for loader in loaders:
            loader.start()
        try:
            wait_until(lambda: len(statuses) > 50, timeout=DEADLINE)
            for _ in range(20):
                assert fastcgi_get(backend, str(script)).endswith(b"Hello, world!")
            wait_until(lambda: len(statuses) > 100, timeout=DEADLINE)
        finally:
            stop.set()
            for loader in loaders:
                loader.join(DEADLINE)
        assert set(statuses) == {200}
        assert fastcgi_get(backend, str(script)).endswith(b"Hello, world!")
