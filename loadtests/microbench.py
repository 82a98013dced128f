"""Time the request path in one process, without wrk or a second core in the way.

A real Server (the benchmark's config and docroot) gets `--connections` socketpairs;
each round writes one request to every client end, then runs the worker's event loop
until every answer has been sent.  The figure is the time spent in the worker's loop
per request, the 10th percentile of the rounds, and beside it their mean: a round
that a GC run falls into is a slow one, so a gap between the two is worth a look.
Socketpairs are cheaper than TCP, so compare runs with each other, not with the wrk
figures.  `--profile` runs the same loop under cProfile and prints the top functions
by own time.

    python loadtests/microbench.py                    # 1k.bin, keep-alive
    python loadtests/microbench.py --path /dir/ --profile
    python loadtests/microbench.py --no-answer-cache  # the general path, every request
    python loadtests/microbench.py --browser          # many files, varied browser headers
    python loadtests/microbench.py --scenario propfind-100-nocache

`--browser` is the production-shaped case (bench.py's files-browser row): `--files`
small files spread over directories, each request for one of them at random with
browser headers that vary (User-Agent, Cookie, Referer), so that neither answer table
has seen it byte for byte.

`--scenario NAME` runs one of bench.py's rows in process instead: its setup (modules,
settings, backends such as php-cgi), and the requests wrk sends for it (method, path,
headers, body, a new query string each time for a `-nocache` twin), once the files
the caches may keep have settled (worker/settled.py).  Rows over TLS, HTTP/2, uploads
and traffic mixes have no such form.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.bench import (SCENARIOS, SETUPS, WRK, Scenario, Site, free_port,  # noqa: E402
                             lighttpd_style_config, make_docroot, write_lighttpd_config)
from master.configload import load  # noqa: E402
from worker.settled import SETTLED  # noqa: E402
from worker.server import Server  # noqa: E402

Result = TypeVar("Result")

REQUEST = ("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: microbench\r\n"
           "Accept: */*\r\n\r\n")


USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
)

BROWSER_REQUEST = (
    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: {agent}\r\n"
    "Accept: image/avif,image/webp,image/apng,image/*,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n"
    "Referer: http://127.0.0.1:8080/page{serial}.html\r\n"
    "Cookie: session={serial:016x}; theme=dark\r\nConnection: keep-alive\r\n\r\n")


def make_files(docroot: Path, count: int, chooser: random.Random) -> list[str]:
    """`count` files of 2-12 KiB in directories of 100; returns their URL paths."""
    paths = []
    for number in range(count):
        directory = docroot / f"files{number // 100:03d}"
        directory.mkdir(exist_ok=True)
        (directory / f"{number:05d}.png").write_bytes(b"x" * chooser.randint(2048, 12288))
        paths.append(f"/files{number // 100:03d}/{number:05d}.png")
    return paths


def browser_requests(paths: list[str], count: int, chooser: random.Random) -> list[bytes]:
    """`count` requests for files chosen at random, no two alike."""
    return [BROWSER_REQUEST.format(path=chooser.choice(paths), serial=serial,
                                   agent=USER_AGENTS[serial % len(USER_AGENTS)]).encode()
            for serial in range(count)]


def build(base: Path, accesslog: bool, files: int) -> tuple[Server, list[str]]:
    """The server, and the URL paths of the `files` many small files (none when 0)."""
    docroot = make_docroot(base)
    paths = make_files(docroot, files, random.Random(15))
    config = load(str(lighttpd_style_config(docroot, 8080, base, accesslog, "micro")))
    return Server(config, []), paths


def scenario_named(name: str) -> Scenario:
    """bench.py's row `name`, if it has an in-process form (see the module docstring)."""
    scenario = next((row for row in SCENARIOS if row.name == name), None)
    if scenario is None or scenario.tls or scenario.traffic or scenario.pipeline \
            or scenario.client != WRK:
        raise SystemExit(f"microbench: no in-process form of the scenario {name!r}")
    return scenario


def build_scenario(base: Path, scenario: Scenario, stack: contextlib.ExitStack) -> Server:
    """The server of `scenario`'s setup, its backends started (stopped with `stack`),
    returned once its files have settled."""
    docroot = make_docroot(base)
    setup = SETUPS[scenario.setup]
    site = Site("micro", 8080, free_port(), docroot, base, False,
                setup.prepare(base, docroot, stack))
    server = Server(load(str(write_lighttpd_config(site, setup))), [])
    time.sleep(SETTLED + 0.2)
    return server


def scenario_requests(scenario: Scenario, count: int) -> list[bytes]:
    """What wrk sends for `scenario`: `count` requests, each with its own query string
    for a -nocache twin, else one."""
    body = scenario.body.encode()
    fields = "".join(f"{field}\r\n" for field in scenario.headers)
    fields += f"Content-Length: {len(body)}\r\n" if body else ""
    return [f"{scenario.method} {scenario.path}{f'?q={number}' if scenario.vary_query else ''}"
            f" HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n{fields}\r\n".encode() + body
            for number in range(count if scenario.vary_query else 1)]


