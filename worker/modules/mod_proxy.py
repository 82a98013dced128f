"""mod_proxy: a reverse proxy as lighttpd 1.4.69's, with keep-alive connections to the
backends kept per worker.

A request whose URL path has a prefix or extension of `proxy.server` is claimed in
handle_uri_clean: a backend is chosen (`proxy.balance`, worker/backend.py), or the
answer is 503 when all are down.  handle_subrequest then runs the `Exchange`: an idle
connection to that backend or a non-blocking connect, the request sent (its body from
memory, with sendfile from its temp file, or as it arrives; as fast as the backend
takes it), the answer parsed by httptools and streamed to the client (de-chunked,
paused while the client is behind by BACKLOG_HIGH).

What the backend gets, as lighttpd's proxy_create_env builds it: the request-target as
lighttpd normalises it (`map-urlpath` applied), HTTP/1.1 (1.0 with `force-http10`, or
when there is no Host to send), Host (the backend's label with `proxy.replace-http-host`,
else the client's with `map-host-request`), the client's headers, `Content-Length` for
a body that came chunked, `Forwarded` with the `proxy.forwarded` parameters, and
X-Forwarded-For, X-Host, X-Forwarded-Host, X-Forwarded-Proto.  (`remote_user` adds
nothing yet: no module authenticates users.)

Beyond lighttpd:
- keep-alive to the backends: lighttpd sends `Connection: close` and connects for every
  request; here a backend's connections are kept (the host key "keepalive", idle
  connections per worker, default 64; 0 is lighttpd's way), like nginx's upstream
  keepalive.  A kept connection the backend closed just as it was reused is retried
  once on a new one for idempotent methods (RFC 9110 9.2.2), never for the others;
- hop-by-hop headers (RFC 9110 7.6.1: Connection and the headers it names, Keep-Alive,
  Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade) are dropped both ways,
  where lighttpd drops only Connection;
- a backend that hangs up without an answer is 502 (RFC 9110 15.6.3), not 500.

Upgrade (WebSocket): with proxy.header "upgrade" (or the host's "upgrade"), an HTTP/1.1
request without a body that asks to upgrade goes with its Upgrade header; a 101 from
the backend turns the exchange into a tunnel (the core's: the client's bytes arrive as
the request's body), relayed both ways with backpressure, the client's end passed on
as a half-close.  Otherwise Upgrade stays here, as in lighttpd.  CONNECT (to an
address: lighttpd refuses a name) with proxy.header "connect" is answered 200 once
the backend the URL maps to is reached, and becomes a raw tunnel to it; without
"connect" it is the core's 405.

A request body that is still arriving (server.stream-request-body 1 or 2) goes on as
it comes: with its Content-Length, or chunked when the client sent it chunked.

The backend's Date and Server headers are dropped: the core writes its own on every
answer (lighttpd keeps the backend's).
"""

from __future__ import annotations

import errno
import os
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httptools

from shared.config.directives import Directive, DirectiveValueError, Type, to_bool
from shared.config.values import Array

from shared.gateway_hosts import Extension, find_extension, parse_balance, parse_servers

from ..backend import EPOLLIN, EPOLLOUT, Backend, Backends, Connection
from ..http import NO_BODY
from ..http1 import header_name
from ..body import RequestBody
from ..module import BACKLOG_HIGH, ERROR, WAIT, HandlerResult, Module as BaseModule
from ..request import Request, simplify_path

if TYPE_CHECKING:
    from ..request import Response
    from ..services import Services

CTX = "proxy"                    # request.plugin_ctx key of a request's Exchange
READ_SIZE = 64 * 1024
MAX_HEAD = 64 * 1024             # a response head larger than this is no answer (502)
MAX_RECONNECTS = 5               # other backends tried after failed connects (lighttpd's)
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade"})
# request headers not passed on, as in lighttpd: Host is written first, `Proxy` is
# httpoxy, Set-Cookie is a response header (no reflection), Expect was answered here
# (the body is whole)
REQUEST_DROPS = HOP_BY_HOP | {"host", "proxy", "set-cookie", "expect"}
# response headers not passed on: the core writes Date and Server itself
RESPONSE_DROPS = HOP_BY_HOP | {"http2-settings", "date", "server"}
CANONICAL_NAMES = {"content-length": "Content-Length", "forwarded": "Forwarded",
                   "x-forwarded-for": "X-Forwarded-For", "x-host": "X-Host",
                   "x-forwarded-host": "X-Forwarded-Host",
                   "x-forwarded-proto": "X-Forwarded-Proto"}
REMAPPED_REQUEST_HEADERS = frozenset({"destination", "content-location"})
FORWARDED_PARAMS = ("for", "by", "proto", "host", "remote_user")   # in the order sent
_ESCAPED = re.compile(r'["\\\x00-\x08\x0a-\x1f\x7f]')
# a request-target as lighttpd normalises it (burl.c, the default server.http-parseopts)
_TARGET_AS_IS = re.compile(rb"[!$&'()*+,\-./0-9:;=?@A-Z_a-z~]*")
_TARGET_FIX = re.compile(rb"%[0-9A-Fa-f]{2}|[^!$&'()*+,\-./0-9:;=?@A-Z_a-z~]")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DOT_SEGMENT = re.compile(rb"(?:^|/)\.\.?(?:/|$)|//")
_LIST_SEPARATORS = re.compile(r"[ \t,]+")
_IPV4 = re.compile(r"[0-9.]+")

