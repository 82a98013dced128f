"""What every gateway module shares (CGI, FastCGI, SCGI and uwsgi): the CGI/1.1
environment of a request, the reading of a backend's CGI-style response head
(`Status:`, `Location:`, `Content-Length`, `Transfer-Encoding`), where its body goes,
local redirects and X-Sendfile, as lighttpd's http_cgi.c and http-header-glue.c do.

Nothing here knows how the backend is reached (a child's pipes, a socket): a module
feeds the bytes it reads to a `HeadReader`, then to an `AnswerBody`, and asks the
functions below what the head means for the request.  A backend's body always
streams: the core keeps it whole and sends it with its length, as lighttpd does by
default, or sends it as it comes (`server.stream-response-body`), with the length the
backend announced, if any.  A backend that fails once its answer has started makes
the module return ERROR (the core cuts the connection) after one line in the log.
"""

from __future__ import annotations

import errno
import os
import re
from typing import TYPE_CHECKING, Callable, Final

from shared import log

from shared.config.directives import DirectiveValueError

from .chunked import Dechunker
from .http import ascii_lower, header_characters, list_tokens
from .module import BACKLOG_HIGH, COMEBACK, ERROR
from .urlnorm import decoded_utf8, simplify_path
from .urlsubst import rule_target
from .static import is_regular, open_file_without_symlinks, serve_file

if TYPE_CHECKING:
    from shared.gateway_hosts import Extension, HostSpec

    from .request import Request

MAX_HEAD: Final = 65535            # lighttpd's MAX_HTTP_RESPONSE_FIELD_SIZE
MAX_LOCAL_REDIRECTS: Final = 5     # lighttpd's loops_per_request limit for local redirects
MAX_REMEMBERED: Final = 1024       # entries kept per table of heads or variables
MAX_KNOWN_HEAD: Final = 1024       # bytes of a response head remembered parsed
# The X-Sendfile headers each backend kind may use, in lighttpd's order of preference:
# CGI honours X-Sendfile alone; X-Sendfile2 and X-LIGHTTPD-send-file are FastCGI's.
XSENDFILE_CGI: Final = ("x-sendfile",)
XSENDFILE_FASTCGI: Final = ("x-sendfile2", "x-sendfile", "x-lighttpd-send-file")
_RANGE: Final = re.compile(r"(\d+)-(\d*)")
_SENDFILE_NAMES: Final = frozenset(XSENDFILE_FASTCGI + XSENDFILE_CGI)
_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "[::]"})
# What the core writes itself (Date, Server, the Connection line) or what is not passed
# on as it came (the body's framing, Status): read here, never copied to the answer.
_NOT_PASSED: Final = frozenset({"status", "connection", "content-length",
                                "transfer-encoding", "http2-settings", "date", "server"})


def find_extension(extensions: "tuple[Extension, ...]", path: str) -> "Extension | None":
    """The first extension whose prefix ("/app/") or suffix (".php") the URL path has,
    in config order: asked for every request a proxy, tunnel or socket proxy may take
    (here, compiled; gw_cgi.py reads FastCGI's and SCGI's its own way)."""
    for extension in extensions:
        key = extension.key
        if path.startswith(key) if key.startswith("/") else path.endswith(key):
            return extension
    return None


# ------------------------------------------------------------------ environment
class ServerVariables:
    """The variables that depend on the listener and the client alone (SERVER_SOFTWARE
    to REMOTE_PORT): the same for every request of a connection, so made once per set
    of values they come from and kept with their encodings (PairEncoder.environment),
    and with the values a connection's next request compares to use them again."""

    __slots__ = ("pairs", "encoded", "tag", "name", "scheme", "remote_ip", "remote_port")

    def __init__(self, pairs: dict[str, str], tag: str, name: str, scheme: str,
                 remote_ip: str, remote_port: int) -> None:
        self.pairs = pairs
        self.encoded: dict[PairEncoder, bytes] = {}
        self.tag, self.name, self.scheme = tag, name, scheme
        self.remote_ip, self.remote_port = remote_ip, remote_port

    def serves(self, tag: str, name: str, request: "Request", remote_port: int) -> bool:
        """Whether a request of the connection they were made for has the same
        values (a module may have changed its client, address or scheme)."""
        return tag is self.tag and name == self.name and remote_port == self.remote_port \
            and request.remote_ip == self.remote_ip and request.scheme == self.scheme


class VariableSink:
    """Where variables go as they are made: a dict (CGI's environment), or a
    protocol's encoding (PairEncoder's), so that a gateway's block is encoded without
    a dict made and walked for each request."""

    __slots__ = ()

    def put(self, name: str, value: str) -> None:
        raise NotImplementedError


