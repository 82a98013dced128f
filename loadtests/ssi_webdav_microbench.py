"""What a small SSI page and a Depth: 1 PROPFIND of a 100-file collection cost,
pylighttpd beside lighttpd 1.4.69.

Both servers read one config (mod_ssi for `.shtml`, mod_webdav with its SQLite
database on /dav/) and one docroot: `page.shtml`, a small page with an `include
virtual`, an `include file` and three `echo`s (DATE_LOCAL, DOCUMENT_NAME,
LAST_MODIFIED); /dav/, a collection of 100 small files, a few with dead properties.

    .venv/bin/python loadtests/ssi_webdav_microbench.py              # wrk, side by side
    .venv/bin/python loadtests/ssi_webdav_microbench.py --seconds 3 --rounds 3
    .venv/bin/python loadtests/ssi_webdav_microbench.py --in-process [--profile]

Side by side (the default): each row runs with wrk against each server in turn, the
order alternating between rounds; reported are the median req/s and the server's CPU
µs per request (its whole process tree), and both as ratios to lighttpd.
`--in-process` runs one pylighttpd worker in this process over socketpairs (as
loadtests/microbench.py does) and gives the worker's time per request, the figure to
optimise against; `--profile` prints where that time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loadtests.microbench import Requests, connect, run  # noqa: E402
from master.configload import load  # noqa: E402
from worker.server import Server  # noqa: E402
from worker.settled import SETTLED  # noqa: E402

WORKERS = 2
MEMBERS = 100
PAGE = """<!DOCTYPE html>
<html><head><title>SSI bench</title></head>
<body>
<!--#include virtual="/header.html" -->
<p>Served at <!--#echo var="DATE_LOCAL" --> as <!--#echo var="DOCUMENT_NAME" -->.</p>
<!--#include file="footer.html" -->
<p>Last changed <!--#echo var="LAST_MODIFIED" -->.</p>
</body></html>
"""
NAMED_PROPS = ('<?xml version="1.0" encoding="utf-8"?>\n'
               '<D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/>'
               '<D:getlastmodified/><D:resourcetype/><D:getetag/></D:prop></D:propfind>\n')
ALLPROP = ('<?xml version="1.0" encoding="utf-8"?>\n'
           '<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>\n')


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    path: str
    body: str = ""
    status: int = 200

    def request(self) -> bytes:
        head = f"{self.method} {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if self.body:
            head += (f"Depth: 1\r\nContent-Type: application/xml\r\n"
                     f"Content-Length: {len(self.body.encode())}\r\n")
        return (head + "\r\n" + self.body).encode()

    def wrk_script(self, base: Path) -> Path:
        script = base / f"{self.name}.lua"
        script.write_text(f'wrk.method = "{self.method}"\n'
                          f'wrk.body = [[{self.body}]]\n'
                          + ('wrk.headers["Depth"] = "1"\n'
                             'wrk.headers["Content-Type"] = "application/xml"\n'
                             if self.body else ""))
        return script


ROWS = (
    Row("ssi-small", "GET", "/page.shtml"),
    Row("propfind-100-allprop", "PROPFIND", "/dav/", ALLPROP, 207),
    Row("propfind-100-named", "PROPFIND", "/dav/", NAMED_PROPS, 207),
)


def make_site(base: Path) -> Path:
    """The docroot: the SSI page and its includes, the 100-file collection and its
    database (dead properties on every tenth file); returned once its files have
    settled (worker/settled.py), as a site's files mostly are."""
    docroot = base / "www"
    (docroot / "dav").mkdir(parents=True)
    (docroot / "page.shtml").write_text(PAGE)
    (docroot / "header.html").write_text("<header><h1>pylighttpd</h1></header>\n" * 4)
    (docroot / "footer.html").write_text("<footer>the end of the page</footer>\n" * 4)
    for number in range(MEMBERS):
        (docroot / "dav" / f"file-{number:03}.txt").write_text("x" * (number * 10))
    database = base / "webdav.db"
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("CREATE TABLE properties (resource TEXT NOT NULL, prop TEXT NOT NULL,"
                   " ns TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(resource, prop, ns))")
        db.executemany("INSERT INTO properties VALUES (?, 'author', 'urn:bench', ?)",
                       [(f"/dav/file-{n:03}.txt", f"writer {n}") for n in range(0, MEMBERS, 10)])
        db.commit()
    time.sleep(SETTLED)          # files as a site has them: not changed this instant
    return docroot


