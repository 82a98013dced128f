"""mod_wstunnel: WebSocket clients tunnelled to a plain TCP or unix-socket backend, as
lighttpd 1.4.69's mod_wstunnel does it.

A GET over HTTP/1.1 with `Upgrade: websocket` and `Connection: upgrade` whose URL path
has a prefix or extension of `wstunnel.server` (or one `wstunnel.map-extensions` maps
to) is claimed in handle_uri_clean: a backend is chosen (`wstunnel.balance`; none up:
503), the Origin checked against `wstunnel.origins` (a suffix at a dot boundary; no
Origin: 400, another: 403), the Sec-WebSocket-Version read (a negative one: 400).
Once the backend is connected the server answers the handshake itself: 101 with
Sec-WebSocket-Accept for versions 8 to 13, hybi-00's (version 0, or none) with the
MD5 answer after the client's 8 key bytes, 503 for versions 1 to 7, 400 without a
key.  Then the tunnel: the client's frames are unmasked and their payloads go to the
backend as bytes (worker/websocket.py); the backend's bytes go to the client as frames
of `wstunnel.frame-type` ("text", or "binary", also chosen by a client asking for the
"binary" subprotocol).  Pings are answered, `wstunnel.ping-interval` pings the client
every so many seconds.  Either side's end ends both: the client's close frame is
answered with its code, a backend that closes gives the client a close frame, a
client silent for `server.max-read-idle` gets an empty close frame (as lighttpd: the
core leaves a tunnel's deadlines to its module).  Memory stays bounded both ways: the backend is not read while the client is
BACKLOG_HIGH behind, the client's bytes are not taken while the backend has not
taken the previous ones.

Where this differs from lighttpd, on purpose:
- close frames carry their code as two bytes (RFC 6455 5.5.1); lighttpd sends the four
  characters "1000", which a client reads as code 12592 and refuses;
- a protocol error (an unmasked frame, reserved bits, a fragmented control frame, text
  that is not UTF-8) is answered with 1002 or 1007, where lighttpd sends its "1000";
- a backend that ends the connection gets the client a close frame (1000; 1001 when it
  broke), where lighttpd closes without one;
- "Sec-WebSocket-Protocol: binary" is answered only to a client that offered it
  (RFC 6455 4.1: a client fails a connection whose subprotocol it did not ask for);
  lighttpd sends it with every binary tunnel;
- a text frame never splits a UTF-8 character across two backend reads;
- hybi-00's MD5 answer is the draft's (the key numbers big-endian), which lighttpd
  computes little-endian on x86;
- hybi-00's 101 head goes out at once and the MD5 answer once the client's 8 key
  bytes are in; lighttpd waits for them before answering at all.
"""

from __future__ import annotations

import re

from shared.config.directives import Directive, DirectiveValueError, Type
from shared.gateway_hosts import Extension, parse_balance, parse_responder_servers

from .. import websocket as ws
from ..backend import Backend
from ..gateway import find_extension
from ..gw_exchange import GatewayModule
from ..http import list_tokens
from ..module import WAIT, HandlerResult
from ..request import Request
from ..tunnel import DONE, OPEN, BackendTunnel

HYBI00_KEY3 = 8                  # bytes a hybi-00 client sends after its head
LOG_ERR, LOG_INFO = 1, 3         # wstunnel.debug levels (lighttpd's MOD_WEBSOCKET_LOG_*)
_VERSION = re.compile(r"[0-9]+")


# ------------------------------------------------------------------ directives
def parse_frame_type(value: str) -> bool:
    """wstunnel.frame-type: True for "binary" (any case), text for anything else."""
    return value.lower() == "binary"


def parse_origins(value: tuple[str, ...]) -> tuple[str, ...]:
    if any(not origin for origin in value):
        raise DirectiveValueError("unexpected empty string in wstunnel.origins")
    return value


DIRECTIVES = (
    Directive("wstunnel.server", Type.ARRAY_KVANY, (), convert=parse_responder_servers),
    Directive("wstunnel.balance", Type.STRING, "fair", convert=parse_balance),
    Directive("wstunnel.debug", Type.INT, 0),
    Directive("wstunnel.map-extensions", Type.ARRAY_KVSTRING, ()),
    Directive("wstunnel.frame-type", Type.STRING, False, convert=parse_frame_type),
    Directive("wstunnel.origins", Type.ARRAY_VLIST, (), convert=parse_origins),
    Directive("wstunnel.ping-interval", Type.SHORT, 0),
)