class DictSink(VariableSink):
    __slots__ = ("env",)

    def __init__(self) -> None:
        self.env: dict[str, str] = {}

    def put(self, name: str, value: str) -> None:
        self.env[name] = value


class PairEncoder:
    """A protocol's encoding of environment variables (FastCGI's name-value pairs,
    SCGI's NUL-separated strings, uwsgi's lengths), remembered per name with the
    value it had last: most variables are the same from one request to the next (the
    server's, the script's, the client's headers), so a request's block is mostly
    look-ups by name (whose hash Python keeps), comparisons of values and one join;
    a pair looked up by (name, value) hashes the value anew each request.  Bounded:
    forgotten whole past LIMIT names."""

    LIMIT = 4096
    __slots__ = ("encode", "known")

    def __init__(self, encode: Callable[[bytes, bytes], bytes]) -> None:
        self.encode = encode                  # (name, value) as bytes -> the pair's bytes
        self.known: dict[str, tuple[str, bytes]] = {}   # name -> (value, its pair)

    def environment(self, request: "Request", host: "HostSpec | None",
                    authorizer: bool) -> bytes:
        """The block of cgi_environment(request, host, authorizer), built without its
        dictionary unless modules set variables of their own (which may replace any
        other): the request's variables encoded as they are made, the connection's
        (encoded once), the headers'."""
        if request.env:
            return self.block(cgi_environment(request, host, authorizer))
        server = server_variables(request)
        encoded = server.encoded.get(self)
        if encoded is None:
            encoded = server.encoded[self] = self.block(server.pairs)
        sink = _EncodingSink(self)
        request_variables(sink, request, host, authorizer)
        parts = sink.parts
        parts.append(encoded)
        self._add(parts, header_variables(request.headers))
        return b"".join(parts)

    def block(self, env: dict[str, str]) -> bytes:
        """Every variable of `env` encoded, in order; ValueError (from `encode`) for a
        pair the protocol cannot carry."""
        parts: list[bytes] = []
        self._add(parts, env)
        return b"".join(parts)

    def _add(self, parts: list[bytes], env: dict[str, str]) -> None:
        """The encoding of each variable of `env`, appended to `parts` (a loop of
        native calls, compiled, where bound methods kept in locals were Python
        calls, one per variable)."""
        for name, value in env.items():
            parts.append(self.pair(name, value))

    def pair(self, name: str, value: str) -> bytes:
        kept = self.known.get(name)
        if kept is not None and kept[0] == value:
            return kept[1]
        encoded = self.encode(name.encode("latin-1", "replace"),
                              value.encode("utf-8", "surrogateescape"))
        known = self.known
        if len(known) >= self.LIMIT and name not in known:
            known.clear()
        known[name] = (value, encoded)
        return encoded


class _EncodingSink(VariableSink):
    """Variables encoded by `encoder` as they are put, in order."""

    __slots__ = ("encoder", "parts")

    def __init__(self, encoder: PairEncoder) -> None:
        self.encoder = encoder
        self.parts: list[bytes] = []

    def put(self, name: str, value: str) -> None:
        self.parts.append(self.encoder.pair(name, value))


def request_body_length(request: "Request") -> int:
    """CONTENT_LENGTH: the length the client announced, or that of a body complete
    without one (chunked); -1 while a chunked body is still arriving (its handler
    started with its head, `server.stream-request-body`)."""
    if request.content_length >= 0:
        return request.content_length
    body = request.body
    if body is None:
        return 0
    return body.size if body.complete else -1


def cgi_environment(request: "Request", host: "HostSpec | None" = None,
                    authorizer: bool = False) -> dict[str, str]:
    """The CGI/1.1 variables of RFC 3875 with lighttpd's additions, in lighttpd's
    order (CONTENT_LENGTH first, as SCGI wants), and the request's own `env` (set by
    other modules, an authorizer's Variable-* headers) last, each name upper-cased
    and all but letters and digits `_`, as lighttpd encodes them.  REQUEST_URI is the
    target the client sent, whatever internal redirect (an error handler, a local
    Location) led here.  `host`: a FastCGI or SCGI backend, whose `docroot` (a remote
    server's document root), `strip-request-uri` and `broken-scriptfilename` apply;
    an `authorizer` gets neither CONTENT_LENGTH nor the script's names."""
    sink = DictSink()
    request_variables(sink, request, host, authorizer)
    env = sink.env
    env.update(server_variables(request).pairs)
    env.update(header_variables(request.headers))
    if request.env:          # named as lighttpd names them there: MY_VAR for my-var
        env.update((env_variable(name), value) for name, value in request.env.items())
    return env


