"""Guarantees under hostile load, against a real pylighttpd (master and two workers).

    python loadtests/hostile.py                    # full size: 30 HUPs, 1,000 slow, 20,000 idle
    python loadtests/hostile.py --compare          # also the hold scenarios against lighttpd
    python loadtests/hostile.py --hups 10 --slow 200 --idle 2000    # what the tests run

Scenarios, each a row of the table printed at the end:

- `hups`: `kill -HUP` to the master every `--interval` seconds while Python clients
  (keep-alive and new connections, every body checked) and wrk (if installed) load it;
  a failed, reset or wrong answer fails the row.
- `broken:KIND`: a broken config of each kind is refused on HUP, the old workers keep
  serving the old config under load (an unknown key is only warned about, as lighttpd
  does: that reload goes through).
- `slowloris`, `slow-body`, `slow-reader`: `--slow` connections held (a header byte a
  second; a body byte a second; a 10 MiB answer never read), while normal requests on
  new connections are answered.
- `idle`: `--idle` keep-alive connections, each after one answered request, held at
  once (RLIMIT_NOFILE is raised here and server.max-fds in the server), while normal
  requests are answered; how many stay open.

Everything targets 127.0.0.1 and ends by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import multiprocessing
import os
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from load_util import Load  # noqa: E402
from loadtests.bench import RunningServer, make_docroot, wrk_counts  # noqa: E402
from serverproc import Server, get, wait_until  # noqa: E402

BODY = b"hello from pylighttpd\n"          # what serverproc.Server puts in index.html
BIG = "/10m.bin"
PAGE = "/index.html"
PROBE_TIMEOUT = 5.0
HOLDER_TIMEOUT = 60.0
ANSWER_TIMEOUT = 20.0
IDLE_PER_PROCESS = 9000
IDLE_BATCH = 500
LIGHTTPD_IDLE = 16000


@dataclass
class Row:
    server: str
    scenario: str
    passed: bool
    detail: str
    figures: dict = field(default_factory=dict)


# ---------------------------------------------------------------- reloads
def server_settings(max_fds: int) -> str:
    """The settings the hostile runs add to serverproc.Server's config.  Each worker may
    take nearly all its descriptors in connections: SO_REUSEPORT does not split them
    exactly in half."""
    max_fds = min(max_fds, open_files_limit())
    return (f"server.max-fds = {max_fds}\nserver.max-connections = {max_fds * 9 // 10}\n"
            "server.graceful-shutdown-timeout = 5\nserver.max-keep-alive-requests = 100000\n"
            # held idle for as long as bench.py's lighttpd config holds them
            "server.max-keep-alive-idle = 120\n"
            'server.tag = "good"\n')


def retag(server: Server, settings: str, tag: str) -> None:
    server.write_config(settings.replace('server.tag = "good"', f'server.tag = "{tag}"'))


def log_since(server: Server, offset: int) -> str:
    with open(server.errorlog, "rb") as log_file:
        log_file.seek(offset)
        return log_file.read().decode(errors="replace")


def log_size(server: Server) -> int:
    return server.errorlog.stat().st_size if server.errorlog.exists() else 0


def hups_under_load(server: Server, settings: str, hups: int, interval: float,
                    use_wrk: bool) -> Row:
    """A HUP every `interval` s (each with a new server.tag) under load: nothing fails."""
    offset = log_size(server)
    wrk = start_wrk(server.port, hups * interval + 1) if use_wrk else None
    with Load(server.port, BODY) as load:
        for number in range(hups):
            retag(server, settings, f"hup-{number}")
            server.process.send_signal(signal.SIGHUP)
            time.sleep(interval)
        last = f"hup-{hups - 1}"
        wait_until(lambda: get(server.port)[1].get("Server") == last, timeout=30)
    wrk_requests, wrk_failed = finish_wrk(wrk)
    server.write_config(settings)
    wait_until(lambda: len(server.children()) == 2, timeout=30)
    reloads = log_since(server, offset).count("reloaded ")
    result = load.result
    failed = len(result.failures) + result.retried_idle + wrk_failed
    return Row("pylighttpd", "hups", failed == 0 and reloads >= 1,
               f"{hups} HUPs, {reloads} reloads, {result.ok + wrk_requests} requests, "
               f"{failed} failed", {"hups": hups, "reloads": reloads, "ok": result.ok,
                                    "failures": result.failures[:5],
                                    "retried_idle": result.retried_idle,
                                    "wrk_requests": wrk_requests, "wrk_failed": wrk_failed})


def start_wrk(port: int, seconds: float) -> subprocess.Popen | None:
    if not shutil.which("wrk"):
        return None
    return subprocess.Popen(["wrk", "-t1", "-c20", f"-d{seconds:.0f}s", "--timeout", "10s",
                             f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)


def finish_wrk(wrk: subprocess.Popen | None) -> tuple[int, int]:
    """(requests, failed: socket errors and non-2xx/3xx answers) of a wrk run."""
    if wrk is None:
        return 0, 0
    requests, errors, non2xx = wrk_counts(wrk.communicate(timeout=120)[0])
    return requests, errors + non2xx


@dataclass
class BrokenConfig:
    kind: str
    breaks: Callable[[str, int], str]   # (good config text, a port in use) -> broken
    refused: bool = True                # False: only warned about, as lighttpd does


def _replace_line(prefix: str, new: str) -> Callable[[str, int], str]:
    def breaks(text: str, _busy: int) -> str:
        return "\n".join(new if line.startswith(prefix) else line
                         for line in text.splitlines()) + "\n"
    return breaks


def _append(line: str) -> Callable[[str, int], str]:
    return lambda text, busy: text + line.format(busy=busy) + "\n"


BROKEN_CONFIGS = [
    BrokenConfig("syntax-error", _append('server.name = "no closing quote')),
    BrokenConfig("bad-type", _append('server.max-read-idle = "long"')),
    BrokenConfig("missing-docroot", _replace_line("server.document-root", "")),
    BrokenConfig("bad-listen-address", _replace_line("server.bind",
                                                     'server.bind = "300.1.2.3"')),
    BrokenConfig("port-in-use", _append('$SERVER["socket"] == "127.0.0.1:{busy}" {{ }}')),
    BrokenConfig("unknown-module", _append('server.modules += ("mod_no_such_module")')),
    BrokenConfig("missing-include", _append('include "/nonexistent/pylighttpd-extra.conf"')),
    BrokenConfig("unwritable-errorlog", _replace_line(
        "server.errorlog", 'server.errorlog = "/nonexistent/dir/error.log"')),
    BrokenConfig("bad-regex", _append('$HTTP["url"] =~ "^/(unclosed" {{ }}')),
    BrokenConfig("unknown-key", _append("server.no-such-key = 1"), refused=False),
]


def broken_reloads(server: Server, settings: str) -> list[Row]:
    """Each broken config on HUP under load: refused, the old workers still serving."""
    server.write_config(settings)
    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: get(server.port)[1].get("Server") == "good", timeout=30)
    good = server.conf.read_text()
    rows = []
    with holding_a_port() as busy, Load(server.port, BODY, keepalive_clients=1,
                                        fresh_clients=1) as load:
        for case in BROKEN_CONFIGS:
            rows.append(_one_broken_reload(server, case, case.breaks(good, busy)))
            server.conf.write_text(good)
    failed = len(load.result.failures) + load.result.retried_idle
    for row in rows:
        row.figures["load_failures_all_kinds"] = failed
        if failed:
            row.passed = False
            row.detail += f"; {failed} requests failed during the broken reloads"
    return rows


def _one_broken_reload(server: Server, case: BrokenConfig, text: str) -> Row:
    wait_until(lambda: len(server.children()) == 2, timeout=30)   # no worker draining
    before = server.children()
    offset = log_size(server)
    server.conf.write_text(text)
    server.process.send_signal(signal.SIGHUP)
    said = REFUSALS if case.refused else ("reloaded ",)
    try:
        line = wait_until(lambda: _logged(log_since(server, offset), said), timeout=30)
    except AssertionError:
        return Row("pylighttpd", f"broken:{case.kind}", False,
                   f"not {said} in the error log: {log_since(server, offset)[-300:]!r}")
    status, headers, body = get(server.port)
    serving = status == 200 and body == BODY and headers.get("Server") == "good"
    try:
        wait_until(lambda: server.children() == before if case.refused
                   else len(server.children()) == 2, timeout=30)
        kept = True
    except AssertionError:
        kept = False
    alive = server.process.poll() is None
    return Row("pylighttpd", f"broken:{case.kind}", serving and kept and alive,
               f"{'refused' if case.refused else 'warned'}: {line}",
               {"old_workers_kept": kept, "still_serving": serving})


REFUSALS = ("reload refused", "reload aborted")


def _logged(log: str, phrases: tuple[str, ...]) -> str | None:
    """The first error log line that says one of `phrases`, without its timestamp."""
    for line in log.splitlines():
        if any(phrase in line for phrase in phrases):
            return line.partition(") ")[2]
    return None


@contextlib.contextmanager
def holding_a_port() -> Iterator[int]:
    """A loopback port that a listening socket of ours holds (no SO_REUSEPORT)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


