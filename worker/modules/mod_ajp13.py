"""mod_ajp13: requests forwarded to a servlet container over AJP/1.3, as lighttpd
1.4.69's mod_ajp13: `ajp13.server`, `ajp13.balance`, `ajp13.debug`,
`ajp13.map-extensions`.

Requests are claimed by URL prefix or extension as the CGI-style gateways claim them
(worker/gw_cgi.py), `check-local` off for every host as lighttpd has it: a prefix
splits the URL path as there ("/app" of /app/x/y forwards the URL path /app).
Authorizer hosts are asked first, as for FastCGI.  The request goes as one
FORWARD_REQUEST packet (worker/ajp13.py: the URL path, the client's address, the
server name from Host without its port, the listening port, the client's header
fields as lighttpd keeps them (Request.fields_as_written) after a Content-Length
lighttpd adds when the client sent none, the query string, REMOTE_USER, AUTH_TYPE and
AJP13_SECRET from the request's environment) and the body in data packets; a method
AJP has no code for, or a head longer than 8 KiB, is 400.  A body still arriving
without a length is 411.  The container's SEND_HEADERS are read as an HTTP head, as
far as lighttpd reads them (a second one, after the body began, is ignored), its
SEND_BODY_CHUNKs stream to the client, END_RESPONSE ends the
answer (the container's own error answers go out as they are, without the server's
error page); a container that closes before it, or sends what is not AJP13, is a
502 (lighttpd: 500).  One connection per request, as lighttpd.

Where this differs from lighttpd, on purpose:
- a data packet carries the length of its data before it, as the protocol has it and
  servlet containers read it (Tomcat's AjpProcessor); lighttpd 1.4.69 sends the
  bytes alone, which a container reads as a wrong length;
- the body goes as it comes rather than one packet per GET_BODY_CHUNK, with the empty
  packet after it: the connection serves no other request, so nothing the container
  does not read can be taken for one;
- a container that closes before END_RESPONSE, or sends a body packet of a wrong
  length, after its head: 502, where lighttpd sends what came as the whole answer.
"""

from __future__ import annotations

import dataclasses

from shared.config.directives import Directive, Type
from shared.config.values import Array
from shared.gateway_hosts import Extension, parse_balance, parse_servers

from .. import ajp13
from ..backend import Backend
from ..gateway import request_body_length
from ..gw_cgi import CgiExchange, CgiGatewayModule
from ..http import header_characters
from ..module import HandlerResult
from ..request import Request


def parse_ajp13_servers(value: Array) -> tuple[Extension, ...]:
    """ajp13.server: lighttpd's host arrays, `check-local` off for every host."""
    return tuple(Extension(extension.key, tuple(
        dataclasses.replace(spec, check_local=False) for spec in extension.hosts))
        for extension in parse_servers(value))


DIRECTIVES = (
    Directive("ajp13.server", Type.ARRAY_KVANY, (), convert=parse_ajp13_servers),
    Directive("ajp13.balance", Type.STRING, "fair", convert=parse_balance),
    Directive("ajp13.debug", Type.INT, 0),
    Directive("ajp13.map-extensions", Type.ARRAY_KVSTRING, ()),
)


def server_name(host: str) -> str:
    """The Host without its port, as lighttpd sends it (an IPv6 literal keeps its
    brackets)."""
    if host.startswith("["):
        end = host.find("]:")
        return host if end < 0 else host[:end + 1]
    return host.partition(":")[0]


def forward(request: Request) -> ajp13.ForwardRequest:
    """What the container is told of `request`."""
    headers = [(name, header_characters(value))
               for name, value in request.fields_as_written()]
    if request.content_length < 0:
        headers.insert(0, ("Content-Length", str(request_body_length(request))))
    env = request.env or {}
    attributes = [(code, env[name]) for code, name in (
        (ajp13.ATTRIBUTE_REMOTE_USER, "REMOTE_USER"),
        (ajp13.ATTRIBUTE_AUTH_TYPE, "AUTH_TYPE")) if name in env]
    if request.uri_query:
        attributes.append((ajp13.ATTRIBUTE_QUERY_STRING, request.uri_query))
    if "AJP13_SECRET" in env:
        attributes.append((ajp13.ATTRIBUTE_SECRET, env["AJP13_SECRET"]))
    spec = request.socket_spec
    port = 0 if spec.startswith("/") else int(spec.rpartition(":")[2] or 0)
    return ajp13.ForwardRequest(
        request.method, f"HTTP/{request.version}", request.uri_path, request.remote_ip,
        server_name(request.host), port, request.scheme == "https", headers, attributes)


class Ajp13Exchange(CgiExchange):
    """One request to a servlet container."""

    __slots__ = ("packets",)

    def __init__(self, module: "Module", request: Request, extension: Extension,
                 backend: Backend, authorizer: bool) -> None:
        super().__init__(module, request, extension, backend, authorizer)
        self.packets = ajp13.ResponseReader()

    def prepare(self) -> HandlerResult:
        request = self.request
        if not self.authorizer and request_body_length(request) < 0:
            request.keep_alive = False       # the rest of its body is never read
            return self.error(411, "")
        head = ajp13.forward_request(forward(request))
        if head is None:
            return self.error(400, "")
        if self.authorizer:
            self.outgoing = memoryview(head + ajp13.EMPTY_DATA_PACKET)
        else:
            self.send_body(head, whole_raw=False)
        return None

    def frame(self, data: bytes) -> bytes:
        return ajp13.body_packets(data)

    def frame_end(self) -> bytes:
        return ajp13.EMPTY_DATA_PACKET

    def take(self, data: bytes) -> HandlerResult:
        try:
            events = self.packets.feed(data)
        except ajp13.BadPacket as err:
            return self.error(502, f"AJP13: {err}")
        for event in events:
            if type(event) is ajp13.Headers:
                if self.answer is not None or self.decided is not None:
                    self.module.log("AJP13: headers received after body started")
                    continue
                failed = self.output(event.head)
            elif type(event) is ajp13.BodyChunk:
                if self.answer is None and self.decided is None:
                    return self.error(502, "AJP13: body received before headers")
                failed = self.output(event.data) if event.data else None
            elif type(event) is ajp13.EndResponse:
                return self.output_ended(False)
            else:
                failed = None                # the body goes unasked (see above)
            if failed is not None:
                return failed
        return None


class Module(CgiGatewayModule):
    name = "ajp13"
    source = "mod_ajp13.c"
    directives = DIRECTIVES

    def new_exchange(self, request: Request, extension: Extension, backend: Backend,
                     authorizer: bool) -> CgiExchange:
        return Ajp13Exchange(self, request, extension, backend, authorizer)