def request_variables(sink: VariableSink, request: "Request", host: "HostSpec | None",
                      authorizer: bool) -> None:
    """CONTENT_LENGTH to SERVER_PROTOCOL: what the request itself says (each name
    once)."""
    if not authorizer:
        sink.put("CONTENT_LENGTH", str(max(request_body_length(request), 0)))
    sink.put("QUERY_STRING", request.uri_query)
    target = request.target_orig
    strip = host.strip_request_uri if host is not None else ""
    sink.put("REQUEST_URI", _stripped_uri(target, strip) if strip else target)
    normal = rule_target(request)        # normalised, as lighttpd keeps its target
    if normal != target:
        sink.put("REDIRECT_URI", normal)
    sink.put("REDIRECT_STATUS",
             str(request.error_origin[0]) if request.error_origin else "200")
    _add_script_paths(sink, request, host, authorizer)
    sink.put("REQUEST_METHOD", request.method)
    version = request.version
    sink.put("SERVER_PROTOCOL", _PROTOCOLS.get(version) or "HTTP/" + version)


_PROTOCOLS: Final = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0", "2.0": "HTTP/2.0"}


def _stripped_uri(target: str, strip: str) -> str:
    """REQUEST_URI without a `strip-request-uri` prefix followed by a slash."""
    strip = strip.rstrip("/")
    if strip and target.startswith(strip) and target[len(strip):len(strip) + 1] == "/":
        return target[len(strip):]
    return target


def _add_script_paths(sink: VariableSink, request: "Request", host: "HostSpec | None",
                      authorizer: bool) -> None:
    """SCRIPT_NAME, PATH_INFO, PATH_TRANSLATED, SCRIPT_FILENAME, DOCUMENT_ROOT."""
    docroot = host.docroot if host is not None else ""
    base = docroot or request.physical_basedir
    if not authorizer:
        sink.put("SCRIPT_NAME", request.uri_path)
        if request.pathinfo:
            sink.put("PATH_INFO", request.pathinfo)
            sink.put("PATH_TRANSLATED", _join(base, request.pathinfo))
    if docroot:
        sink.put("SCRIPT_FILENAME", _join(docroot, request.uri_path))
    elif host is not None and host.broken_scriptfilename:
        sink.put("SCRIPT_FILENAME", _join(request.physical_path, request.pathinfo))
    else:
        sink.put("SCRIPT_FILENAME", request.physical_path)
    sink.put("DOCUMENT_ROOT", base)


def env_variable(name: str) -> str:
    """A name as lighttpd puts it in a backend's environment (an authorizer's
    Variable-NAME, a module's variable): letters upper-cased, digits kept, all else
    `_`; remembered, as the same few names come with every request."""
    variable = _env_variables.get(name)
    if variable is None:
        variable = "".join(c.upper() if c.isascii() and c.isalnum() else "_" for c in name)
        if len(_env_variables) >= MAX_REMEMBERED:
            _env_variables.clear()
        _env_variables[name] = variable
    return variable


def _join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


_env_variables: Final[dict[str, str]] = {}
_server_variables: Final[dict[tuple[str, ...], ServerVariables]] = {}


def server_variables(request: "Request") -> ServerVariables:
    """SERVER_SOFTWARE, GATEWAY_INTERFACE, REQUEST_SCHEME, HTTPS, SERVER_PORT,
    SERVER_ADDR, SERVER_NAME, REMOTE_ADDR and REMOTE_PORT of the request: those its
    connection's last request used when they still serve (compared natively), else
    kept by the values they come from (bounded: forgotten whole past MAX_REMEMBERED)."""
    values = request.values
    tag: str = values["server.tag"]
    name: str = values["server.name"] or request.host
    remote_port = request.remote_port
    wire = request.wire
    last = wire.server_variables
    if last is not None and last.serves(tag, name, request, remote_port):
        return last
    address, port, wildcard = _listener_address(request.socket_spec)
    if wildcard:
        address = request.local_address     # which address of the wildcard's
    key = (tag, request.scheme, port, address, name, request.remote_ip, str(remote_port))
    found = _server_variables.get(key)
    if found is None:
        if len(_server_variables) >= MAX_REMEMBERED:
            _server_variables.clear()
        found = _server_variables[key] = ServerVariables(
            _server_pairs(*key), tag, name, request.scheme, request.remote_ip, remote_port)
    wire.server_variables = found
    return found


# a listener's socket spec -> (address, port, whether the address is a wildcard)
_listeners: Final[dict[str, tuple[str, str, bool]]] = {}


def _listener_address(spec: str) -> tuple[str, str, bool]:
    """SERVER_ADDR and SERVER_PORT as the listener's spec gives them ("" and "0" for
    a unix socket), and whether the address is a wildcard's: parsed once per
    listener (there are few)."""
    found = _listeners.get(spec)
    if found is None:
        if spec.startswith("/"):
            found = ("", "0", False)
        else:
            address, _, port = spec.rpartition(":")
            found = (address, port or "0", address in _WILDCARD_HOSTS)
        _listeners[spec] = found
    return found


