"""HTTP/2: the second protocol on a connection's transport.

A connection becomes an `H2Session` when its first bytes are the HTTP/2 preface: after
ALPN chose "h2" in the TLS handshake, or over cleartext by prior knowledge (h2c), as
`server.feature-flags` allow (`server.h2proto`, `server.h2c`, both on by default as in
lighttpd).  In cleartext an HTTP/1.1 request may also ask `Upgrade: h2c` (RFC 7540
3.2): the session answers 101 and that request as stream 1.  The session takes the
connection's place in the worker's loop and its table; the transport (plain or TLS)
is the same.

Each stream carries one `Request`, made as HTTP/1 makes them (target, Host from
:authority, the config's conditions, the same modules and phases), with the session
standing in as its connection: `request.wake()` resumes that stream, `backlog()`
counts that stream's unsent answer.  Streams are answered as they become ready, not
in order, and a held stream (a backend working) holds nothing else.

Output: answers are HEADERS and DATA frames.  Bodies leave as the peer's flow-control
windows allow, one frame per stream per turn so that a large answer does not starve
the others; file ranges are read from the page cache a frame at a time.  The wire
queue stays under HIGH_WATER: what does not fit waits in its stream.  Streamed answers
(CGI, proxy: `server.stream-response-body` 1 and 2) send their head when they start;
mode 1 parks on disk what the client has not taken (as HTTP/1 does).

Limits and defences:
- SETTINGS_MAX_CONCURRENT_STREAMS (MAX_STREAMS): a stream beyond it is refused alone
  (RST_STREAM REFUSED_STREAM, as RFC 9113 5.1.2 allows; the client retries it), and
  counts as a reset; the engine ends a connection that goes past STREAM_WALL.
- Header lists: SETTINGS_MAX_HEADER_LIST_SIZE is server.max-request-field-size, and
  the HPACK decoder stops decoding at HEADER_WALL times it, so an HPACK bomb (a small
  block naming a large table entry again and again) costs a bounded amount: GOAWAY
  ENHANCE_YOUR_CALM.  A CONTINUATION flood (CVE-2024-27316) is cut off at the same
  size.
- Request bodies: server.max-request-size → 413; acknowledged as they are stored.
- Resets: a peer that resets (or has refused) streams faster than RESETS_PER_SECOND
  (CVE-2023-44487, "rapid reset") gets GOAWAY ENHANCE_YOUR_CALM.
- Frames that ask work and carry none (PING, SETTINGS, WINDOW_UPDATE, PRIORITY, empty
  DATA, unknown types) draw on a budget of IDLE_FRAMES_BURST refilled at
  IDLE_FRAMES_PER_SECOND: a flood of them gets GOAWAY ENHANCE_YOUR_CALM.
- Output: the wire queue is filled to HIGH_WATER at most; while it holds more than
  READ_STOP (answers to PINGs and SETTINGS from a peer that never reads) the session
  stops reading, so its memory stays bounded; server.max-write-idle closes it, as it
  closes a stream stalled by a zero flow-control window (whose body waits as file
  ranges or spooled, never read into memory ahead of the window).
- A protocol error gets GOAWAY with its code.
A worker draining for a reload sends GOAWAY in two steps (see begin_drain) and
finishes the streams it has.

The protocol's state (frames, streams, windows, SETTINGS) is worker/h2_connection.py,
HPACK worker/h2_hpack.py (in) and worker/h2_encoder.py (out), received fields are
checked by worker/h2_fields.py; all compiled with the hot path.  Answers' fields are
made to HTTP/2's rules here (lower-case names, no connection-specific fields; the
core drops values with line breaks and trims them), and not checked again.
"""

from __future__ import annotations

import os
import time
import traceback
from typing import Any, Final

from shared import log

from . import h2_connection as wire
from . import h2_fields
from .body import RequestBody
from .byteranges import range_whole_answer
from .chunkqueue import ChunkQueue
from .connection import (CLOSED, HANDLE, REQUEST_START, WRITE, Answer, Connection,
                         _Held, _length_kept_whole, condition_field, receive, resume_woken,
                         transmit)
from .errors import BadRequest, BodyNotStored
from .h2_offer import drop_offer_tokens
from .host import normalize_host
from .http import (DATE, REGISTERED_METHODS, body_refused, expects_continue, has_no_body,
                   repeated_field, server_only)