# ------------------------------------------------------------------ the request
def asks_for_websocket(request: Request) -> bool:
    """A GET over HTTP/1.1 with Upgrade: websocket and Connection: upgrade (lighttpd
    leaves anything else to the other modules)."""
    headers = request.headers
    return request.method == "GET" and request.version == "1.1" and \
        "websocket" in list_tokens(headers.get("upgrade")) and \
        "upgrade" in list_tokens(headers.get("connection"))


def matching_extension(values: dict, path: str) -> Extension | None:
    """The extension of wstunnel.server the path has, else the one a
    wstunnel.map-extensions suffix of the path names (lighttpd's gw_check_extension)."""
    extensions = values["wstunnel.server"]
    extension = find_extension(extensions, path)
    if extension is not None:
        return extension
    for suffix, target in values["wstunnel.map-extensions"]:
        if path.endswith(suffix):
            return next((ext for ext in extensions if ext.key == target), None)
    return None


def websocket_version(request: Request) -> int:
    """Sec-WebSocket-Version as lighttpd reads it (strtol after a digit): 0 when absent
    (hybi-00), negative when it starts with no digit (a sign, a letter) or is out of
    range."""
    value = request.headers.get("sec-websocket-version")
    if value is None:
        return 0
    match = _VERSION.match(value)
    if match is None:
        return -1
    number = int(match.group())
    return number if number <= 0x7FFFFFFF else -1


def origin_refusal(request: Request, allowed: tuple[str, ...]) -> int:
    """0 when wstunnel.origins lets the request's Origin (or Sec-WebSocket-Origin) in:
    a listed origin is a suffix of it at a dot (or all of it).  400 without one, 403
    for another."""
    if not allowed:
        return 0
    headers = request.headers
    origin = headers.get("origin")
    if origin is None:
        origin = headers.get("sec-websocket-origin")
    if not origin:
        return 400
    for suffix in allowed:
        if origin == suffix or (origin.endswith(suffix) and
                                origin[len(origin) - len(suffix) - 1] == "."):
            return 0
    return 403


def script_path(key: str, path: str) -> str:
    """The URL path without its path-info, as lighttpd's gw core leaves it for a prefix
    (hybi-00's Sec-WebSocket-Location names it): cut at the first slash after it."""
    if not key.startswith("/") or key == "/":
        return path
    slash = path.find("/", len(key))
    return path if slash < 0 else path[:slash]


def wants_binary(request: Request, configured: bool) -> tuple[bool, str]:
    """Whether backend bytes go out as binary frames, and the subprotocol to answer:
    "binary" when the client offered it (it also chooses binary frames), "base64"
    when a text client offered that (named only, as lighttpd does)."""
    offered = request.headers.get("sec-websocket-protocol")
    names = list_tokens(offered)
    if "binary" in names:
        return True, "binary"
    if not configured and "base64" in names:
        return False, "base64"
    return configured, ""