def _server_pairs(tag: str, scheme: str, port: str, address: str, server_name: str,
                  remote_ip: str, remote_port: str) -> dict[str, str]:
    env = {"SERVER_SOFTWARE": tag, "GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_SCHEME": scheme}
    if scheme == "https":
        env["HTTPS"] = "on"
    env["SERVER_PORT"] = port
    env["SERVER_ADDR"] = address
    env["SERVER_NAME"] = _without_port(server_name) or address
    env["REMOTE_ADDR"] = remote_ip
    env["REMOTE_PORT"] = remote_port
    return env


def _without_port(authority: str) -> str:
    if authority.startswith("["):
        end = authority.find("]")
        return authority[:end + 1] if end > 0 else authority
    return authority.partition(":")[0]


# A request header's variable by its name: HTTP_ + the name, CONTENT_TYPE for
# Content-Type, "" for Proxy (never passed: httpoxy, HTTP_PROXY would set the
# backend's proxy) and for Transfer-Encoding (the body's framing, which lighttpd reads
# and never keeps).  Bounded: forgotten whole past MAX_REMEMBERED names.
_header_variables: Final[dict[str, str]] = {}
_NOT_VARIABLES: Final = frozenset({"proxy", "transfer-encoding"})


def header_variables(headers: dict[str, str]) -> dict[str, str]:
    """The variables of the request headers that have a value (its octets as the
    client sent them, once the environment is written out).  Of two names that make
    one variable (X_User and X-User) the first to arrive gives it, as a script gets it
    from lighttpd (whose environment lists both, getenv() finding the first)."""
    env: dict[str, str] = {}
    known = _header_variables
    for name, value in headers.items():
        if value:
            variable = known.get(name)
            if variable is None:
                variable = _header_variable(name)
            if variable and variable not in env:
                env[variable] = header_characters(value)
    return env


def _header_variable(name: str) -> str:
    lower = name.lower()
    variable = "CONTENT_TYPE" if lower == "content-type" else \
        "" if lower in _NOT_VARIABLES else "HTTP_" + env_variable(name)
    if len(_header_variables) >= MAX_REMEMBERED:
        _header_variables.clear()
    _header_variables[name] = variable
    return variable

# ---------------------------------------------------------------- response head
class ResponseHead:
    """A backend's response head, read as lighttpd reads it.  `status` is 0 when the
    backend gave none (200 unless a Location makes it 302); `headers` are those passed
    to the client; `fields` counts the header fields lighttpd would keep (a local
    redirect is a lone Location); `rest` is what followed the head; `error` a status
    (502) for a head that cannot be answered, with `reason` for the log."""

    __slots__ = ("status", "status_given", "headers", "fields", "location",
                 "content_length", "chunked", "close", "rest", "error", "reason",
                 "sendfile")

    def __init__(self, status: int = 0, rest: bytes = b"") -> None:
        self.status = status
        self.status_given = False     # by Status: or an NPH status line
        self.headers: list[tuple[str, str]] = []
        self.fields = 0
        self.location: str | None = None
        self.content_length = -1
        self.chunked = False
        self.close = False
        self.rest = rest
        self.error = 0
        self.reason = ""
        self.sendfile = False         # an X-Sendfile header was read (worth looking for)

    def copy(self) -> "ResponseHead":
        """The same head, its own to change (its headers a list of their own)."""
        head = ResponseHead()
        head.headers = list(self.headers)
        head.status, head.status_given, head.fields, head.location, head.content_length = \
            self.status, self.status_given, self.fields, self.location, self.content_length
        head.chunked, head.close, head.rest, head.error, head.reason, head.sendfile = \
            self.chunked, self.close, self.rest, self.error, self.reason, self.sendfile
        return head

    def get(self, lower_name: str) -> str | None:
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None

    def remove(self, lower_name: str) -> None:
        self.headers = [h for h in self.headers if h[0].lower() != lower_name]


def _failed_head(reason: str) -> ResponseHead:
    head = ResponseHead()
    head.error = 502
    head.reason = reason
    return head


