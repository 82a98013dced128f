"""One client connection: lighttpd's connection state machine, between a transport
(worker/transport.py: the bytes) and the HTTP/1 parser (worker/http1.py: requests).

    REQUEST_START -> READ -> (HANDLE) -> WRITE -> REQUEST_START (keep-alive)
                                 |          `-> LINGER -> CLOSED
                                 `-> TUNNEL (101, CONNECT) -> CLOSED

`Connection.state` is lighttpd's con->state: set where a transition happens (a module
holds the request, a protocol switch, the lingering close, the close), and settled
in `update_events` for the rest, from what the connection then has to do: write
queued answers, read a request under way, or wait for the next one.  The epoll
interest follows from the state there, as lighttpd sets it after its state machine.

The parser may hand over several pipelined requests from one read.  Completed
requests wait in `ready` and are answered strictly in order; a request a module holds
(module.WAIT) holds those behind it until its answer is queued.  While
the output queue is above HIGH_WATER the connection neither handles more of them nor
reads, so a client that pipelines without reading cannot make us buffer without bound.
Errors found while parsing become a queued error response followed by a close, after
the answers to the requests that came before it.

Request done: a request ends when the last byte of its answer has left, or when the
connection is lost before that.  Then, and only then, it is counted in the worker's
stats (method, status, duration) and the handle_request_done hooks (access log) run.
Each answered request gets an `Answer` (in `request.plugin_ctx["answer"]`) that marks
where its bytes end in the connection's output stream; `flush` counts the bytes sent
and finishes the answers they complete.
"""

from __future__ import annotations

import select
import time
import traceback
from enum import IntEnum
from typing import TYPE_CHECKING, Final

from shared import log

from . import debuglog
from .body import RequestBody
from .byteranges import range_whole_answer
from .chunkqueue import ChunkQueue
from .h2_offer import drop_h2c_offer
from .handler import AnswerCut
from .http import (DATE, connection_line, core_fields, has_no_body, kept_head, reason,
                   render_start, server_line)
from .http1 import Http1Parser
from .lists import take
from .module import BACKLOG_HIGH
from .request import Request, Response
from .spool import SPILL_AT, Spool
from .throttle import Throttle
from .transport import Transport
from .wire import Wire

if TYPE_CHECKING:
    from .answercache import Answer as KeptAnswer
    from .h2 import H2Session
    from .module import Module
    from .server import Server

HIGH_WATER: Final = 256 * 1024
LINGER_SECONDS: Final = 2.0
EPOLLIN: Final = select.EPOLLIN
EPOLLOUT: Final = select.EPOLLOUT
EPOLLERR_HUP: Final = select.EPOLLERR | select.EPOLLHUP
EPOLLRDHUP: Final = select.EPOLLRDHUP
LOW_WATER: Final = 64 * 1024          # a paused producer is woken below this
BODY_HIGH_WATER: Final = 64 * 1024    # unread streamed body above which the client waits
LAST_CHUNK: Final = b"0\r\n\r\n"
RAW: Final = "_raw"                   # plugin_ctx mark of a connection handed over whole
# looked up once (compiled, `time.monotonic` is an attribute look-up on the module)
_MONOTONIC: Final = time.monotonic
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
PARSER_KEPT_IDLE: Final = 1.0         # seconds between requests after which the parser goes


class ConnState(IntEnum):
    """What a connection is doing (lighttpd's con->state)."""

    REQUEST_START = 0   # waiting for a request: new, or kept alive between two
    READ = 1            # a request's head or body is arriving
    HANDLE = 2          # a module holds the request at the head of the connection
    WRITE = 3           # answers are queued for a client that has not taken them
    TUNNEL = 4          # switched protocols: raw bytes both ways
    LINGER = 5          # half-closed after the last answer: draining the client
    CLOSED = 6


# Final: compiled, each use is a native global, not a lookup in the module's dict
REQUEST_START: Final = ConnState.REQUEST_START
READ: Final = ConnState.READ
HANDLE: Final = ConnState.HANDLE
WRITE: Final = ConnState.WRITE
TUNNEL: Final = ConnState.TUNNEL
LINGER: Final = ConnState.LINGER
CLOSED: Final = ConnState.CLOSED


class Answer:
    """What the request-done hooks learn about how an answer went out.  `start_mark` and
    `end_mark` delimit its bytes in the connection's output stream.  It points back at
    neither the request (which holds it) nor the connection: no reference cycle, so a
    logged request is freed when its last reference goes, not by the cyclic GC."""

    __slots__ = ("start_mark", "end_mark", "head_len", "length", "bytes_in", "keep_alive",
                 "count", "bytes_out", "aborted", "end_time", "end_monotonic")

    def __init__(self, start_mark: int, end_mark: int, head_len: int, length: int,
                 bytes_in: int, keep_alive: bool, count: int) -> None:
        self.start_mark = start_mark
        self.end_mark = end_mark
        self.head_len = head_len
        self.length = length            # Content-Length as announced
        self.bytes_in = bytes_in        # bytes read since the previous request
        self.keep_alive = keep_alive
        self.count = count              # requests on this connection, this one included
        self.bytes_out = 0
        self.aborted = False
        self.end_time = 0.0
        self.end_monotonic = 0.0