# ------------------------------------------------------------------ the tunnel
class Tunnel(BackendTunnel):
    """One WebSocket connection relayed to its backend (lighttpd's handler_ctx): the
    handshake answered once the backend is reached, then frames both ways."""

    __slots__ = ("version", "binary", "subprotocol", "decoder", "text_tail", "key3",
                 "ping_due", "last_ping", "last_heard", "heard", "idle", "debug_level")

    def __init__(self, module: "Module", request: Request, extension: Extension,
                 backend: Backend, version: int) -> None:
        values = request.settings.values
        super().__init__(module, request, extension, backend)
        self.version = version
        self.binary, self.subprotocol = wants_binary(request, values["wstunnel.frame-type"])
        self.decoder: ws.FrameDecoder | ws.Hybi00Decoder = \
            ws.FrameDecoder() if version else ws.Hybi00Decoder(self.binary)
        self.text_tail = b""             # the start of a UTF-8 character cut by a read
        # hybi-00: the key bytes after the client's head, None once answered
        self.key3: bytes | None = None if version else b""
        self.ping_due = False
        self.last_ping = 0.0
        self.last_heard = 0.0            # when the client last sent anything
        self.heard = 0                   # bytes it had sent then
        self.idle = False                # silent past server.max-read-idle
        self.debug_level: int = values["wstunnel.debug"]

    def log(self, level: int, message: str) -> None:
        if self.debug_level >= level:
            self.module.log(message)

    def check_timeout(self, now: float) -> None:
        """Once a second: the connect timeout, a client silent for server.max-read-idle
        (closed, as lighttpd: the core leaves a tunnel's deadlines to its module), and
        the pings of wstunnel.ping-interval (RFC 6455 only, as lighttpd)."""
        super().check_timeout(now)
        if self.state != OPEN:
            return
        values = self.request.settings.values
        body = self.request.body
        if body is not None and body.size != self.heard:
            self.heard, self.last_heard = body.size, now
        elif now - self.last_heard > values["server.max-read-idle"]:
            self.idle = True
            self.request.wake()
            return
        interval = values["wstunnel.ping-interval"]
        if self.version and interval and now - self.last_ping >= interval:
            self.last_ping = now
            self.ping_due = True
            self.request.wake()

    def relay(self, events: int) -> HandlerResult:
        if self.idle:
            self.log(LOG_INFO, "wstunnel - timeout client")
            return self._close(0)
        if self.ping_due:
            self.ping_due = False
            self.request.response.write(ws.encode_frame(ws.OP_PING, b"ping"))
        if self.key3 is not None and self.request.body is not None:
            if not self._take_key3():
                return self.finish() if self.request.body.complete else WAIT
        return super().relay(events)

    # ------------------------------------------------------------ handshake
    def connected(self) -> HandlerResult:
        """The backend is reached: answer the client's handshake (lighttpd answers only
        now, so a bad handshake to a backend that is down is a 503 there too)."""
        request = self.request
        response = request.response
        response.headers = [("Upgrade", "websocket")]
        if self.version >= 8:
            key = request.headers.get("sec-websocket-key")
            if key is None:
                return self._refuse(400, "Sec-WebSocket-Key is invalid")
            response.add_header("Sec-WebSocket-Accept", ws.accept_key(key))
            if self.subprotocol:
                response.add_header("Sec-WebSocket-Protocol", self.subprotocol)
        elif self.version == 0:
            if not self._hybi00_acceptable():
                return self._refuse(400, "hybi-00 handshake is invalid")
            scheme = "wss" if request.scheme == "https" else "ws"
            path = script_path(self.extension.key, request.uri_path)
            response.add_header("Sec-WebSocket-Location", f"{scheme}://{request.host}{path}")
        else:
            return self._refuse(503, "not supported WebSocket Version")
        response.add_header("Connection", "upgrade")
        response.status = 101
        response.stream()
        self.state = OPEN
        self.last_ping = self.last_heard = self.module.services.loop.now
        self.log(LOG_INFO, f"WebSocket Version = {self.version or 'hybi-00'}")
        return WAIT

    def _hybi00_acceptable(self) -> bool:
        headers = self.request.headers
        return bool(headers.get("origin") or headers.get("sec-websocket-origin")) and \
            self._key_numbers() is not None

    def _key_numbers(self) -> tuple[int, int] | None:
        headers = self.request.headers
        first = ws.hybi00_key_number(headers.get("sec-websocket-key1", ""))
        second = ws.hybi00_key_number(headers.get("sec-websocket-key2", ""))
        if first is None or second is None:
            return None
        return first, second

    def _refuse(self, status: int, reason: str) -> HandlerResult:
        """A handshake lighttpd refuses after connecting: the status, and the
        connection closes (HANDLER_ERROR there)."""
        self.log(LOG_ERR, reason)
        self.drop_connection()
        self.state = DONE
        self.request.response.headers = []
        self.request.keep_alive = False
        return status

    def _take_key3(self) -> bool:
        """Collect the 8 bytes a hybi-00 client sends after its head; once they are in,
        the MD5 answer goes out and frames follow."""
        held, body = self.key3, self.request.body
        assert held is not None and body is not None     # step() saw both there
        key3 = held + body.read_chunk(HYBI00_KEY3 - len(held))
        self.key3 = key3
        if len(key3) < HYBI00_KEY3:
            return False
        numbers = self._key_numbers()
        assert numbers is not None                       # the handshake checked the keys
        self.request.response.write(ws.hybi00_answer(numbers[0], numbers[1], key3))
        self.key3 = None
        return True

    # ------------------------------------------------------------------ frames
    def downstream(self, data: bytes) -> bytes:
        """The backend's bytes as a frame of the tunnel's type (a text frame holds back
        the start of a character the read cut)."""
        if not self.version:
            return ws.hybi00_frame(data, self.binary)
        if self.binary:
            return ws.encode_frame(ws.OP_BINARY, data)
        if self.text_tail:
            data = self.text_tail + data
        whole = ws.utf8_complete(data)
        self.text_tail = data[whole:]
        return ws.encode_frame(ws.OP_TEXT, data[:whole]) if whole else b""

    def upstream(self, data: bytes) -> HandlerResult:
        """The client's frames: payloads to the backend, pings answered, a close
        answered and the end of the tunnel."""
        try:
            events = self.decoder.feed(data)
        except ws.ProtocolError as err:
            self.log(LOG_ERR, f"wstunnel - client: {err}")
            return self._close(err.code)
        response = self.request.response
        for event in events:
            if type(event) is ws.Data:
                self.outgoing += event.payload
            elif event.opcode == ws.OP_PING:
                response.write(ws.encode_frame(ws.OP_PONG, event.payload))
            elif event.opcode == ws.OP_CLOSE:
                return self._client_closed(event.payload)
        return None

    def _client_closed(self, payload: bytes) -> HandlerResult:
        """The client's close frame: answered with its code (RFC 6455 5.5.1)."""
        self.log(LOG_INFO, "wstunnel - the client closed")
        if not self.version:
            return self._close(None)
        try:
            code = ws.close_code(payload)
        except ws.ProtocolError as err:
            return self._close(err.code)
        return self._close(code if code is not None else ws.CLOSE_NORMAL)

    def backend_ended(self, err: OSError | None) -> HandlerResult:
        if err is not None:
            self.log(LOG_ERR, f"wstunnel - backend {self.backend.name}: {err.strerror}")
            return self._close(ws.CLOSE_GOING_AWAY)
        self.log(LOG_INFO, "wstunnel - the backend closed")
        return self._close(ws.CLOSE_NORMAL)

    def client_ended(self) -> HandlerResult:
        """The client ended its side without a close frame: nothing more to say to it."""
        self.log(LOG_INFO, "wstunnel - disconnected from client")
        return self.finish()

    def _close(self, code: int | None) -> HandlerResult:
        """A close frame with `code` (hybi-00's own; 0: one without a code) to the
        client, then the end."""
        response = self.request.response
        if not self.version:
            response.write(ws.HYBI00_CLOSE)
        elif code == 0:
            response.write(ws.encode_frame(ws.OP_CLOSE))
        elif code is not None:
            response.write(ws.encode_frame(ws.OP_CLOSE, ws.close_payload(code)))
        return self.finish()


