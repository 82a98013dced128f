"""HTTP/1.x requests from bytes: the sans-IO protocol layer of a connection.

httptools parses everything it is fed, so several pipelined requests may complete in
one feed; each complete request (or one refused while parsing, its error status set
in `request.response.status`) is appended to the sink's `ready` list, in order.
Nothing here touches a socket: a connection feeds what its transport read, and a unit
test feeds bytes and looks at the requests that come out.

The sink (worker/connection.Connection, or a test's) gives what a request needs of its
connection: it is the `connection` of the Requests made here, its `ready` list takes
the complete ones, `stop_reading()` says nothing after the last request may be
read (answer, then close), `limits` receives the settings that idle timeouts come
from, `remote_ip` names the client in the error log.  A request with a body is handed
over as soon as its head is in, as lighttpd handles it (a module that reads it waits
for the whole body where `server.stream-request-body` is 0): its body then grows
(`body_arrived` after each piece and once complete), or fails (`body_failed`, with the
status a complete request would have been refused with).
"""

from __future__ import annotations

import re
import traceback
from typing import TYPE_CHECKING, Any, Final, Protocol

import httptools

from shared import log

from .answercache import parsed_state
from .body import RequestBody
from .chunked import Dechunker
from .errors import BadRequest, BodyNotStored
from .host import normalize_host
from .http import body_refused, expects_continue, list_tokens, repeated_field
from .request import Request

if TYPE_CHECKING:
    from .server import Server

HEADER_SLACK: Final = 64 * 1024   # bytes read past the header limit before a head is refused
_BODY_METHODS: Final = frozenset({"POST", "PUT"})
_REQUEST_LINE: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^ ]+ HTTP/(\S\.\S)")
_BEYOND_ASCII: Final = re.compile(rb"[\x80-\xff]")
_UNREAD_IN_FRAGMENT: Final = re.compile(rb"[\x00-\x1f\x7f-\xff]")


# module globals are Final: compiled, each use is then no dict lookup
_header_names: Final[dict[bytes, tuple[str, str]]] = {}   # as sent -> (as sent, lowercase)


def header_name(name: bytes) -> tuple[str, str]:
    """A header name as text and lowercase (the key of Request.headers), remembered:
    clients and backends send the same few names again and again.  The hot path
    looks in `_header_names` first and calls this on a miss."""
    names = _header_names.get(name)
    if names is not None:
        return names
    text = name.decode("latin-1")
    if len(_header_names) >= 1024:
        _header_names.clear()
    names = _header_names[name] = (text, text.lower())
    return names


def _normalize_host_field(request: Request, headers: dict[str, str],
                          version: str) -> str | None:
    """request.host from the Host field (or the absolute target's authority, which must
    agree with it), and the Host field rewritten to it as lighttpd rewrites it in
    place, for the access log and the backends: lower case, no trailing dot, no
    default port.  Returns the field when it was rewritten (a replay of the same
    bytes rewrites it again), else None."""
    host = headers.get("host")
    if host is not None:
        normal = normalize_host(host, request.scheme)
        if request.host and normal != request.host:
            raise BadRequest(400, "Host and absolute URI disagree")
        request.host = normal
        if normal == host:
            return None
    elif request.host:
        normal = request.host                  # the absolute target's authority
    elif version == "1.1":
        raise BadRequest(400, "HTTP/1.1 without Host")
    else:
        return None
    headers["host"] = normal
    return normal


def _refusal_status(line: bytes, unknown_method: bool) -> int:
    """The status for a request the parser refused, as lighttpd answers it, from its
    request line: 505 for a well-formed line of another HTTP version, 501 for one with
    a method we do not know (RFC 9110 15.6.2), 400 for anything else."""
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        return 400
    if match.group(1) not in (b"1.0", b"1.1"):
        return 505
    return 501 if unknown_method else 400


def _frames_a_body(headers: dict[str, str]) -> bool:
    """Whether the fields say a body follows, or ask about one: three lookups, where a
    loop over the fields costs one per field (a browser sends a dozen)."""
    return "content-length" in headers or "transfer-encoding" in headers or \
        "expect" in headers


def _body_skipped(request: Request) -> bool:
    """httptools ends a request that asks to upgrade at its head, body or not: a
    declared body it skipped is still to be read."""
    body = request.body
    if body is None or body.complete or body.size or "upgrade" not in request.headers:
        return False
    return request.content_length > 0 or "transfer-encoding" in request.headers


