"""Answers kept for requests that repeat: the keep-alive fast path for small files.

Most traffic asks for the same few small files again and again.  Once the request
pipeline has answered such a request, the finished answer (status line, headers and
body bytes) is kept under everything that decided it: the effective settings (which
already reflect every condition the request matched), method, HTTP version, Host and
target.  The next identical request skips the module phases and header rendering; only
the parts that change per request (`Connection`, `Date`) are put in.

What may be kept is narrow on purpose:
- only an answer the static file path marked as a whole small file from memory
  (`Response.replayable`), with status 200 and no PATH_INFO;
- only when every loaded module declares itself replay-safe (worker/module.py), and
  the request carries none of the headers the core or a module reads to decide such an
  answer (preconditions, ranges, body framing, credentials ...);
- never with a debug log on, nor with `server.stat-cache-engine = "disable"`.

Staleness is the stat cache's: the whole table is dropped on the once-a-second tick,
together with the stat cache, so a changed file is seen within the same second it
would be without this table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .request import Request

MAX_ENTRIES = 1024      # bodies are small files (static.SMALL_FILE): at most ~16 MiB

# Headers the core itself reads while answering a static request: a request that has
# one is answered through the full pipeline every time.
CORE_READS = frozenset({
    "if-match", "if-none-match", "if-modified-since", "if-unmodified-since",
    "range", "if-range", "content-length", "transfer-encoding", "expect",
})

Key = tuple[Any, str, str, str, str]     # settings, method, version, host, target


class Answer:
    """A finished answer and the request fields the request-done hooks read."""

    __slots__ = ("start", "tail", "head_len", "response_fields", "request_fields")

    def __init__(self, request: "Request", start: bytes, tail: bytes, body: bytes) -> None:
        response = request.response
        self.start = start              # status line, headers, Content-Length
        self.tail = tail + body         # Server line and blank line, then the body
        self.head_len = len(start) + len(tail)  # plus Connection and Date, per request
        self.response_fields = (response.status, response.headers, response.length)
        self.request_fields = (request.uri_path, request.docroot, request.physical_path,
                               request.physical_rel, request.physical_basedir)

    def restore(self, request: "Request") -> None:
        """Put the request in the state the pipeline left its first twin in."""
        response = request.response
        response.status, response.headers, response.length = self.response_fields
        (request.uri_path, request.docroot, request.physical_path, request.physical_rel,
         request.physical_basedir) = self.request_fields


class AnswerCache:
    """The worker's table of kept answers; `reads` is None when it is off."""

    __slots__ = ("entries", "reads")

    def __init__(self, reads: frozenset[str] | None) -> None:
        self.entries: dict[Key, Answer] = {}
        self.reads = reads

    def key_for(self, request: "Request") -> Key | None:
        """The key of a request whose answer may be kept or replayed, else None."""
        reads = self.reads
        if reads is None or not reads.isdisjoint(request.headers) or \
                request.method != "GET" or not request.settings.shared:
            return None
        return (request.settings, request.method, request.version, request.host,
                request.target)

    def get(self, key: Key) -> Answer | None:
        return self.entries.get(key)

    def keep(self, key: Key, request: "Request", start: bytes, tail: bytes) -> None:
        """Keep the answer just rendered for `request`, if it qualifies."""
        response = request.response
        if not response.replayable or response.status != 200 or request.pathinfo or \
                response.files or len(response.body) != 1:
            return
        entries = self.entries
        if len(entries) >= MAX_ENTRIES:
            entries.clear()
        entries[key] = Answer(request, start, tail, response.body[0])  # type: ignore[arg-type]

    def tick(self, _now: float) -> None:
        """Drop everything once a second, as the stat cache does."""
        self.entries.clear()
