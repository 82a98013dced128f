"""Time HTTP/2 requests in one process: a real Server (the benchmark's config and
docroot) speaks h2c to clients made of the h2 library over socketpairs, each round
`--streams` requests at once on every connection (as `h2load -m`), the worker's loop
run until every answer is in.  The figure is the worker's CPU time per request (the
clients' time is left out; CPU time rather than wall time, so that the other
programs of a shared machine hardly move it); `--profile` runs the worker's side
under cProfile and prints the top functions by own time.

    python loadtests/h2_microbench.py                 # 1k.bin, 10 connections x 10
    python loadtests/h2_microbench.py --profile
    python loadtests/h2_microbench.py --tls           # h2 over TLS (ALPN), as h2load
"""

from __future__ import annotations

import argparse
import os
import cProfile
import pstats
import socket
import sys
import tempfile
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.microbench import build  # noqa: E402
from loadtests.tls_microbench import MemoryTLS, build_tls, connect_tls  # noqa: E402
from worker.server import Server  # noqa: E402


class H2Client:
    """One client connection: sends a batch of GETs, takes in what comes back; over
    TLS (ALPN h2) to the socket `tls_spec` when given, else h2c."""

    def __init__(self, server: Server, tls_spec: str = "") -> None:
        self.sock: socket.socket | MemoryTLS
        if tls_spec:
            self.sock = connect_tls(server, tls_spec, alpn="h2")
        else:
            self.sock, end = socket.socketpair()
            self.sock.setblocking(False)
            server.add_connection(end, "127.0.0.1", "127.0.0.1:8080")
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.open = 0

    def send_batch(self, path: str, streams: int) -> None:
        for _ in range(streams):
            stream = self.h2.get_next_available_stream_id()
            self.h2.send_headers(stream, [(":method", "GET"), (":path", path),
                                          (":scheme", "http"), (":authority", "127.0.0.1")],
                                 end_stream=True)
        self.open += streams
        self.flush()

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)

    def take_in(self) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        if not data:
            return
        for event in self.h2.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                self.h2.acknowledge_received_data(event.flow_controlled_length,
                                                  event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                self.open -= 1
        self.flush()


def one_round(server: Server, clients: list[H2Client], path: str, streams: int,
              profiler: cProfile.Profile | None) -> float:
    for client in clients:
        client.send_batch(path, streams)
    spent = 0.0
    deadline = time.monotonic() + 10
    while any(c.open for c in clients):
        if time.monotonic() > deadline:
            raise RuntimeError("the worker stopped answering")
        start = time.thread_time()
        if profiler is not None:
            profiler.enable()
        server.loop.run_once(0.0)
        if profiler is not None:
            profiler.disable()
        spent += time.thread_time() - start
        for client in clients:
            client.take_in()
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/1k.bin")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--tls", action="store_true", help="h2 over TLS, not h2c")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.tls:
            server, spec = build_tls(Path(tmp))
        else:
            server, spec = build(Path(tmp), False, 0)[0], ""
        clients = [H2Client(server, spec) for _ in range(args.connections)]
        for _ in range(20):                                 # warm the caches
            one_round(server, clients, args.path, args.streams, None)
        profiler = cProfile.Profile() if args.profile else None
        times = sorted(one_round(server, clients, args.path, args.streams, profiler)
                       for _ in range(args.rounds))
        per_request = times[len(times) // 10] / (args.connections * args.streams)
        print(f"{args.path}: {per_request * 1e6:.1f} us/request over HTTP/2"
              f"{' over TLS' if args.tls else ''} "
              f"({args.connections} connections x {args.streams} streams, 10th "
              f"percentile of {args.rounds} rounds)")
        if profiler is not None:
            top = int(os.environ.get("TOP", "30"))
            pstats.Stats(profiler).sort_stats("tottime").print_stats(top)
        server.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