class _StopParsing(Exception):
    """Raised inside a parser callback to stop parsing what was fed: the request that
    is complete so far gets its answer, and the connection closes after it."""


class _Abort(_StopParsing):
    """Stop parsing with an error; the status is on the parser."""


class RequestSink(Protocol):
    remote_ip: str
    limits: Any
    ready: list[Request]

    def body_arrived(self, request: Request) -> None: ...

    def body_failed(self, request: Request, status: int) -> None: ...

    def stop_reading(self) -> None: ...


class Http1Parser:
    """One connection's HTTP/1 request parser: httptools and its callbacks, the
    checks lighttpd makes once a head is in (version, target, Host, body framing,
    limits), and the answer-cache lookup of a repeat."""

    __slots__ = ("sink", "parser", "current", "url", "header_phase", "raw_header_bytes",
                 "error_status", "error_reason", "body_limit", "stopped", "last",
                 "header_limit", "reads_bodies", "answers", "upload_dirs", "upgrading",
                 "held_back", "tunnelled", "body_left", "dechunker", "line_chunk",
                 "ready", "loop", "ready_before", "read_starts_request", "raw_url",
                 "held_line", "cut_owner", "line_start", "head_tail")

    def __init__(self, sink: RequestSink, server: "Server") -> None:
        self.sink = sink
        # the sink's list and the worker's loop, read once: a sink is typed by a
        # Protocol, so each use of one of its members is a Python attribute look-up
        self.ready = sink.ready
        self.loop = server.loop
        # made when a request starts arriving, dropped between requests (see feed)
        self.parser: httptools.HttpRequestParser | None = None
        self.current: Request | None = None   # the request being read
        self.url = b""
        self.header_phase = False
        self.raw_header_bytes = 0
        self.error_status = 0
        self.error_reason = ""
        self.body_limit = 0
        self.stopped = False       # nothing more is read: answer, then close
        self.last: Request | None = None      # the last request handed to the sink
        self.header_limit = server.header_limit
        self.reads_bodies = server.pipeline.reads_bodies
        self.answers = server.pipeline.answers
        self.upload_dirs = server.upload_dirs
        self.upgrading: Request | None = None   # asked to switch, not answered yet
        self.held_back = b""       # what came after it meanwhile
        self.tunnelled = False     # switched: the bytes are no longer HTTP/1
        # the body of a request that asked to switch, read here (httptools stops at
        # the head of such a request): bytes still to come, or its chunked decoder
        self.body_left = 0
        self.dechunker: Dechunker | None = None
        self.line_chunk = b""      # a read that starts with a request line (_version)
        self.ready_before = 0      # requests handed over before the read being parsed
        self.read_starts_request = True   # it began between two requests (_refused_start)
        # the target as sent, when llhttp was given it with its octets beyond ASCII
        # escaped (_escaped_target); the start of a line cut after such an octet, parsed
        # again with the next read; and what a head cut by the reads leaves for that
        # (_keep_head): whose head, its request line so far (b"": not known, or whole
        # before the cut), its last octets
        self.raw_url = b""
        self.held_line = b""
        self.cut_owner: Request | None = None
        self.line_start = b""
        self.head_tail = b""

    def _emit(self, request: Request) -> None:
        self.last = request
        self.ready.append(request)

    def _new_request(self) -> Request:
        return Request(self.sink, self.loop.now)

    def stop(self) -> None:
        self.stopped = True
        self.sink.stop_reading()

    def detach(self) -> None:
        """The connection is closed and none of its code runs any more: let go of
        the parser (it holds this object's bound methods), the sink and the last
        requests (they point back at the connection), so that reference counting
        alone frees them, without a cycle per connection for the GC."""
        self.parser = self.sink = self.current = self.last = None   # type: ignore[assignment]
        self.cut_owner = None

    # ----------------------------------------------------- httptools callbacks
    def on_message_begin(self) -> None:
        self.current = request = self._new_request()
        request.header_bytes = 16     # the request line but its target, counted once
        self.url = b""
        self.header_phase = True
        self.raw_header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        request = self.current
        assert request is not None
        limit = self.header_limit
        if len(self.url) > limit:
            self._abort(414)      # the target alone is too long: RFC 9110 15.5.15
        request.header_bytes += len(url)
        if request.header_bytes > limit:
            self._abort(431)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Each header field as llhttp has validated it.  Fields of a chunked body's
        trailer are ignored, and so are fields with an empty value (an empty Host is
        no Host), as lighttpd does."""
        request = self.current
        if request is None or not self.header_phase:
            return
        request.header_bytes += len(name) + len(value) + 4
        if request.header_bytes > self.header_limit:
            self._abort(431)
        names = _header_names.get(name)
        if names is None:
            names = header_name(name)
        raw_name, key = names
        size = len(value)               # a native length: truth of bytes is a generic call
        if size:
            last = value[size - 1]
            if last == 32 or last == 9:     # the value ends before trailing OWS
                value = value.rstrip(b" \t")
                size = len(value)
        if not size:
            return
        text = value.decode("latin-1")
        fields = request.raw_fields
        fields.append(raw_name)
        fields.append(text)
        headers = request.headers
        count = len(headers)
        first = headers.setdefault(key, text)     # one lookup for the usual new name
        if len(headers) == count:                 # the name came before
            try:
                headers[key] = repeated_field(key, first, text)
            except BadRequest as refused:
                self._abort(refused.status)

    def _abort(self, status: int) -> None:
        self.error_status = status
        raise _Abort(status)

    def on_headers_complete(self) -> None:
        self.header_phase = False
        request = self.current
        assert request is not None
        try:
            has_body = self._start_request(request)
        except BadRequest as err:
            self.error_reason = err.args[0] if err.args else ""
            self._abort(err.status)
        if has_body:
            if not self.reads_bodies:
                self._answer_without_body(request)
            mode = request.values["server.stream-request-body"]
            request.body = RequestBody(self.upload_dirs, spill=mode != 2)
            self._emit(request)     # handled now: its body is read as it comes (see
                                    # Request.waits_for_body for mode 0)

    def _answer_without_body(self, request: Request) -> None:
        """No loaded module reads request bodies: answer now and close after the answer,
        as lighttpd does, instead of storing a body nobody will read.  What the client
        still sends is read and dropped by the lingering close."""
        request.keep_alive = False
        request.expect_continue = False
        self.current = None
        self._emit(request)
        self.stop()
        raise _StopParsing

    def on_body(self, data: bytes) -> None:
        request = self.current
        assert request is not None
        body = request.body
        if self.body_limit and body.size + len(data) > self.body_limit:
            self._abort(413)
        try:
            body.append(data)
        except BodyNotStored as err:
            log.error("connections.c", f"{err.strerror} (a request from {self.sink.remote_ip})")
            self._abort(500)
        if request is self.last:        # streamed: its handler may take it now
            self.sink.body_arrived(request)

    def on_message_complete(self) -> None:
        request = self.current
        if request is not None and request.body is not None and _body_skipped(request):
            return              # read by _upgrade_body, once httptools has stopped
        self._complete()

    def _complete(self) -> None:
        """The current request is whole: handed over (or its handler told)."""
        request = self.current
        if request is not None:
            request.expect_continue = False
            self.current = None
            body = request.body
            if body is not None:
                body.complete = True
            if request is self.last:
                self.sink.body_arrived(request)
            else:
                self._emit(request)

    # ----------------------------------------------------------- request start
    def _start_request(self, request: Request) -> bool:
        """Everything known once the headers are in: version, target, Host, limits.
        True when a request body follows."""
        parser = self.parser
        assert parser is not None      # this runs in its callback
        method = parser.get_method()
        version = self._version(parser, len(method))
        if version not in ("1.1", "1.0"):
            request.version = "1.0"
            raise BadRequest(505 if version[:1].isdigit() else 400)
        request.version = version
        request.method = method.decode("latin-1")
        request.keep_alive = parser.should_keep_alive()
        if version == "1.0" and request.keep_alive and \
                "close" in list_tokens(request.headers.get("connection")):
            request.keep_alive = False   # llhttp lets 1.0's keep-alive win over close
        answers = self.answers
        url = self.raw_url or self.url
        self.raw_url = b""
        key = answers.key_for(request, url)
        if key is not None:
            kept = answers.find(key)
            if kept is not None:        # a repeat: all that follows is known
                kept.restore_parsed(request)
                request.replay = kept
                self.sink.limits = request.values
                return False
        headers = request.headers
        target = url.decode("utf-8", "surrogateescape")
        request.set_target(target, vetted=url is self.url)
        host_field = _normalize_host_field(request, headers, version)
        values = request.configure().values
        self.sink.limits = values
        if key is not None:
            request.replay_key = key
            request.replay_parsed = parsed_state(request, host_field)
        has_body = (request.method in _BODY_METHODS or _frames_a_body(headers)) and \
            self._check_body(request, values)
        config = request.config
        if version == "1.1" and config is not None and config.http11_limited and \
                not values["server.protocol-http11"]:
            request.version = "1.0"     # answered as HTTP/1.0, its body read as sent
            request.keep_alive = False
        return has_body

    def _version(self, parser: httptools.HttpRequestParser, method_length: int) -> str:
        """The request's HTTP version.  When the read being parsed began with this
        request's line (the usual case: one request per read), the octets after its
        method and target say it; asking the parser costs several times more (it
        formats a string)."""
        chunk = self.line_chunk
        self.line_chunk = b""      # a later request in the same read: ask the parser
        start = method_length + 1 + len(self.url)
        tail = chunk[start:start + 11]
        if tail == b" HTTP/1.1\r\n":
            return "1.1"
        if tail == b" HTTP/1.0\r\n":
            return "1.0"
        return parser.get_http_version()

    def _check_body(self, request: Request, values: dict) -> bool:
        """Content-Length, Transfer-Encoding and Expect (for a request that has one, or
        whose method needs a body); True when a body follows."""
        headers = request.headers
        limit = values["server.max-request-size"] * 1024
        self.body_limit = limit
        length_text = headers.get("content-length")
        chunked = "transfer-encoding" in headers
        if chunked:
            if request.version == "1.0":    # RFC 9112 6.1: faulty framing, close
                raise BadRequest(400, "HTTP/1.0 with Transfer-Encoding")
            if headers["transfer-encoding"].lower().replace(" ", "") != "chunked":
                raise BadRequest(501, "unsupported transfer coding")
        if length_text is not None:
            length = int(length_text)
            request.content_length = length
            if limit and length > limit:
                raise BadRequest(413)
        elif not chunked and request.method == "POST":
            raise BadRequest(411)       # as lighttpd: a PUT without either is empty
        has_body = chunked or request.content_length > 0
        if expects_continue(headers) and has_body:
            request.expect_continue = request.version == "1.1"
            del headers["expect"]       # met here: no backend sees it, as in lighttpd
        if has_body and body_refused(request):
            raise BadRequest(400, "GET/HEAD with a body")
        return has_body

    def feed(self, data: bytes) -> None:
        if self.stopped:                   # answer, then close: nothing more is read
            return
        if self.upgrading is not None:     # not parsed before the upgrade is answered
            self.held_back += data
            return
        if self.body_left or self.dechunker is not None:
            data = self._upgrade_body(data)
            if not data:
                return
        if self.header_phase:
            self.raw_header_bytes += len(data)
            if self.raw_header_bytes > self.header_limit + HEADER_SLACK:
                self.fail(431)
                return
        if self.held_line:         # a request line cut after an octet llhttp refused
            data, self.held_line = self.held_line + data, b""
        self.line_chunk = data if self.current is None else b""
        while data:
            self.ready_before = len(self.ready)
            self.read_starts_request = self.current is None
            parser = self.parser
            if parser is None:
                parser = self.parser = httptools.HttpRequestParser(self)
            try:
                parser.feed_data(data)
                request = self.current
                if request is not None and self.header_phase:
                    self._keep_head(data, request)     # the head goes on next read
                return
            except httptools.HttpParserUpgrade as upgrade:
                data = self._upgrade_asked(data[upgrade.args[0]:])
            except httptools.HttpParserInvalidMethodError:
                self._refuse(data, unknown_method=True)
                return
            except httptools.HttpParserInvalidURLError:
                escaped = self._escaped_target(data)
                if escaped is None:
                    return                       # held until the line is whole
                if not escaped:
                    self._refuse(data, unknown_method=False)
                    return
                data = self.line_chunk = escaped
            except httptools.HttpParserCallbackError as err:
                self._callback_failed(err.__context__)
                return
            except httptools.HttpParserError:
                self._refuse(data, unknown_method=False)
                return

    def _refuse(self, data: bytes, unknown_method: bool) -> None:
        """llhttp refused the bytes of `data`: the request they belong to is answered
        with the status its own request line calls for."""
        line = self._refused_line(data)
        self.fail(self.error_status or _refusal_status(line, unknown_method), line)

    def _refused_line(self, data: bytes) -> bytes:
        """The request line of the request llhttp refused, as far as the read `data`
        shows it (b"" when it does not: see _refused_start)."""
        start = self._refused_start(data)
        return b"" if start < 0 else data[start:].split(b"\r\n", 1)[0]

    def _refused_start(self, data: bytes) -> int:
        """Where the request llhttp refused begins in the read `data`: at its start, or
        after requests that came whole before the refused one in the same read
        (pipelined), past their heads (the first one's end looked for across the end
        of the read before, when it began there).  -1 when the refused request began
        in an earlier read, or when a body among those before it hides where their
        heads end."""
        done = self.ready[self.ready_before:]
        if (not done and not self.read_starts_request) or \
                any(request.body is not None for request in done):
            return -1
        shift = len(self.head_tail) if done and self.cut_owner is done[0] else 0
        scan = data if not shift else self.head_tail + data
        start = 0
        for _ in done:
            start = scan.find(b"\r\n\r\n", start) + 4
            if start < 4:
                return -1
        start -= shift
        while start < len(data) and data[start] in b"\r\n":
            start += 1
        return start

    def _escaped_target(self, data: bytes) -> bytes | None:
        """What to parse again when llhttp refused a target for octets lighttpd takes:
        beyond ASCII (its normalisation escapes them) and, in a fragment, which it
        never reads, controls too.  The refused request from its start (in an earlier
        read too: _keep_head), those octets escaped; the target as sent kept in
        `raw_url`.  None when its line is cut after such an octet (held for the next
        read); b"" when its target has no such octet (refused for another reason) or
        its start is not known."""
        request = self.current
        if self.cut_owner is request and self.line_start and \
                not self.read_starts_request and not self.ready[self.ready_before:]:
            data, start = self.line_start + data, 0      # it began in an earlier read
        else:
            start = self._refused_start(data)
        self.line_start = b""
        if start < 0:
            return b""
        end = data.find(b"\n", start)
        line = data[start:] if end < 0 else data[start:end]
        method, _, rest = line.partition(b" ")
        target, space, version = rest.partition(b" ")
        url, mark, fragment = target.partition(b"#")
        escaped = _BEYOND_ASCII.sub(_escape_octet, url) + mark + \
            _UNREAD_IN_FRAGMENT.sub(_escape_octet, fragment)
        if escaped == target or len(line) > self.header_limit or (end >= 0 and not space):
            return b""
        self.parser = self.current = None
        if end < 0:
            self.held_line = line
            return None
        self.raw_url = target
        return b"%s %s %s%s" % (method, escaped, version, data[end:])

    def _keep_head(self, data: bytes, request: Request) -> None:
        """What a head that goes on in the next read (rare: a head most often comes
        whole in one read) leaves for _escaped_target, should llhttp refuse an octet of
        a target there: the read's last octets (the head's end may straddle the reads:
        _refused_start) and, while `request`'s line is not whole, its bytes so far."""
        line_open = not request.raw_fields        # no field yet: the line may go on
        if self.cut_owner is not request:         # (where it begins: before the owner moves)
            start = self._refused_start(data) if line_open else -1
            self.line_start = data[start:] if start >= 0 else b""
            self.cut_owner, self.head_tail = request, data[-3:]
        else:
            if line_open and self.line_start:
                self.line_start += data
            self.head_tail = (self.head_tail + data)[-3:]
        if len(self.line_start) > self.header_limit:
            self.line_start = b""

    def release_parser(self) -> None:
        """Let the parser go between requests (~900 bytes), for a connection that has
        been idle a while; a busy one keeps its parser from request to request, as
        making one costs about a tenth of the request (its callbacks bound anew).  The
        next feed makes a new one."""
        if self.current is None:
            self.parser = None

    def _upgrade_asked(self, rest: bytes) -> bytes:
        """The parser stops after a request that asks to switch protocols (`Connection:
        upgrade`, CONNECT).  What follows it is held back until the request is
        answered (upgrade_answered): the first bytes of a tunnel if a module switches,
        else the next request.  A request with a body of its own cannot switch: the
        connection closes after its answer.  Returns what is left to parse now."""
        current = self.current
        if current is not None and current.body is not None and not current.body.complete:
            # a body of its own: the request cannot switch, its body is read as any
            self.parser = httptools.HttpRequestParser(self)
            if "transfer-encoding" in current.headers:
                self.dechunker = Dechunker()
            else:
                self.body_left = current.content_length
            return self._upgrade_body(rest)
        if current is not None:
            self.on_message_complete()
        request = self.last
        if request is None:
            self.stop()
            return b""
        if request.method == "CONNECT":
            request.keep_alive = False   # a tunnel, or reading stops (upgrade_answered)
        self.parser = httptools.HttpRequestParser(self)
        self.upgrading = request
        self.held_back = rest
        return b""

    def _upgrade_body(self, data: bytes) -> bytes:
        """Take the body of a request that asked to switch protocols out of `data`;
        what follows it (the next request) is returned once it is whole."""
        dechunker = self.dechunker
        try:
            if dechunker is not None:
                self.on_body(dechunker.feed(data))
                if dechunker.failed:
                    self.fail(400)
                    return b""
                if not dechunker.done:
                    return b""
                rest = bytes(dechunker.buffer)
                self.dechunker = None
                rest = rest[2:] if rest.startswith(b"\r\n") else rest
            else:
                take = min(self.body_left, len(data))
                self.on_body(data[:take])
                self.body_left -= take
                if self.body_left:
                    return b""
                rest = data[take:]
        except _StopParsing:
            self.fail(self.error_status or 400)
            return b""
        self._complete()
        return rest

    def upgrade_answered(self, request: Request, switched: bool) -> bytes:
        """The request that asked to switch protocols is answered.  Switched: parsing
        is over, and the bytes held back are the tunnel's first (returned).  Not
        switched: they are parsed as the next request, unless the request was a
        CONNECT (they may be a tunnel's all the same): then reading stops."""
        if request is not self.upgrading:
            return b""
        self.upgrading = None
        rest, self.held_back = self.held_back, b""
        if switched:
            self.tunnelled = True
            return rest
        if request.method == "CONNECT":
            self.stop()
        elif rest:
            self.feed(rest)
        return b""

    def _callback_failed(self, cause: BaseException | None) -> None:
        """httptools wraps what a callback raises and hands it over as `__context__`,
        which an `except` block around the caller may replace: so our own stops are
        known by the state they leave (`_abort` sets the status, `_answer_without_body`
        closes), and anything else is a bug of ours, logged with its traceback and
        answered 500."""
        if self.error_status:
            self.fail(self.error_status)
        elif not (isinstance(cause, _StopParsing) or self.stopped):
            trace = "".join(traceback.format_exception(cause)).rstrip() if cause else "?"
            log.error("connections.c", f"internal error reading a request from "
                      f"{self.sink.remote_ip}:\n{trace}")
            self.fail(500)

    def fail(self, status: int, line: bytes = b"") -> None:
        """Queue an error answer after the requests that came before; then close.  A
        request whose handler already runs (its body streamed) fails in its handler's
        place (the sink's body_failed).  `line`: the refused request's line, when
        llhttp refused it (_refuse)."""
        request = self.current
        if request is not None and request is self.last:
            self.current = None
            self.sink.body_failed(request, status)
            self.stop()
            return
        if request is None or self.header_phase:
            request = request or self._new_request()
            request.header_bytes = 0      # its head was not read whole: size unknown
            if self.header_phase:
                self._take_request_line(request, status, line)
        request.response.status = status
        request.keep_alive = False
        self.current = None
        self.header_phase = False
        self._emit(request)
        self.stop()

    def _take_request_line(self, request: Request, status: int, line: bytes) -> None:
        """A refused request keeps the request line it came with, for the access log
        and the answer's version, as in lighttpd, when that line is whole and of HTTP/1
        (`line`, for what llhttp refused: read from the bytes, as a parser that read a
        request before would still give that one's version).  One refused within a
        malformed line has none (the log shows `"  "`) and is answered HTTP/1.0, and so
        are a target too long (refused before llhttp reads the version) and a header
        block refused for its size (lighttpd never parses that one)."""
        request.version = "1.0"
        if line:
            match = _REQUEST_LINE.fullmatch(line)
            if match is not None and match.group(1) in (b"1.0", b"1.1"):
                method, target, _version = line.split(b" ", 2)
                request.method = method.decode("latin-1")
                request.target = request.target_orig = target.decode("utf-8",
                                                                     "surrogateescape")
                request.version = match.group(1).decode()
            return
        parser = self.parser
        url = self.raw_url or self.url
        if not url or status == 414 or status == 431 or parser is None:
            return
        version = parser.get_http_version()
        if version in ("1.0", "1.1"):
            request.method = parser.get_method().decode("latin-1")
            request.target = request.target_orig = url.decode("utf-8", "surrogateescape")
            request.version = version


def _escape_octet(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match[0][0]
