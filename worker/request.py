"""One HTTP request and its response, as the core and modules see them.

The field names follow lighttpd's (`uri.path`, `physical.path`, `physical.doc_root`)
so a module port reads like the C it comes from.  The target is split and checked here,
once (`set_target`, with worker/urlnorm.py's rules): `uri.path` is decoded and then
simplified (`//`, `/./`, `/../`), so it can never name anything above the document
root, whatever encoding the client used.
"""

from __future__ import annotations

import os
from typing import Any, Final, Protocol

from shared.config.compiled import CompiledConfig, RequestSettings
from shared.config.parseopts import DEFAULT_URL, URL_DOTSEG_REJECT, URL_DOTSEG_REMOVE
from shared.config.tree import CONNECTION_FIELDS

from . import debuglog
from .bytesets import all_kept
from .chunkqueue import SharedFd
from .errors import BadRequest
from .host import normalize_host
from .http import header_characters, lower_name
from .statcache import CACHE
from .urlnorm import (AS_IS_TABLE, clean_path, normalised_query, refusal, simplify_path,
                      split_target)
from .wire import Wire


_CONNECT_START: Final = frozenset(":0123456789")   # lighttpd takes CONNECT to an IP:port only


_CORE_FIELDS: Final = frozenset({"date", "server"})     # what the core writes on every answer