def _length_kept_whole(response: Response) -> None:
    """The Content-Length of a module's answer the core sends whole (not streamed, or
    kept whole by server.stream-response-body = 0): the bytes the core counted, which
    replace the module's header.  A HEAD answer keeps the module's header (a backend
    sends no body to HEAD), else the bytes it wrote all the same; with neither, no
    length is announced (the answer stays "streaming" for render_start)."""
    declared = response.get_header("Content-Length")
    response.remove_header("Content-Length")
    if response.head_only:
        if declared is not None and declared.isdigit():
            response.length = int(declared)
        elif not response.length:
            return
    response.streaming = False


def _may_keep_alive(request: Request) -> bool:
    """The client asked to keep the connection, and its body, if it has one, came
    whole and a module took it: one answered before all of it came is not read after
    the answer, nor is one nobody reads kept on (a POST to a static file, however
    much of it came with the head); the connection closes instead, as in lighttpd."""
    body = request.body
    return request.keep_alive and (
        body is None or (body.complete and (body.taken or not body.size)))


def _last_chunk(trailers: list[tuple[str, str]] | None) -> bytes:
    """The end of a chunked body, with the trailer fields a module set (RFC 9112
    7.1.2); they are dropped where the body is not chunked."""
    if not trailers:
        return LAST_CHUNK
    fields = "".join(f"{name}: {value}\r\n" for name, value in trailers)
    return b"0\r\n" + fields.encode("latin-1", "replace") + b"\r\n"


def _queue_file(out: ChunkQueue, part: tuple) -> None:
    """A body's file range, (fd, offset, length) or with its SharedFd, queued: its
    fields passed one by one (compiled, `*part` is a generic call)."""
    if len(part) == 4:
        out.append_file(part[0], part[1], part[2], part[3])
    else:
        out.append_file(part[0], part[1], part[2])


def receive(connection: Wire) -> bytes | None:
    """What the connection's transport has, counted in: bytes, b"" at the client's
    end, or None when nothing is there yet or the connection broke (then closed)."""
    try:
        data = connection.transport.recv()
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        connection.close()
        return None
    if data:
        connection.last_read = connection.server.loop.now
        connection.bytes_read += len(data)
        connection.server.counters.bytes_in(len(data))
    return data


def transmit(connection: Wire) -> int:
    """Send what the transport takes of the connection's output queue (within its
    bandwidth limits, if any), counted out; 0 when it took nothing (or the connection
    broke: then closed)."""
    try:
        throttle = connection.throttle
        if throttle is None:
            sent = connection.transport.send(connection.out)
        else:
            sent = _send_within(connection, throttle)
    except (BlockingIOError, InterruptedError):
        return 0
    except OSError:
        connection.close()
        return 0
    if sent:
        connection.last_write = connection.server.loop.now
        connection.server.counters.bytes_out(sent)
    return sent


def _send_within(connection: Wire, throttle: Throttle) -> int:
    """What a limited connection may send this second, at most; with nothing left, its
    writes pause until the next second."""
    allowance = throttle.allowance(int(connection.server.loop.now))
    if allowance <= 0:
        connection.pause_writes()
        return 0
    sent = connection.transport.send_limited(connection.out, allowance)
    throttle.spent(sent)
    return sent


def resume_woken(connection: Wire, request: Request) -> bool | None:
    """Call the holding module while it has news: True when the answer is finished,
    False while it is still held, None when it failed (the module logged why, or its
    bug is logged here: it costs this request only)."""
    try:
        finished = False
        while request.woken and not finished:
            request.woken = False
            finished = connection.server.pipeline.resume(request)
        return finished
    except AnswerCut:
        return None
    except Exception:  # noqa: BLE001 - a module's bug
        log.error("connections.c", f"internal error in a module answering "
                  f"{request.target} for {request.remote_ip}:\n"
                  f"{traceback.format_exc().rstrip()}")
        return None


def condition_field(connection: "Connection | H2Session", field: str) -> str:
    """A connection's own condition fields (remote address, socket, scheme), the same
    for an HTTP/1 connection and an HTTP/2 session."""
    if field == "remoteip":
        return connection.remote_ip
    if field == "socket":
        return connection.socket_spec
    return connection.scheme if field == "scheme" else ""


def _switches_protocols(request: Request) -> bool:
    """The answer turns the connection into a tunnel (RFC 9110 15.2.2, 9.3.6)."""
    status = request.response.status
    return status == 101 or (request.method == "CONNECT" and 200 <= status < 300)


