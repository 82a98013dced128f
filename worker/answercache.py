"""Answers kept for requests that repeat: the keep-alive fast path for small files.

Most traffic asks for the same few small files again and again.  Once the request
pipeline has answered such a GET a second time within the second (a request seen once
is no repeat: a unique query string costs no keeping), the finished answer (status
line, headers and body bytes) is kept under everything that decided it, taken from
the request as it arrived:
the raw target, HTTP version, raw Host, scheme, and the value of every other field a
config condition reads (a header, the remote address, the socket).  The settings, the
cleaned URL and the answer all follow from those, so the next identical request skips
URL cleaning, condition evaluation, the module phases and header rendering; only the
parts that change per answer (`Connection`, `Date`) are put in.

Which modules have a say (worker/module.py): every answering module is replay-safe,
or judges per request (`allows_replay`) that it would leave requests like this one
alone; the headers modules name in `keyed_headers` join the key, those in
`reads_headers` rule a replay out.

What may be kept is narrow on purpose:
- only an answer the static file path marked (`Response.replayable`): a small file or
  one range of it from memory (200, 206) or a 304, with no PATH_INFO, the values of
  the precondition and range headers being part of the key; a compressed variant
  mod_deflate keeps as a file this second (deflate.cache-dir: sent by sendfile, the
  table holding a share of its fd until the tick); or the core's own 404
  page for a file that does not exist in an existing directory, replayed only while a
  stat() still finds it absent and its directory there (so a file created after a 404
  is served at once, as without this table);
- only when the request carries none of the other headers the core or a module
  reads to decide such an answer (body framing, credentials ...);
- never with a debug log on, nor with `server.stat-cache-engine = "disable"`;
- never for a request answered with `server.follow-symlink = "disable"`: that answer
  holds only because the file was opened through no symlink at that moment
  (static.open_without_symlinks), and a replay opens nothing, so it could answer for a
  path that has since become a symlink.

A second table goes one step further for the commonest case, a client that repeats a
request byte for byte in a read of its own (a keep-alive client fetching the same file):
it is keyed on those bytes (with the connection's address, socket or scheme when a
condition reads them), so the repeat is answered without parsing it at all.  When a
module has request-done hooks (an access log), the repeat still gets its Request, made
from the one the answer was kept for (same headers, same everything).

Staleness is the stat cache's: the whole table is dropped on the once-a-second tick,
together with the stat cache (a table that fills up within the second stays as it is
until then: requests spread over more files than it holds would otherwise pay for
keeping answers that are dropped before they repeat), so a changed file is seen
within the same second it would be without this table.  A request matched to an answer before a tick but
answered after it (it waited behind others in a pipeline) goes through the pipeline.

Traffic that hardly repeats (a unique query string each time, requests spread over
more files than repeat within a second) would pay for a key, a lookup and a note of
the key on nearly every request and get little back: a lookup that misses costs about
a tenth of what a hit saves.  After a second of at least REST_AFTER lookups of which
fewer than one in REST_HIT_SHARE hit, the table rests (it keys no request), then
measures a second again.  A rest lasts a second, twice as long after each such
second measured, up to REST_SECONDS, and a second again once a measured one hits:
traffic that never repeats is measured one second in REST_SECONDS + 1, and a site
whose first second hit seldom (its compressed files still being made, its answers
not yet kept) is not left without the table for REST_SECONDS.
"""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING, Any, Callable, Final, Iterable

from .chunkqueue import ChunkQueue, SharedFd
from .http import connection_line
from .statcache import CACHE

from .request import Request

if TYPE_CHECKING:
    from shared.config.tree import Condition

    from .connection import Connection

MAX_ENTRIES = 1024      # bodies are small files (static.SMALL_FILE): at most ~16 MiB
REST_AFTER: Final = 256        # lookups in a second before its hit rate tells
REST_HIT_SHARE: Final = 8      # fewer hits than one lookup in this many: the table rests
REST_SECONDS: Final = 8        # the longest rest, in seconds

# Headers the core itself reads while answering a static request.  A request with one
# of CORE_READS is answered through the full pipeline every time; the values of
# KEYED_READS (what the static path decides 304, 412, 206 by) are part of the key.
CORE_READS: Final = frozenset({"content-length", "transfer-encoding", "expect"})
KEYED_READS: Final = ("if-match", "if-none-match", "if-modified-since",
                      "if-unmodified-since", "range", "if-range")
_KEYED: Final = frozenset(KEYED_READS)
# Condition fields that follow from what every key holds (target, Host, scheme, GET)
_IN_EVERY_KEY: Final = frozenset({"url", "querystring", "host", "scheme", "request-method"})
# Condition fields the bytes of a request do not hold: they belong to its connection
_OF_THE_CONNECTION: Final = frozenset({"remoteip", "socket", "scheme"})

Key = tuple[Any, ...]     # raw target, version, raw Host, scheme, then other fields
SharedRange = tuple[int, int, int, SharedFd]   # fd, offset, length, its share (a body part)


# looked up once (compiled, `stat.S_ISDIR` is an attribute look-up on the module)
_IS_DIR: Final = stat.S_ISDIR