LAST_CHUNK = b"0\r\n\r\n"
# states of an Exchange
OPENING, CONNECTING, SENDING, READING, TUNNEL, DONE = range(6)


# ------------------------------------------------------------------ directives
@dataclass(frozen=True)
class HeaderOptions:
    """proxy.header, parsed once at config load."""

    urlpaths: tuple[tuple[str, str], ...] = ()
    hosts_request: tuple[tuple[str, str], ...] = ()
    hosts_response: tuple[tuple[str, str], ...] = ()
    https_remap: bool = False
    force_http10: bool = False
    upgrade: bool = False
    connect: bool = False


_HEADER_FLAGS = {"https-remap": "https_remap", "force-http10": "force_http10",
                 "upgrade": "upgrade", "connect": "connect"}
_HEADER_MAPS = {"map-urlpath": "urlpaths", "map-host-request": "hosts_request",
                "map-host-response": "hosts_response"}


def _flag(key: str, item: object) -> bool:
    try:
        return to_bool(item)        # type: ignore[arg-type]
    except DirectiveValueError:
        raise DirectiveValueError(f'expected "{key}" => "enable" or "disable"') from None


def parse_header_options(value: Array) -> HeaderOptions:
    fields: dict[str, Any] = {}
    for key, item in value:
        if key in _HEADER_FLAGS:
            flag = _flag(key, item)
            if _HEADER_FLAGS[key]:
                fields[_HEADER_FLAGS[key]] = flag
        elif key in _HEADER_MAPS and isinstance(item, Array) and all(
                name is not None and isinstance(text, str) for name, text in item):
            fields[_HEADER_MAPS[key]] = tuple(item)
        else:
            raise DirectiveValueError(
                f'unexpected key "{key}"; expected ( "param" => ( "key" => "value" ) )')
    return HeaderOptions(**fields)


def parse_forwarded(value: Array) -> frozenset[str]:
    params = set()
    for key, item in value:
        if key not in FORWARDED_PARAMS:
            raise DirectiveValueError("keys must be one of: by, for, host, proto, "
                                      f"remote_user, but not: {key}")
        if to_bool(item):
            params.add(key)
    return frozenset(params)


DIRECTIVES = (
    Directive("proxy.server", Type.ARRAY_KVANY, (), convert=parse_servers),
    Directive("proxy.balance", Type.STRING, "fair", convert=parse_balance),
    Directive("proxy.debug", Type.INT, 0),
    Directive("proxy.forwarded", Type.ARRAY_KVANY, frozenset(), convert=parse_forwarded),
    Directive("proxy.header", Type.ARRAY_KVANY, HeaderOptions(),
              convert=parse_header_options),
    Directive("proxy.replace-http-host", Type.BOOL, False),
)


# -------------------------------------------------------------- header remapping
class Remap:
    """proxy.header's host and URL-path maps for one request.  The first request host
    and path it maps are kept, to map the answer's back the same way (lighttpd's
    http_header_remap_opts)."""

    __slots__ = ("options", "http_host", "https", "forwarded_host", "forwarded_path")

    def __init__(self, options: HeaderOptions, http_host: str | None, https: bool) -> None:
        self.options = options
        self.http_host = http_host
        self.https = https and options.https_remap
        self.forwarded_host: str | None = None
        self.forwarded_path: tuple[str, str] | None = None

    @property
    def maps_request(self) -> bool:
        return bool(self.options.urlpaths or self.options.hosts_request)

    @property
    def maps_response(self) -> bool:
        return bool(self.options.urlpaths or self.options.hosts_response)

    def host_match(self, authority: str, request: bool) -> str | None:
        """The authority's replacement, or None.  Key "-" is the client's Host (for
        answers: the host it was mapped to), value "-" the client's Host, an empty
        value leaves the authority alone."""
        hosts = self.options.hosts_request if request else self.options.hosts_response
        lower = authority.lower()
        for key, value in hosts:
            if key == "-":
                key = self.http_host if request or self.forwarded_host is None \
                    else self.forwarded_host
                if key is None:
                    continue
            if lower == key.lower():
                if value == "-":
                    return self.http_host
                if value and request and self.forwarded_host is None:
                    self.forwarded_host = value
                return value or None
        return None

    def host(self, authority: str, request: bool) -> str:
        mapped = self.host_match(authority, request)
        return authority if mapped is None else mapped

    def urlpath(self, path: str, request: bool) -> str:
        """Map a URL-path prefix: forwards on the way in, backwards on the way out."""
        if request:
            for key, value in self.options.urlpaths:
                if path.startswith(key):
                    if self.forwarded_path is None:
                        self.forwarded_path = (key, value)
                    return value + path[len(key):]
            return path
        first = (self.forwarded_path,) if self.forwarded_path else ()
        for key, value in first + self.options.urlpaths:
            if path.startswith(value):
                return key + path[len(value):]
        return path

    def uri(self, value: str, request: bool) -> str:
        """A URL-path or absolute URI (Location, Destination ...) mapped: authority,
        scheme with https-remap, then URL-path."""
        if value.startswith("/"):
            return self.urlpath(value, request)
        colon = value.find(":")
        if colon < 0 or value[colon + 1:colon + 3] != "//":
            return value
        scheme, start = value[:colon], colon + 3
        slash = value.find("/", start)
        if slash < 0:
            if start == len(value):
                return value
            value, slash = value + "/", len(value)
        authority = value[start:slash]
        if not authority:
            return value
        mapped = self.host_match(authority, request)
        if mapped is not None:
            if self.https and scheme == ("https" if request else "http"):
                scheme = "http" if request else "https"
            authority = mapped
        return f"{scheme}://{authority}{self.urlpath(value[slash:], request)}"

    def set_cookie(self, value: str) -> str:
        """The Domain and Path attributes of a Set-Cookie mapped back."""
        parts = value.split(";")
        for index in range(1, len(parts)):
            part = parts[index]
            stripped = part.lstrip(" \t")
            name, equals, rest = stripped.partition("=")
            lower = name.lower()
            if not equals or lower not in ("path", "domain"):
                continue
            lead = part[:len(part) - len(stripped)]
            quote = '"' if rest.startswith('"') else ""
            rest = rest[len(quote):]
            if lower == "path":
                if rest.startswith("/"):
                    parts[index] = f"{lead}{name}={quote}{self.urlpath(rest, False)}"
            else:
                dot = "." if rest.startswith(".") else ""
                rest = rest[len(dot):]
                end = next((i for i, c in enumerate(rest) if c in " \t\r"), len(rest))
                if end:
                    parts[index] = (f"{lead}{name}={quote}{dot}"
                                    f"{self.host(rest[:end], False)}{rest[end:]}")
        return ";".join(parts)


