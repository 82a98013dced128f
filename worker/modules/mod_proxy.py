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

import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httptools

from shared.config.directives import Directive, DirectiveValueError, Type, to_bool
from shared.config.values import Array

from shared.gateway_hosts import Extension, parse_balance, parse_responder_servers

from ..backend import EPOLLOUT, Backend
from ..gateway import (asks_to_upgrade, current_media_type, find_extension, intercepts,
                       keep_challenge)
from ..gw_exchange import DONE, READ_SIZE, TUNNEL, Exchange as GatewayExchange, \
    GatewayModule
from ..http import has_no_body, list_tokens
from ..http1 import header_name
from ..module import BACKLOG_HIGH, WAIT, HandlerResult
from ..request import Request
from ..urlnorm import normalised

if TYPE_CHECKING:
    from ..request import Response

MAX_HEAD = 64 * 1024             # a response head larger than this is no answer (502)
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
_LIST_SEPARATORS = re.compile(r"[ \t,]+")
_IPV4 = re.compile(r"[0-9.]+")

LAST_CHUNK = b"0\r\n\r\n"


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
    Directive("proxy.server", Type.ARRAY_KVANY, (), convert=parse_responder_servers),
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
                client = self.http_host if request or self.forwarded_host is None \
                    else self.forwarded_host
                if client is None:
                    continue
                key = client
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


def _origin_target(request: Request) -> str:
    """The request-target in origin form (lighttpd keeps a path from the absolute form)."""
    target = request.target
    if target.startswith("/") or target == "*":
        return target
    return request.uri_path_raw + ("?" + request.uri_query if request.uri_query else "")


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
    target = normalised(_origin_target(request), request.url_flags)
    maps = remap.maps_request
    if maps:
        target = remap.uri(target, True)
    http10 = framing.host is None or remap.options.force_http10
    lines = [f"Host: {framing.host}"] if framing.host is not None else []
    headers = outgoing_headers(request, params, framing.length)
    tokens = list_tokens(headers.get("connection"))
    drops = REQUEST_DROPS | tokens if tokens else REQUEST_DROPS
    if framing.upgrade:
        drops = drops - {"upgrade"}
    names = request.written_names()
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

    __slots__ = ("request", "remap", "head_request", "upgrade", "parser", "headers",
                 "status", "head_done", "complete", "keep_alive", "extra", "received",
                 "left", "until_close", "raw", "tunnel_start", "dropping")

    def __init__(self, request: "Request", head_request: bool, upgrade: bool,
                 remap: Remap) -> None:
        self.request = request
        self.remap = remap
        self.head_request = head_request
        self.upgrade = upgrade
        parser = httptools.HttpResponseParser(self)
        # a head's lines may end in LF alone, as lighttpd and nginx read them
        parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self.parser: httptools.HttpResponseParser | None = parser
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
        self.dropping = False      # an intercepted error's body: read, not passed on

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.extra and not self.until_close

    def detach(self) -> None:
        """The exchange is over: the parser goes (it holds this reader's bound methods,
        a cycle the GC would otherwise have to find for every proxied request)."""
        self.parser = None

    def feed(self, data: bytes) -> bool:
        """Take bytes from the backend; True when the answer is complete."""
        self.received += len(data)
        if self.raw:
            return self._body(data)
        if self.received > MAX_HEAD and not self.head_done:
            raise BadResponse("response header too large")
        parser = self.parser
        assert parser is not None, "fed after the exchange ended"
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if not (self.upgrade and self.status == 101):
                raise BadResponse(f"switching protocols unasked ({self.status})") from None
            self.tunnel_start = data[upgrade.args[0]:]
            return True
        except httptools.HttpParserError as err:
            if isinstance(err.__context__, BadResponse):   # one of ours, from a callback
                raise err.__context__ from None
            if self.complete:        # bytes past a whole answer: dropped, as lighttpd does
                self.extra = True
                return True
            raise BadResponse(f"invalid HTTP response: {err}") from None
        if self.head_done:
            if self.status < 200:
                raise BadResponse(f"status {self.status} (no tunnel to switch protocols)")
            self.raw = not self.complete and (self.left >= 0 or self.until_close)
        return self.complete

    def _body(self, data: bytes) -> bool:
        if self.until_close:
            self._write(data)
            return False
        left = self.left
        if len(data) >= left:
            if len(data) > left:
                self.extra = True
                data = data[:left]
            self._write(data)
            self.left = 0
            self.complete = True
            return True
        self._write(data)
        self.left = left - len(data)
        return False

    def _write(self, data: bytes) -> None:
        if not self.dropping:
            self.request.response.write(data)

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
        assert parser is not None      # this runs in its callback
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # an interim answer (103 Early Hints) goes on to the client, as RFC 9110
            # 15.2 asks of a proxy; 100 Continue is the core's to send, not the backend's
            if status != 100:
                self.request.send_interim(status, [
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in self.headers
                    if header_name(name)[1] not in RESPONSE_DROPS])
            self.headers = []
            return
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":     # lighttpd reads HTTP/1.x alone
            raise BadResponse(f"invalid HTTP status line: HTTP/{version} {status}")
        self.status = status
        self.head_done = True
        self.keep_alive = parser.should_keep_alive()
        self._take_head()

    def on_body(self, data: bytes) -> None:
        if self.complete:
            self.extra = True
            return
        self._write(data)
        if self.left > 0:
            self.left -= len(data)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True

    def _take_head(self) -> None:
        """Status and headers for the client; how the body is framed."""
        response = self.request.response
        response.status = self.status
        self.dropping = intercepts(self.request, self.status)
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
            elif lower == "content-type":
                value_text = current_media_type(value_text)
            elif remap is not None:
                value_text = _remapped(remap, lower, value_text)
            kept.append((text, lower, value_text))
        if self.head_request or has_no_body(self.status):
            self.complete = True
            if self.head_request:      # its length is the backend's to say (or none)
                response.stream()
        elif chunked:
            kept = [header for header in kept if header[1] != "content-length"]
        elif length >= 0:
            self.left = length
        else:
            self.until_close = True
        if tokens:
            named = list_tokens(tokens) - {"upgrade"}
            kept = [header for header in kept if header[1] not in named]
        if switching:
            kept.append(("Connection", "connection", "upgrade"))
        if self.dropping:
            keep_challenge(self.request, [(text, value) for text, _, value in kept])
            return
        response.passthrough = True     # the backend's answer, its errors included
        response.headers.extend((text, value) for text, _, value in kept)


