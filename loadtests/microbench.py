"""Time the request path in one process, without wrk or a second core in the way.

A real Server (the benchmark's config and docroot) gets `--connections` socketpairs;
each round writes one request to every client end, then runs the worker's event loop
until every answer has been sent.  The figure is the time spent in the worker's loop
per request: socketpairs are cheaper than TCP, so compare runs with each other, not
with the wrk figures.  `--profile` runs the same loop under cProfile and prints the top
functions by own time.

    python loadtests/microbench.py                    # 1k.bin, keep-alive
    python loadtests/microbench.py --path /dir/ --profile
    python loadtests/microbench.py --no-answer-cache  # the general path, every request
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.bench import lighttpd_style_config, make_docroot  # noqa: E402
from master.configload import load  # noqa: E402
from worker.server import Server  # noqa: E402

REQUEST = ("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: microbench\r\n"
           "Accept: */*\r\n\r\n")


def build(base: Path, accesslog: bool) -> tuple[Server, list[socket.socket]]:
    docroot = make_docroot(base)
    config = load(str(lighttpd_style_config(docroot, 8080, base, accesslog, "micro")))
    return Server(config, []), []


def connect(server: Server, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        client, end = socket.socketpair()
        server.add_connection(end, "127.0.0.1", "127.0.0.1:8080")
        clients.append(client)
    return clients


def one_round(server: Server, clients: list[socket.socket], request: bytes) -> float:
    """Send one request on every connection, let the worker answer them all and read
    the answers; returns the time spent in the worker's loop."""
    for client in clients:
        client.send(request)
    expected = {c: c.requests_done + 1 for c in server.connections.values()}
    spent = 0.0
    deadline = time.monotonic() + 10
    while True:
        if time.monotonic() > deadline or any(c.closed for c in expected):
            raise RuntimeError("the worker stopped answering: see its error log above")
        start = time.perf_counter()
        server.loop.run_once(0.0)
        spent += time.perf_counter() - start
        if all(c.requests_done == done and not c.out.chunks for c, done in expected.items()):
            break
    for client in clients:
        client.recv(1 << 20)
    return spent


def run(server: Server, clients: list[socket.socket], request: bytes, rounds: int) -> float:
    """Worker time per request: the 10th percentile of the rounds, so that what else
    the machine does (it shares its cores) hardly moves the figure."""
    times = sorted(one_round(server, clients, request) for _ in range(rounds))
    return times[len(times) // 10] / len(clients)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/1k.bin")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--accesslog", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-answer-cache", action="store_true",
                        help="answer every request through the pipeline")
    args = parser.parse_args()
    request = REQUEST.format(path=args.path).encode()
    with tempfile.TemporaryDirectory() as tmp:
        server, _ = build(Path(tmp), args.accesslog)
        if args.no_answer_cache:
            server.pipeline.answers.reads = None
        clients = connect(server, args.connections)
        run(server, clients, request, 20)            # warm the caches
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            run(server, clients, request, args.rounds)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            return 0
        figure = run(server, clients, request, args.rounds)
        print(f"{args.path}: {figure * 1e6:.1f} us/request "
              f"({args.connections} connections, 10th percentile of {args.rounds} rounds)")
        server.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
