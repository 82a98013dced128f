"""Time mod_deflate's request path in one process (loadtests/microbench.py's loop).

The benchmark's deflate setup (bench.py: `/gz/` compressed per request, `/cached/`
with `deflate.cache-dir`), every request with `Accept-Encoding: gzip`.  `--vary-query`
gives each request a new query string, so that no kept answer is replayed (the
bench's `-nocache` rows); `--profile` prints the top functions by own time.

    python loadtests/deflate_microbench.py --path /cached/100k.html
    python loadtests/deflate_microbench.py --path /gz/1k.txt --vary-query --profile
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.bench import DEFLATE, SETUPS, Site, free_port, make_docroot  # noqa: E402
from loadtests.bench import write_lighttpd_config  # noqa: E402
from loadtests.microbench import connect, profiled  # noqa: E402
from master.configload import load  # noqa: E402
from worker.server import Server  # noqa: E402

REQUEST = ("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: microbench\r\n"
           "Accept: */*\r\nAccept-Encoding: gzip\r\n\r\n")


def build(base: Path) -> Server:
    docroot = make_docroot(base)
    setup = SETUPS[DEFLATE]
    with contextlib.ExitStack() as stack:
        setup.prepare(base, docroot, stack)
    site = Site("micro", 8080, free_port(), docroot, base, False, {})
    return Server(load(str(write_lighttpd_config(site, setup))), [])


def one_round(server: Server, clients: list[socket.socket], requests: list[bytes]) -> float:
    """One request on every connection, answered and read: the worker's loop time."""
    for client, request in zip(clients, requests):
        client.send(request)
    expected = {c: c.requests_done + 1 for c in server.connections.values()}
    spent = 0.0
    deadline = time.monotonic() + 10
    while not all(c.requests_done == done and not c.out.chunks
                  for c, done in expected.items()):
        if time.monotonic() > deadline or any(c.closed for c in expected):
            raise RuntimeError("the worker stopped answering: see its error log above")
        start = time.perf_counter()
        server.loop.run_once(0.0)
        spent += time.perf_counter() - start
        for client in clients:
            with contextlib.suppress(BlockingIOError):
                while client.recv(1 << 20, socket.MSG_DONTWAIT):
                    pass
    return spent


def run(server: Server, clients: list[socket.socket], targets: itertools.count,
        path: str, vary: bool, rounds: int) -> float:
    """Worker time per request, the 10th percentile of the rounds."""
    def requests() -> list[bytes]:
        return [REQUEST.format(target=f"{path}?{next(targets)}" if vary else path).encode()
                for _ in clients]
    times = sorted(one_round(server, clients, requests()) for _ in range(rounds))
    return times[len(times) // 10] / len(clients)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/cached/100k.html")
    parser.add_argument("--vary-query", action="store_true")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    targets = itertools.count()
    with tempfile.TemporaryDirectory() as tmp:
        server = build(Path(tmp))
        clients = connect(server, args.connections)
        run(server, clients, targets, args.path, args.vary_query, 20)     # warm the caches
        figure = profiled(args.profile, run, server, clients, targets, args.path,
                          args.vary_query, args.rounds)
        print(f"{args.path}{' (new query each time)' if args.vary_query else ''}: "
              f"{figure * 1e6:.1f} us/request ({args.connections} connections, "
              f"10th percentile of {args.rounds} rounds)")
        server.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
