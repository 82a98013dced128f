"""Time HTTPS requests in one process: a real Server (the benchmark's config, docroot
and TLS setup: a self-signed RSA 2048 certificate) gets `--connections` socketpairs
whose client ends speak TLS through Python's ssl module (a memory BIO each, so the
clients never block the worker's loop).  As loadtests/microbench.py: each round writes
one request on every connection and runs the worker's loop until every answer is out;
the figure is the worker's time per request (handshakes and the clients' time left
out).  `--profile` runs the worker under cProfile.  loadtests/h2_microbench.py --tls
uses the same clients for HTTP/2 over TLS.

    python loadtests/tls_microbench.py                    # 1k.bin, keep-alive
    python loadtests/tls_microbench.py --no-answer-cache  # the general path
    python loadtests/tls_microbench.py --profile
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.bench import SETUPS, TLS, Site, free_port, make_certificate  # noqa: E402
from loadtests.bench import make_docroot  # noqa: E402
from loadtests.bench import write_lighttpd_config  # noqa: E402
from loadtests.microbench import REQUEST, Requests, profiled, run  # noqa: E402
from master.configload import load  # noqa: E402
from worker.server import Server  # noqa: E402

HANDSHAKE_SECONDS = 10


def build_tls(base: Path) -> tuple[Server, str]:
    """The benchmark's TLS setup in this process: the server and its TLS socket's spec."""
    docroot = make_docroot(base)
    site = Site("micro", free_port(), free_port(), docroot, base, False,
                make_certificate(base, docroot, contextlib.ExitStack()))
    config = load(str(write_lighttpd_config(site, SETUPS[TLS])))
    return Server(config, []), f"127.0.0.1:{site.tls_port}"


class MemoryTLS:
    """TLS in memory over a non-blocking socket (the client end of a socketpair):
    Python's ssl module with a BIO pair, moved to and from the socket by hand, so
    that a client never blocks the loop it shares with the server."""

    def __init__(self, sock: socket.socket, alpn: str = "http/1.1") -> None:
        self.sock = sock
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # no CA store: nothing verified
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols([alpn])
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def handshake(self, serve: Callable[[], None]) -> None:
        """The client's side of the handshake; `serve` lets the server take a step."""
        deadline = time.monotonic() + HANDSHAKE_SECONDS
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not finish a handshake") from None
            self.flush()
            serve()
            self.take_in()
        self.flush()

    def flush(self) -> None:
        """What TLS made for the server, onto the socket."""
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def take_in(self) -> None:
        """What the socket has, into TLS."""
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            if not data:
                self.incoming.write_eof()
                return
            self.incoming.write(data)

    def send(self, data: bytes) -> int:
        self.tls.write(data)
        self.flush()
        return len(data)

    sendall = send

    def recv(self, _size: int = 0) -> bytes:
        """The plaintext of all that arrived (b"" when none did)."""
        self.take_in()
        parts = []
        while True:
            try:
                part = self.tls.read(1 << 20)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not part:                 # the server closed (after close_notify)
                break
            parts.append(part)
        self.flush()                     # what reading made (key updates, alerts)
        return b"".join(parts)


def connect_tls(server: Server, spec: str, alpn: str = "http/1.1") -> MemoryTLS:
    """A client connected to the server's TLS socket `spec`, handshake done."""
    sock, end = socket.socketpair()
    sock.setblocking(False)
    server.add_connection(end, "127.0.0.1", spec)
    client = MemoryTLS(sock, alpn)
    client.handshake(lambda: server.loop.run_once(0.0))
    return client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default="/1k.bin")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-answer-cache", action="store_true",
                        help="answer every request through the pipeline")
    args = parser.parse_args()
    request = Requests([REQUEST.format(path=args.path).encode()])
    with tempfile.TemporaryDirectory() as tmp:
        server, spec = build_tls(Path(tmp))
        if args.no_answer_cache:
            server.pipeline.answers.reads = None
        clients = [connect_tls(server, spec) for _ in range(args.connections)]
        run(server, clients, request, 20)            # warm the caches
        figure = profiled(args.profile, run, server, clients, request, args.rounds)
        print(f"{args.path}: {figure * 1e6:.1f} us/request over TLS "
              f"({args.connections} connections, 10th percentile of {args.rounds} rounds"
              f"{', no answer cache' if args.no_answer_cache else ''})")
        server.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