# ------------------------------------------------------------- request to backend
def _escaped(text: str) -> str:
    return _ESCAPED.sub(lambda match: "\\" + match.group(), text)


def _node(address: str) -> str:
    """A Forwarded `for=` node: IPv4 bare, IPv6 bracketed and quoted, else quoted."""
    if _IPV4.fullmatch(address):
        return address
    if ":" in address:
        return f'"[{address}]"'
    return f'"{_escaped(address)}"'


def forwarded_value(request: Request, params: frozenset[str], current: str | None,
                    forwarded_for: str | None) -> str:
    """The Forwarded header (RFC 7239): the client's own, or one seeded from its
    X-Forwarded-For, with this hop's element appended."""
    if current:
        seen = current + ", "
    elif forwarded_for:
        seen = "".join(f'for="[{_escaped(node)}]", ' if ":" in node
                       else f'for="{_escaped(node)}", '
                       for node in _LIST_SEPARATORS.split(forwarded_for) if node)
    else:
        seen = ""
    pairs = []
    if "for" in params:
        pairs.append("for=" + _node(request.remote_ip))
    if "by" in params:
        pairs.append(f'by="{_escaped(_local_node(request))}"')
    if "proto" in params:
        pairs.append("proto=" + request.scheme)
    if "host" in params and request.host:
        pairs.append(f'host="{_escaped(request.host)}"')
    return seen + ";".join(pairs)