from .lists import take
from .module import BACKLOG_HIGH
from .request import Request
from .spool import SPILL_AT
from .wire import Wire

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SWITCHING_TO_H2C: Final = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                    b"Upgrade: h2c\r\n\r\n")
MAX_STREAMS: Final = 100                # SETTINGS_MAX_CONCURRENT_STREAMS
STREAM_WALL: Final = 2 * MAX_STREAMS    # open streams beyond which h2 ends the connection
WINDOW: Final = 1 << 20                 # our receive window per stream (and connection)
HIGH_WATER: Final = 256 * 1024          # wire bytes queued before streams wait
LOW_WATER: Final = 64 * 1024
READ_STOP: Final = 2 * HIGH_WATER       # wire bytes queued before the session stops reading
FRAME_READ: Final = 1 << 16             # bytes read from a file per DATA step
RESETS_PER_SECOND: Final = 200
LAST_STREAM_ID: Final = (1 << 31) - 1   # the first drain GOAWAY's: every stream still let in
DRAIN_PING: Final = b"drain\0\0\0"
DRAIN_ROUND_TRIP: Final = 1.0           # seconds the drain PING's ACK is waited for at most
IDLE_FRAMES_BURST: Final = 1000         # frames that carry no work, in a burst ...
IDLE_FRAMES_PER_SECOND: Final = 200     # ... and in the long run
SMALL_WINDOW_UPDATE: Final = 1024       # a WINDOW_UPDATE below this is counted as idle
HEADER_WALL: Final = 4                  # × header_limit: where HPACK decoding stops
INT64_MAX: Final = (1 << 63) - 1    # the largest Content-Length lighttpd reads
EPOLLIN: Final = 0x001
EPOLLOUT: Final = 0x004
# headers HTTP/2 forbids (RFC 9113 8.2.2): dropped from answers
_CONNECTION_SPECIFIC: Final = frozenset({"connection", "keep-alive", "proxy-connection",
                                         "transfer-encoding", "upgrade"})
_PSEUDO: Final = frozenset({b":method", b":path", b":scheme", b":authority"})
_CONTINUE_HEAD: Final = [(b":status", b"100")]    # an interim answer: the body may come


class _Budget:
    """A token bucket: `burst` at once, `rate` a second in the long run."""

    __slots__ = ("burst", "rate", "left", "at")

    def __init__(self, burst: float, rate: float, now: float) -> None:
        self.burst, self.rate = burst, rate
        self.left, self.at = burst, now

    def spend(self, now: float, cost: float = 1.0) -> bool:
        """False once the peer has spent more than the bucket holds."""
        self.left = min(self.burst, self.left + (now - self.at) * self.rate) - cost
        self.at = now
        return self.left >= 0


class _Stream:
    """One request/response exchange of the session."""

    __slots__ = ("id", "request", "held", "parts", "ending", "head_sent", "head_bytes",
                 "handled", "sent", "trailers", "refused")

    def __init__(self, stream_id: int, request: Request) -> None:
        self.id = stream_id
        self.request = request
        self.held: _Held | None = None
        self.parts: list[Any] = []       # body parts waiting for the flow window
        self.ending = False              # END_STREAM after the parts
        self.head_sent = False
        self.head_bytes = 0              # the answer's HEADERS frames (access log)
        self.handled = False
        self.sent = 0                    # body bytes sent
        self.trailers: list[tuple[str, str]] | None = None
        # answered before its body came whole: what more comes is dropped, and a
        # RST_STREAM (NO_ERROR) follows the answer, so that the client stops sending
        # (RFC 9113 8.1)
        self.refused = False

    def pending_bytes(self) -> int:
        return sum(len(p) if type(p) is not tuple else p[2] for p in self.parts)