class Encoder(Protocol):
    """A content coding over a body written in parts (gzip, brotli, zstd ...)."""

    def encode(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class Response:
    """What the request answers: status, headers in order, and the body parts.

    A body part is bytes or an open file range `(fd, offset, length)`, or
    `(fd, offset, length, shared)` when several ranges of one file share the fd (a
    multipart/byteranges body; `shared` counts the users and closes the fd after the
    last); the response owns the fds until they move into the connection's chunk queue.
    """

    __slots__ = ("status", "headers", "body", "files", "length", "head_only", "replayable",
                 "missing", "streaming", "wants_drain", "started", "trailers",
                 "passthrough", "encoder", "own_fields", "ranged", "page_file")

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        # bytes, a file range (fd, offset, length) or a range of a shared fd
        # (fd, offset, length, SharedFd)
        self.body: list[bytes | tuple[int, int, int] | tuple[int, int, int, Any]] = []
        self.files = 0
        self.length = 0
        self.head_only = False
        self.replayable = False     # the answer cache may keep it (answercache.py)
        self.missing = ""           # the absent file a 404 says is not there
        self.streaming = False      # the head goes out before the body is complete
        self.wants_drain = False    # the producer paused: wake it when the client read
        self.started = False        # a streamed head went out: the status is final
        self.trailers: list[tuple[str, str]] | None = None   # after a chunked body
        # the handler's answer stands as it is, even an error without a body (a
        # backend's own): no error page, no error handler (lighttpd without
        # server.error-intercept)
        self.passthrough = False
        # a content coding applied to what is written from now on (mod_deflate sets
        # it when a streamed answer starts); the core ends it with the answer
        self.encoder: Encoder | None = None
        self.own_fields = False     # a module set Date or Server (http.core_fields)
        self.ranged = False         # its module decided its ranges (a file's: static.py)
        # the file of the core's error page ("" for its built-in page): what lighttpd's
        # physical path names once it made the page (the access log's %f)
        self.page_file: str | None = None

    def stream(self) -> None:
        """Send the body as it is written, for a held request whose answer is not
        complete yet (worker/module.py), as `server.stream-response-body` says: 0
        keeps it whole (on disk past a threshold) and sends it with a Content-Length
        at the end; 1 and 2 send the status and headers now and the body as it
        comes, 1 parking on disk what the client has not taken, 2 pausing the module
        instead.  Without a Content-Length header set by the module, the length of a
        streamed body is unknown: chunked for HTTP/1.1, close-delimited for 1.0."""
        self.streaming = True

    def set_header(self, name: str, value: str) -> None:
        """Replace every header `name` (case-insensitive) by one with `value`."""
        self.remove_header(name)
        self.add_header(name, value)

    def add_header(self, name: str, value: str) -> None:
        if len(name) in (4, 6) and lower_name(name) in _CORE_FIELDS:
            self.own_fields = True
        self.headers.append((name, value))

    def get_header(self, name: str) -> str | None:
        lower = lower_name(name)
        for key, value in self.headers:
            if lower_name(key) == lower:
                return value
        return None

    def remove_header(self, name: str) -> None:
        """Drop every header `name` (case-insensitive); the list is made anew only
        when one is there (mostly a module sets a header no one set before)."""
        lower = lower_name(name)
        headers = self.headers
        for key, _ in headers:
            if lower_name(key) == lower:
                self.headers = [h for h in headers if lower_name(h[0]) != lower]
                return

    def write(self, data: bytes) -> None:
        if self.encoder is not None:
            data = self.encoder.encode(data)
        if data:
            self.body.append(data)
            self.length += len(data)

    def end_encoding(self) -> None:
        """The body is complete: what the encoder still holds goes last."""
        encoder = self.encoder
        if encoder is not None:
            self.encoder = None
            self.write(encoder.finish())

    def send_file_range(self, fd: int, offset: int, length: int) -> None:
        """Add a file range to the body; the response now owns `fd`."""
        self.body.append((fd, offset, length))
        self.files += 1
        self.length += length

    def send_shared_range(self, shared: SharedFd, offset: int, length: int) -> None:
        """Add a range of a file whose fd several parts share (chunkqueue.SharedFd:
        the caller counted this part in it)."""
        self.body.append((shared.fd, offset, length, shared))
        self.files += 1
        self.length += length

    def memory_bytes(self) -> int:
        """Bytes of the body held in memory (not file ranges)."""
        return sum(len(part) for part in self.body if type(part) is not tuple)

    def discard(self) -> None:
        """Drop what a handler or a backend put in the answer, its fields and body, and
        its claim to go out as the backend made it: an error page replaces it."""
        self.headers = []
        self.reset_body()
        self.passthrough = False

    def reset_body(self) -> None:
        """Drop the body (an error replaces it), closing files it owned."""
        if self.files:
            for part in self.body:
                if type(part) is tuple:
                    if len(part) == 4:
                        part[3].release()
                    else:
                        os.close(part[0])
        self.body = []
        self.files = 0
        self.length = 0
        self.replayable = False


def stand_in_origin(connection: Any) -> Wire:
    """What a request of a stand-in connection (a unit test's, a microbench's) starts
    from, read through Python's attribute protocol into a Wire of no socket."""
    transport = getattr(connection, "transport", None)
    origin = Wire()
    origin.set_origin(connection.remote_ip, connection.socket_spec, connection.scheme,
                      connection.condition_cache, connection.server.global_settings,
                      connection.server.compiled,
                      transport.peer_port() if transport is not None else -1)
    return origin


class Request:
    """One request on a connection.  `uri_*` describe the URL, `physical_*` the file."""

    __slots__ = (
        "connection", "method", "target", "version", "headers", "raw_fields", "host",
        "scheme", "uri_path_raw", "uri_path", "uri_query", "_settings", "values", "docroot",
        "physical_path", "physical_rel", "physical_basedir", "pathinfo", "response",
        "body", "keep_alive", "expect_continue", "plugin_ctx", "start", "header_bytes",
        "content_length", "_stat_path", "_stat", "replay", "replay_key", "replay_parsed",
        "arrived_as", "remote_ip", "socket_spec", "config", "condition_cache", "origin_ip",
        "handler", "aborted", "error_origin",
        "loops", "woken", "target_orig", "env", "start_mark", "end_mark", "_remote_port",
        "wire", "plain_target",
    )

    def __init__(self, connection: Any, start: float) -> None:
        # a Connection (worker/connection.py) or an HTTP/2 session (worker/h2.py): what
        # both offer a request (server, addresses, condition values, write access)
        self.connection = connection
        self.method = "GET"
        self.target = ""
        self.version = "1.1"
        self.headers: dict[str, str] = {}          # lowercase name -> value
        # the header fields as received, flat: name (as the client wrote it), value, ...
        self.raw_fields: list[str] = []
        self.host = ""
        self.uri_path_raw = ""
        self.uri_path = ""
        self.uri_query = ""
        self.docroot = ""
        self.physical_path = ""
        self.physical_rel = ""
        self.physical_basedir = ""
        self.pathinfo = ""
        self.response = Response()
        self.body: Any = None                       # RequestBody or None
        self.keep_alive = True
        self.expect_continue = False
        self.plugin_ctx: dict[str, Any] = {}
        self.start = start
        self.header_bytes = 0
        self.content_length = -1
        self._stat_path = ""
        self._stat: os.stat_result | int | None = None     # an int: the errno
        self.replay: Any = None          # answercache.Answer this request repeats
        self.replay_key: Any = None      # the key its own answer may be kept under
        self.replay_parsed: Any = None   # its state once started (answercache.parsed_state)
        self.arrived_as: bytes | None = None   # the read that held it and nothing else
        # what it starts from, read natively from a Wire (a Connection, an HTTP/2
        # session); a unit test's or a microbench's stand-in is read through Python's
        # attribute protocol (its request, of no connection, has no config)
        origin = connection if isinstance(connection, Wire) else stand_in_origin(connection)
        self.wire = origin
        self.scheme = origin.scheme
        self.remote_ip = self.origin_ip = origin.remote_ip
        self.socket_spec = origin.socket_spec
        self.condition_cache: dict[int, tuple[bool, object]] | None = \
            origin.condition_cache
        self._settings: RequestSettings = origin.global_settings
        self.values: dict[str, Any] = self._settings.values
        self.config: CompiledConfig | None = origin.compiled_config
        self.handler: Any = None         # the module holding it (WAIT), if any
        self.aborted = False             # the client went away before the answer ended
        self.error_origin: tuple[int, bool, bool] | None = None  # see handler._error_handled
        self.loops = 0                   # times the phases ran (COMEBACK, error handler)
        self.woken = False               # the holding module called wake()
        self.target_orig = ""            # the target as received (REQUEST_URI)
        # the target when set_target found it in origin form, ASCII with no escape,
        # fragment nor control (urlnorm's AS_IS) and no dot segment nor empty one in
        # its path (as lighttpd normalises it), else "": `target is plain_target`
        # says so of the target as it is now (whoever changed it since)
        self.plain_target = ""
        self.env: dict[str, str] | None = None   # for backends: REMOTE_USER, setenv ...
        self.start_mark = self.end_mark = 0   # where its answer lies in the output stream
        self._remote_port = -1                # none set by a module (see remote_port)

    # ---------------------------------------------------------- held requests
    def wake(self) -> None:
        """Called by the module holding this request when its backend has news: the
        core calls the module's handle_subrequest after this round of events."""
        self.woken = True
        self.connection.wake(self)

    def send_interim(self, status: int, fields: list[tuple[str, str]]) -> None:
        """A 1xx answer for the client ahead of the final one (a backend's 103 Early
        Hints); none to an HTTP/1.0 client (RFC 9110 15.2), nor once the final head is
        out."""
        if not self.response.started and self.version != "1.0":
            self.connection.send_interim(self, status, fields)

    def backlog(self) -> int:
        """Bytes of answers queued for the client and not sent yet, when they count: a
        producer above module.BACKLOG_HIGH stops reading its backend (backpressure,
        `server.stream-response-body = 2`; otherwise the core parks them on disk)."""
        if self.values["server.stream-response-body"] != 2 and \
                self.response.status != 101:      # a tunnel is never parked on disk
            return 0
        return self.connection.backlog_of(self) + self.response.memory_bytes()

    @property
    def remote_port(self) -> int:
        """The client's port: the connection's (asked once), or what a module set
        (mod_extforward: 0 for an address taken from a header, as lighttpd)."""
        port = self._remote_port
        return port if port >= 0 else self.wire.peer_port()   # the Wire keeps it

    @remote_port.setter
    def remote_port(self, port: int) -> None:
        self._remote_port = port

    @property
    def local_address(self) -> str:
        """The address the client reached (SERVER_ADDR on a wildcard listener)."""
        return self.connection.transport.local_address()

    def has_any_header(self, names: frozenset[str]) -> bool:
        """Whether a header field named one of `names` (lower case) came: a compiled
        loop over the smaller of the two (a browser sends a dozen fields, the core
        asks about three), where `names.isdisjoint(headers)` is a call through
        Python's method lookup that walks the headers whatever their number."""
        headers = self.headers
        if len(names) < len(headers):
            for name in names:
                if name in headers:
                    return True
            return False
        for name in headers:
            if name in names:
                return True
        return False

    def waits_for_body(self) -> bool:
        """server.stream-request-body = 0 (the default): a module that reads the body
        starts its work (a script, a backend's connection) only once the body is
        whole, as lighttpd's handlers wait for it; it holds the request meanwhile and
        is woken as the body arrives.  A request no module reads the body of is
        answered at once, and its connection closes after the answer."""
        body = self.body
        return body is not None and not body.complete and \
            not self.values["server.stream-request-body"]

    def continue_due(self) -> bool:
        """Whether `100 Continue` goes out now, once: the client expects it and a
        module that reads request bodies holds the request (one answered at once gets
        none, so the client need not send a body nobody reads; one first held by
        another module, an authentication back end's look-up, gets it when the reader
        takes over), and as in lighttpd, none of the body came yet."""
        handler = self.handler
        if not self.expect_continue or handler is None or not handler.reads_request_body:
            return False
        self.expect_continue = False
        return self.body is None or not self.body.size

    def set_env(self, name: str, value: str) -> None:
        """An environment variable for the backends of this request (CGI, FastCGI,
        SCGI): REMOTE_USER from authentication, setenv.add-environment ..."""
        if self.env is None:
            self.env = {}
        self.env[name] = value

    def internal_redirect(self, target: str, normalised: bool = False) -> None:
        """Answer from another local URL (error handlers, a CGI `Location: /path`,
        rewrites): the caller then returns COMEBACK and the phases run again.  A
        `normalised` target (worker/urlnorm.py's, whose dot segments and empty ones
        are gone by default) has a path to clean only when it holds an escape."""
        self.target = target
        flags = self.url_flags
        path, self.uri_query = split_target(target, flags)
        self.uri_path_raw = path
        self.uri_path = path if normalised and "%" not in path and \
            flags & URL_DOTSEG_REMOVE else clean_path(path)
        self.configure()

    # ----------------------------------------------------------- conditions
    def condition_value(self, field: str) -> str:
        """The string a `$HTTP[...]` condition compares (CompiledConfig's subject)."""
        if field == "url":
            return self.uri_path
        if field == "host":
            return self.host
        if field.startswith("header:"):     # its octets as the config's characters are
            return header_characters(self.headers.get(field[7:], ""))
        if field == "querystring":
            return self.uri_query
        if field == "remoteip":
            return self.remote_ip       # the request's own (mod_extforward may set it)
        if field in CONNECTION_FIELDS:
            return self.connection.condition_value(field)
        if field == "scheme":
            return self.scheme
        if field == "request-method":
            return self.method
        return ""

    @property
    def header_list(self) -> list[tuple[str, str]]:
        """The header fields as received, in order: (name as written, value)."""
        raw = self.raw_fields
        return list(zip(raw[::2], raw[1::2]))

    def fields_as_written(self) -> list[tuple[str, str]]:
        """The header fields as lighttpd keeps them for a backend or a script: one per
        name (repeated fields joined, the Host normalized) under the name the client
        first wrote, without Transfer-Encoding (read as the body's framing, never
        kept)."""
        written = self.written_names()
        return [(written.get(key, key), value) for key, value in self.headers.items()
                if key != "transfer-encoding"]

    def written_names(self) -> dict[str, str]:
        """Each field's lower-case name -> the name as the client first wrote it."""
        return {name.lower(): name for name in reversed(self.raw_fields[::2])}

    @property
    def settings(self) -> RequestSettings:
        """The effective settings; their `values` are also `self.values`."""
        return self._settings

    @settings.setter
    def settings(self, settings: RequestSettings) -> None:
        self._settings = settings
        self.values = settings.values

    def configure(self) -> RequestSettings:
        """(Re)compute the effective settings: after the headers, and again whenever a
        module changes what conditions read (a rewritten URL)."""
        config = self.config
        assert config is not None          # a request of a real connection
        cache = self.condition_cache if self.remote_ip == self.origin_ip \
            else None        # another client than the connection's: its own results
        self.settings = config.settings_for(self, cache)
        if config.traces_conditions and self.values["debug.log-condition-handling"]:
            debuglog.condition_handling(config.tree, self)
        return self.settings

    # ------------------------------------------------------------------ URL
    @property
    def url_flags(self) -> int:
        """server.http-parseopts' URL rules (shared/config/parseopts.py)."""
        config = self.config
        return DEFAULT_URL if config is None else config.url_flags

    def set_target(self, target: str, vetted: bool = False) -> None:
        """Split and clean the request-target (origin-form or absolute-form) under
        server.http-parseopts (worker/urlnorm.py): BadRequest(400) for one it refuses;
        `uri_query` is normalised, `uri_path` decoded and simplified.  With `vetted`,
        its octets were checked where it was parsed (HTTP/1: llhttp refuses controls,
        spaces, DEL and non-ASCII octets anywhere in a target)."""
        self.target = self.target_orig = target
        flags = self.url_flags
        plain = all_kept(target, AS_IS_TABLE)   # ASCII, no escape, fragment nor control
        if not plain or flags & URL_DOTSEG_REJECT:
            why = refusal(target, flags, vetted)
            if why is not None:
                raise BadRequest(400, why)
        # a fragment, which no client should send, is dropped from all but
        # target_orig (REQUEST_URI, the access log's request line), as in lighttpd
        if "#" in target:
            target = self.target = target.partition("#")[0]
        origin_form = target.startswith("/")
        if not origin_form:
            origin = self._absolute_form(target)
            if origin is not target:    # as lighttpd: REQUEST_URI and %r in origin form
                self.target_orig = self.target_orig[len(target) - len(origin):] \
                    if target.endswith(origin) else origin
            target = origin
        path, query = split_target(target, flags)
        self.uri_path_raw = path
        self.uri_query = query if plain or not query else normalised_query(target, flags)
        if not plain:
            self.uri_path = clean_path(path)
            return
        self.uri_path = uri_path = simplify_path(path)      # no escape to decode
        if uri_path is path and origin_form:    # no dot segment nor empty one either
            self.plain_target = target

    def _absolute_form(self, target: str) -> str:
        if target == "*" and self.method == "OPTIONS":
            return "*"
        if self.method == "CONNECT" and target[:1] in _CONNECT_START:
            return target       # authority-form: an address, as lighttpd allows it
        lower = target[:8].lower()
        for scheme in ("http://", "https://"):
            if lower.startswith(scheme):
                rest = target[len(scheme):]
                slash = rest.find("/")
                authority, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
                self.host = normalize_host(authority, self.scheme)
                return path
        raise BadRequest(400, "request-target is not a path")

    # ------------------------------------------------------------- stat cache
    def physical_stat(self) -> os.stat_result:
        """stat() of physical_path (through the worker's stat cache), once per request
        and path; raises OSError."""
        found = self.physical_lookup()
        if isinstance(found, int):
            raise OSError(found, os.strerror(found), self.physical_path)
        return found

    def physical_lookup(self) -> os.stat_result | int:
        """physical_stat(), or the errno it fails with (no exception: see
        StatCache.lookup)."""
        path = self.physical_path
        found = self._stat
        if self._stat_path != path or found is None:
            found = self._stat = CACHE.lookup(path)
            self._stat_path = path
        return found

    def remember_stat(self, path: str, st: os.stat_result) -> None:
        self._stat_path, self._stat = path, st

    def forget_stat(self) -> None:
        self._stat = None

    def header(self, name: str) -> str | None:
        """A request header by lowercase name."""
        return self.headers.get(name)
