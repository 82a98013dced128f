"""A small HTTP/1.1 application for the proxy tests, run in its own process.

`python proxy_backends.py NAME PORT_FILE [ADDRESS:PORT | UNIX_PATH]` serves on a free
loopback port (written to PORT_FILE once it listens), on the address given, or on a
unix socket, with keep-alive
connections, one thread per connection; `BackendProcess` runs it for a test.  What it
answers depends on the last segment of the path (`/any/prefix/big` is `/big`):

- `/echo...`: JSON of what arrived (method, target, headers in order, body) and NAME;
- `/big?n=N`: N bytes with Content-Length; `/chunked?n=N`: the same in chunks;
- `/close?n=N`: an HTTP/1.0-style body delimited by the connection's end;
- `/drip?n=N`: N KiB, one KiB each 10 ms (to see a proxy close it half-way);
- `/slow?s=S`: answers after S seconds; `/stall?s=S`: reads nothing for S seconds,
  then hangs up; `/garbage`: bytes that are no HTTP at all;
- `/hangup`: closes the connection without a word; `/arm`: answers, and hangs up on
  the next request that comes on the same connection;
- `/upgrade`: asked to upgrade to "shout", switches (101) and sends back in upper case
  what comes, until the client ends its side; else says it was not asked;
- `/status/NNN`: status NNN with an empty body;
- `/headers`: headers the proxy maps back (Location, Set-Cookie ...);
- `/hop`: hop-by-hop headers among end-to-end ones, and an empty one;
- `/stats`: how many connections were accepted and how many answers were cut off;
- `/raw?h=HEX`: those octets as the whole answer, then the connection's end.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

START_TIMEOUT = 10.0
# The per-URL proxy settings both proxy test files use, for the prefixes they name
PROXY_RULES = """
$HTTP["url"] =^ "/rr/" { proxy.balance = "round-robin" }
$HTTP["url"] =^ "/hash/" { proxy.balance = "hash" }
$HTTP["url"] =^ "/fwd/" {
  proxy.forwarded = ( "for" => 1, "by" => 1, "proto" => 1, "host" => 1 )
}
$HTTP["url"] =^ "/map/" {
  proxy.header = ( "map-urlpath" => ( "/map/" => "/app/" ),
                   "map-host-request" => ( "-" => "backend.internal" ),
                   "map-host-response" => ( "backend.internal" => "-" ) )
}
$HTTP["url"] =^ "/label/" { proxy.replace-http-host = "enable" }
$HTTP["url"] =^ "/http10-up/" { proxy.header = ( "upgrade" => "enable", "force-http10" => "enable" ) }
"""

PATTERN = bytes(range(256)) * 256     # 64 KiB of a recognisable byte sequence


def pattern(size: int) -> bytes:
    """`size` bytes of the repeating 0..255 sequence."""
    whole, rest = divmod(size, len(PATTERN))
    return PATTERN * whole + PATTERN[:rest]


class Counters:
    """What the tests ask the backend: accepted connections, answers cut off."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted = 0
        self.cut_off = 0

    def add(self, field: str) -> None:
        with self.lock:
            setattr(self, field, getattr(self, field) + 1)