def still_missing(path: str, directory: str) -> bool:
    """`path` does not exist, and its `directory` does: the request that found it
    missing would find the same again (no PATH_INFO, no new file).  Asked of the
    kernel each time, as the pipeline would, through the stat cache, which asks a path
    it found missing with access() and so raises nothing.  (A path access() cannot
    reach for another reason than its absence, a directory made unsearchable since the
    404 was kept, is taken for absent until the tick drops the answer.)"""
    if not isinstance(CACHE.lookup(path), int):
        return False
    found = CACHE.lookup(directory)
    return not isinstance(found, int) and _IS_DIR(found.st_mode)


def _valid(kept: Answer | None) -> Answer | None:
    """`kept` unless it is a 404 whose file has appeared since.  (The tables hold only
    answers of the current second: the tick empties them.)"""
    if kept is not None and kept.missing and not still_missing(kept.missing, kept.missing_dir):
        return None
    return kept


def condition_fields(conditions: Iterable["Condition"]) -> tuple[str, ...]:
    """Every field the config's conditions read."""
    return tuple(sorted({c.field for c in conditions}))


class Answer:
    """A finished answer, with the request's state before and after the pipeline.

    The answer itself is kept structured (status, headers, length, body), as any
    protocol renders it; `http1` is its HTTP/1 rendering around the lines that change
    per answer (worker/http.py: status line to Content-Length, then Server line, blank
    line and body), made by that protocol layer when the answer was first sent."""

    __slots__ = ("status", "headers", "length", "body", "file", "http1", "generation",
                 "parsed", "final", "keep_alive", "keep_alive_line", "values", "missing",
                 "missing_dir", "version", "request_headers", "raw_fields", "env", "head",
                 "head_date", "head_keeps_alive")

    def __init__(self, request: "Request", http1: tuple[bytes, bytes], body: bytes,
                 generation: int, file: SharedRange | None = None) -> None:
        response = request.response
        self.status = response.status
        self.headers = response.headers
        self.length = response.length
        self.body = body
        self.file = file        # a body sent by sendfile, its share held by the table
        self.http1 = http1
        # its last HTTP/1 head whole (worker/http.kept_head), for the Date line and
        # the keep-alive it was made with: the same for every repeat within a second
        self.head = b""
        self.head_date = b""
        self.head_keeps_alive = False
        self.generation = generation
        self.keep_alive = request.keep_alive            # what the client asked for
        self.keep_alive_line = connection_line(request, True)
        self.values = request.values
        self.missing = response.missing if response.status == 404 else ""
        self.missing_dir = (self.missing.rsplit("/", 1)[0] or "/") if self.missing else ""
        self.version = request.version
        self.request_headers = request.headers      # copied by repeat_request
        self.raw_fields = request.raw_fields
        self.parsed = request.replay_parsed
        self.final = (request.uri_path, request.docroot, request.physical_path,
                      request.physical_rel, request.physical_basedir,
                      response.page_file)
        self.env = dict(request.env) if request.env else None   # REMOTE_USER ... (logs)

    def queue(self, out: ChunkQueue, head: bytes) -> None:
        """The answer behind `head` into a connection's queue: the body from memory,
        or the kept file's range (a share of its fd for the queue)."""
        file = self.file
        if file is None:
            out.append_answer(head, self.body)
        else:
            out.append(head)
            out.append_file(file[0], file[1], file[2], file[3].acquire())

    def forget(self) -> None:
        """Dropped from the table: its share of a kept file is given back."""
        if self.file is not None:
            self.file[3].release()
            self.file = None

    def repeat_request(self, connection: "Connection") -> "Request":
        """The Request a byte-for-byte repeat would have parsed into, matched to this
        answer (for the request-done hooks)."""
        request = Request(connection, connection.server.loop.now)
        request.version = self.version
        request.keep_alive = self.keep_alive
        request.headers = dict(self.request_headers)  # a hook may change its own copy
        request.raw_fields = list(self.raw_fields)
        self.restore_parsed(request)
        request.replay = self
        return request

    def restore_parsed(self, request: "Request") -> None:
        """The state the request-start code leaves (target split and cleaned, Host,
        settings), as it left it for the first twin of this request."""
        (request.target, request.target_orig, request.uri_path_raw, request.uri_query,
         request.uri_path, request.host, request.settings,
         host_field) = self.parsed   # type: ignore[misc]
        if host_field is not None:
            request.headers["host"] = host_field

    def restore_final(self, request: "Request") -> None:
        """The state the pipeline left: what the request-done hooks read."""
        response = request.response
        response.status, response.headers, response.length = \
            self.status, self.headers, self.length
        if self.env is not None:
            request.env = dict(self.env)
        (request.uri_path, request.docroot, request.physical_path, request.physical_rel,
         request.physical_basedir, response.page_file) = self.final


def parsed_state(request: "Request", host_field: str | None) -> tuple[Any, ...]:
    """What Answer.restore_parsed puts back, taken once the request has started
    (`host_field`: the Host field as it was rewritten, if it was)."""
    return (request.target, request.target_orig, request.uri_path_raw, request.uri_query,
            request.uri_path, request.host, request.settings, host_field)


