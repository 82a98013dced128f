"""Real FastCGI, SCGI and uwsgi backends for the gateway tests, each on a unix socket in
a temp directory, started by the tests and stopped after them: php-cgi (`php-cgi -b`),
php-fpm (a pool config of its own), the WSGI app of gw_app.py under flup (FastCGI,
SCGI) or uwsgi (uwsgi protocol, SCGI), and a backend that answers garbage.  Each is
bounded in time: a backend that is not listening after START_TIMEOUT fails the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

APP = Path(__file__).with_name("gw_app.py")
START_TIMEOUT = 15.0
PHP_SCRIPTS = {
    "hello.php": "<?php echo 'Hello, world!';\n",
    "info.php": """<?php
header("X-Php: yes");
foreach (["REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "PATH_TRANSLATED", "REQUEST_URI",
          "QUERY_STRING", "CONTENT_LENGTH", "SCRIPT_FILENAME", "DOCUMENT_ROOT", "USER"]
         as $k) echo "$k=" . ($_SERVER[$k] ?? "-") . "\\n";
$body = file_get_contents("php://input");
echo "BODY=" . strlen($body) . " " . md5($body) . "\\n";
""",
    "status.php": "<?php http_response_code(418); echo 'teapot';\n",
    "redirect.php": "<?php header('Location: http://example.com/elsewhere');\n",
    "stderr.php": "<?php error_log('a line for the error log'); echo 'logged';\n",
    "sendfile.php": "<?php header('X-Sendfile: ' . $_GET['f']);\n",
}


def which_or_skip(program: str) -> str:
    import pytest
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed")
    return path


def write_php_site(docroot: Path) -> None:
    docroot.mkdir(parents=True, exist_ok=True)
    for name, text in PHP_SCRIPTS.items():
        (docroot / name).write_text(text)


class BackendProcess:
    """A backend listening on `path` (a unix socket); stop() ends it and its children."""

    def __init__(self, argv: list[str], path: str, env: dict[str, str] | None = None,
                 cwd: str | None = None, stop_signal: int = signal.SIGTERM) -> None:
        self.path = path
        self.stop_signal = stop_signal
        self.log = open(path + ".log", "wb")
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})}, cwd=cwd,
                                        start_new_session=True)
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(self.path)
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"backend {self.path} did not listen: "
                           f"{Path(self.path + '.log').read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.log.close()

    def __enter__(self) -> "BackendProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def php_cgi(path: str, children: int = 0) -> BackendProcess:
    """php-cgi -b on a unix socket (children: PHP_FCGI_CHILDREN)."""
    program = which_or_skip("php-cgi")
    return BackendProcess([program, "-b", path], path,
                          {"PHP_FCGI_CHILDREN": str(children),
                           "PHP_FCGI_MAX_REQUESTS": "0"})


def php_fpm(base: Path, path: str, children: int = 2) -> BackendProcess:
    """php-fpm in the foreground with a pool of its own on a unix socket."""
    program = shutil.which("php-fpm8.2") or which_or_skip("php-fpm")
    conf = base / "php-fpm.conf"
    user = "" if os.geteuid() else "user = root\ngroup = root\n"   # with -R
    conf.write_text(f"""[global]