class Counting:
    """What both listeners share: a name, counters, a deep accept queue."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    name = ""
    counters: Counters

    def get_request(self) -> tuple[socket.socket, object]:
        accepted = super().get_request()      # type: ignore[misc]
        self.counters.add("accepted")
        return accepted


class Backend(Counting, ThreadingHTTPServer):
    def __init__(self, name: str, address: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.name, self.counters = name, Counters()
        super().__init__(address, Handler)


class UnixBackend(Counting, socketserver.ThreadingUnixStreamServer):
    def __init__(self, name: str, path: str) -> None:
        self.name, self.counters = name, Counters()
        super().__init__(path, Handler)

    def get_request(self) -> tuple[socket.socket, object]:
        sock, _ = super().get_request()
        return sock, ("unix", 0)       # BaseHTTPRequestHandler wants a (host, port)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Backend

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        """Quiet: the tests read answers, not logs."""

    def do_GET(self) -> None:
        self._route()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = do_GET

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        parent, _, leaf = url.path.rpartition("/")
        path = f"/status/{leaf}" if parent.endswith("/status") else f"/{leaf}"
        size = int(query.get("n", "0"))
        if getattr(self, "armed", False) or path == "/stall":
            time.sleep(float(query.get("s", "0")))
            self.close_connection = True
            return
        self.body = self._read_body()
        if path.startswith("/status/"):
            self._answer(int(path[8:]), b"")
        elif path == "/big":
            self._answer(200, pattern(size), "application/octet-stream")
        elif path == "/chunked":
            self._chunked(pattern(size))
        elif path == "/close":
            self._close_delimited(pattern(size))
        elif path == "/drip":
            self._drip(size)
        elif path == "/slow":
            time.sleep(float(query.get("s", "1")))
            self._answer(200, b"slow\n")
        elif path == "/garbage":
            self.wfile.write(b"this is not HTTP\r\n\r\n")
            self.close_connection = True
        elif path == "/raw":
            self.wfile.write(bytes.fromhex(query.get("h", "")))
            self.close_connection = True
        elif path == "/hangup":
            self.close_connection = True
        elif path == "/upgrade":
            self._shout()
        elif path == "/arm":
            self.armed = True
            self._answer(200, b"armed\n")
        elif path == "/headers":
            self._remappable()
        elif path == "/hop":
            self._hop_by_hop()
        elif path == "/stats":
            counters = self.server.counters
            self._answer(200, json.dumps({"accepted": counters.accepted,
                                          "cut_off": counters.cut_off}).encode(),
                         "application/json")
        else:
            self._echo(url)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass                                  # trailers
        return b"".join(parts)

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain",
                extra: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in extra or ():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _echo(self, url) -> None:
        body = self.body
        report = {"server": self.server.name, "method": self.command,
                  "target": self.path, "version": self.request_version,
                  "headers": [[name, value] for name, value in self.headers.items()],
                  "body": body.decode("latin-1")}
        self._answer(200, json.dumps(report).encode(), "application/json",
                     [("X-Backend", self.server.name)])

    def _chunked(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for start in range(0, len(body), 10000):
            piece = body[start:start + 10000]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def _close_delimited(self, body: bytes) -> None:
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n")
        self.wfile.write(body)
        self.close_connection = True

    def _drip(self, kib: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(kib * 1024))
        self.end_headers()
        try:
            for _ in range(kib):
                self.wfile.write(b"d" * 1024)
                self.wfile.flush()
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            self.server.counters.add("cut_off")
            self.close_connection = True

    def _shout(self) -> None:
        connection = self.headers.get("Connection", "").lower()
        if self.headers.get("Upgrade") != "shout" or "upgrade" not in connection:
            self._answer(200, b"not asked to upgrade\n")
            return
        self.send_response(101)
        self.send_header("Upgrade", "shout")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        while data := self.rfile.read1(65536):
            self.wfile.write(data.upper())
            self.wfile.flush()
        self.close_connection = True

    def _remappable(self) -> None:
        self._answer(200, b"headers\n", extra=[
            ("Location", "http://backend.internal/app/next?x=1"),
            ("Content-Location", "/app/content"),
            ("Set-Cookie", "a=1; Domain=backend.internal; Path=/app/"),
            ("Set-Cookie", "b=2; path=/app"),
        ])

    def _hop_by_hop(self) -> None:
        self._answer(200, b"hop\n", extra=[
            ("Connection", "X-Hop"), ("X-Hop", "dropped"), ("Keep-Alive", "timeout=5"),
            ("X-End-To-End", "kept"), ("X-Empty", "")])


class BackendProcess:
    """The application in a process of its own, for a test: `port` (or `path` for a
    unix socket), `stats()` asked directly, `stop()`."""

    def __init__(self, name: str, workdir: Path, unix: bool = False,
                 address: str = "") -> None:
        """`address`: "IP:PORT" to listen on (default a free loopback port)."""
        port_file = workdir / f"backend-{name}.port"
        self.path = str(workdir / f"backend-{name}.sock") if unix else ""
        where = self.path or address
        args = [sys.executable, __file__, name, str(port_file)] + ([where] if where else [])
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while not port_file.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"backend {name} did not start")
            time.sleep(0.02)
        self.port = int(port_file.read_text())

    def stats(self) -> dict[str, int]:
        """The counters, over a connection of the test's own (it counts as accepted)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=5) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=5)


def main() -> int:
    name, port_file = sys.argv[1], sys.argv[2]
    where = sys.argv[3] if len(sys.argv) > 3 else ""
    if where.startswith("/"):
        server: Counting = UnixBackend(name, where)
    else:
        host, _, port = where.rpartition(":")
        server = Backend(name, (host, int(port)) if where else ("127.0.0.1", 0))
    port = server.server_address[1] if isinstance(server, Backend) else 0
    temporary = port_file + ".tmp"
    with open(temporary, "w") as file:
        file.write(str(port))
    os.replace(temporary, port_file)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