def _remapped(remap: Remap, lower: str, value: str) -> str:
    """An answer's header with proxy.header's maps applied backwards."""
    if lower == "location" or lower == "content-location":
        return remap.uri(value, False)
    if lower == "set-cookie":
        return remap.set_cookie(value)
    return value


# ----------------------------------------------------------------- the exchange
class Exchange(GatewayExchange):
    """One request's round trip to an HTTP backend (worker/gw_exchange.py drives it):
    the request head as lighttpd's proxy_create_env writes it, the body chunked when
    its length is not known yet, the answer parsed by httptools; a 101 or a CONNECT
    turns it into a TUNNEL, bytes relayed both ways."""

    __slots__ = ("reader", "chunked_body", "unacked", "shut")

    def __init__(self, module: "Module", request: Request, extension: Extension,
                 backend: Backend) -> None:
        super().__init__(module, request, extension, backend)
        self.reader: ResponseReader | None = None
        self.chunked_body = False      # a body of unknown length: sent chunked
        self.unacked = 0               # tunnel bytes written since the client caught up
        self.shut = False              # the client ended its side of the tunnel

    # ------------------------------------------------------ protocol hooks
    def prepare(self) -> HandlerResult:
        request = self.request
        values = request.settings.values
        remap = Remap(values["proxy.header"], request.host or None, request.scheme == "https")
        if request.method == "CONNECT":   # a raw tunnel to the backend: no HTTP is sent
            self.outgoing = memoryview(b"")
            self.keep_alive = False
            return None
        framing = self._framing(values, remap)
        if framing.length is None and (framing.host is None or remap.options.force_http10):
            return self.error(411, "")    # no chunked body to an HTTP/1.0 backend
        self.reader = ResponseReader(request, request.method == "HEAD",
                                     framing.upgrade, remap)
        body = request.body
        self.chunked_body = body is not None and not body.complete and \
            request.content_length < 0
        self.send_body(request_head(request, values["proxy.forwarded"], remap, framing),
                       whole_raw=True)
        return None

    def may_reuse(self) -> bool:
        return not self.retried and self.request.method != "CONNECT"

    def release(self) -> None:
        super().release()
        if self.reader is not None:
            self.reader.detach()

    def frame(self, data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if self.chunked_body else data

    def frame_end(self) -> bytes:
        return LAST_CHUNK if self.chunked_body else b""

    def take(self, data: bytes) -> HandlerResult:
        reader = self.reader
        assert reader is not None
        try:
            if not reader.feed(data):
                return None
        except BadResponse as err:
            return self.error(502, str(err))
        if reader.tunnel_start is not None:
            return self._switch()
        return self.finish(reader.status, reader.reusable)

    def closed(self, err: OSError | None) -> HandlerResult:
        reader = self.reader
        assert reader is not None
        if err is None and reader.end_of_body():
            return self.finish(reader.status, reader.reusable)
        return None

    def answer_started(self) -> None:
        response = self.request.response
        if self.reader.head_done and not response.streaming:  # type: ignore[union-attr]
            response.stream()

    def step(self) -> HandlerResult:
        if self.state == TUNNEL and not self.timeout:
            events, self.events = self.events, 0
            return self._relay(events)
        return super().step()

    def _start_sending(self) -> HandlerResult:
        if self.request.method == "CONNECT":
            return self._connected()
        return super()._start_sending()

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
        upgrade = self._upgrading((options.upgrade or spec.upgrade) and not options.force_http10)
        self.keep_alive = spec.keepalive > 0 and host is not None and \
            not options.force_http10 and not upgrade
        return Framing(host, length, self.keep_alive, upgrade)

    def _upgrading(self, allowed: bool) -> bool:
        """lighttpd's gw_upgrade_policy: an upgrade the config allows (never to an
        HTTP/1.0 backend, force-http10), asked for by an HTTP/1.1 request without a
        body (else its Upgrade header stays here)."""
        return allowed and asks_to_upgrade(self.request)

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
                return self.error(502, f"tunnel broken ({err.strerror})")
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
            return self.error(502, f"tunnel broken ({err.strerror})")
        self.blocked = bool(self.outgoing)
        if body.complete and not self.blocked and not self.shut:
            self.shut = True
            connection.sock.shutdown(socket.SHUT_WR)
        self._poll()
        return WAIT


# --------------------------------------------------------------------- module
class Module(GatewayModule):
    name = "proxy"
    source = "mod_proxy.c"
    directives = DIRECTIVES

    def handle_uri_clean(self, request: Request) -> HandlerResult:
        if self.ctx_key in request.plugin_ctx:   # the phases run again (an error handler's URL)
            self.release(request)
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
        backend = self.choose(request, extension)
        if backend is None:
            return 503
        if values["proxy.debug"]:
            self.log(f"gw - found a host {backend.spec.host} {backend.spec.port}")
        request.handler = self
        request.plugin_ctx[self.ctx_key] = Exchange(self, request, extension, backend)
        return None