# --------------------------------------------------------------------- module
class Module(GatewayModule):
    name = "wstunnel"
    source = "mod_wstunnel.c"
    directives = DIRECTIVES
    # Whether a request is claimed depends on its settings and headers alone, and a
    # tunnel is never kept: static answers beside it may be replayed.
    replay_safe = True
    reads_headers = frozenset({"upgrade"})

    def handle_uri_clean(self, request: Request) -> HandlerResult:
        if self.name in request.plugin_ctx:   # the phases run again (an error handler's URL)
            self.release(request)
            request.handler = None
        values = request.settings.values
        if not values["wstunnel.server"] or request.handler is not None or \
                not asks_for_websocket(request):
            return None
        extension = matching_extension(values, request.uri_path)
        if extension is None:
            return None
        backend = self.choose(request, extension)
        if backend is None:
            return 503
        refusal = self._refusal(request, values)
        if refusal:
            return refusal
        request.handler = self
        request.plugin_ctx[self.name] = Tunnel(self, request, extension, backend,
                                               websocket_version(request))
        return None

    def _refusal(self, request: Request, values: dict) -> int:
        """lighttpd's wstunnel_check_request: the status refusing the handshake, or 0."""
        debug = values["wstunnel.debug"]
        if websocket_version(request) < 0:
            reason, status = "invalid Sec-WebSocket-Version", 400
        elif not request.host:
            reason, status = "Host header does not exist", 400
        else:
            status = origin_refusal(request, values["wstunnel.origins"])
            reason = "Origin header is invalid" if status == 400 else \
                "the Origin matches no allowed origin"
        if status and debug >= LOG_ERR:
            self.log(reason)
        return status
