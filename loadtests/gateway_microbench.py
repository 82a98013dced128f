"""Time the gateway request path in one process: a worker's Server with mod_fastcgi or
mod_scgi in front of a real backend (php-cgi -b for FastCGI, a WSGI hello world under
uwsgi for SCGI) on a unix socket.

`--connections` socketpair clients each send one request per round; the worker's loop
runs (blocking in epoll while the backend works) until every answer is out.  The
figure is this process's CPU time per request (time.process_time: the backend's own
work is another process and not in it), the 10th percentile of the rounds.
`--profile` runs the rounds under cProfile and prints the top functions by own time.

    python loadtests/gateway_microbench.py                    # php-cgi, FastCGI (kept)
    python loadtests/gateway_microbench.py --no-keep-conn     # a connection per request
    python loadtests/gateway_microbench.py --scgi --profile   # uwsgi, SCGI
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.microbench import profiled  # noqa: E402
from master.configload import load  # noqa: E402
from worker.server import Server  # noqa: E402

REQUEST = ("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: microbench\r\n"
           "Accept: */*\r\n\r\n")
BODY = b"Hello, world!"
PHP_HELLO = "<?php echo 'Hello, world!';\n"
WSGI_HELLO = '''def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!"]
'''


def start_backend(base: Path, scgi: bool, children: int) -> tuple[subprocess.Popen, str]:
    """php-cgi -b (FastCGI) or uwsgi (SCGI) on a unix socket in `base`, listening."""
    sock = str(base / "backend.sock")
    if scgi:
        (base / "hello_wsgi.py").write_text(WSGI_HELLO)
        argv = [shutil.which("uwsgi") or "uwsgi", "--plugin", "python3", "--scgi-socket",
                sock, "--wsgi-file", str(base / "hello_wsgi.py"), "--processes",
                str(children), "--disable-logging", "--master"]
        env = dict(os.environ)
    else:
        argv = [shutil.which("php-cgi") or "php-cgi", "-b", sock]
        env = {**os.environ, "PHP_FCGI_CHILDREN": str(children),
               "PHP_FCGI_MAX_REQUESTS": "0"}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(sock)
            return process, sock
        except OSError:
            time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError("the backend did not listen")


def config_file(base: Path, sock: str, scgi: bool, keep_conn: bool) -> Path:
    """One worker's config (server.max-worker = 1: it may keep FCGI_MAX_CONNS - 1)."""
    docroot = base / "www"
    docroot.mkdir()
    (docroot / "hello.php").write_text(PHP_HELLO)
    (docroot / "1k.bin").write_bytes(os.urandom(1024))
    name = "scgi" if scgi else "fastcgi"
    keep = "" if keep_conn or scgi else 'fastcgi.keep-conn = "disable"\n'
    path = base / "micro.conf"
    path.write_text(
        f'server.document-root = "{docroot}"\nserver.bind = "127.0.0.1"\n'
        f'server.port = 8080\nserver.max-worker = 1\n'
        f'server.max-keep-alive-requests = 1000000\n'
        f'server.modules = ("mod_{name}", "mod_staticfile")\n'
        f'server.errorlog = "{base}/error.log"\n'
        'mimetype.assign = (".bin" => "application/octet-stream")\n'
        f'{name}.server = ( ".php" => ( ( "socket" => "{sock}" ) ) )\n{keep}')
    return path


class Clients:
    """The client ends of the worker's connections, with an epoll of their own: a
    round reads only those with an answer, so that the figure is the worker's work
    and not this loop's."""

    def __init__(self, server: Server, count: int) -> None:
        self.ready = select.epoll()
        self.by_fd: dict[int, socket.socket] = {}
        for _ in range(count):
            client, end = socket.socketpair()
            server.add_connection(end, "127.0.0.1", "127.0.0.1:8080")
            client.setblocking(False)
            self.ready.register(client.fileno(), select.EPOLLIN)
            self.by_fd[client.fileno()] = client

    def __len__(self) -> int:
        return len(self.by_fd)


def one_round(server: Server, clients: Clients, request: bytes) -> float:
    """One request on every connection, answered; the CPU time this process spent."""
    for client in clients.by_fd.values():
        client.send(request)
    answers = dict.fromkeys(clients.by_fd, b"")
    start = time.process_time()
    deadline = time.monotonic() + 10
    while answers:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker stopped answering: see its error log")
        server.loop.run_once(0.05)
        for fd, _ in clients.ready.poll(0):
            answer = answers[fd] = answers[fd] + clients.by_fd[fd].recv(1 << 20)
            if answer.endswith(BODY):
                if b" 200 " not in answer[:16]:
                    raise RuntimeError(f"unexpected answer: {answer[:200]!r}")
                del answers[fd]
    return time.process_time() - start


def run(server: Server, clients: Clients, request: bytes, rounds: int) -> float:
    times = sorted(one_round(server, clients, request) for _ in range(rounds))
    return times[len(times) // 10] / len(clients)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scgi", action="store_true", help="uwsgi over SCGI")
    parser.add_argument("--no-keep-conn", dest="keep_conn", action="store_false",
                        help='fastcgi.keep-conn = "disable"')
    parser.add_argument("--children", type=int, default=4)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    request = REQUEST.format(path="/hello.php").encode()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))    # stop the backend too
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        base = Path(tmp)
        backend, sock = start_backend(base, args.scgi, args.children)
        try:
            server = Server(load(str(config_file(base, sock, args.scgi, args.keep_conn))), [])
            clients = Clients(server, args.connections)
            run(server, clients, request, 50)          # warm up
            figure = profiled(args.profile, run, server, clients, request, args.rounds)
            print(f"{'scgi' if args.scgi else 'fastcgi'}"
                  f"{' keep-conn' if args.keep_conn and not args.scgi else ''}: "
                  f"{figure * 1e6:.1f} us CPU/request ({args.connections} connections, "
                  f"10th percentile of {args.rounds} rounds)")
            server.close_all()
        except RuntimeError:
            sys.stderr.write((base / "error.log").read_text(errors="replace")[-3000:])
            raise
        finally:
            os.killpg(backend.pid, signal.SIGKILL)
            backend.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