def answer_status(server: Server, client: socket.socket, request: bytes) -> int:
    """The status of the worker's answer to `request` sent on `client` (what else of
    the answer comes is read with the next round's)."""
    client.setblocking(False)
    client.send(request)
    answer = b""
    deadline = time.monotonic() + 10
    while b"\r\n" not in answer and time.monotonic() < deadline:
        server.loop.run_once(0.01)
        with contextlib.suppress(BlockingIOError):
            answer += client.recv(1 << 16)
    client.setblocking(True)
    return int(answer.split(b" ", 2)[1]) if b"\r\n" in answer else 0


def connect(server: Server, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        client, end = socket.socketpair()
        server.add_connection(end, "127.0.0.1", "127.0.0.1:8080")
        clients.append(client)
    return clients


class Requests:
    """What each round sends: the same request again, or the next ones of a list."""

    def __init__(self, requests: list[bytes]) -> None:
        self.requests = requests
        self.sent = 0

    def next(self) -> bytes:
        request = self.requests[self.sent % len(self.requests)]
        self.sent += 1
        return request


def one_round(server: Server, clients: list[socket.socket], requests: Requests) -> float:
    """Send one request on every connection, let the worker answer them all and read
    the answers; returns the time spent in the worker's loop."""
    for client in clients:
        client.send(requests.next())
    expected = {c: c.requests_done + 1 for c in server.connections.values()}
    spent = 0.0
    deadline = time.monotonic() + 10
    while True:
        if time.monotonic() > deadline or any(c.closed for c in expected):
            raise RuntimeError("the worker stopped answering: see its error log above")
        start = time.thread_time()
        server.loop.run_once(0.0)
        spent += time.thread_time() - start
        if all(c.requests_done == done and c.held is None and not c.out.chunks
               for c, done in expected.items()):     # a held request is counted already
            break
    for client in clients:
        client.recv(1 << 20)
    return spent


def run(server: Server, clients: list[socket.socket], requests: Requests, rounds: int
        ) -> float:
    """Worker time per request: the 10th percentile of the rounds, so that what else
    the machine does (it shares its cores) hardly moves the figure."""
    return run_with_mean(server, clients, requests, rounds)[0]


def run_with_mean(server: Server, clients: list[socket.socket], requests: Requests,
                  rounds: int) -> tuple[float, float]:
    """`run`'s figure and the mean over all rounds: the rounds a GC run falls into are
    the slow ones, so only the mean shows what collecting costs."""
    times = sorted(one_round(server, clients, requests) for _ in range(rounds))
    return times[len(times) // 10] / len(clients), sum(times) / rounds / len(clients)


def profiled(enabled: bool, function: Callable[..., Result], *args: Any) -> Result:
    """function(*args), under cProfile when `enabled`: its top functions printed ($TOP
    of them, 25 by default, sorted by $SORT, own time by default)."""
    if not enabled:
        return function(*args)
    profiler = cProfile.Profile()
    result = profiler.runcall(function, *args)
    pstats.Stats(profiler).sort_stats(os.environ.get("SORT", "tottime")).print_stats(
        int(os.environ.get("TOP", "25")))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/1k.bin")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--accesslog", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-answer-cache", action="store_true",
                        help="answer every request through the pipeline")
    parser.add_argument("--browser", action="store_true",
                        help="many files at random, with varied browser headers")
    parser.add_argument("--files", type=int, default=2000, help="how many, for --browser")
    parser.add_argument("--scenario", help="one of bench.py's rows, in process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if args.scenario:
            scenario = scenario_named(args.scenario)
            server = build_scenario(Path(tmp), scenario, stack)
            requests = Requests(scenario_requests(scenario, 50_000))
        else:
            server, paths = build(Path(tmp), args.accesslog,
                                  args.files if args.browser else 0)
            requests = Requests(browser_requests(paths, 50_000, random.Random(16))
                                if args.browser else [REQUEST.format(path=args.path).encode()])
        if args.no_answer_cache:
            server.pipeline.answers.reads = None
        clients = connect(server, args.connections)
        if args.scenario:
            status = answer_status(server, clients[0], requests.requests[-1])
            if (status >= 400) != (scenario.expect_status >= 400) or not status:
                raise SystemExit(f"microbench: {scenario.name} answered {status}, "
                                 f"not {scenario.expect_status}")   # as wrk counts errors
        warm_rounds = 20 + (args.files // args.connections if args.browser else 0)
        run(server, clients, requests, warm_rounds)   # warm the caches
        figure, mean = profiled(args.profile, run_with_mean, server, clients, requests,
                                args.rounds)
        what = args.scenario or (f"{args.files} files, browser headers" if args.browser
                                 else args.path)
        print(f"{what}: {figure * 1e6:.1f} us/request ({args.connections} connections, "
              f"10th percentile of {args.rounds} rounds; mean {mean * 1e6:.1f})")
        server.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
