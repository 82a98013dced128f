"""The gateway modules' resource limits, measured on a real master with one worker.

    python loadtests/gateway_limits.py                      # full size: 1 GiB, 1,000 aborts
    python loadtests/gateway_limits.py --size-mib 64 --aborts 100 --throttle-seconds 2

For every `--modes` value M (server.stream-request-body = server.stream-response-body
= M) it starts pylighttpd (`server.max-worker = 1`, mod_proxy and mod_cgi) in front of
a lighttpd serving a sparse file of `--size-mib` and of discard_backend.py, then:

- upload: a POST of `--size-mib` of zeros to tests/cgi/sum.py, whose answer (length,
  sha256) is checked;
- download: the sparse file through the proxy, read as fast as the client can;
- throttled: the same read at `--rate-kib`/s for `--throttle-seconds`, then closed;
- aborts: `--aborts` clients each for a CGI POST and a proxied POST cut mid-body, and
  for a CGI answer (tests/cgi/flood.sh) and a proxied answer (a sparse file), both of
  4 MiB, cut mid-answer; half close their end (FIN), half reset it (RST).

The worker's RSS is sampled every 50 ms during each transfer (psutil); its peak must
stay under `--rss-limit-mib`.  After every row the worker's fds (by kind), its child
processes and the files in server.upload-dirs are counted again, once the worker had
up to `--settle-seconds` to let go: what stays above the count taken before the row
is a leak.  Spool files are unlinked as soon as they are made, so one left over shows
as a `file` fd ("(deleted)"), not in the directory.  Exit status 1 when a limit is
exceeded or something is left behind.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import psutil

from bench import PeakRss, free_port, wait_listening

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20
PIECE = MIB
ABORT_BODY = 4 * MIB          # what a cut POST announces; it sends a quarter of it
CUT_ANSWER = 4 * MIB           # what a cut answer would be whole (mode 0 takes it all first)
SAMPLE_SECONDS = 0.05


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


class Backends:
    """A lighttpd serving /big/zero.bin (sparse, `size` bytes) and discard_backend.py,
    which reads POST bodies and throws them away."""

    def __init__(self, base: Path, size: int) -> None:
        docroot = base / "backend"
        (docroot / "big").mkdir(parents=True)
        with open(docroot / "big" / "zero.bin", "wb") as sparse:
            sparse.truncate(size)
        with open(docroot / "big" / "cut.bin", "wb") as sparse:
            sparse.truncate(CUT_ANSWER)
        (docroot / "big" / "small.bin").write_bytes(b"x" * 1024)
        self.static_port, self.discard_port = free_port(), free_port()
        conf = base / "backend.conf"
        conf.write_text(f'server.document-root = "{docroot}"\nserver.bind = "127.0.0.1"\n'
                        f'server.port = {self.static_port}\nserver.max-keep-alive-idle = 1\n'
                        f'server.errorlog = "{base}/backend-error.log"\n')
        self.static = subprocess.Popen(["lighttpd", "-D", "-f", str(conf)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        self.discard = subprocess.Popen(
            [sys.executable, str(REPO / "loadtests" / "discard_backend.py"),
             str(self.discard_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.static_port, self.static)
        wait_listening(self.discard_port, self.discard)

    def stop(self) -> None:
        stop_process(self.static)
        stop_process(self.discard)


class Front:
    """pylighttpd, one worker, streaming mode `mode` both ways."""

    def __init__(self, base: Path, backends: Backends, mode: int) -> None:
        self.base = base / f"front-{mode}"
        self.spool = self.base / "spool"
        self.spool.mkdir(parents=True)
        cgi = self.base / "www" / "cgi"
        cgi.mkdir(parents=True)
        for script in ("sum.py", "flood.sh"):
            shutil.copy(REPO / "tests" / "cgi" / script, cgi / script)
        self.port = free_port()
        conf = self.base / "front.conf"
        conf.write_text(self._config(backends, mode))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "master.cli", "-D", "-f", str(conf)], cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
            start_new_session=True)
        wait_listening(self.port, self.process)
        self.worker = self._the_worker()

    def _config(self, backends: Backends, mode: int) -> str:
        host = '"host" => "127.0.0.1"'
        return (f'server.document-root = "{self.base / "www"}"\nserver.bind = "127.0.0.1"\n'
                f'server.port = {self.port}\nserver.max-worker = 1\n'
                'server.modules = ("mod_proxy", "mod_cgi", "mod_staticfile")\n'
                f'server.errorlog = "{self.base / "error.log"}"\n'
                f'server.upload-dirs = ("{self.spool}")\n'
                f"server.stream-request-body = {mode}\nserver.stream-response-body = {mode}\n"
                f'cgi.assign = (".py" => "{sys.executable}", ".sh" => "/bin/sh")\n'
                f'proxy.server = ( "/big/" => (( {host}, "port" => {backends.static_port} )),\n'
                f'  "/post/" => (( {host}, "port" => {backends.discard_port} )) )\n')

    def _the_worker(self) -> psutil.Process:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            children = psutil.Process(self.process.pid).children()
            if len(children) == 1:
                return children[0]
            time.sleep(0.05)
        raise RuntimeError("the master did not start its one worker")

    def stop(self) -> None:
        stop_process(self.process)


@dataclass(frozen=True)
class Leftovers:
    """What the worker holds between requests: fds by kind, children, spool files."""

    fds: Counter
    children: int
    spool_files: int

    def above(self, before: "Leftovers") -> dict[str, int]:
        """What this count has more of than `before` (nothing: an empty dict)."""
        grown = {f"{kind} fds": count - before.fds[kind]
                 for kind, count in self.fds.items() if count > before.fds[kind]}
        if self.children > before.children:
            grown["children"] = self.children - before.children
        if self.spool_files > before.spool_files:
            grown["spool files"] = self.spool_files - before.spool_files
        return grown


def fd_kind(target: str) -> str:
    for prefix in ("socket", "pipe", "anon_inode"):
        if target.startswith(prefix):
            return prefix
    return "file"


def count_leftovers(front: Front) -> Leftovers:
    fd_dir = f"/proc/{front.worker.pid}/fd"
    kinds: Counter = Counter()
    for name in os.listdir(fd_dir):
        try:
            kinds[fd_kind(os.readlink(f"{fd_dir}/{name}"))] += 1
        except FileNotFoundError:   # the fd that listed the directory, or one just closed
            continue
    return Leftovers(kinds, len(front.worker.children(recursive=True)),
                     len(os.listdir(front.spool)))


def settled(front: Front, before: Leftovers, seconds: float) -> Leftovers:
    """The count once nothing is above `before`, or as it is after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        now = count_leftovers(front)
        if not now.above(before) or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def quiet_count(front: Front) -> Leftovers:
    """The count once the previous row's scripts are reaped (a row starts from there)."""
    deadline = time.monotonic() + 10
    while front.worker.children(recursive=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    return count_leftovers(front)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response head and the body bytes that came with it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed in the head: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def status_line(head: bytes) -> bytes:
    return head.split(b"\r\n", 1)[0]


def post_head(path: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
            ).encode()


def get_head(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()


def read_to_end(sock: socket.socket, received: int = 0) -> int:
    while chunk := sock.recv(PIECE):
        received += len(chunk)
    return received


@dataclass
class Row:
    """One line of the table."""

    mode: int
    name: str
    transferred: int = 0
    seconds: float = 0.0
    start_rss: int = 0
    peak_rss: int = 0
    samples: int = 0
    left: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def upload(front: Front, size: int) -> tuple[int, list[str]]:
    """POST `size` zeros to sum.py; the bytes sent and what was wrong with the answer."""
    digest = hashlib.sha256()
    zeros = bytes(PIECE)
    with connect(front.port) as sock:
        sock.sendall(post_head("/cgi/sum.py", size))
        left = size
        while left:
            piece = zeros[:min(left, PIECE)]
            sock.sendall(piece)
            digest.update(piece)
            left -= len(piece)
        head, body = read_head(sock)
        while chunk := sock.recv(65536):
            body += chunk
    expected = f"read={size}\n{digest.hexdigest()}".encode()
    if not head.startswith(b"HTTP/1.1 200") or expected not in body:
        return size, [f"answer {status_line(head)!r} {body[:200]!r}"]
    return size, []


def download(front: Front, size: int) -> tuple[int, list[str]]:
    """The sparse file through the proxy, read at full speed."""
    with connect(front.port) as sock:
        sock.sendall(get_head("/big/zero.bin"))
        head, body = read_head(sock)
        received = read_to_end(sock, len(body))
    if not head.startswith(b"HTTP/1.1 200") or received != size:
        return received, [f"got {received} of {size} bytes, {status_line(head)!r}"]
    return received, []


def throttled(front: Front, rate: int, seconds: float) -> tuple[int, list[str]]:
    """The sparse file read at `rate` bytes/s for `seconds`, then the connection closed."""
    with connect(front.port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(get_head("/big/zero.bin"))
        head, body = read_head(sock)
        received, start = len(body), time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            ahead = received / rate - elapsed
            if ahead > 0:
                time.sleep(min(ahead, seconds - elapsed))
                continue
            chunk = sock.recv(64 * 1024)
            if not chunk:
                break
            received += len(chunk)
    if not head.startswith(b"HTTP/1.1 200") or received < rate * seconds * 0.9:
        return received, [f"only {received} bytes in {seconds} s, {status_line(head)!r}"]
    return received, []


def close_abruptly(sock: socket.socket, reset: bool) -> None:
    """Close with a FIN, or with a RST (SO_LINGER 0) when `reset`."""
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def cut_mid_body(port: int, path: str, reset: bool, pause: float) -> int:
    """A POST announcing ABORT_BODY bytes, a quarter sent, then the client gone."""
    sock = connect(port)
    sock.sendall(post_head(path, ABORT_BODY) + bytes(ABORT_BODY // 4))
    time.sleep(pause)
    close_abruptly(sock, reset)
    return ABORT_BODY // 4


def cut_mid_answer(port: int, path: str, reset: bool, pause: float) -> int:
    """A GET whose answer the client leaves once 64 KiB of it came."""
    sock = connect(port)
    sock.sendall(get_head(path))
    head, body = read_head(sock)
    received = len(body)
    while received < 64 * 1024 and (chunk := sock.recv(65536)):
        received += len(chunk)
    time.sleep(pause)
    close_abruptly(sock, reset)
    return received


ABORTS: dict[str, tuple[Callable[[int, str, bool, float], int], str]] = {
    "cgi POST cut mid-body": (cut_mid_body, "/cgi/sum.py"),
    "proxy POST cut mid-body": (cut_mid_body, "/post/discard"),
    "cgi answer cut": (cut_mid_answer, f"/cgi/flood.sh?{CUT_ANSWER}"),
    "proxy answer cut": (cut_mid_answer, "/big/cut.bin"),
}


def aborts(front: Front, name: str, count: int, pause: float) -> tuple[int, list[str]]:
    cut, path = ABORTS[name]
    sent = sum(cut(front.port, path, index % 2 == 1, pause) for index in range(count))
    return sent, []


def warm_up(front: Front) -> None:
    """One whole exchange of every kind, so that pools and lazy state exist before the
    first count (a pooled backend connection is not a leak)."""
    for request in (post_head("/cgi/sum.py", 3) + b"abc", post_head("/post/x", 3) + b"abc",
                    get_head("/big/small.bin"), get_head("/cgi/flood.sh?10")):
        with connect(front.port) as sock:
            sock.sendall(request)
            read_head(sock)
            read_to_end(sock)


def measured(front: Front, row: Row, run: Callable[[], tuple[int, list[str]]],
             options: argparse.Namespace) -> Row:
    """`run` with the worker's RSS sampled, then what it left behind counted."""
    before = quiet_count(front)
    row.start_rss = front.worker.memory_info().rss
    start = time.monotonic()
    with PeakRss(lambda: front.worker.memory_info().rss, SAMPLE_SECONDS) as rss:
        try:
            row.transferred, row.problems = run()
        except OSError as error:
            row.problems = [f"client failed: {error!r}"]
    row.seconds = time.monotonic() - start
    row.peak_rss, row.samples = rss.peak, rss.samples
    row.left = settled(front, before, options.settle_seconds).above(before)
    if row.peak_rss > options.rss_limit_mib * MIB:
        row.problems.append(f"peak RSS {row.peak_rss / MIB:.1f} MiB over the limit")
    if row.left:
        row.problems.append(f"left behind: {row.left}")
    return row


def rows_for_mode(base: Path, backends: Backends, mode: int,
                  options: argparse.Namespace) -> Iterator[Row]:
    front = Front(base, backends, mode)
    size = options.size_mib * MIB
    try:
        warm_up(front)
        yield measured(front, Row(mode, "cgi upload"), lambda: upload(front, size), options)
        yield measured(front, Row(mode, "proxy download"), lambda: download(front, size),
                       options)
        yield measured(front, Row(mode, f"proxy at {options.rate_kib} KiB/s"),
                       lambda: throttled(front, options.rate_kib * 1024,
                                         options.throttle_seconds), options)
        for name in ABORTS:
            yield measured(front, Row(mode, f"{options.aborts} x {name}"),
                           lambda name=name: aborts(front, name, options.aborts,
                                                    options.abort_pause_ms / 1000), options)
    finally:
        front.stop()


def print_row(row: Row) -> None:
    rate = row.transferred / row.seconds / 1e6 if row.seconds else 0.0
    left = ", ".join(f"{count} {what}" for what, count in row.left.items()) or "none"
    verdict = "ok" if not row.problems else "FAIL: " + "; ".join(row.problems)
    print(f"| {row.mode} | {row.name} | {row.transferred / MIB:.0f} | {row.seconds:.1f} | "
          f"{rate:.0f} | {row.start_rss / MIB:.1f} | {row.peak_rss / MIB:.1f} ({row.samples}) "
          f"| {left} | {verdict} |", flush=True)


def parse_options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024,
                        help="upload and download size (default 1024)")
    parser.add_argument("--aborts", type=int, default=1000, help="clients cut per kind")
    parser.add_argument("--throttle-seconds", type=float, default=30.0)
    parser.add_argument("--rate-kib", type=int, default=1024, help="throttled read rate")
    parser.add_argument("--modes", default="0,1,2",
                        help="server.stream-request-body/-response-body values to run")
    parser.add_argument("--rss-limit-mib", type=float, default=64.0)
    parser.add_argument("--settle-seconds", type=float, default=10.0,
                        help="how long the worker may take to let go after a row")
    parser.add_argument("--abort-pause-ms", type=float, default=5.0,
                        help="how long a cut client waits before it closes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {options.size_mib} MiB, "
          f"RSS limit {options.rss_limit_mib:g} MiB")
    print("| mode | row | MiB | s | MB/s | RSS MiB before | peak RSS MiB (samples) "
          "| left behind | verdict |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    failed = False
    with tempfile.TemporaryDirectory(prefix="gateway-limits-") as tmp:
        backends = Backends(Path(tmp), options.size_mib * MIB)
        try:
            for mode in (int(value) for value in options.modes.split(",")):
                for row in rows_for_mode(Path(tmp), backends, mode, options):
                    print_row(row)
                    failed |= bool(row.problems)
        finally:
            backends.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