class H2Session(Wire):
    """The HTTP/2 side of a connection: what the loop, the server's table and each
    stream's Request see as their connection."""

    def __init__(self, connection: "Connection", first: bytes,
                 upgraded: Request | None = None) -> None:
        """`first`: the bytes read so far (from the preface on); `upgraded`: the HTTP/1
        request that asked `Upgrade: h2c`, answered 101 here and as stream 1."""
        server = self.server = connection.server
        self.transport = connection.transport
        self.fd = connection.fd
        self.set_origin(connection.remote_ip, connection.socket_spec, connection.scheme,
                        connection.condition_cache, connection.global_settings,
                        connection.compiled_config, connection.remote_port)
        self.limits = server.config.settings
        self.out = ChunkQueue()
        self.streams: dict[int, _Stream] = {}
        self.ready: list[_Stream] = []    # complete requests of the read being taken in
        self.state = REQUEST_START
        self.closing = False             # GOAWAY sent: close once the streams are done
        self.last_stream = 0             # the last stream that GOAWAY lets finish
        self.events = connection.events
        self.last_read = self.last_write = server.loop.now
        self.requests_done = connection.requests_done
        self.bytes_read = len(first)
        self.resets: list[float] = []
        self.idle_frames = _Budget(IDLE_FRAMES_BURST, IDLE_FRAMES_PER_SECOND, server.loop.now)
        self.last_data = server.loop.now  # when a body frame last left
        self.stalled_since: float | None = None
        # streams open up to STREAM_WALL: the session refuses those beyond MAX_STREAMS
        # one by one; the HPACK decoder stops at HEADER_WALL x the field limit, an HPACK
        # bomb's bound (a request whose fields pass header_limit, but not this, is
        # answered 431, as HTTP/1 answers it)
        self.h2 = wire.H2Connection(
            [(wire.MAX_CONCURRENT_STREAMS, MAX_STREAMS), (wire.INITIAL_WINDOW_SIZE, WINDOW),
             (wire.MAX_HEADER_LIST_SIZE, server.header_limit), (wire.ENABLE_PUSH, 0)],
            STREAM_WALL, HEADER_WALL * server.header_limit)
        if upgraded is None:
            self.h2.initiate_connection()
        else:
            self.out.append(SWITCHING_TO_H2C)
            self.h2.initiate_upgrade_connection(upgraded.headers["http2-settings"].encode())
        self.h2.increment_flow_control_window(WINDOW)
        server.loop.unregister(self.fd)
        server.loop.register(self.fd, EPOLLIN, self)
        self.events = EPOLLIN
        server.connections[self.fd] = self
        if upgraded is not None:
            drop_offer_tokens(upgraded.headers)
            self._adopt(upgraded)
        self._receive(first)
        if server.draining:              # taken over while the worker drains
            self.begin_drain()
        self._after()

    # ------------------------------------------------------ what requests see
    @property
    def closed(self) -> bool:
        return self.state is CLOSED

    def condition_value(self, field: str) -> str:
        return condition_field(self, field)

    def wake(self, request: Request) -> None:
        stream = self.streams.get(request.plugin_ctx.get("_h2", 0))
        if stream is not None and stream.held is not None and not stream.held.queued:
            stream.held.queued = True
            self.server.loop.call_soon(lambda: self._resume(stream))

    def send_interim(self, request: Request, status: int, fields: list[tuple[str, str]]) -> None:
        """A 1xx HEADERS frame on the request's stream, before its answer's head."""
        stream = self.streams.get(request.plugin_ctx.get("_h2", 0))
        if stream is None or stream.head_sent or self.state is CLOSED:
            return
        self.h2.send_headers(stream.id, _head_fields(status, fields))
        self.server.loop.call_soon(self._after_if_open)   # out with this round's frames

    def _after_if_open(self) -> None:
        if self.state is not CLOSED:
            self._after()

    def backlog_of(self, request: Request) -> int:
        stream = self.streams.get(request.plugin_ctx.get("_h2", 0))
        return stream.pending_bytes() if stream is not None else 0

    # ------------------------------------------------------------ events
    def on_event(self, events: int) -> None:
        try:
            if events & EPOLLOUT or self.transport.read_wants_write:
                self.flush()
            if self.state is not CLOSED and events & EPOLLIN:
                self._read()
            if self.state is not CLOSED:
                self._after()
        except Exception:  # noqa: BLE001 - a bug costs this connection only
            log.error("h2.c", f"internal error on an HTTP/2 connection from "
                      f"{self.remote_ip}, closing it:\n{traceback.format_exc().rstrip()}")
            self.close()

    def _read(self) -> None:
        data = receive(self)
        if data:
            self._receive(data)
        elif data is not None:          # the client's end
            self.close()

    def _receive(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except wire.ProtocolError as err:
            self._goaway(err.error_code, str(err))
            return
        for event in events:
            self._dispatch(event)
            if self.state is CLOSED:
                return
        # answered once the whole read is taken in: a stream the same read reset
        # (or a GOAWAY) is not answered at all
        ready, self.ready = self.ready, []
        for stream in ready:
            if self.streams.get(stream.id) is stream and self.state is not CLOSED:
                self._respond(stream)

    def _after(self) -> None:
        """After a round: frames out (with the round's other answers: see worker/loop.py),
        epoll interest, state."""
        self._pump()
        if self.out.chunks and self.server.loop.sends_later(self):
            return
        self.flush()
        if self.state is CLOSED:
            return
        if self.closing and not self.streams and not self.out.chunks and \
                self.last_stream != LAST_STREAM_ID:
            self.close()
            return
        self.state = WRITE if self.out.chunks else HANDLE if self.streams else REQUEST_START
        # a peer that does not read what it asked for is not read either
        want = EPOLLIN if self.out.pending < READ_STOP else 0
        if (self.out.chunks and not self.paused) or self.transport.read_wants_write:
            want |= EPOLLOUT
        if want != self.events:
            self.server.loop.modify(self.fd, want)
            self.events = want

    # ---------------------------------------------------- engine events
    def _dispatch(self, event: wire.Event) -> None:
        """The event to its handler, the most frequent kinds first."""
        kind = event.kind
        if kind == wire.REQUEST:
            self._request_received(event)
        elif kind == wire.STREAM_ENDED:
            self._stream_ended(event)
        elif kind == wire.BODY:
            self._data_received(event)
        elif kind == wire.WINDOW_UPDATED:
            self._window_updated(event)
        elif kind == wire.STREAM_RESET:
            self._stream_reset(event)
        elif kind == wire.TRAILERS:
            self._trailers_received(event)
        elif kind == wire.TERMINATED:
            self._terminated(event)
        elif kind == wire.PING_ACK:
            self._ping_acknowledged(event)
        elif kind == wire.PRIORITY_UPDATED:
            self._priority_updated(event)
        else:                        # PING, SETTINGS, unknown frames
            self._idle_frame(event)

    def _request_received(self, event: wire.Event) -> None:
        if self.closing and event.stream_id > self.last_stream:
            self._reset_stream(event.stream_id, wire.REFUSED_STREAM)
            return                           # after our GOAWAY: the client retries
        if len(self.streams) >= MAX_STREAMS:
            self._reset_stream(event.stream_id, wire.REFUSED_STREAM)
            self._count_reset(event.stream_id)
            return
        request = Request(self, self.server.loop.now)
        request.version = "2.0"
        stream = _Stream(event.stream_id, request)
        request.plugin_ctx["_h2"] = stream.id     # the id: no request <-> stream cycle
        self.streams[event.stream_id] = stream
        self.requests_done += 1
        try:
            h2_fields.check_request(event.headers)
            self._start_request(request, event.headers)
        except wire.ProtocolError as malformed:
            # RFC 9113 8.1.1: a malformed request is this stream's error, which may be
            # answered first; answered 400 as lighttpd answers it, the connection goes on
            self._log_malformed("request", event.stream_id, malformed)
            request.method = _method_of(event.headers)   # a HEAD's 400 has no body
            # lighttpd looks at the method first: one it does not know is 501
            known = not request.method or request.method in REGISTERED_METHODS
            request.response.status = 400 if known else 501
            request.keep_alive = True
            self.ready.append(stream)
            return
        except BadRequest as err:
            request.response.status = err.status
            self.ready.append(stream)
            return
        except (ValueError, UnicodeDecodeError):
            request.response.status = 400
            self.ready.append(stream)
            return
        if event.ended:
            return                           # STREAM_ENDED follows: handled there
        values = request.settings.values
        request.body = RequestBody(self.server.upload_dirs,
                                   spill=values["server.stream-request-body"] != 2)
        self.ready.append(stream)    # handled now (see Request.waits_for_body)

    def _adopt(self, request: Request) -> None:
        """The request that upgraded the connection: stream 1, answered over HTTP/2."""
        request.connection = self
        request.version = "2.0"
        request.keep_alive = True
        stream = _Stream(1, request)
        request.plugin_ctx["_h2"] = stream.id
        self.streams[1] = stream
        self.requests_done += 1
        self.ready.append(stream)

    def _start_request(self, request: Request, headers: list[tuple[bytes, bytes]]) -> None:
        pseudo: dict[bytes, bytes] = {}
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 4
            if name in _PSEUDO:
                pseudo[name] = value
                continue
            if not value:
                continue            # an empty field is none, as in lighttpd
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            request.raw_fields += (key, text)
            if key in request.headers:
                text = repeated_field(key, request.headers[key], text)
            request.headers[key] = text
        request.header_bytes = size      # the fields as HTTP/1 would carry them
        if size > self.server.header_limit:
            raise BadRequest(431)
        request.method = pseudo.get(b":method", b"GET").decode("latin-1")
        request.keep_alive = True
        if request.method not in REGISTERED_METHODS:
            raise BadRequest(501, f"unknown method {request.method[:32]!r}")
        authority = pseudo.get(b":authority") or request.headers.get("host", "").encode()
        if authority:
            request.host = normalize_host(authority.decode("latin-1"), request.scheme)
            request.headers["host"] = request.host     # as lighttpd sets it
        target = pseudo.get(b":path", b"")
        if request.method == "CONNECT" or not target:
            raise ValueError("no :path")
        request.set_target(target.decode("utf-8", "surrogateescape"))
        length = request.headers.get("content-length")
        if length is not None:
            # digits alone, as lighttpd reads them (int() takes a sign, "1_0" ...)
            if not (length.isascii() and length.isdigit()) or int(length) > INT64_MAX:
                raise BadRequest(400, "invalid Content-Length header")
            request.content_length = int(length)
            if request.content_length > 0 and body_refused(request):
                raise BadRequest(400, "GET/HEAD with a body")
        request.expect_continue = expects_continue(request.headers)
        request.configure()

    def _data_received(self, event: wire.Event) -> None:
        if not event.data and not event.ended:
            self._idle_frame(event)
            if self.state is CLOSED:
                return
        stream = self.streams.get(event.stream_id)
        if event.flow_length:
            self.h2.acknowledge_received_data(event.flow_length, event.stream_id)
        if stream is None or stream.request.body is None or stream.refused:
            return
        if event.data and body_refused(stream.request):
            self._refuse(stream, 400)
            return
        body = stream.request.body
        declared = stream.request.content_length
        if 0 <= declared < body.size + len(event.data):
            self._cut(stream, wire.PROTOCOL_ERROR)    # RFC 9113 8.1.1: malformed
            return
        limit = stream.request.settings.values["server.max-request-size"] * 1024
        if limit and body.size + len(event.data) > limit:
            self._refuse(stream, 413)
            return
        try:
            body.append(event.data)
        except BodyNotStored as err:
            log.error("h2.c", f"{err.strerror} (a request from {self.remote_ip})")
            self._refuse(stream, 500)
            return
        if stream.held is not None and not stream.request.waits_for_body():
            stream.request.wake()         # (one waiting for the whole body: at its end)

    def _trailers_received(self, event: wire.Event) -> None:
        """Trailers are checked (worker/h2_fields.py), and otherwise not used."""
        try:
            h2_fields.check_trailers(event.headers)
        except wire.ProtocolError as malformed:       # the stream's error, as above
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                self._log_malformed("trailers", event.stream_id, malformed)
                self._refuse(stream, 400)

    def _log_malformed(self, what: str, stream_id: int, why: Exception) -> None:
        """Logged with debug.log-request-header-on-error only, as lighttpd logs a
        refused request (a client sending them must not fill the error log)."""
        if self.server.global_settings.values["debug.log-request-header-on-error"]:
            log.error("h2.c", f"malformed {what} on stream {stream_id} from "
                      f"{self.remote_ip}: {why} -> 400")

    def _stream_ended(self, event: wire.Event) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        body = stream.request.body
        if body is not None:
            if body.size < stream.request.content_length and not stream.refused:
                self._cut(stream, wire.PROTOCOL_ERROR)     # shorter than it said
                return
            body.complete = True
        if not stream.handled and stream not in self.ready:
            self.ready.append(stream)
        elif stream.held is not None:
            stream.request.wake()

    def _idle_frame(self, _event: wire.Event) -> None:
        """A frame that asks work and brings none: from the peer's budget."""
        if not self.idle_frames.spend(self.server.loop.now):
            self._goaway(wire.ENHANCE_YOUR_CALM, "flood of idle frames")

    def _window_updated(self, event: wire.Event) -> None:
        if event.delta < SMALL_WINDOW_UPDATE:
            self._idle_frame(event)

    def _priority_updated(self, event: wire.Event) -> None:
        if event.stream_id not in self.streams:      # not a request's own priority
            self._idle_frame(event)

    def _stream_reset(self, event: wire.Event) -> None:
        self._count_reset(event.stream_id)

    def _count_reset(self, stream_id: int) -> None:
        """A stream reset by the peer, or refused by us: counted against rapid reset."""
        now = self.server.loop.now
        resets = self.resets
        resets.append(now)
        while resets and now - resets[0] > 1.0:
            resets.pop(0)
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._abort(stream)
        if len(resets) > RESETS_PER_SECOND:
            self._goaway(wire.ENHANCE_YOUR_CALM, "rapid reset")

    def _terminated(self, _event: wire.Event) -> None:
        self.closing = True
        for stream in list(self.streams.values()):
            if not stream.handled:
                self.streams.pop(stream.id)

    # ---------------------------------------------------------- answering
    def _respond(self, stream: _Stream) -> None:
        if stream.handled:
            return
        stream.handled = True
        request = stream.request
        pipeline = self.server.pipeline
        if pipeline.handle(request):     # a status set while parsing is settled there
            self._answer(stream)
        else:
            stream.held = _Held(request, 0)
            if request.woken:
                self.wake(request)
            self._ask_for_body(stream)
            self._stream_out(stream)

    def _resume(self, stream: _Stream) -> None:
        held = stream.held
        if held is None or self.state is CLOSED or self.streams.get(stream.id) is not stream:
            return
        held.queued = False
        request = stream.request
        finished = resume_woken(self, request)
        if finished is None:
            self._cut(stream)
            return
        if finished:
            stream.held = None
            held.close_spool()
            if request.response.started:
                request.response.end_encoding()
                self._stream_out(stream)
                self._end_body(stream)
            else:
                self._answer(stream)
        else:
            self._ask_for_body(stream)
            self._stream_out(stream)
        self._after()

    def _ask_for_body(self, stream: _Stream) -> None:
        """The interim 100 to a client that waits for it before its body (see
        Request.continue_due)."""
        if stream.request.continue_due():
            self.h2.send_headers(stream.id, _CONTINUE_HEAD)

    def _answer(self, stream: _Stream) -> None:
        """A complete answer: its head, and its body for the flow windows."""
        request = stream.request
        response = request.response
        response.end_encoding()
        if response.streaming and not response.started:
            _length_kept_whole(response)
        if response.status == 200 and not response.ranged and not response.started:
            range_whole_answer(request)
        response.head_only = response.head_only or request.method == "HEAD"
        self._send_head(stream, with_length=True)
        self._end_body(stream)

    def _send_head(self, stream: _Stream, with_length: bool) -> None:
        request = stream.request
        response = request.response
        status = response.status or 200
        response.status = status
        headers = _head_fields(status, response.headers)
        if with_length and not has_no_body(status) and status >= 200 and \
                response.get_header("Content-Length") is None:
            headers.append((b"content-length", str(response.length).encode()))
        own = {name for name, _ in headers} if response.own_fields else ()
        if b"date" not in own:
            headers.append(DATE.field)
        tag = request.settings.values["server.tag"]
        if tag and b"server" not in own:
            headers.append(_server_field(tag))
        no_body = response.head_only or has_no_body(status)
        if no_body:
            response.reset_body()
        ends = no_body and not response.streaming
        stream.head_bytes = self.h2.send_headers(stream.id, headers, end_stream=ends)
        stream.head_sent = True
        stream.ending = ends
        response.started = True

    def _stream_out(self, stream: _Stream) -> None:
        """A held request's answer so far: the head once streaming has begun (unless
        server.stream-response-body = 0 keeps it whole), then what was written."""
        request = stream.request
        response = request.response
        if not response.streaming:
            return
        mode = request.settings.values["server.stream-response-body"]
        held = stream.held
        if not response.started:
            if mode == 0:
                if held is not None and response.memory_bytes() > SPILL_AT and \
                        not held.spill(response, self.server.upload_dirs):
                    self._refuse(stream, 500)
                return
            self.server.pipeline.start_stream(request)
            self._send_head(stream, with_length=False)
        if response.head_only:
            response.reset_body()
            return
        if mode == 1 and held is not None and \
                stream.pending_bytes() + response.memory_bytes() > BACKLOG_HIGH and \
                not held.spill(response, self.server.upload_dirs):
            self._refuse(stream, 500)        # its head is out: the stream is reset
            return
        self._take_parts(stream)

    def _take_parts(self, stream: _Stream) -> None:
        response = stream.request.response
        stream.parts += response.body
        response.body = []
        response.files = 0

    def _end_body(self, stream: _Stream) -> None:
        """The answer is complete: its last parts (and trailers) close the stream; the
        request ends for the modules, and is counted once the last frame is out."""
        request = stream.request
        if not stream.ending:
            self._take_parts(stream)
            stream.trailers = request.response.trailers
            stream.ending = True
        if self.server.pipeline.request_reset:
            self.server.pipeline.reset(request)
        if request.body is not None:
            request.body.close()

    def _refuse(self, stream: _Stream, status: int) -> None:
        """An error that ends the stream's request early (a body over the limit or not
        stored, an answer that could not be kept): `status` while no head went out,
        else the stream is reset."""
        if stream.head_sent:
            self._cut(stream)
            return
        self._abort(stream, counted=False)
        request = stream.request
        request.response.reset_body()
        request.response.status = status
        stream.held = None
        stream.handled = stream.refused = True
        self.server.pipeline.fail(request, status)
        self._answer(stream)

    def _cut(self, stream: _Stream, code: int = wire.INTERNAL_ERROR) -> None:
        """A stream that cannot be answered properly any more: reset it."""
        self.streams.pop(stream.id, None)
        self._abort(stream)
        self._reset_stream(stream.id, code)

    def _reset_stream(self, stream_id: int, code: int) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except wire.StreamClosedError:
            pass

    def _abort(self, stream: _Stream, counted: bool = True) -> None:
        """The stream ends before its answer did (reset, connection lost)."""
        request = stream.request
        for part in stream.parts:
            _close_part(part)
        stream.parts = []
        held, stream.held = stream.held, None
        if held is not None:
            held.close_spool()
            request.aborted = True
            request.response.reset_body()
            if self.server.pipeline.request_reset:
                self.server.pipeline.reset(request)
        if request.body is not None:
            request.body.close()
        if counted and stream.handled:
            request.response.status = request.response.status or 500
            self._ended(stream, aborted=True)

    # ------------------------------------------------------------- output
    def _pump(self) -> None:
        """Move body frames into the wire queue as the windows allow, a frame per
        stream per turn; close the streams whose answers are out."""
        h2conn = self.h2
        out = self.out
        room = HIGH_WATER - out.pending
        moved = True
        while moved:                     # answers already whole end even when full
            moved = False
            for stream in list(self.streams.values()):
                if not stream.head_sent:
                    continue
                if stream.parts and room > 0:
                    sent = self._send_frame(stream)
                    if sent:
                        moved = True
                        room -= sent
                if not stream.parts and stream.ending:
                    self._finish(stream)
        data = h2conn.data_to_send()
        if data:
            out.append(data)

    def _send_frame(self, stream: _Stream) -> int:
        """One DATA frame of the stream as its window allows; the bytes it took."""
        h2conn = self.h2
        try:
            window = min(h2conn.local_flow_control_window(stream.id),
                         h2conn.max_outbound_frame_size)
        except wire.StreamClosedError:
            stream.parts = []
            return 0
        if window <= 0:
            return 0
        part = stream.parts[0]
        if type(part) is tuple:
            fd, offset, length = part[0], part[1], part[2]
            data = os.pread(fd, min(window, length, FRAME_READ), offset)
            if not data:
                self._cut(stream)             # the file shrank under us
                return 0
            rest = length - len(data)
            if rest:
                stream.parts[0] = (fd, offset + len(data), rest) + tuple(part[3:])
            else:
                _close_part(take(stream.parts, 0))
        else:
            data = part[:window]
            if len(data) < len(part):
                stream.parts[0] = part[window:]
            else:
                take(stream.parts, 0)
        last = not stream.parts and stream.ending and not stream.trailers
        h2conn.send_data(stream.id, bytes(data), end_stream=last)
        stream.sent += len(data)
        self.last_data = self.server.loop.now
        request = stream.request
        if request.response.wants_drain and stream.pending_bytes() < LOW_WATER:
            request.response.wants_drain = False
            request.wake()
        return len(data) + 9

    def _finish(self, stream: _Stream) -> None:
        """The answer's last frame is queued: END_STREAM (with trailers if any)."""
        self.streams.pop(stream.id, None)
        if stream.trailers:
            self.h2.send_headers(stream.id, [(k.lower().encode("latin-1"),
                                              v.encode("latin-1", "replace"))
                                             for k, v in stream.trailers], end_stream=True)
        elif stream.sent == 0 and stream.head_sent and not self._ended_by_head(stream):
            self.h2.end_stream(stream.id)
        body = stream.request.body
        if stream.refused or (body is not None and not body.complete):
            # answered before all of its body came: the client may stop sending it
            # (RFC 9113 8.1), as lighttpd asks it to
            self._reset_stream(stream.id, wire.NO_ERROR)
        self._ended(stream, aborted=False)

    def _ended_by_head(self, stream: _Stream) -> bool:
        response = stream.request.response
        return response.head_only or has_no_body(response.status)

    def _ended(self, stream: _Stream, aborted: bool) -> None:
        """Count the request; run the request-done hooks (access log)."""
        request = stream.request
        server = self.server
        server.counters.request(request.method, request.response.status,
                                time.monotonic() - request.start)
        if server.pipeline.request_done:
            body = request.body
            bytes_in = request.header_bytes + (body.size if body is not None else 0)
            out = stream.head_bytes + stream.sent
            answer = Answer(0, out, stream.head_bytes, request.response.length, bytes_in,
                            True, self.requests_done)
            answer.bytes_out = out
            answer.aborted = aborted or request.aborted
            answer.end_time = time.time()
            answer.end_monotonic = time.monotonic()
            request.plugin_ctx["answer"] = answer
            server.pipeline.done(request)

    def flush(self) -> None:
        """Send what the socket takes; below LOW_WATER, more frames from the streams.
        Ends when the socket takes nothing more (a peer that does not read)."""
        out = self.out
        while out.chunks and transmit(self) and self.state is not CLOSED:
            if out.pending < LOW_WATER:
                self._pump()

    # ------------------------------------------------------- closing
    def _goaway(self, code: int, why: str) -> None:
        if self.server.debug:
            log.error("h2.c", f"GOAWAY to {self.remote_ip}: {why}")
        self.h2.close_connection(code)
        self.out.append(self.h2.data_to_send())
        self.closing = True
        for stream in list(self.streams.values()):
            self.streams.pop(stream.id)
            self._abort(stream)
        self.flush()
        if self.state is not CLOSED:
            self.close()

    def begin_drain(self) -> None:
        """A reload: no new streams; the ones under way finish.  In two steps (RFC 9113
        6.8): a GOAWAY that still lets every stream in, with a PING; once its ACK is
        back (or after DRAIN_ROUND_TRIP), a stream the client opened has reached us,
        and the last GOAWAY names the last one.  The client retries nothing it sent.
        The GOAWAYs are written here, not through h2's close_connection, after which
        h2 sends nothing more."""
        if self.closing or self.state is CLOSED:
            return
        self.closing = True
        self.last_stream = LAST_STREAM_ID
        self._send_goaway()
        self.h2.ping(DRAIN_PING)
        self.server.loop.call_later(DRAIN_ROUND_TRIP, self._last_goaway)
        self._after()

    def _send_goaway(self) -> None:
        self.h2.goaway(self.last_stream, wire.NO_ERROR)

    def _ping_acknowledged(self, event: wire.Event) -> None:
        if event.data == DRAIN_PING:
            self._last_goaway()

    def _last_goaway(self) -> None:
        if self.last_stream != LAST_STREAM_ID or self.state is CLOSED:
            return
        self.last_stream = self.h2.highest_inbound_stream_id
        self._send_goaway()
        self._after()

    def is_idle(self) -> bool:
        return not self.streams and not self.out.chunks

    def _stalled_for(self, now: float) -> float:
        """How long answers have waited for the peer's flow-control windows without a
        body frame leaving (0 when none waits)."""
        if not any(s.parts and s.head_sent for s in self.streams.values()):
            self.stalled_since = None
            return 0.0
        if self.stalled_since is None or self.last_data > self.stalled_since:
            self.stalled_since = now
        return now - self.stalled_since

    def check_timeout(self, now: float) -> None:
        values = self.limits
        write_idle = values["server.max-write-idle"]
        if self.out.chunks and now - self.last_write > write_idle or \
                self._stalled_for(now) > write_idle:
            self.close()
        elif not self.streams and \
                now - max(self.last_read, self.last_write) > values["server.max-keep-alive-idle"]:
            self.begin_drain()
            if self.state is not CLOSED and not self.out.chunks:
                self.close()
        elif self.streams and all(not s.handled for s in self.streams.values()) and \
                now - self.last_read > values["server.max-read-idle"]:
            self.close()

    def close(self) -> None:
        if self.state is CLOSED:
            return
        self.state = CLOSED
        for hook in self.server.pipeline.connection_close:
            hook(self)
        for stream in list(self.streams.values()):
            self._abort(stream)
        self.streams.clear()
        self.out.clear()
        self.server.forget(self)
        self.transport.close()


_FIELD_NAMES: Final[dict[str, bytes]] = {}
_FIELD_NAMES_KEPT: Final = 1024
# the same tuple for every answer: the encoder's look-ups hash nothing new
_STATUS_FIELDS: Final[dict[int, tuple[bytes, bytes]]] = {}
_SERVER_FIELDS: Final[dict[str, tuple[bytes, bytes]]] = {}


def _head_fields(status: int, fields: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """A head's HEADERS fields: the status, then `fields` but those HTTP/2 does not
    carry (connection-specific ones), empty ones and a 304's Content-Encoding (as
    over HTTP/1)."""
    headers = [_status_field(status)]
    for name, value in fields:
        field = _field_name(name)
        if field and value and (status != 304 or field != b"content-encoding"):
            headers.append((field, value.encode("latin-1", "replace")))
    return headers


def _status_field(status: int) -> tuple[bytes, bytes]:
    field = _STATUS_FIELDS.get(status)
    if field is None:
        field = _STATUS_FIELDS[status] = (b":status", str(status).encode())
    return field


def _server_field(tag: str) -> tuple[bytes, bytes]:
    """server.tag as a field (a config has a few values at most)."""
    field = _SERVER_FIELDS.get(tag)
    if field is None:
        field = _SERVER_FIELDS[tag] = (b"server", tag.encode("utf-8", "surrogateescape"))
    return field


def _field_name(name: str) -> bytes:
    """An answer field's name as HTTP/2 sends it (lower case), b"" for those it
    forbids and those never sent (X-Sendfile, X-LIGHTTPD-*, as over HTTP/1); the
    names seen are kept (up to _FIELD_NAMES_KEPT)."""
    field = _FIELD_NAMES.get(name)
    if field is None:
        lower = name.lower()
        unsent = lower in _CONNECTION_SPECIFIC or server_only(lower)
        field = b"" if unsent else lower.encode("latin-1", "replace")
        if len(_FIELD_NAMES) < _FIELD_NAMES_KEPT:
            _FIELD_NAMES[name] = field
    return field


def _close_part(part: Any) -> None:
    if type(part) is tuple:
        if len(part) == 4:
            part[3].release()
        else:
            os.close(part[0])


def _method_of(fields: list[tuple[bytes, bytes]]) -> str:
    """The :method of a field block, GET when it has none."""
    for name, value in fields:
        if name == b":method":
            return value.decode("latin-1")
    return "GET"