class _Held:
    """The request at the head of the connection while a module holds it, and how its
    answer is going out: `mark` is where it starts in the output stream; once its
    head is out (`response.started`), whether the body is chunked."""

    __slots__ = ("request", "mark", "head_len", "chunked", "keep_alive", "queued",
                 "rdhup", "quiet", "spool", "tunnel")

    def __init__(self, request: Request, mark: int) -> None:
        self.request = request
        self.mark = mark
        self.head_len = 0
        self.chunked = False
        self.keep_alive = False
        self.queued = False       # a wake is pending in the loop's call_soon list
        self.rdhup = False        # the client half-closed: stop polling for it
        # the client sent nothing since: its EPOLLIN is left as it was until it does
        # (then only its hang-up is polled), two epoll_ctl calls a held request saved
        self.quiet = True
        self.spool: Spool | None = None   # the body's bytes parked on disk, if any
        self.tunnel = False       # switched protocols: raw bytes both ways

    def spill(self, response: Response, upload_dirs: tuple[str, ...]) -> bool:
        """Move the body's bytes parts to the spool file, as file ranges in the same
        order: memory stays bounded whatever the module writes.  False when the disk
        did not take them (logged; the body is left as it was): the caller fails the
        request rather than let its answer grow in memory."""
        try:
            parts = self._spooled_parts(response, upload_dirs)
        except OSError as err:
            request = self.request
            log.error("connections.c", f"an answer to {request.target} for "
                      f"{request.remote_ip} could not be spooled to server.upload-dirs: "
                      f"{err.strerror}")
            return False
        response.body = parts
        response.files = len(parts)
        return True

    def _spooled_parts(self, response: Response, upload_dirs: tuple[str, ...]) -> list:
        spool = self.spool
        if spool is None:
            spool = self.spool = Spool(upload_dirs)
        parts: list = []
        run: list[bytes] = []
        for part in response.body:
            if type(part) is tuple:
                if run:
                    parts.append(spool.write(run))
                    run = []
                parts.append(part)
            else:
                run.append(part)        # type: ignore[arg-type]
        if run:
            parts.append(spool.write(run))
        return parts

    def close_spool(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


class Connection(Wire):
    __slots__ = (
        "fd", "protocol", "ready", "requests_done", "closing",
        "peer_eof", "events", "state", "linger_deadline",
        "limits", "answers", "sent_total", "queued_total",
        "read_mark", "held", "replayed",
    )

    def __init__(self, server: "Server", transport: Transport, remote_ip: str,
                 socket_spec: str, scheme: str = "http") -> None:
        self.server = server
        self.transport = transport
        self.fd = transport.fileno()
        self.set_origin(remote_ip, socket_spec, scheme,
                        {} if server.config.compiled.connection_conditions else None,
                        server.global_settings, server.compiled)
        self.out = ChunkQueue()
        self.ready: list[Request] = []     # lists, not deques: 56 bytes empty, not 760
        self.requests_done = 0
        self.closing = False        # answer what is queued, then close
        self.peer_eof = False
        self.events = 0
        self.last_read = self.last_write = server.loop.now
        self.state = REQUEST_START
        self.linger_deadline = 0.0
        self.answers: list[Request] = []   # answered, not yet completely sent
        self.sent_total = 0
        self.queued_total = 0
        self.bytes_read = 0
        self.read_mark = 0
        self.limits = server.config.settings   # the settings the idle timeouts come from
        self.held: _Held | None = None     # the request a module holds (module.WAIT)
        # answers replayed without a Request (_answer_repeat): (end mark, status)
        self.replayed: list[tuple[int, int]] = []
        self.protocol = Http1Parser(self, server)

    @property
    def closed(self) -> bool:
        return self.state is CLOSED

    # ------------------------------------------------- the protocol's sink
    def stop_reading(self) -> None:
        self.closing = True

    def send_interim(self, request: Request, status: int, fields: list[tuple[str, str]]) -> None:
        """A 1xx head for the client of the request being answered (the held one, or
        with none held the one whose phases run now), queued before its answer."""
        held = self.held
        if (held is not None and held.request is not request) or self.state is CLOSED:
            return
        lines = "".join(f"{name}: {value}\r\n" for name, value in fields)
        self._queue_bytes(f"HTTP/1.1 {status} {reason(status)}\r\n{lines}\r\n"
                          .encode("latin-1", "replace"))
        self.update_events()             # out when the socket takes it

    def backlog_of(self, _request: Request) -> int:
        """Bytes queued for the client and not sent (answers go out in order: all of
        them are ahead of the request's next bytes)."""
        return self.out.pending

    def body_arrived(self, request: Request) -> None:
        """More of a streamed body (or its end): the module holding it may take it (one
        that waits for the whole body is woken once, by its end)."""
        held = self.held
        if held is not None and held.request is request and not request.waits_for_body():
            request.wake()

    def body_failed(self, request: Request, status: int) -> None:
        """A streamed body broke its limit or its framing: the request fails with that
        status if its answer has not started, else the connection closes."""
        held = self.held
        if held is not None and held.request is request:
            self._held_failed(held, status)
        elif request in self.ready:     # not handled yet: answered as refused
            request.response.status = status
            request.keep_alive = False

    def feed(self, data: bytes) -> None:
        self.protocol.feed(data)

    # ------------------------------------------------------------------ events
    def on_event(self, events: int) -> None:
        """The loop's callback for this socket.

        A fault barrier: a bug met while handling one connection is logged with its
        traceback and costs that connection only, never the worker and its others.
        """
        try:
            if self.state is LINGER:
                self._linger_read()
                return
            if events & EPOLLOUT and self.transport.read_wants_write:
                events |= EPOLLIN          # the read that waited for it goes on
            if events & EPOLLOUT:
                self.flush()
                if self.state is CLOSED:
                    return
                if self.ready:
                    self.process()
                    return
            if events & EPOLLIN:
                held = self.held
                if held is not None and held.quiet and not self._reads_held_body(held):
                    held.quiet = False    # the client spoke: read it once answered
                    self.update_events()
                    return
                self.on_readable()      # ends in update_events, or a close
            elif events & EPOLLERR_HUP:
                self.close()
            elif events & EPOLLRDHUP and self.held is not None:
                self.held.rdhup = True  # a half-close: the answer still goes out
                self.held.request.keep_alive = False
                self.update_events()
            elif self.state is not CLOSED:
                self.update_events()
        except Exception:  # noqa: BLE001 - anything at all: the worker must go on
            log.error("connections.c", f"internal error on a connection from "
                      f"{self.remote_ip}, closing it:\n{traceback.format_exc().rstrip()}")
            self.close()

    def on_readable(self) -> None:
        data = receive(self)
        if data is None:
            return
        if not data:
            self._peer_closed()
            return
        server = self.server
        held = self.held
        if held is not None and held.tunnel:
            held.request.body.append(data)
            held.request.wake()
            self.update_events()
            return
        # read into a name: the narrowing to None must not outlive the feed below
        reading = self.protocol.current
        if reading is not None or self.ready:
            self.feed(data)
        else:                         # between requests
            if self.bytes_read == len(data) and data[:3] == b"PRI" and \
                    server.take_over_h2(self, data):
                return                  # HTTP/2 from the first byte: a session took over
            if self.requests_done:
                server.counters.keepalive_reuse()
            if self._answer_repeat(data):
                return
            self.feed(data)
            ready = self.ready
            if len(ready) == 1 and self.protocol.current is None and \
                    data.endswith(b"\r\n\r\n"):
                ready[0].arrived_as = data      # this read held that request alone
        self.process()

    def _answer_repeat(self, data: bytes) -> bool:
        """Answer a byte-for-byte repeat of a kept request without parsing it; False
        when `data` is no such repeat."""
        server = self.server
        answers = server.pipeline.answers
        if not answers.raw_entries or self.out.chunks:    # none kept: no hashing
            return False
        kept = answers.find_bytes(data, self)
        if kept is None:
            return False
        if server.pipeline.request_done:     # the hooks need a Request: make it
            self.ready.append(kept.repeat_request(self))
            self.process()
            return True
        values = self.limits = kept.values
        self.requests_done += 1
        out = self.out
        before = out.pending
        kept.queue(out, kept_head(kept, self._keeps_alive(kept.keep_alive, values)))
        self.queued_total += out.pending - before
        self.replayed.append((self.queued_total, kept.status))   # counted once sent
        if not self.server.loop.sends_later(self):
            self.process()
        return True

    def _keeps_alive(self, asked: bool, values: dict) -> bool:
        """Whether the answer just counted in requests_done leaves the connection open
        (and if not, mark it closing).  A connection that is closing still keeps alive
        for the answers of requests that came before its last one (pipelined ahead of
        one the parser refused, or of the client's end): they all go out, the last
        says `Connection: close`, as in lighttpd.  server.max-keep-alive-requests = N
        lets N + 1 requests share a connection (one when N is 0), as lighttpd counts."""
        keep = (asked and (not self.closing or bool(self.ready)) and not self.server.draining
                and self.requests_done <= values["server.max-keep-alive-requests"])
        if not keep:
            self.closing = True
        return keep

    def condition_value(self, field: str) -> str:
        return condition_field(self, field)

    def _peer_closed(self) -> None:
        """The client will send no more: answer what is complete, then close."""
        self.peer_eof = True
        held = self.held
        if held is not None and held.tunnel:
            held.request.body.complete = True    # the module ends the tunnel
            held.request.wake()
            self.update_events()
            return
        if held is not None and held.request is self.protocol.current:
            self.close()          # the body the module reads will never be complete
            return
        self.protocol.current = None
        if not self.ready and not self.out.chunks:
            self.close()
            return
        self.closing = True
        self.update_events()

    # ---------------------------------------------------------------- answer
    def process(self) -> None:
        """Answer the ready requests in order, as far as the output budget allows.
        Sending makes room in the budget, so answering goes on as long as it does: a
        connection never waits for an event while it holds answerable requests."""
        out = self.out
        ready = self.ready
        while True:
            while ready and out.pending < HIGH_WATER and self.held is None:
                self.respond(take(ready, 0))
                if self.state is CLOSED:
                    return
            if not ready and self.held is None:
                self._continue_current()
            if out.chunks:
                if self.server.loop.sends_later(self):
                    return                 # with the round's others, answering goes on then
                self.flush()
                if self.state is CLOSED:
                    return
                if ready and out.pending < HIGH_WATER and self.held is None:
                    continue
            elif self.closing and not ready and self.held is None:
                self.shutdown()
            break
        if self.state is not CLOSED:
            self.update_events()

    def _continue_current(self) -> None:
        """Send `100 Continue` to a client waiting for it before it sends its body."""
        current = self.protocol.current
        if current is not None and current.expect_continue and not self.closing:
            current.expect_continue = False
            self._queue_bytes(CONTINUE)

    def _queue_bytes(self, data: bytes) -> None:
        """Bytes that belong to no answer's body (100 Continue, a streamed head, the
        last chunk), counted in the output stream like an answer's."""
        self.out.append(data)
        self.queued_total += len(data)

    def respond(self, request: Request) -> None:
        server = self.server
        if "upgrade" in request.headers:
            if self.protocol.upgrading is request and server.take_over_h2c(self, request):
                self.state = CLOSED          # the connection is an H2Session's now
                return
            drop_h2c_offer(request.headers)
        body = request.body
        if request is self.protocol.current:     # still being read: only a body that
            unread = body is None or body.complete   # comes as it is handled reads on
        else:
            unread = request.expect_continue     # the client was never asked for it
        if unread:
            request.keep_alive = False   # its body was never read: cannot continue
        preset = request.response.status      # an error found while parsing
        if server.debug:
            self._debug_request(request, preset)
        self.requests_done += 1
        kept = request.replay
        if kept is not None and not preset and \
                kept.generation == server.pipeline.answers.generation:
            kept.restore_final(request)
            self._queue_answer(request, kept, preset)
        elif server.pipeline.handle(request):
            self._queue_answer(request, None, preset)
        else:
            self._hold(request)

    def _queue_answer(self, request: Request, kept: "KeptAnswer | None", preset: int) -> None:
        """Queue a complete answer: head and body, or a kept answer's bytes."""
        server = self.server
        values = request.values
        keep = self._keeps_alive(_may_keep_alive(request), values)
        response = request.response
        if response.encoder is not None:    # a coding set when the answer started
            response.end_encoding()
        if response.streaming:          # asked to stream, but complete before its head
            _length_kept_whole(response)
        if response.status == 200 and not response.ranged and kept is None:
            range_whole_answer(request)
        length = response.length       # as announced: queueing a HEAD answer drops it
        queued_before = self.out.pending
        if kept is not None:
            head = kept_head(kept, keep)
            kept.queue(self.out, head)
            head_len = len(head)
        else:
            start = render_start(request)
            if response.own_fields:
                head = start + connection_line(request, keep) + \
                    core_fields(response, values["server.tag"])
            else:
                tail = server_line(values["server.tag"])
                if request.replay_key is not None:
                    server.pipeline.answers.keep(request.replay_key, request, (start, tail))
                # one bytes object made, where `+` makes one per piece
                head = b"%s%s%s%s" % (start, connection_line(request, keep), DATE.line, tail)
            if server.debug:
                self._debug_response(request, head, preset)
            self._queue(response, head)
            head_len = len(head)
        size = self.out.pending - queued_before
        self.queued_total += size
        self._end_request(request, self.queued_total - size, head_len, length, keep)

    def _end_request(self, request: Request, start_mark: int, head_len: int, length: int,
                     keep: bool) -> None:
        """The answer is queued whole: note it (it is counted when it has gone out), let
        the modules free what they held for it."""
        pipeline = self.server.pipeline
        self._note_answer(request, start_mark, head_len, length, keep)
        if pipeline.request_reset:
            pipeline.reset(request)
        if self.protocol.upgrading is request:
            self.protocol.upgrade_answered(request, False)
        if request.body is not None:
            request.body.close()
        if not keep:
            self.ready.clear()

    def _note_answer(self, request: Request, start_mark: int, head_len: int, length: int,
                     keep: bool) -> None:
        """Its answer's bytes end at queued_total: the request ends (counted, logged)
        once they are sent.  What the request-done hooks learn is kept only when some
        module has them."""
        request.start_mark = start_mark
        request.end_mark = self.queued_total
        self.answers.append(request)
        if self.server.pipeline.request_done:
            request.plugin_ctx["answer"] = Answer(
                start_mark, self.queued_total, head_len, length, self._bytes_in(request, keep),
                keep, self.requests_done)

    # ---------------------------------------------------------- held requests
    def hand_over(self, module: "Module") -> Request:
        """The whole connection goes to `module` before anything is parsed as HTTP
        (mod_sockproxy, from its handle_connection_accept): a request it holds as an
        already switched tunnel, with no head; the client's bytes arrive as its body,
        what the module writes goes out raw, and its final status ends the
        connection.  Nothing of it is logged as a request."""
        request = Request(self, self.server.loop.now)
        request.method = ""
        request.handler = module
        request.body = RequestBody(spill=False)
        request.plugin_ctx[RAW] = True
        response = request.response
        response.status = 101
        response.streaming = response.started = True
        self.requests_done += 1
        self.closing = True
        self.held = held = _Held(request, self.queued_total)
        held.tunnel = True
        self.state = TUNNEL
        self.protocol.stop()
        return request

    def _hold(self, request: Request) -> None:
        """A module holds the request (WAIT): nothing behind it is answered until it is
        done; what it streams meanwhile goes out as it comes."""
        self.held = held = _Held(request, self.queued_total)
        self.state = HANDLE
        if request.continue_due():
            self._queue_bytes(CONTINUE)
        if request.woken:               # woken while its hook still ran
            self.wake(request)
        self._stream(held)
        self.update_events()

    def wake(self, request: Request) -> None:
        """A module has news for the request it holds: resume it after this round of
        events (never from inside the module's own callback)."""
        held = self.held
        if held is not None and held.request is request and not held.queued:
            held.queued = True
            self.server.loop.call_soon(self._resume)

    def _resume(self) -> None:
        held = self.held
        if held is None or self.state is CLOSED:
            return
        held.queued = False
        finished = resume_woken(self, held.request)
        if finished is None:
            self._held_failed(held)
            return
        if finished:
            self._release_held(held)
        else:
            if held.request.continue_due():
                self._queue_bytes(CONTINUE)
            self._stream(held)
        if self.state is not CLOSED:
            self.process()

    def _held_failed(self, held: _Held, status: int = 500) -> None:
        """A held request that cannot go on: `status` if nothing of it went out yet,
        else the connection closes (the client sees a truncated answer, as it must)."""
        if held.request.response.started:
            self.close()
            return
        self.held = None
        self.state = WRITE
        held.close_spool()
        held.request.keep_alive = False
        self.server.pipeline.fail(held.request, status)
        self._queue_answer(held.request, None, 0)
        self.process()

    def _release_held(self, held: _Held) -> None:
        """The holding module is done: queue the rest of the answer (all of it, with a
        Content-Length, when no head went out yet)."""
        self.held = None
        self.state = WRITE
        request = held.request
        response = request.response
        if not response.started:
            held.close_spool()             # its ranges in the body keep the file
            response.end_encoding()
            _length_kept_whole(response)
            self._queue_answer(request, None, 0)
            return
        response.end_encoding()
        if not self._stream(held):
            return
        held.close_spool()
        if held.chunked:
            self._queue_bytes(_last_chunk(response.trailers))
        self._end_request(request, held.mark, held.head_len, response.length,
                          held.keep_alive)

    def _stream(self, held: _Held) -> bool:
        """Send what a streaming answer has so far: the head once, then the body parts
        written since, framed as chunks when the length is unknown; or keep them, as
        `server.stream-response-body` says (Response.stream).  False when the request
        failed here (its spool file could not be written)."""
        request = held.request
        response = request.response
        if not response.streaming:
            return True
        mode = request.values["server.stream-response-body"]
        if not response.started:
            if mode == 0 and not _switches_protocols(request):
                # kept whole, sent at the end with its length
                if response.memory_bytes() > SPILL_AT and \
                        not held.spill(response, self.server.upload_dirs):
                    self._held_failed(held)
                    return False
                return True
            self._stream_head(held)
        if response.body:
            if response.head_only:
                response.reset_body()
                return True
            if mode == 1 and not held.tunnel and \
                    self.out.pending + response.memory_bytes() > BACKLOG_HIGH and \
                    not held.spill(response, self.server.upload_dirs):
                self._held_failed(held)
                return False
            before = self.out.pending
            self._queue_parts(response, held.chunked)
            self.queued_total += self.out.pending - before
        return True

    def _stream_head(self, held: _Held) -> None:
        request = held.request
        response = request.response
        self.server.pipeline.start_stream(request)
        values = request.values
        status = response.status or 200
        response.status = status
        if _switches_protocols(request):
            head = self._tunnel_head(held)
        else:
            delimited = (response.head_only or has_no_body(status) or status < 200
                         or response.get_header("Content-Length") is not None)
            if not delimited and request.version == "1.1":
                held.chunked = True
                response.add_header("Transfer-Encoding", "chunked")
            held.keep_alive = self._keeps_alive(
                _may_keep_alive(request) and (delimited or held.chunked), values)
            head = render_start(request) + connection_line(request, held.keep_alive) + \
                core_fields(response, values["server.tag"])
        if self.server.debug:
            self._debug_response(request, head, 0)
        self._queue_bytes(head)
        held.head_len = len(head)
        response.started = True

    def _tunnel_head(self, held: _Held) -> bytes:
        """A module switched protocols (101, or 2xx to CONNECT): its head goes out with
        its own Connection header, then raw bytes both ways until either side ends.
        The client's bytes are the request's body from now on (with what it sent
        before the answer), never spooled: the client waits while the module lags."""
        request = held.request
        held.tunnel = True
        self.state = TUNNEL
        self.closing = True            # nothing HTTP/1 follows a tunnel
        body = request.body = RequestBody(spill=False)
        body.append(self.protocol.upgrade_answered(request, True))
        if self.peer_eof:
            body.complete = True
        if body.unread or body.complete:
            request.wake()             # what the client sent with its request
        return render_start(request) + \
            core_fields(request.response, request.values["server.tag"])

    def _queue(self, response: Response, head: bytes) -> None:
        """Move the head and the response's body into the output queue."""
        out = self.out
        if response.head_only or not response.body:
            response.reset_body()
            out.append(head)
        elif not response.files and len(response.body) == 1:
            body = response.body[0]
            if type(body) is bytes:
                out.append_answer(head, body)
            else:
                out.append(head + body)   # type: ignore[operator]
        else:
            out.append(head)
            self._queue_parts(response, False)

    def _queue_parts(self, response: Response, chunked: bool) -> None:
        """Move the response's body parts into the output queue, each framed as a
        chunk with `chunked`."""
        out = self.out
        for part in response.body:
            if type(part) is tuple:
                if chunked and part[2] > 0:
                    out.append(b"%x\r\n" % part[2])
                    _queue_file(out, part)
                    out.append(b"\r\n")
                else:
                    _queue_file(out, part)
            elif chunked:
                out.append(b"%x\r\n%s\r\n" % (len(part), part))   # type: ignore[arg-type]
            else:
                out.append(part)              # type: ignore[arg-type]
        response.body = []
        response.files = 0

    def flush(self) -> None:
        out = self.out
        sent = transmit(self)
        if self.state is CLOSED:
            return
        if sent:
            self.sent_total += sent
            answers = self.answers
            if answers and answers[0].end_mark <= self.sent_total or self.replayed:
                self.finish_answers()
            held = self.held
            if held is not None and held.request.response.wants_drain and \
                    out.pending < LOW_WATER:
                held.request.response.wants_drain = False
                held.request.wake()
        if not out.chunks and self.closing and not self.ready and self.held is None:
            self.shutdown()

    def _bytes_in(self, request: Request, keep: bool) -> int:
        """Bytes this request took on the wire: all that was read since the previous
        one, unless more requests came in the same reads (pipelining) or what came
        after a request read whole is thrown away with the connection; then its own
        request line, headers and body, counted as the client wrote them."""
        if self.ready or self.protocol.current is not None or \
                (not keep and request.header_bytes):
            # header_bytes: 16, the target, each field with ": " and CRLF; the line
            # is the method, the target and 12 more, and a CRLF ends the head
            own = (len(request.method) + request.header_bytes - 2
                   + (request.body.size if request.body is not None else 0))
            count = min(own, self.bytes_read - self.read_mark)
        else:
            count = self.bytes_read - self.read_mark
        self.read_mark += count
        return count

    def finish_answers(self, lost: bool = False) -> None:
        """End the requests whose answers were sent in full: count them, run their
        request-done hooks; with `lost` (the connection is going away) all the others
        too, as aborted."""
        answers = self.answers
        sent = self.sent_total
        server = self.server
        counters = server.counters
        pipeline = server.pipeline
        hooked = bool(pipeline.request_done)
        mono = _MONOTONIC()
        replayed = self.replayed
        while replayed and (lost or replayed[0][0] <= sent):
            counters.request("GET", take(replayed, 0)[1], mono - server.loop.now)
        while answers and (lost or answers[0].end_mark <= sent):
            request = take(answers, 0)
            counters.request(request.method, request.response.status, mono - request.start)
            if hooked and RAW not in request.plugin_ctx:
                now = time.time()
                answer = request.plugin_ctx["answer"]
                answer.bytes_out = max(min(sent, request.end_mark) - request.start_mark, 0)
                answer.aborted = request.end_mark > sent or request.aborted
                answer.end_time = now
                answer.end_monotonic = mono
                pipeline.done(request)

    # ------------------------------------------------------------ debug log
    def _debug_request(self, request: Request, preset: int) -> None:
        values = self.server.global_settings.values
        if request.target and values["debug.log-request-header"]:
            debuglog.request_header(request, self.fd)
        if preset and values["debug.log-request-header-on-error"]:
            debuglog.request_header_on_error(request, preset, self.protocol.error_reason)

    def _debug_response(self, request: Request, head: bytes, preset: int) -> None:
        values = request.values
        if not preset:
            status = request.response.status
            handling = values["debug.log-request-handling"]
            if handling:
                debuglog.request_handling(request, status)
            if values["debug.log-file-not-found"]:
                debuglog.file_not_found(request, status, handling)
        if values["debug.log-response-header"]:
            debuglog.response_header(head, self.fd)

    def update_events(self) -> None:
        """Settle the state after a round of work, and poll for what it needs."""
        state = self.state
        if state is LINGER or state is CLOSED:
            return          # shutdown() chose EPOLLIN: only the client's EOF matters now
        held = self.held
        if held is None:            # else HANDLE or TUNNEL, set when the module took it
            if self.out.chunks:
                self.state = WRITE
            elif self.protocol.current is not None or self.ready:
                self.state = READ
            else:
                self.state = REQUEST_START
        transport = self.transport
        if not transport.pollable:
            return
        want = 0
        if (self.out.chunks and not self.paused) or transport.read_wants_write:
            want |= EPOLLOUT
        if held is not None:
            if self._reads_held_body(held):
                want |= EPOLLIN
            elif not held.rdhup:        # to hear of a client gone while a module works;
                # EPOLLIN, if polled, is left as it was until the client sends (on_event)
                want |= EPOLLIN if held.quiet and self.events & EPOLLIN else EPOLLRDHUP
        elif not self.closing and not self.peer_eof and not self.ready:
            want |= EPOLLIN
        if want != self.events:
            self.server.loop.modify(self.fd, want)
            self.events = want

    def _reads_held_body(self, held: _Held) -> bool:
        """The held request's body is still coming (streamed): read it, unless its
        module has left too much unread (server.stream-request-body = 2 keeps it
        in memory, so that is where the client is slowed down)."""
        request = held.request
        if held.tunnel:
            return not self.peer_eof and request.body.unread < BODY_HIGH_WATER
        if request is not self.protocol.current:
            return False
        body = request.body
        return body.spill or body.unread < BODY_HIGH_WATER

    # ------------------------------------------------------------- closing
    def shutdown(self) -> None:
        """Half-close and drain what the client still sends, so that our last answer is
        not destroyed by a TCP reset (lighttpd's lingering close)."""
        if self.state is CLOSED or self.state is LINGER:
            return
        if not self.transport.pollable:     # nothing to linger on: the caller ends
            self.close()
            return
        try:
            self.transport.shutdown_write()
        except OSError:
            self.close()
            return
        self.state = LINGER
        if self.server.state_log:
            debuglog.shutdown(self.fd)
        self.linger_deadline = self.server.loop.now + LINGER_SECONDS
        self.ready.clear()
        if self.events != EPOLLIN:
            self.server.loop.modify(self.fd, EPOLLIN)
            self.events = EPOLLIN
        self._linger_read()

    def _linger_read(self) -> None:
        while True:
            try:
                data = self.transport.recv()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                break
            if not data:
                break
        self.close()

    def close(self) -> None:
        if not self.release():
            return
        self.server.forget(self)
        self.transport.close()
        self.server.loop.call_soon(self.protocol.detach)   # once its callbacks are over

    def release(self) -> bool:
        """Mark closed and drop queued output and answers (closing the files they hold);
        False if that already happened."""
        if self.state is CLOSED:
            return False
        self.state = CLOSED
        for hook in self.server.pipeline.connection_close:
            hook(self)
        if self.held is not None:
            self._abort_held(self.held)
        if self.answers or self.replayed:
            if not self.out.chunks:   # all of it went out (a blocking writer counts none)
                self.sent_total = self.queued_total
            self.finish_answers(lost=True)
        self.out.clear()
        for request in self.ready:
            request.response.reset_body()
            if request.body is not None:
                request.body.close()
        self.ready.clear()
        current = self.protocol.current      # cut mid-body: its spill file goes now,
        if current is not None and current.body is not None:   # not when collected
            current.body.close()
        return True

    def _abort_held(self, held: _Held) -> None:
        """The connection goes away under a held request: the module ends its backend
        work (request-reset hooks, with `request.aborted`), and the request is counted
        and logged as what it was."""
        self.held = None
        held.close_spool()
        request = held.request
        request.aborted = True
        response = request.response
        response.status = response.status or 500
        if not response.started:
            response.reset_body()
        self._end_request(request, held.mark, held.head_len, response.length, False)

    # ------------------------------------------------------------ timeouts
    def check_timeout(self, now: float) -> None:
        """Called once a second: lighttpd's read / write / keep-alive idle limits."""
        state = self.state
        if state is LINGER:
            if now > self.linger_deadline:
                self.close()
        elif self.out.chunks:
            if now - self.last_write > self.limits["server.max-write-idle"]:
                self._timed_out("write")
        elif (state is HANDLE or state is TUNNEL) and self.held is not None and \
                self.held.request is not self.protocol.current:
            pass                # the holding module keeps its own backend's deadlines
        elif state is not REQUEST_START or not self.requests_done:
            # a request under way (its head, or a body a module reads as it comes), or
            # a new connection's first one on the way
            if now - self.last_read > self.limits["server.max-read-idle"]:
                self._timed_out("read")
        else:
            idle = now - max(self.last_read, self.last_write)
            if idle > self.limits["server.max-keep-alive-idle"]:
                self._timed_out("keep-alive")
            elif idle >= PARSER_KEPT_IDLE:
                self.protocol.release_parser()

    def _timed_out(self, what: str) -> None:
        if self.server.debug:
            values = self.server.global_settings.values
            if what == "write":
                if values["debug.log-timeouts"] and self.answers:
                    request = self.answers[0]
                    debuglog.write_timeout(self.remote_ip, request.target,
                                           self.sent_total - request.start_mark,
                                           self.limits["server.max-write-idle"])
            elif what == "read" and self.protocol.current is not None and \
                    not self.protocol.header_phase and values["debug.log-timeouts"]:
                debuglog.read_timeout(self.fd)
            elif values["debug.log-request-handling"]:
                debuglog.timeout(what, self.fd)
        self.close()

    def begin_drain(self) -> None:
        """A reload: an answer already queued is the last (`Connection: close`); an
        idle connection's next answer says so (closing it could reset a client that is
        sending its next request right now)."""
        if not self.is_idle() and self.protocol.current is None and not self.ready:
            self.closing = True

    def is_idle(self) -> bool:
        """Between two requests of a keep-alive connection, with nothing to send: may be
        closed at once when draining.  A new connection is not idle: its first request
        is on the way, and closing it would reset a client that did nothing wrong."""
        return self.state is REQUEST_START and self.requests_done > 0