# ------------------------------------------------------------ slow clients
SLOW_KINDS = {
    # kind: (first bytes, what each later tick sends; None: never read, send nothing)
    "slowloris": (b"GET / HTTP/1.1\r\nHost: x\r\n", b"X-a: b\r\n"),
    "slow-body": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n", b"x"),
    "slow-reader": (f"GET {BIG} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), None),
}


class HeldConnections:
    """`count` connections of one slow kind, trickled by one thread about once a second."""

    def __init__(self, port: int, kind: str, count: int) -> None:
        self.first, self.trickle = SLOW_KINDS[kind]
        self.sockets = open_many(port, count, receive_buffer=4096 if self.trickle is None
                                 else 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._step = 0

    def __enter__(self) -> "HeldConnections":
        for sock in self.sockets:
            send_quietly(sock, self.first)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            if self.trickle is not None:
                self._step += 1
                for sock in self.sockets:
                    send_quietly(sock, self.trickle)

    def still_open(self) -> int:
        return sum(is_open(sock) for sock in self.sockets)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self.sockets:
            sock.close()


def hold_slow(server_name: str, port: int, kind: str, count: int, seconds: float,
              probes: int) -> Row:
    """Hold `count` slow connections for `seconds`; normal requests meanwhile."""
    with HeldConnections(port, kind, count) as held:
        time.sleep(seconds / 2)
        latencies, failures = probe(port, probes)
        time.sleep(seconds / 2)
        still = held.still_open()
    worst = max(latencies, default=0.0)
    return Row(server_name, kind, not failures,
               f"{count} held ({still} still open); {len(latencies)}/{probes} normal "
               f"requests answered, slowest {worst * 1000:.0f} ms",
               {"held": count, "still_open": still, "probes_ok": len(latencies),
                "probe_failures": failures[:5], "slowest_probe_s": worst})


def probe(port: int, count: int) -> tuple[list[float], list[str]]:
    """`count` GETs on new connections: (latencies of the good ones, failures)."""
    latencies, failures = [], []
    for _ in range(count):
        start = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
        try:
            connection.request("GET", PAGE)
            response = connection.getresponse()
            if response.status == 200 and response.read():
                latencies.append(time.monotonic() - start)
            else:
                failures.append(f"status {response.status}")
        except (OSError, http.client.HTTPException) as err:
            failures.append(f"{type(err).__name__}: {err}")
        finally:
            connection.close()
    return latencies, failures


# -------------------------------------------------------------- idle ones
def open_files_limit() -> int:
    """The hard RLIMIT_NOFILE: what one process may hold (raising it needs
    CAP_SYS_RESOURCE, which even root may lack in a container)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def raise_open_files(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def open_many(port: int, count: int, receive_buffer: int = 0) -> list[socket.socket]:
    """`count` connections, from 127.0.0.2-5 in turn (four times the ephemeral ports)."""
    raise_open_files(count + 1024)
    sockets = []
    try:
        for number in range(count):
            sock = socket.socket()
            sockets.append(sock)
            if receive_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.bind((f"127.0.0.{2 + number % 4}", 0))
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what fits; a full buffer or a connection the server closed is the point."""
    try:
        sock.send(data)
    except OSError:
        pass


def is_open(sock: socket.socket) -> bool:
    """Not closed by the server (nothing to read, or unread answer bytes waiting)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def hold_idle(server_name: str, port: int, count: int, probes: int) -> Row:
    """`count` keep-alive connections after one answered request each, held at once by
    as many client processes as the open files limit needs."""
    share = max(min(IDLE_PER_PROCESS, open_files_limit() - 1024), 1)
    holders = [IdleHolder(port, min(share, count - start))
               for start in range(0, count, share)]
    try:
        answered = sum(holder.report() for holder in holders)
        latencies, failures = probe(port, probes)
        time.sleep(1.0)
        still = sum(holder.report(ask=True) for holder in holders)
    finally:
        for holder in holders:
            holder.stop()
    worst = max(latencies, default=0.0)
    return Row(server_name, "idle", answered == count and still == count and not failures,
               f"{count} connections, {answered} answered, {still} still open; "
               f"{len(latencies)}/{probes} normal requests, slowest {worst * 1000:.0f} ms",
               {"connections": count, "answered": answered, "still_open": still,
                "probe_failures": failures[:5], "slowest_probe_s": worst})


class IdleHolder:
    """A forked client process holding `count` idle keep-alive connections.  It reports
    how many got their answer, then, when asked, how many are still open, and exits."""

    def __init__(self, port: int, count: int) -> None:
        context = multiprocessing.get_context("fork")
        self.channel, child_end = context.Pipe()
        self.process = context.Process(target=_hold_idle, args=(port, count, child_end),
                                       daemon=True)
        self.process.start()
        child_end.close()

    def report(self, ask: bool = False) -> int:
        if ask:
            self.channel.send("still open?")
        if not self.channel.poll(HOLDER_TIMEOUT):
            raise TimeoutError(f"an idle holder said nothing in {HOLDER_TIMEOUT} s")
        return self.channel.recv()

    def stop(self) -> None:
        self.channel.close()
        self.process.join(timeout=HOLDER_TIMEOUT)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _hold_idle(port: int, count: int, channel) -> None:
    """The holder process: connect and ask in batches, report, hold, report, exit."""
    sockets: list[socket.socket] = []
    answered = 0
    try:
        for start in range(0, count, IDLE_BATCH):
            group = open_many(port, min(IDLE_BATCH, count - start))
            sockets += group
            answered += answer_once(group)
    except OSError:
        pass                  # fewer answered than asked for: the row says so
    channel.send(answered)
    if channel.poll(HOLDER_TIMEOUT):
        channel.recv()
        channel.send(sum(is_open(sock) for sock in sockets))


def answer_once(group: list[socket.socket]) -> int:
    """Send one request on each and read its whole answer; how many got a 200 (within
    ANSWER_TIMEOUT for the whole group)."""
    request = f"GET {PAGE} HTTP/1.1\r\nHost: idle\r\n\r\n".encode()
    for sock in group:
        send_quietly(sock, request)         # a few dozen bytes: a fresh socket takes them
    received = dict.fromkeys(group, b"")
    answered = 0
    deadline = time.monotonic() + ANSWER_TIMEOUT
    with selectors.DefaultSelector() as selector:
        for sock in group:
            selector.register(sock, selectors.EVENT_READ)
        while received and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1.0):
                sock = key.fileobj
                try:
                    chunk = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                received[sock] += chunk
                if chunk and not received[sock].endswith(BODY):
                    continue
                answered += received.pop(sock).startswith(b"HTTP/1.1 200")
                selector.unregister(sock)
    return answered


# ------------------------------------------------------------------ running
def pylighttpd_rows(base: Path, args: argparse.Namespace) -> list[Row]:
    max_fds = max(4 * args.idle, 4096)
    settings = server_settings(max_fds)
    server = Server(base, settings)
    rows: list[Row] = []
    try:
        server.wait_serving()
        (server.docroot / BIG.lstrip("/")).write_bytes(os.urandom(10 * 1024 * 1024))
        rows.append(hups_under_load(server, settings, args.hups, args.interval,
                                    use_wrk=not args.no_wrk))
        rows += broken_reloads(server, settings)
        rows += slow_rows("pylighttpd", server.port, args)
        rows.append(idle_on_enough_workers(server, settings, args))
    finally:
        server.stop()
    return rows


def slow_rows(name: str, port: int, args: argparse.Namespace) -> list[Row]:
    return [hold_slow(name, port, kind, args.slow, args.hold, args.probes)
            for kind in SLOW_KINDS]


def idle_on_enough_workers(server: Server, settings: str, args: argparse.Namespace) -> Row:
    """The idle row, on more than two workers if the open files limit needs them."""
    workers = workers_for(args.idle)
    if workers > 2:
        retag(server, settings + f"server.max-worker := {workers}\n", "idle")
        server.process.send_signal(signal.SIGHUP)
        # the new generation serves, and the old one (whose idle connections would
        # end at its graceful timeout) is gone
        wait_until(lambda: get(server.port)[1].get("Server") == "idle", timeout=30)
        wait_until(lambda: len(server.children()) == workers, timeout=30)
    row = hold_idle("pylighttpd", server.port, args.idle, args.probes)
    if workers > 2:
        row.detail += (f" ({workers} workers: with RLIMIT_NOFILE {open_files_limit()} a "
                       f"worker takes at most {open_files_limit() // 2})")
    return row


def workers_for(connections: int) -> int:
    """Workers that hold `connections` at once: a worker takes at most half its fd
    limit (lighttpd's rule), and SO_REUSEPORT splits them only about evenly."""
    per_worker = open_files_limit() // 2 * 9 // 10
    return max(2, -(-connections // per_worker))


def lighttpd_rows(base: Path, args: argparse.Namespace) -> list[Row]:
    """The hold scenarios against lighttpd, on bench.py's config: its 9,000 connections
    per worker cap the idle ones at LIGHTTPD_IDLE."""
    docroot = make_docroot(base)
    (docroot / "index.html").write_bytes(BODY)
    server = RunningServer("lighttpd", docroot, base, accesslog=False)
    try:
        return slow_rows("lighttpd", server.port, args) + [
            hold_idle("lighttpd", server.port, min(args.idle, LIGHTTPD_IDLE), args.probes)]
    finally:
        server.stop()


def print_table(rows: list[Row]) -> None:
    width = max(len(row.scenario) for row in rows)
    print(f"{'server':<11} {'scenario':<{width}} result  detail")
    for row in rows:
        print(f"{row.server:<11} {row.scenario:<{width}} {'ok' if row.passed else 'FAIL':<7} "
              f"{row.detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hups", type=int, default=30)
    parser.add_argument("--interval", type=float, default=0.7, help="seconds between HUPs")
    parser.add_argument("--slow", type=int, default=1000, help="slow connections per kind")
    parser.add_argument("--hold", type=float, default=6.0, help="seconds to hold them")
    parser.add_argument("--idle", type=int, default=20000)
    parser.add_argument("--probes", type=int, default=20, help="normal requests per hold")
    parser.add_argument("--no-wrk", action="store_true", help="Python clients only")
    parser.add_argument("--compare", action="store_true", help="also run lighttpd")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        base = Path(tmp)
        (base / "py").mkdir()
        rows = pylighttpd_rows(base / "py", args)
        if args.compare and shutil.which("lighttpd"):
            (base / "lighttpd").mkdir()
            rows += lighttpd_rows(base / "lighttpd", args)
    print_table(rows)
    return 0 if all(row.passed for row in rows if row.server == "pylighttpd") else 1


if __name__ == "__main__":
    sys.exit(main())