class HeadReader:
    """Accumulates a backend's output until its head is complete.  `cgi`: a CGI may
    send a body without any head (lighttpd serves it as 200); other backends may not.
    `interim` takes an interim 1xx head's status and fields for the client (a
    backend's 103 Early Hints, as lighttpd passes them on; 100 Continue is the core's
    to send).  The buffer is bytes: a head mostly comes in one read, parsed where it
    lies."""

    __slots__ = ("buffer", "cgi", "interim")

    def __init__(self, cgi: bool = True,
                 interim: Callable[[int, list[tuple[str, str]]], None] | None = None) -> None:
        self.buffer = b""
        self.cgi = cgi
        self.interim = interim

    def feed(self, data: bytes) -> ResponseHead | None:
        """The head once it is complete (interim 1xx heads go to `interim`), else
        None."""
        self.buffer = self.buffer + data if self.buffer else bytes(data)
        while True:
            head = self._parse()
            if head is None or not (100 <= head.status < 200 and head.status != 101):
                return head
            if head.status != 100 and self.interim is not None:
                self.interim(head.status, head.headers)
            self.buffer = head.rest

    def at_eof(self) -> ResponseHead | None:
        """The backend ended before its head did: what it sent is a body (CGI only)."""
        if not self.buffer or not self.cgi:
            return None
        return ResponseHead(200, self.buffer)

    def _parse(self) -> ResponseHead | None:
        buffer = self.buffer
        stop = head_end(buffer)
        if 0 < stop <= MAX_KNOWN_HEAD:
            # a head read before passed the checks below, which depend on nothing
            # past its blank line: taken as it was parsed
            known = _known_heads.get(buffer[:stop])
            if known is not None:
                head = known.copy()
                head.rest = buffer[stop:]
                return head
        newline = buffer.find(b"\n")
        if newline < 0:
            return _failed_head("response headers too large") \
                if len(buffer) > MAX_HEAD else None
        if newline == 0 or (newline == 1 and buffer[0] == 0x0D):
            return ResponseHead(0, buffer[newline + 1:])     # no header at all
        nph = newline >= 12 and buffer.startswith(b"HTTP/")
        if not nph and buffer.find(b":", 0, newline) < 0:
            return ResponseHead(200, buffer) if self.cgi else \
                _failed_head("invalid response headers")
        if stop < 0:
            return _failed_head("response headers too large") \
                if len(buffer) > MAX_HEAD else None
        head = _parsed_and_kept(buffer[:stop], nph)
        head.rest = buffer[stop:]
        return head


_known_heads: Final[dict[bytes, ResponseHead]] = {}
_LF: Final = 10
_CR: Final = 13


def head_end(buffer: bytes) -> int:
    """Where the first blank line of `buffer` ends (LF LF, or LF CR LF: the end of a
    head), or -1 when none ends within MAX_HEAD.  A walk from line end to line end
    reads the head alone (a search for one of the two endings would read on through
    a body after a head of the other kind) and costs half what a regex search's
    set-up and match object did for a usual head of three lines."""
    limit = min(len(buffer), MAX_HEAD)
    newline = buffer.find(b"\n", 0, limit)
    while 0 <= newline < limit - 1:
        after = buffer[newline + 1]
        if after == _LF:
            return newline + 2
        if after == _CR and newline + 2 < limit and buffer[newline + 2] == _LF:
            return newline + 3
        newline = buffer.find(b"\n", newline + 1, limit)
    return -1


def _parsed_and_kept(block: bytes, nph: bool) -> ResponseHead:
    """parse_head, its result kept for the next head of the same bytes (of at most
    MAX_KNOWN_HEAD: an application sends the same few heads again and again; bounded,
    forgotten whole past MAX_REMEMBERED heads).  HeadReader takes a copy of a kept
    head: its reader may change it."""
    head = parse_head(block, nph)
    if len(block) <= MAX_KNOWN_HEAD:
        if len(_known_heads) >= MAX_REMEMBERED:
            _known_heads.clear()
        _known_heads[block] = head.copy()
    return head


def parse_head(block: bytes, nph: bool = False) -> ResponseHead:
    """The fields of a complete head (`block` ends with its blank line)."""
    lines = block.decode("latin-1").split("\n")
    head = ResponseHead()
    if nph and not _nph_status(head, lines.pop(0).rstrip("\r")):
        return head
    for line in lines:
        _head_field(head, line[:-1] if line.endswith("\r") else line)
    if head.status == 0 and head.location is not None:
        head.status = 302                 # CGI/1.1: a Location alone redirects
    return head


def _nph_status(head: ResponseHead, line: str) -> bool:
    """`HTTP/n.x NNN reason` of a non-parsed-header backend (x 0 or 1, any n, as
    lighttpd takes it from a gateway); False (502) if invalid."""
    status = status_code(line[9:]) if line[6:9] in (".0 ", ".1 ") else 0
    if not status:
        head.error, head.reason = 502, f"invalid HTTP status line: {line}"
        return False
    head.status, head.status_given = status, True
    return True