def write_config(base: Path, docroot: Path, name: str, port: int) -> Path:
    """One config text for pylighttpd and lighttpd."""
    path = base / f"{name}.conf"
    path.write_text(
        f'server.document-root = "{docroot}"\nserver.bind = "127.0.0.1"\n'
        f"server.port = {port}\nserver.max-worker = {WORKERS}\n"
        'server.modules = ("mod_ssi", "mod_webdav", "mod_staticfile")\n'
        "server.max-keep-alive-requests = 1000000\nserver.max-fds = 4096\n"
        'mimetype.assign = (".html" => "text/html", ".txt" => "text/plain")\n'
        f'server.errorlog = "{base}/{name}-error.log"\n'
        'ssi.extension = (".shtml")\n'
        '$HTTP["url"] =~ "^/dav/" {\n  webdav.activate = "enable"\n'
        f'  webdav.sqlite-db-name = "{base}/webdav.db"\n}}\n')
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ side by side
class RunningServer:
    def __init__(self, name: str, base: Path, docroot: Path) -> None:
        self.name = name
        self.port = free_port()
        conf = write_config(base, docroot, name, self.port)
        command = ([sys.executable, "-m", "master.cli", "-D", "-f", str(conf)]
                   if name == "pylighttpd" else ["lighttpd", "-D", "-f", str(conf)])
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"GET /header.html HTTP/1.0\r\n\r\n")
                if sock.recv(12).startswith(b"HTTP/1."):
                    time.sleep(0.3)                  # every worker up
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def cpu_seconds(self) -> float:
        root = psutil.Process(self.process.pid)
        total = 0.0
        for process in (root, *root.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def check(server: RunningServer, row: Row) -> None:
    """One request first: the row measures what it means to."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(row.request())
        status = sock.recv(64).split(b" ", 2)[1]
    if int(status) != row.status:
        raise RuntimeError(f"{server.name} answers {row.name} with {status.decode()}")


def wrk(server: RunningServer, row: Row, seconds: int, base: Path) -> tuple[float, float]:
    """(req/s, server CPU µs per request)."""
    command = ["wrk", "-t2", "-c20", f"-d{seconds}s", "-s", str(row.wrk_script(base)),
               f"http://127.0.0.1:{server.port}{row.path}"]
    before = server.cpu_seconds()
    output = subprocess.run(command, capture_output=True, text=True,
                            timeout=seconds + 60).stdout
    cpu = server.cpu_seconds() - before
    requests = int(output.split(" requests in")[0].rsplit(None, 1)[1])
    if "Non-2xx" in output:
        raise RuntimeError(f"{server.name}: {row.name}: {output}")
    return requests / seconds, cpu * 1e6 / max(requests, 1)


def side_by_side(rows: list[Row], seconds: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        docroot = make_site(base)
        servers = []
        for name in ("pylighttpd", "lighttpd"):
            server = RunningServer(name, base, docroot)
            stack.callback(server.stop)
            servers.append(server)
        print(f"{'row':22} {'server':11} {'req/s':>9} {'cpu us/req':>11} "
              f"{'x lighttpd':>10} {'cpu x l':>8}")
        for row in rows:
            figures: dict[str, list[tuple[float, float]]] = {s.name: [] for s in servers}
            for server in servers:
                check(server, row)
            for number in range(rounds):
                for server in servers[::1 if number % 2 == 0 else -1]:
                    figures[server.name].append(wrk(server, row, seconds, base))
            medians = {name: (statistics.median(r for r, _ in found),
                              statistics.median(c for _, c in found))
                       for name, found in figures.items()}
            reference = medians["lighttpd"]
            for name, (rate, cpu) in medians.items():
                print(f"{row.name:22} {name:11} {rate:9.0f} {cpu:11.1f} "
                      f"{rate / reference[0]:10.2f} {cpu / reference[1]:8.2f}")


# ------------------------------------------------------------------ in process
def in_process(rows: list[Row], rounds: int, profile: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        docroot = make_site(base)
        server = Server(load(str(write_config(base, docroot, "micro", 8080))), [])
        clients = connect(server, 10)
        for row in rows:
            request = Requests([row.request()])
            run(server, clients, request, 20)            # warm the caches
            if profile:
                profiler = cProfile.Profile()
                profiler.enable()
                run(server, clients, request, rounds)
                profiler.disable()
                print(f"--- {row.name}")
                pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
                continue
            figure = run(server, clients, request, rounds)
            print(f"{row.name:22} {figure * 1e6:8.1f} us/request in the worker")
        server.close_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(row.name for row in ROWS))
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    rows = [row for row in ROWS if row.name in args.only.split(",")]
    if args.in_process or args.profile:
        in_process(rows, max(args.rounds, 200), args.profile)
    else:
        side_by_side(rows, args.seconds, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