def _kept_status(status: int) -> bool:
    """The statuses whose answers are kept (compared as native ints)."""
    return status == 200 or status == 404 or status == 304 or status == 206


class AnswerCache:
    """The worker's tables of kept answers; `reads` is None when they are off."""

    __slots__ = ("entries", "reads", "fields", "generation", "raw_entries",
                 "connection_fields", "keyed", "keyed_set", "judges", "seen", "hits",
                 "misses", "rest_left", "rest_next")

    def __init__(self, reads: frozenset[str] | None, fields: tuple[str, ...] = (),
                 keyed: tuple[str, ...] = (),
                 judges: Iterable[Callable[["Request"], bool]] = ()) -> None:
        """`reads`: headers that rule a replay out (None: the cache is off); `fields`:
        what the config's conditions read (condition_fields); `keyed`: headers the
        modules add to the key; `judges`: the allows_replay of the modules that decide
        per request (worker/module.py)."""
        self.entries: dict[Key, Answer] = {}
        self.reads = reads
        self.fields = tuple(f for f in fields if f not in _IN_EVERY_KEY)
        self.generation = 0
        self.raw_entries: dict[Any, Answer] = {}
        self.connection_fields = tuple(f for f in fields if f in _OF_THE_CONNECTION)
        self.keyed = KEYED_READS + tuple(name for name in keyed if name not in _KEYED)
        self.keyed_set = frozenset(self.keyed)
        self.judges = tuple(judges)
        # keys answered once this second: an answer is kept the second time its key
        # comes (a one-off request, e.g. a unique query string, costs no keeping)
        self.seen: set[Key] = set()
        self.hits = self.misses = 0     # this second's lookups
        self.rest_left = 0              # seconds the table still rests
        self.rest_next = 1              # of the next rest

    def key_for(self, request: "Request", raw_target: bytes) -> Key | None:
        """The key of a GET whose answer may be kept or replayed, else None."""
        reads = self.reads
        if reads is None or self.rest_left:
            return None
        if request.method != "GET" or request.has_any_header(reads):
            return None
        headers = request.headers
        key: Key = (raw_target, request.version, headers.get("host"), request.scheme)
        if self.fields:
            key += tuple(request.condition_value(field) for field in self.fields)
        if request.has_any_header(self.keyed_set):
            key += tuple(headers.get(name) for name in self.keyed)
        return key

    def find(self, key: Key) -> Answer | None:
        answer = _valid(self.entries.get(key))
        if answer is None:
            self.misses += 1
        else:
            self.hits += 1
        return answer

    def find_bytes(self, data: bytes, connection: "Connection") -> Answer | None:
        """The answer to a request that arrived as exactly `data`, if any."""
        answer = _valid(self.raw_entries.get(self._bytes_key(data, connection)))
        if answer is not None:
            self.hits += 1
        return answer

    def _bytes_key(self, data: bytes, connection: "Connection") -> Any:
        if not self.connection_fields:
            return data
        return (data, *(connection.condition_value(f) for f in self.connection_fields))

    def keep(self, key: Key, request: "Request", http1: tuple[bytes, bytes]) -> None:
        """Keep the answer just rendered for `request` (its HTTP/1 head in two parts,
        see Answer), if it qualifies."""
        response = request.response
        body = response.body
        if not response.replayable or not _kept_status(response.status) or \
                request.pathinfo or len(body) > 1 or \
                not request.values["server.follow-symlink"]:
            return
        memory = b""
        file: SharedRange | None = None
        if body:
            part = body[0]
            if type(part) is bytes:
                memory = part
            elif len(part) == 4:
                file = part     # type: ignore[assignment]  # its share: a SharedFd
            else:
                return                  # a file range the table could not share
        seen = self.seen
        if key not in seen:            # once is no repeat: keep from the second time
            if len(seen) < 4 * MAX_ENTRIES:
                seen.add(key)
            return
        entries = self.entries
        if len(entries) >= MAX_ENTRIES or key in entries:   # full for this second: kept
            return                          # as it is, not emptied and refilled
        if not all(allows(request) for allows in self.judges):
            return
        if file is not None:
            file[3].acquire()
        answer = entries[key] = Answer(request, http1, memory, self.generation, file)
        if request.arrived_as is not None:
            raw = self.raw_entries
            if len(raw) < MAX_ENTRIES:
                raw[self._bytes_key(request.arrived_as, request.connection)] = answer

    def tick(self, _now: float) -> None:
        """Drop everything once a second, as the stat cache does; rest after a second
        of many lookups that seldom hit."""
        for answer in self.entries.values():
            answer.forget()
        self.entries.clear()
        self.raw_entries.clear()
        self.seen.clear()
        self.generation += 1
        looked_up = self.hits + self.misses
        if self.rest_left:
            self.rest_left -= 1
        elif looked_up >= REST_AFTER:
            if self.hits * REST_HIT_SHARE < looked_up:
                self.rest_left = self.rest_next
                self.rest_next = min(2 * self.rest_next, REST_SECONDS)
            else:
                self.rest_next = 1
        self.hits = self.misses = 0