def status_code(text: str) -> int:
    """Three digits, alone or before a space (lighttpd's http_header_str_to_code);
    0 for anything else."""
    if len(text) >= 3 and text[:3].isdigit() and text[:3].isascii() and \
            (len(text) == 3 or text[3] in " \t"):
        status = int(text[:3])
        return status if status >= 100 else 0
    return 0


def _head_field(head: ResponseHead, line: str) -> None:
    colon = line.find(":")
    if colon <= 0 or line[colon - 1] in " \t":
        return                            # no name, or blanks before the colon
    name, value = line[:colon], line[colon + 1:].lstrip(" \t")
    lower = name.lower()
    if lower in _NOT_PASSED:
        _framing_field(head, lower, value)
        return
    if not value or "\r" in value or "\0" in value:
        return                            # empty, or a CR a client could split on
    head.fields += 1
    if lower == "content-type":
        value = current_media_type(value)
    head.headers.append((name, value))
    if lower == "location":
        head.location = value
    elif lower in _SENDFILE_NAMES:
        head.sendfile = True


def current_media_type(value: str) -> str:
    """A backend's Content-Type as sent on: application/javascript (with whatever
    follows) renamed text/javascript, RFC 9239's name, as lighttpd renames it."""
    return "text" + value[11:] if value.startswith("application/javascript") else value


def _framing_field(head: ResponseHead, lower: str, value: str) -> None:
    """The fields read here rather than passed on as they came."""
    if lower == "status":
        status = status_code(value)
        if status:
            head.status, head.status_given = status, True
        else:
            head.error, head.reason = 502, f"invalid Status: {value}"
        return
    if lower == "transfer-encoding":
        head.chunked, head.content_length = True, -1
        return
    if lower == "http2-settings" or not value:
        return
    head.fields += 1                      # lighttpd keeps these: they count
    if lower == "connection":
        head.close = "close" in list_tokens(value)
    elif lower == "content-length" and not head.chunked and head.content_length < 0:
        digits = value.lstrip("+").rstrip(" \t")
        head.content_length = int(digits) if digits.isdigit() and digits.isascii() else -1


# ---------------------------------------------------------------------- answers
class AnswerBody:
    """A backend's answer once its head is read: the head's status and headers become
    the response's, and its body streams (the core keeps it whole or sends it as it
    comes, as `server.stream-response-body` says).  The Content-Length the backend
    announced is passed on (a streamed answer is then delimited by it, not chunked)
    and counted against (what goes beyond it is dropped); a chunked body is decoded.
    `complete`: nothing more belongs to the answer."""

    __slots__ = ("request", "status", "remaining", "dechunker", "complete", "dropping")

    def __init__(self, request: "Request", head: ResponseHead) -> None:
        self.request = request
        self.status = head.status or 200
        self.remaining = head.content_length
        self.dechunker = Dechunker() if head.chunked else None
        self.complete = self.remaining == 0
        response = request.response
        response.status = self.status
        self.dropping = intercepts(request, self.status)
        if self.dropping:
            keep_challenge(request, head.headers)
            return
        _adopt_headers(request, head)
        response.passthrough = True        # the backend's own, an error without a body too
        if self.remaining >= 0:
            response.set_header("Content-Length", str(self.remaining))
        response.stream()

    def take(self, data: bytes) -> None:
        dechunker = self.dechunker
        if dechunker is not None:
            data = dechunker.feed(data)
            self.complete = dechunker.done
        if self.remaining >= 0:
            if len(data) >= self.remaining:
                data = data[:self.remaining]
                self.complete = True
            self.remaining -= len(data)
        if not self.dropping:
            self.request.response.write(data)

    def must_pause(self) -> bool:
        """The client has not taken enough of it: stop reading the backend."""
        return self.request.backlog() >= BACKLOG_HIGH

    def finish(self, backend: str) -> int:
        """The backend ended: the final status, or (the body shorter than it said, or
        its chunks cut) a failed answer."""
        dechunker = self.dechunker
        if self.remaining <= 0 and (dechunker is None or dechunker.done):
            return self.status
        log.error("http-header-glue.c", f"{backend} ended before the end of its answer "
                                        f"to {self.request.target}")
        return abandon_answer(self.request, 502)


def asks_to_upgrade(request: "Request") -> bool:
    """An HTTP/1.1 request without a body that asks to switch protocols (Upgrade, and
    `upgrade` among its Connection tokens): the only kind the core can turn into a
    tunnel (lighttpd's gw_upgrade_policy)."""
    headers = request.headers
    return request.version == "1.1" and request.body is None and \
        "upgrade" in headers and "upgrade" in list_tokens(headers.get("connection"))