pid = {base}/php-fpm.pid
error_log = {base}/php-fpm.log
daemonize = no
[test]
{user}listen = {path}
listen.mode = 0666
pm = static
pm.max_children = {children}
catch_workers_output = yes
""")
    argv = [program, "-F", "-y", str(conf)] + (["-R"] if os.geteuid() == 0 else [])
    return BackendProcess(argv, path)


def flup(kind: str, path: str) -> BackendProcess:
    """gw_app.py under flup: kind "fcgi" or "scgi"; or "garbage"."""
    if kind != "garbage":
        import pytest
        pytest.importorskip("flup", reason="the flup package is not installed")
    return BackendProcess([sys.executable, str(APP), kind, path], path)


def uwsgi(path: str, protocol: str) -> BackendProcess:
    """gw_app.py under uwsgi, speaking "uwsgi" or "scgi" on `path`."""
    program = which_or_skip("uwsgi")
    option = "--socket" if protocol == "uwsgi" else "--scgi-socket"
    plugin = f"python{sys.version_info.major}"          # Debian's uwsgi-plugin-python3
    return BackendProcess([program, "--plugin", plugin, option, path,
                           "--wsgi-file", str(APP), "--processes", "1", "--threads", "4",
                           "--disable-logging", "--master"], path,
                          cwd=str(APP.parent), stop_signal=signal.SIGKILL)  # it lingers 1 s


@contextlib.contextmanager
def backends_in(prefix: str) -> Iterator[tuple[Path, list[BackendProcess]]]:
    """A short directory for unix sockets (sun_path holds 108 bytes) and a list for the
    backends started there: all stopped, their sockets and the directory removed after."""
    sockets = Path(f"/tmp/{prefix}-{os.getpid()}")
    sockets.mkdir(exist_ok=True)
    started: list[BackendProcess] = []
    try:
        yield sockets, started
    finally:
        for backend in started:
            backend.stop()
        for path in sockets.iterdir():
            path.unlink()
        sockets.rmdir()


def variables(body: bytes) -> dict[str, str]:
    """The NAME=value lines of gw_app.py's or info.php's answer."""
    return dict(line.split("=", 1) for line in body.decode().splitlines() if "=" in line)


def fastcgi_server(sockets: Path, sendable: Path) -> str:
    """fastcgi.server for gw_app.py (app.sock), php-cgi (php.sock) and garbage.sock in
    the usual layouts, and a fix-root-scriptname host root.test."""
    app = f'"socket" => "{sockets}/app.sock", "check-local" => "disable"'
    return f"""
fastcgi.server = (
  "/auth/" => ( ( {app}, "mode" => "authorizer" ), ( {app} ) ),
  "/app" => ( ( {app} ) ),
  "/pre/" => ( ( {app} ) ),
  "/strip/" => ( ( {app}, "strip-request-uri" => "/strip/" ) ),
  "/remote/" => ( ( {app}, "docroot" => "/srv/remote" ) ),
  "/send/" => ( ( {app}, "x-sendfile" => "enable", "x-sendfile-docroot" => ( "{sendable}" ) ) ),
  "/slow/" => ( ( {app}, "read-timeout" => 1 ) ),
  "/down/" => ( ( "socket" => "{sockets}/nobody.sock", "check-local" => "disable" ) ),
  "/garbage/" => ( ( "socket" => "{sockets}/garbage.sock", "check-local" => "disable" ) ),
  ".php" => ( ( "socket" => "{sockets}/php.sock" ) ),
)
$HTTP["host"] == "root.test" {{
  fastcgi.server = ( "/" => ( ( {app}, "fix-root-scriptname" => "enable" ) ) )
}}
"""


class ScriptedFastCgi:
    """A FastCGI backend in a thread of the test: it reads each request (BEGIN_REQUEST,
    PARAMS, STDIN up to its empty record), keeps what it saw in `seen`, answers the
    bytes of `answer` in pieces of `piece` bytes and closes."""

    def __init__(self, path: str) -> None:
        import threading
        self.path = path
        self.answer = b""
        self.piece = 1 << 16
        self.seen: list[dict] = []
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with sock:
                sock.settimeout(5)
                try:
                    self.seen.append(self._read_request(sock))
                    for start in range(0, len(self.answer), self.piece):
                        sock.sendall(self.answer[start:start + self.piece])
                except OSError:
                    pass

    @staticmethod
    def _read_request(sock: socket.socket) -> dict:
        from worker import fastcgi
        reader = fastcgi.RecordReader()
        request: dict = {"params": b"", "stdin": b"", "stdin_records": 0}
        while True:
            data = sock.recv(65536)
            if not data:
                return request
            for record in reader.feed(data):
                kind, content = record.type, record.content
                request["id"] = record.request_id
                if kind == fastcgi.BEGIN_REQUEST:
                    request["role"], request["flags"] = content[1], content[2]
                elif kind == fastcgi.GET_VALUES:
                    request["asked"] = fastcgi.decode_pairs(content)
                elif kind == fastcgi.PARAMS:
                    request["params"] += content
                elif kind == fastcgi.STDIN:
                    if not content:
                        request["env"] = dict(fastcgi.decode_pairs(request["params"]))
                        return request
                    request["stdin"] += content
                    request["stdin_records"] += 1

    def stop(self) -> None:
        self.listener.close()
