"""A backend that reads request bodies and throws them away, for bench.py's upload row.

    python loadtests/discard_backend.py PORT

Listens on 127.0.0.1:PORT, one thread per connection, HTTP/1.1 keep-alive (a proxy that
pools its backend connections may keep one).  Every request is answered 200 with the
number of body bytes it read, so that the client can check the whole body went through
the proxy.  It reads in 1 MiB pieces into one buffer: the backend should never be what
limits an upload's speed.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PIECE = 1 << 20


class DiscardHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        """Quiet: one line per 100 MiB upload tells nothing."""

    def do_POST(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._answer(411, b"a Content-Length is needed\n")
            self.close_connection = True
            return
        received = self._discard(int(self.headers.get("Content-Length") or 0))
        self._answer(200, b"%d\n" % received)

    do_PUT = do_GET = do_POST

    def _discard(self, length: int) -> int:
        """Read `length` body bytes (fewer if the connection ends); how many came."""
        buffer = memoryview(bytearray(PIECE))
        received = 0
        while received < length:
            count = self.rfile.readinto(buffer[:min(PIECE, length - received)])
            if not count:
                self.close_connection = True
                break
            received += count
        return received

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), DiscardHandler)
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