def switch_protocols(request: "Request", head: ResponseHead) -> AnswerBody:
    """A backend's 101 with an Upgrade header, to a request allowed to upgrade: its
    head goes out at once with `Connection: upgrade` (as lighttpd adds it), then what
    the backend writes goes to the client as it is (no framing: a Content-Length or
    chunked of its head means nothing in a tunnel)."""
    head.content_length, head.chunked, head.close = -1, False, False
    body = AnswerBody(request, head)
    request.response.add_header("Connection", "upgrade")
    return body


def unswitched_answer(request: "Request", head: ResponseHead) -> int:
    """A backend's 101 that switches nothing (the request may not upgrade, or the head
    names no protocol): its head alone is the answer, sent whole as lighttpd sends it
    (Content-Length: 0, the connection kept); what the backend wrote after it is
    dropped."""
    request.response.status = head.status
    _adopt_headers(request, head)
    return head.status


def _adopt_headers(request: "Request", head: ResponseHead) -> None:
    """The head's headers go to the client; its `Connection: close` ends the
    connection after the answer."""
    request.response.headers.extend(head.headers)
    if head.close:
        request.keep_alive = False


def intercepts(request: "Request", status: int) -> bool:
    """server.error-intercept: a backend's error (400 and above) gives way to the
    server's error handler or error page, as a module's error does; its body is read
    to its end and dropped (the backend's connection stays usable)."""
    return status >= 400 and bool(request.values["server.error-intercept"])


def keep_challenge(request: "Request", headers: list[tuple[str, str]]) -> None:
    """Of an intercepted answer's fields, a 401's WWW-Authenticate alone goes on to the
    page that replaces it (as lighttpd keeps it)."""
    if request.response.status == 401:
        request.response.headers.extend(
            field for field in headers if field[0].lower() == "www-authenticate")


def abandon_answer(request: "Request", status: int) -> int:
    """A backend failed (the caller has logged why): its answer is dropped for
    `status` if none of it went out yet; if the head did, ERROR (the core closes the
    connection, cutting the answer, as it must)."""
    if request.response.started:
        return ERROR
    request.response.discard()
    return status


# --------------------------------------------------------------- local redirect
def local_redirect_target(request: "Request", head: ResponseHead) -> str | None:
    """RFC 3875 6.2.2: a head that is a lone local Location (a path), with no body and
    no status of its own, asks the server to answer from that URL instead.  None when
    it is no such head, points back at the script itself, or the request's body is
    still arriving (streamed: it cannot be dropped while the client sends it, so the
    Location goes to the client)."""
    location = head.location
    if location is None or not location.startswith("/") or head.status_given or \
            head.fields != 1 or head.rest or not 300 <= head.status < 400:
        return None
    if request.body is not None and not request.body.complete:
        return None
    path = request.uri_path
    if location.startswith(path) and location[len(path):len(path) + 1] in ("", "/", "?"):
        return None
    return header_characters(location)     # a target of the octets the backend sent


def redirect_locally(request: "Request", target: str, status: int) -> int:
    """Restart the request for `target` (COMEBACK): a GET without the body the backend
    consumed (a 307 or 308 keeps the method); 500 past MAX_LOCAL_REDIRECTS."""
    request.loops += 1
    if request.loops > MAX_LOCAL_REDIRECTS:
        log.error("http_cgi.c", f"too many internal loops while processing request: "
                                f"{request.target_orig}")
        request.response.discard()
        return 500
    response = request.response
    response.discard()
    response.status = 0
    if request.body is not None:
        request.body.close()
        request.body = None
        request.content_length = 0
    if status not in (307, 308):
        request.method = "GET"
    request.handler = None          # the phases choose the handler of the new URL
    request.internal_redirect(target)
    return COMEBACK


# ------------------------------------------------------------------ X-Sendfile
def sendfile_docroots(paths: tuple[str, ...], key: str) -> tuple[str, ...]:
    """`x-sendfile-docroot` paths: absolute, simplified, each with a trailing slash (a
    prefix of whole names); DirectiveValueError names `key` for a relative one."""
    roots = []
    for path in paths:
        if not path.startswith("/"):
            raise DirectiveValueError(f'{key} paths must begin with "/"; invalid: "{path}"')
        root = simplify_path(path)
        roots.append(root if root.endswith("/") else root + "/")
    return tuple(roots)


def sendfile_header(head: ResponseHead, names: tuple[str, ...]) -> tuple[str, str] | None:
    """The first X-Sendfile header of `names` the head has: (lower name, value)."""
    if not head.sendfile:
        return None
    for name in names:
        value = head.get(name)
        if value is not None:
            return name, value
    return None