def _local_node(request: Request) -> str:
    """The address and port the client reached, as lighttpd's `by=` (getsockname)."""
    address, spec = request.local_address, request.socket_spec
    if not address:
        return spec
    port = spec.rpartition(":")[2]
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _connection_tokens(value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    return frozenset(token.strip().lower() for token in value.split(","))


def _origin_target(request: Request) -> str:
    """The request-target in origin form (lighttpd keeps a path from the absolute form)."""
    target = request.target
    if target.startswith("/") or target == "*":
        return target
    return request.uri_path_raw + ("?" + request.uri_query if request.uri_query else "")


def _fix_escape(match: re.Match[bytes]) -> bytes:
    text = match.group()
    if len(text) == 1:
        return b"%%%02X" % text[0]
    byte = int(text[1:], 16)
    return bytes((byte,)) if byte in _UNRESERVED else text.upper()


def normalized_target(target: str) -> str:
    """The target as lighttpd passes it on (it normalises its request-target once, for
    every module): %-escapes of unreserved characters decoded, the others in upper
    case, what must be escaped escaped, no fragment, no dot segments or `//` in the
    path.  The backend sees the path the proxy decided on, not another spelling."""
    raw = target.encode("utf-8", "surrogateescape").partition(b"#")[0]
    if not _TARGET_AS_IS.fullmatch(raw):
        raw = _TARGET_FIX.sub(_fix_escape, raw)
    path, mark, query = raw.partition(b"?")
    if _DOT_SEGMENT.search(path):
        path = simplify_path(path.decode("latin-1")).encode("latin-1")
    return (path + mark + query).decode("latin-1")


@dataclass(frozen=True)
class Framing:
    """How a request goes to its backend: the Host to send (None: there is none, and
    the request goes as HTTP/1.0), the body's length (None: not known yet, sent
    chunked as it arrives), whether the connection is kept, whether it asks to upgrade."""

    host: str | None
    length: int | None
    keep_alive: bool
    upgrade: bool


def outgoing_headers(request: Request, params: frozenset[str],
                     length: int | None) -> dict[str, str]:
    """The client's headers (lowercase name -> value, merged as the core merges them,
    in order) with the length of the body and the forwarding headers set."""
    headers = dict(request.headers)
    if length is not None and (length or request.method not in ("GET", "HEAD")):
        headers.setdefault("content-length", str(length))   # a chunked body is whole now
    if params:
        headers["forwarded"] = forwarded_value(request, params, headers.get("forwarded"),
                                               headers.get("x-forwarded-for"))
    forwarded_for = headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = f"{forwarded_for}, {request.remote_ip}" \
        if forwarded_for else request.remote_ip
    if request.host:
        headers["x-host"] = headers["x-forwarded-host"] = request.host
    headers["x-forwarded-proto"] = request.scheme
    return headers


def request_head(request: Request, params: frozenset[str], remap: Remap,
                 framing: Framing) -> bytes:
    """The request line and headers for the backend."""
    target = normalized_target(_origin_target(request))
    maps = remap.maps_request
    if maps:
        target = remap.uri(target, True)
    http10 = framing.host is None or remap.options.force_http10
    lines = [f"Host: {framing.host}"] if framing.host is not None else []
    headers = outgoing_headers(request, params, framing.length)
    tokens = _connection_tokens(headers.get("connection"))
    drops = REQUEST_DROPS | tokens if tokens else REQUEST_DROPS
    if framing.upgrade:
        drops = drops - {"upgrade"}
    names = {name.lower(): name for name, _ in reversed(request.header_list)}
    for key, value in headers.items():
        if key in drops or not value:
            continue
        if maps and key in REMAPPED_REQUEST_HEADERS:
            value = remap.uri(value, True)
        name = names.get(key) or CANONICAL_NAMES.get(key) or \
            "-".join(part.capitalize() for part in key.split("-"))
        lines.append(f"{name}: {value}")
    if framing.length is None:
        lines.append("Transfer-Encoding: chunked")
    connection = ([] if framing.keep_alive else ["close"]) + \
        (["upgrade"] if framing.upgrade else [])
    if connection:
        lines.append("Connection: " + ", ".join(connection))
    line = f"{request.method} {target} {'HTTP/1.0' if http10 else 'HTTP/1.1'}\r\n"
    return line.encode("utf-8", "surrogateescape") + \
        ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


# ------------------------------------------------------------ backend to client
class BadResponse(Exception):
    """The backend's bytes are no HTTP response we can pass on."""


class ResponseReader:
    """The backend's answer as httptools parses it, turned into the client's response:
    head filtered and remapped, body de-chunked and written as it comes.  Past the head
    of an answer with a Content-Length or none (until the backend closes), the body's
    bytes bypass the parser.  A 101 to a request that asked to upgrade switches: what
    came after its head is the first of the tunnel's bytes (`tunnel_start`)."""

    __slots__ = ("response", "remap", "head_request", "upgrade", "parser", "headers",
                 "status", "head_done", "complete", "keep_alive", "extra", "received",
                 "left", "until_close", "raw", "tunnel_start")

    def __init__(self, response: "Response", head_request: bool, upgrade: bool,
                 remap: Remap) -> None:
        self.response = response
        self.remap = remap
        self.head_request = head_request
        self.upgrade = upgrade
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.extra = False         # bytes after the answer: the connection is not reused
        self.received = 0
        self.left = -1             # body bytes still to come, by Content-Length
        self.until_close = False   # the body ends when the backend closes
        self.raw = False
        self.tunnel_start: bytes | None = None   # switched protocols: what came after

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.extra and not self.until_close

    def feed(self, data: bytes) -> bool:
        """Take bytes from the backend; True when the answer is complete."""
        self.received += len(data)
        if self.raw:
            return self._body(data)
        if self.received > MAX_HEAD and not self.head_done:
            raise BadResponse("response header too large")
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if not (self.upgrade and self.status == 101):
                raise BadResponse(f"switching protocols unasked ({self.status})") from None
            self.tunnel_start = data[upgrade.args[0]:]
            return True
        except httptools.HttpParserError as err:
            raise BadResponse(f"invalid HTTP response: {err}") from None
        if self.head_done:
            if self.status < 200:
                raise BadResponse(f"status {self.status} (no tunnel to switch protocols)")
            self.raw = not self.complete and (self.left >= 0 or self.until_close)
        return self.complete

    def _body(self, data: bytes) -> bool:
        if self.until_close:
            self.response.write(data)
            return False
        left = self.left
        if len(data) >= left:
            if len(data) > left:
                self.extra = True
                data = data[:left]
            self.response.write(data)
            self.left = 0
            self.complete = True
            return True
        self.response.write(data)
        self.left = left - len(data)
        return False

    def end_of_body(self) -> bool:
        """The backend closed: True when that ends the body (no length was given)."""
        if self.until_close:
            self.complete = True
        return self.complete

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.head_done:
            self.extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:    # 100 Continue and such: skipped
            self.headers = []
            return
        self.status = status
        self.head_done = True
        self.keep_alive = parser.should_keep_alive()
        self._take_head()

    def on_body(self, data: bytes) -> None:
        if self.complete:
            self.extra = True
            return
        self.response.write(data)
        if self.left > 0:
            self.left -= len(data)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True

    def _take_head(self) -> None:
        """Status and headers for the client; how the body is framed."""
        response = self.response
        response.status = self.status
        response.passthrough = True     # the backend's answer, its errors included
        chunked, length, tokens = False, -1, ""
        remap = self.remap if self.remap.maps_response else None
        kept = []
        switching = self.status == 101
        for name, value in self.headers:
            text, lower = header_name(name)
            if lower in RESPONSE_DROPS and not (switching and lower == "upgrade"):
                if lower == "transfer-encoding":
                    chunked = True
                elif lower == "connection":
                    tokens += "," + value.decode("latin-1")
                continue
            value_text = value.decode("latin-1")
            if lower == "content-length":
                length = int(value)
            elif remap is not None:
                value_text = _remapped(remap, lower, value_text)
            kept.append((text, lower, value_text))
        if self.head_request or self.status in NO_BODY:
            self.complete = True
        elif chunked:
            kept = [header for header in kept if header[1] != "content-length"]
        elif length >= 0:
            self.left = length
        else:
            self.until_close = True
        if tokens:
            named = _connection_tokens(tokens) - {"upgrade"}
            kept = [header for header in kept if header[1] not in named]
        if switching:
            kept.append(("Connection", "connection", "upgrade"))
        response.headers.extend((text, value) for text, _, value in kept)


def _remapped(remap: Remap, lower: str, value: str) -> str:
    """An answer's header with proxy.header's maps applied backwards."""
    if lower == "location" or lower == "content-location":
        return remap.uri(value, False)
    if lower == "set-cookie":
        return remap.set_cookie(value)
    return value


# ----------------------------------------------------------------- the exchange
class Exchange:
    """One request's round trip to a backend (lighttpd's gw handler_ctx).  Its states:
    OPENING (no connection yet), CONNECTING, SENDING, READING, TUNNEL (switched
    protocols: bytes both ways), DONE; `step` moves it on and returns the request's
    next result."""

    __slots__ = ("module", "request", "extension", "backend", "connection", "state",
                 "events", "outgoing", "body_fd", "body_offset", "body_left",
                 "body_stream", "chunked_body", "blocked", "reader", "reused", "retried",
                 "reconnects", "timeout", "since", "paused", "keep_alive", "unacked",
                 "shut", "debug_level")

    def __init__(self, module: "Module", request: Request, extension: Extension,
                 backend: Backend) -> None:
        self.module = module
        self.request = request
        self.extension = extension
        self.backend = backend
        self.connection: Connection | None = None
        self.state = OPENING
        self.events = 0                # what the loop reported since the last step
        self.outgoing = memoryview(b"")
        self.body_fd = -1              # a whole body's temp file, sent with sendfile
        self.body_offset = 0
        self.body_left = 0
        self.body_stream: RequestBody | None = None   # a body still arriving
        self.chunked_body = False      # ... of unknown length: sent chunked
        self.blocked = False           # the backend's socket took no more: EPOLLOUT
        self.reader: ResponseReader | None = None
        self.reused = False            # the connection served a request before
        self.retried = False
        self.reconnects = 0
        self.timeout = ""              # "connect", "read" or "write" once one ran out
        self.since = 0.0               # when the current wait began (for the timeouts)
        self.paused = False            # the client is behind: not reading the backend
        self.keep_alive = False
        self.unacked = 0               # tunnel bytes written since the client caught up
        self.shut = False              # the client ended its side of the tunnel
        self.debug_level: int = request.settings.values["proxy.debug"]
        backend.load += 1
        module.active.add(self)

    # ------------------------------------------------------------ loop side
    def backend_event(self, mask: int) -> None:
        """The backend's socket is ready: note it and let the core resume the request."""
        self.events |= mask
        self.request.wake()

    def check_timeout(self, now: float) -> None:
        """Once a second: connect-timeout, write-timeout, read-timeout."""
        if self.connection is None or self.timeout:
            return
        spec = self.backend.spec
        if self.state == CONNECTING:
            limit, kind = spec.connect_timeout, "connect"
        elif self.state == SENDING and self.blocked:
            limit, kind = spec.write_timeout, "write"
        elif self.state in (READING, TUNNEL) and not self.paused:
            limit, kind = spec.read_timeout, "read"
        else:
            return
        if limit and now - self.since > limit:
            self.timeout = kind
            self.request.wake()

    def release(self) -> None:
        """The request is over (answered or aborted): close what is still open."""
        self._drop_connection()
        self.backend.load -= 1
        self.module.active.discard(self)

    # ----------------------------------------------------------- core side
    def step(self) -> HandlerResult:
        if self.timeout:
            return self._timed_out()
        if self.state == OPENING:
            return self._open()
        events, self.events = self.events, 0
        if self.state == TUNNEL:
            return self._relay(events)
        if self.state == CONNECTING:
            if not events:
                return WAIT
            code = self.connection.connect_error()       # type: ignore[union-attr]
            if code:
                return self._connect_failed(OSError(code, os.strerror(code)))
            return self._start_sending()
        if self.state == SENDING and (events & EPOLLOUT or not self.blocked) \
                and not self._send():
            return self._receive()
        if self.paused:
            if self.request.response.wants_drain:
                return WAIT
            self.paused = False
            self._poll()
            return self._receive()
        if events & ~EPOLLOUT:
            return self._receive()
        return WAIT

    def _poll(self) -> None:
        """Ask the loop for what the exchange waits on: the backend's bytes unless the
        client is behind, room to send while a send would block."""
        self.connection.want((0 if self.paused else EPOLLIN)   # type: ignore[union-attr]
                             | (EPOLLOUT if self.blocked else 0))

    def _open(self) -> HandlerResult:
        """Take an idle connection to the backend or start connecting."""
        module = self.module
        backend = self.backend
        request = self.request
        values = request.settings.values
        remap = Remap(values["proxy.header"], request.host or None, request.scheme == "https")
        tunnel = request.method == "CONNECT"
        if tunnel:              # a raw tunnel to the backend: nothing of HTTP is sent
            self.outgoing = memoryview(b"")
            self.keep_alive = False
        else:
            framing = self._framing(values, remap)
            if framing.length is None and (framing.host is None or
                                           remap.options.force_http10):
                return self._error(411, "")   # no chunked body to an HTTP/1.0 backend
            self.reader = ResponseReader(request.response, request.method == "HEAD",
                                         framing.upgrade, remap)
            self._prepare(request_head(request, values["proxy.forwarded"], remap, framing))
        connection = None if self.retried or tunnel else \
            module.backends.take_idle(backend, self)
        if connection is not None:
            self.connection, self.reused = connection, True
            if self.debug_level:
                module.log(f"proxy - reusing a connection to {backend.name}")
            return self._start_sending()
        try:
            connection, established = module.backends.connect(backend, self)
        except OSError as err:
            return self._connect_failed(err)
        self.connection, self.reused = connection, False
        if self.debug_level:
            module.log(f"proxy - connecting to {backend.name}")
        if not established:
            self.state = CONNECTING
            self.since = module.services.loop.now
            return WAIT
        return self._start_sending()

    def _framing(self, values: Any, remap: Remap) -> Framing:
        request = self.request
        options: HeaderOptions = values["proxy.header"]
        spec = self.backend.spec
        if values["proxy.replace-http-host"] and spec.label:
            host: str | None = spec.label
            if self.debug_level > 1:
                self.module.log(f'proxy - using "{host}" as HTTP Host')
        elif request.host:
            host = remap.host(request.host, True) if remap.maps_request else request.host
        else:
            host = None
        body = request.body
        length: int | None = 0
        if body is not None:
            length = body.size if body.complete else \
                request.content_length if request.content_length >= 0 else None
        upgrade = self._upgrading(options.upgrade or spec.upgrade)
        self.keep_alive = spec.keepalive > 0 and host is not None and \
            not options.force_http10 and not upgrade
        return Framing(host, length, self.keep_alive, upgrade)

    def _upgrading(self, allowed: bool) -> bool:
        """lighttpd's gw_upgrade_policy: an upgrade the config allows, asked for by an
        HTTP/1.1 request without a body (else its Upgrade header stays here)."""
        request = self.request
        return allowed and request.version == "1.1" and request.body is None and \
            "upgrade" in request.headers and \
            "upgrade" in _connection_tokens(request.headers.get("connection"))

    def _prepare(self, head: bytes) -> None:
        """What to send after the head: a whole body from memory or from its file, or
        one still arriving, taken as it comes."""
        body = self.request.body
        self.body_left = 0
        self.body_stream = None
        self.outgoing = memoryview(head)
        if body is None or (body.complete and not body.size):
            return
        if not body.complete:
            self.body_stream = body
            self.chunked_body = self.request.content_length < 0
        elif body.file is None:
            self.outgoing = memoryview(head + body.read())
        else:
            body.file.flush()
            self.body_fd, self.body_offset, self.body_left = body.file.fileno(), 0, body.size

    def _start_sending(self) -> HandlerResult:
        if self.request.method == "CONNECT":
            return self._connected()
        self.state = SENDING
        self.since = self.module.services.loop.now
        if not self._send():
            return self._receive()
        return WAIT

    def _send(self) -> bool:
        """Send what is left of the request, and of its body as it arrives; False when
        the backend went away (what it answered before may still be read)."""
        connection = self.connection
        assert connection is not None
        loop = self.module.services.loop
        try:
            while True:
                while self.outgoing:
                    sent = connection.sock.send(self.outgoing)
                    self.outgoing = self.outgoing[sent:]
                    self.since = loop.now
                while self.body_left:
                    sent = os.sendfile(connection.fd, self.body_fd, self.body_offset,
                                       self.body_left)
                    if not sent:
                        raise OSError(errno.EIO, "the request body's file ended early")
                    self.body_offset += sent
                    self.body_left -= sent
                    self.since = loop.now
                if not self._next_body_part():
                    break
        except (BlockingIOError, InterruptedError):
            self.blocked = True
            self._poll()
            return True
        except OSError as err:
            if self.debug_level:
                self.module.log(f"proxy - sending to {self.backend.name} failed: "
                                f"{err.strerror}")
            self.state = READING
            self.keep_alive = self.blocked = False
            self._poll()
            return False
        self.blocked = False
        if self.body_stream is None:          # all of it is out: the answer is next
            self.state = READING
            self.since = loop.now
        self._poll()
        return True

    def _next_body_part(self) -> bool:
        """The next piece of a body that is still arriving (as a chunk when its length
        is unknown), in `outgoing`; False when none is here yet, or all went."""
        body = self.body_stream
        if body is None:
            return False
        data = body.read_chunk()
        if data:
            self.outgoing = memoryview(b"%x\r\n%s\r\n" % (len(data), data)
                                       if self.chunked_body else data)
            return True
        if not body.complete:
            return False                      # the core wakes us when more came
        self.body_stream = None
        if not self.chunked_body:
            return False
        self.outgoing = memoryview(LAST_CHUNK)
        return True

    def _receive(self) -> HandlerResult:
        """Read what the backend sent: at most BACKLOG_HIGH in one turn, and only while
        the client's backlog allows (it counts with server.stream-response-body = 2;
        otherwise the core parks what the client has not taken on disk)."""
        request = self.request
        reader = self.reader
        assert reader is not None and self.connection is not None
        sock = self.connection.sock
        budget = BACKLOG_HIGH - request.backlog()
        while budget > 0:
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return self._waiting()
            except OSError as err:
                return self._lost(err)
            if not data:
                return self._lost(None)
            self.since = self.module.services.loop.now
            try:
                if reader.feed(data):
                    return self._complete() if reader.tunnel_start is None \
                        else self._switch()
            except BadResponse as err:
                return self._bad_response(err)
            budget -= len(data)
        if request.backlog() >= BACKLOG_HIGH:
            return self._pause()
        return self._waiting()       # a turn for the core; the loop brings us back

    def _waiting(self) -> HandlerResult:
        """Nothing more to read now: the head (if it is in) goes out, the rest follows."""
        response = self.request.response
        if self.reader.head_done and not response.streaming:  # type: ignore[union-attr]
            response.stream()
        return WAIT

    def _pause(self) -> HandlerResult:
        """The client is BACKLOG_HIGH behind: stop reading until the core says it caught
        up (the backend's socket buffer fills and the backend waits in turn)."""
        self.paused = True
        self._poll()
        response = self.request.response
        response.wants_drain = True
        if not response.streaming:
            response.stream()
        return WAIT

    def _complete(self) -> HandlerResult:
        """The whole answer is in: the connection goes back to the pool if it can; an
        answer whose head has not gone out yet is sent whole, with the length the core
        counts (server.stream-response-body = 0, or it all came in one turn)."""
        reader = self.reader
        assert reader is not None and self.connection is not None
        connection, self.connection = self.connection, None
        if self.keep_alive and reader.reusable and self.state == READING:
            self.module.backends.give_back(connection)
        else:
            connection.close()
        self.state = DONE
        return reader.status

    # ------------------------------------------------------------------ tunnel
    def _switch(self) -> HandlerResult:
        """The backend switched protocols (101): its head goes out at once, then bytes
        go both ways as they come, the client's as the request's body."""
        self.state = TUNNEL
        self.since = self.module.services.loop.now
        response = self.request.response
        response.stream()
        first = self.reader.tunnel_start              # type: ignore[union-attr]
        if first:
            response.write(first)
            self.unacked = len(first)
        return WAIT

    def _connected(self) -> HandlerResult:
        """CONNECT (proxy.header "connect"): the backend is reached; the client is told
        so (200) and the connection becomes a tunnel to it, as lighttpd does."""
        self.state = TUNNEL
        self.since = self.module.services.loop.now
        response = self.request.response
        response.status = 200
        response.stream()
        self._poll()
        return WAIT

    def _relay(self, events: int) -> HandlerResult:
        """One turn of the tunnel: the backend's bytes to the client (no further ahead
        of it than BACKLOG_HIGH), the client's to the backend; the backend's end ends
        it, the client's end is passed on as a half-close."""
        ended = self._relay_down(events)
        if ended is not None:
            return ended
        return self._relay_up()

    def _relay_down(self, events: int) -> HandlerResult:
        response = self.request.response
        if self.paused:
            if response.wants_drain:
                return None
            self.paused, self.unacked = False, 0
        elif not events & ~EPOLLOUT:
            return None
        sock = self.connection.sock                      # type: ignore[union-attr]
        while self.unacked < BACKLOG_HIGH:
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as err:
                return self._error(502, f"tunnel broken ({err.strerror})")
            if not data:
                self._drop_connection()
                self.state = DONE
                return response.status
            response.write(data)
            self.unacked += len(data)
            self.since = self.module.services.loop.now
        self.paused = response.wants_drain = True
        return None

    def _relay_up(self) -> HandlerResult:
        body = self.request.body
        connection = self.connection
        assert body is not None and connection is not None
        try:
            while self.outgoing or body.unread:
                if not self.outgoing:
                    self.outgoing = memoryview(body.read_chunk())
                sent = connection.sock.send(self.outgoing)
                self.outgoing = self.outgoing[sent:]
                self.since = self.module.services.loop.now
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as err:
            return self._error(502, f"tunnel broken ({err.strerror})")
        self.blocked = bool(self.outgoing)
        if body.complete and not self.blocked and not self.shut:
            self.shut = True
            connection.sock.shutdown(socket.SHUT_WR)
        self._poll()
        return WAIT

    # --------------------------------------------------------------- failures
    def _lost(self, err: OSError | None) -> HandlerResult:
        """The backend closed (`err` None) or reset the connection."""
        reader = self.reader
        assert reader is not None
        if err is None and reader.end_of_body():
            return self._complete()
        if not reader.received and self._may_retry():
            if self.debug_level:
                self.module.log("proxy - a kept connection was closed; retrying")
            self.retried = True
            self._drop_connection()
            self.state = OPENING
            return self._open()
        reason = err.strerror if err is not None else "connection closed"
        if not reader.received:
            return self._error(502, f"response not received ({reason})")
        return self._error(502, f"response incomplete ({reason})")

    def _may_retry(self) -> bool:
        """A kept connection the backend closed as it was reused: once more on a new
        one, for a method that may be repeated and a body we still have whole."""
        body = self.request.body
        return self.reused and not self.retried and self.request.method in IDEMPOTENT \
            and (body is None or (body.complete and not body.consumed))

    def _bad_response(self, err: BadResponse) -> HandlerResult:
        return self._error(502, str(err))

    def _connect_failed(self, err: OSError) -> HandlerResult:
        self.module.backends.disable(self.backend, err)
        self._drop_connection()
        return self._elsewhere(MAX_RECONNECTS)

    def _timed_out(self) -> HandlerResult:
        kind, self.timeout = self.timeout, ""
        if kind == "connect":
            return self._connect_failed(OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT)))
        fd = self.connection.fd if self.connection is not None else -1
        self.module.log(f"{kind} timeout on socket: {self.backend.name} (fd: {fd})")
        return self._error(504, "")

    def _elsewhere(self, limit: int) -> HandlerResult:
        """Another backend of the extension for a request that could not connect
        (lighttpd's gw_reconnect); 503 when there is none or too many were tried."""
        self.reconnects += 1
        request = self.request
        backend = None
        if self.reconnects <= limit:
            backend = self.module.backends.choose(
                self.extension, request.settings.values["proxy.balance"], request.uri_path,
                request.host, request.remote_ip)
        if backend is None:
            return self._error(503, "")
        self.backend.load -= 1
        backend.load += 1
        self.backend = backend
        self.state = OPENING
        return self._open()

    def _error(self, status: int, reason: str) -> HandlerResult:
        """End the exchange with an error: the status, with lighttpd's page, while the
        client has seen nothing; ERROR (the connection cut) once it has."""
        request = self.request
        spec = self.backend.spec
        self._drop_connection()
        self.state = DONE
        if reason:
            self.module.log(f"{reason} on socket: {spec.name} for {request.host} "
                            f"{request.uri_path}?{request.uri_query}")
        response = request.response
        if response.started:
            return ERROR
        response.headers = []
        response.reset_body()
        return status

    def _drop_connection(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()


# --------------------------------------------------------------------- module
class Module(BaseModule):
    name = "proxy"
    directives = DIRECTIVES
    reads_request_body = True
    # Whether a request is claimed depends on its settings and URL path alone, and a
    # proxied answer is never kept: static answers beside a proxy may be replayed.
    replay_safe = True

    def __init__(self, config: Any, services: "Services") -> None:
        super().__init__(config, services)
        self.services: "Services" = services
        self.backends = Backends(services)
        self.active: set[Exchange] = set()

    def log(self, message: str) -> None:
        self.services.log_error("mod_proxy.c", message)

    def handle_uri_clean(self, request: Request) -> HandlerResult:
        previous = request.plugin_ctx.pop(CTX, None)
        if previous is not None:        # the phases run again (an error handler's URL)
            previous.release()
            request.handler = None
        values = request.settings.values
        extensions = values["proxy.server"]
        if not extensions or request.handler is not None:
            return None
        extension = find_extension(extensions, request.uri_path)
        if extension is None:
            return None
        if request.method == "CONNECT" and not values["proxy.header"].connect:
            return None                 # the core's 405, as lighttpd without "connect"
        backend = self.backends.choose(extension, values["proxy.balance"], request.uri_path,
                                       request.host, request.remote_ip)
        if backend is None:
            return 503
        if values["proxy.debug"]:
            self.log(f"gw - found a host {backend.spec.host} {backend.spec.port}")
        request.handler = self
        request.plugin_ctx[CTX] = Exchange(self, request, extension, backend)
        return None

    def handle_subrequest(self, request: Request) -> HandlerResult:
        return request.plugin_ctx[CTX].step()

    def handle_request_reset(self, request: Request) -> None:
        exchange = request.plugin_ctx.pop(CTX, None)
        if exchange is not None:
            exchange.release()

    def handle_trigger(self, now: float) -> None:
        self.backends.tick(now)
        for exchange in list(self.active):
            exchange.check_timeout(now)