def x_sendfile(request: "Request", head: ResponseHead, header: tuple[str, str],
               docroots: tuple[str, ...]) -> int:
    """Answer with the file(s) a backend named instead of its body; the status."""
    name, value = header
    head.remove(name)
    _adopt_headers(request, head)
    response = request.response
    send = _send_ranges if name == "x-sendfile2" else _send_file
    status = send(request, value, docroots)
    response.replayable = False       # a backend decided it: never replayed
    if status >= 400 and head.status < 300:
        return status
    return head.status if head.status not in (0, 200) else status


def _sendfile_path(request: "Request", encoded: str, docroots: tuple[str, ...],
                   header: str) -> tuple[str, int]:
    """The checked path of an X-Sendfile value: ("", status) when it may not be sent.
    The value's octets are the name's (raw UTF-8 as a PHP application writes it, or
    %-encoded)."""
    encoded = header_characters(encoded)
    path = decoded_utf8(encoded)
    if path is None:
        log.error("http-header-glue.c", f"{header} invalid UTF-8 after url-decode: "
                                        f"{log.escape_bs(encoded)}")
        return "", 502
    if not path.startswith("/"):
        return "", 502
    path = simplify_path(path)
    lower = request.values["server.force-lowercase-filenames"]
    if lower:
        path = ascii_lower(path)
    if docroots and not any(path.startswith(ascii_lower(root) if lower else root)
                            for root in docroots):
        log.error("http-header-glue.c", f"{header} ({log.escape_bs(path)}) not under "
                                        "configured x-sendfile-docroot(s)")
        return "", 403
    return path, 0


def _send_file(request: "Request", value: str, docroots: tuple[str, ...]) -> int:
    """X-Sendfile: the file as the static path serves it (type, ETag, ranges)."""
    path, status = _sendfile_path(request, value, docroots, "X-Sendfile")
    if not path:
        return status
    try:
        st = os.stat(path)
    except OSError as err:
        log.error("http-header-glue.c", f"not a regular file: {request.uri_path} -> {path}")
        return 404 if err.errno == errno.ENOENT else 403
    if not is_regular(st):
        return 403
    response = request.response
    content_type = response.get_header("Content-Type")
    response.remove_header("Content-Type")
    validators = [h for h in response.headers if h[0].lower() in ("etag", "last-modified")]
    status = serve_file(request, path, st, content_type)
    for name, _ in validators:            # the backend's own validators stand
        response.remove_header(name)
    response.headers.extend(validators)
    return status


def _send_ranges(request: "Request", value: str, docroots: tuple[str, ...]) -> int:
    """X-Sendfile2: `path range, path range ...` (url-encoded paths, `a-b` or `a-`
    ranges), the parts sent one after the other."""
    follow = request.values["server.follow-symlink"]
    for item in value.split(","):
        item = item.strip(" ")
        if not item:
            continue
        encoded, _, byte_range = item.partition(" ")
        if not byte_range:
            log.error("http-header-glue.c", f"Couldn't find range after filename: "
                                            f"{log.escape_bs(encoded)}")
            return 502
        path, status = _sendfile_path(request, encoded, docroots, "X-Sendfile2")
        if not path:
            return status
        status = _send_range(request, path, byte_range.strip(" "), follow)
        if status:
            return status
    return 200


def _send_range(request: "Request", path: str, byte_range: str, follow: bool) -> int:
    """One part of X-Sendfile2; 0 when it is in the body."""
    try:
        fd, st = _open_regular(path, follow)
    except OSError:
        log.error("http-header-glue.c", f"send-file error: couldn't get stat_cache entry "
                                        f"for X-Sendfile2: {path}")
        return 404
    match = _RANGE.fullmatch(byte_range)
    first = int(match.group(1)) if match else 0
    last = int(match.group(2)) if match and match.group(2) else st.st_size - 1
    if match is None or last < first - 1 or last >= st.st_size:
        os.close(fd)
        log.error("http-header-glue.c", f"Couldn't decode range after filename: {path}")
        return 502
    if last < first:
        os.close(fd)
        return 0
    request.response.send_file_range(fd, first, last - first + 1)
    return 0


def _open_regular(path: str, follow: bool) -> tuple[int, os.stat_result]:
    """A regular file opened for sending (through no symlink unless `follow`)."""
    if not follow:
        return open_file_without_symlinks(path)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    st = os.fstat(fd)
    if not is_regular(st):
        os.close(fd)
        raise OSError(errno.EISDIR, "not a regular file", path)
    return fd, st


__all__ = ["cgi_environment", "PairEncoder", "env_variable", "sendfile_docroots",
           "request_body_length", "HeadReader", "ResponseHead", "AnswerBody", "Dechunker", "abandon_answer", "asks_to_upgrade",
           "switch_protocols", "unswitched_answer", "local_redirect_target",
           "redirect_locally", "sendfile_header", "x_sendfile", "status_code"]
