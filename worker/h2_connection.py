"""HTTP/2's connection state, server side (RFC 9113): frames in and out, the streams'
states, flow control both ways and SETTINGS; what an H2Session (worker/h2.py) asks
of it.

The h2 library did this job, and cost two thirds of an HTTP/2 request's time (a
state machine driven through enums and event objects for every frame, its frames
as objects, hpack's pure-Python decoder): a 1 KiB file took 180 µs a request over
h2c where HTTP/1 takes a tenth of that.  This engine is compiled with the hot path
(shared/hotpath.py) and keeps only what a server needs: it never pushes, never
opens a stream, and ignores priorities.

Input: `receive_data(bytes)` cuts the read into frames and returns `Event`s for
what the session acts on (a request's fields, body data, a stream's end, a reset,
a PING ...).  A connection error (RFC 9113 5.4.1) queues GOAWAY with its code and
raises `ProtocolError`; a stream error (5.4.2) resets that stream alone and reports
it as a STREAM_RESET event.  HPACK blocks are decoded by worker/h2_hpack.py; a
header block's CONTINUATIONs are bounded by the decoder's own limit (CVE-2024-27316).

Output: `send_headers`, `send_data`, `end_stream`, `reset_stream`, `ping`, `goaway`
queue frames; `data_to_send()` takes them.  DATA is sent within the peer's windows
(`local_flow_control_window`); what the peer sends is acknowledged with
WINDOW_UPDATE once half a window has been taken in (`acknowledge_received_data`).
"""

from __future__ import annotations

import base64
import binascii
from typing import Final

from .h2_encoder import AnswerEncoder
from .h2_hpack import FieldDecoder, HeaderListTooLarge, HpackError

# frame types (RFC 9113 6)
DATA: Final = 0
HEADERS: Final = 1
PRIORITY: Final = 2
RST_STREAM: Final = 3
SETTINGS: Final = 4
PUSH_PROMISE: Final = 5
PING: Final = 6
GOAWAY: Final = 7
WINDOW_UPDATE: Final = 8
CONTINUATION: Final = 9
# flags
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20
# error codes (RFC 9113 7)
NO_ERROR: Final = 0
PROTOCOL_ERROR: Final = 1
INTERNAL_ERROR: Final = 2
FLOW_CONTROL_ERROR: Final = 3
STREAM_CLOSED: Final = 5
FRAME_SIZE_ERROR: Final = 6
REFUSED_STREAM: Final = 7
CANCEL: Final = 8
COMPRESSION_ERROR: Final = 9
ENHANCE_YOUR_CALM: Final = 11
# settings (RFC 9113 6.5.2)
HEADER_TABLE_SIZE: Final = 1
ENABLE_PUSH: Final = 2
MAX_CONCURRENT_STREAMS: Final = 3
INITIAL_WINDOW_SIZE: Final = 4
MAX_FRAME_SIZE: Final = 5
MAX_HEADER_LIST_SIZE: Final = 6

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW: Final = 65535
DEFAULT_FRAME_SIZE: Final = 16384
MAX_WINDOW: Final = (1 << 31) - 1
RESETS_KEPT: Final = 128     # reset stream ids remembered, for frames still in flight
LARGEST_FRAME_SIZE: Final = (1 << 24) - 1
FRAME_HEAD: Final = 9

# events (Event.kind)
REQUEST: Final = 1          # a request's fields: headers, ended
BODY: Final = 2             # DATA: data, flow_length, ended
STREAM_ENDED: Final = 3     # the peer's END_STREAM
TRAILERS: Final = 4         # trailer fields: headers
STREAM_RESET: Final = 5     # the peer's RST_STREAM (or ours for a stream error): code
TERMINATED: Final = 6       # the peer's GOAWAY: code, last_stream
PING_RECEIVED: Final = 7    # answered already
PING_ACK: Final = 8         # data: the opaque bytes
SETTINGS_CHANGED: Final = 9
UNKNOWN_FRAME: Final = 10
WINDOW_UPDATED: Final = 11  # delta
PRIORITY_UPDATED: Final = 12


class ProtocolError(Exception):
    """A connection error: GOAWAY with `error_code` is queued already (when raised by
    receive_data), or is the session's to send (when raised by a field check)."""

    def __init__(self, message: str, error_code: int = PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.error_code = error_code


class StreamClosedError(Exception):
    """Sending on a stream that is closed for sending (or was never opened)."""


class Event:
    """What a read brought that the session acts on; `kind` says which fields mean
    something."""

    def __init__(self, kind: int, stream_id: int) -> None:
        self.kind = kind
        self.stream_id = stream_id
        self.headers: list[tuple[bytes, bytes]] = []
        self.data = b""
        self.flow_length = 0
        self.ended = False
        self.code = 0
        self.delta = 0
        self.last_stream = 0


class _Stream:
    """A stream's state: which sides are open, and its windows."""

    def __init__(self, send_window: int, receive_window: int) -> None:
        self.remote_open = True          # the peer may still send (no END_STREAM yet)
        self.local_open = True           # we may still send
        self.send_window = send_window
        self.receive_window = receive_window
        self.unacknowledged = 0          # body bytes taken in, not given back yet


def frame_head(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    """The 9 bytes before a frame's payload."""
    return bytes((length >> 16, (length >> 8) & 255, length & 255, kind, flags,
                  (stream_id >> 24) & 127, (stream_id >> 16) & 255,
                  (stream_id >> 8) & 255, stream_id & 255))


def _u32(data: bytes, at: int) -> int:
    return (data[at] << 24) | (data[at + 1] << 16) | (data[at + 2] << 8) | data[at + 3]


def _u32_bytes(value: int) -> bytes:
    """The 4 bytes of a frame's 32-bit field (a window increment, an error code ...)."""
    return bytes((value >> 24, (value >> 16) & 255, (value >> 8) & 255, value & 255))


def _settings_payload(settings: list[tuple[int, int]]) -> bytes:
    return b"".join(bytes((code >> 8, code & 255)) + _u32_bytes(value)
                    for code, value in settings)


class H2Connection:
    """One HTTP/2 connection's protocol state, server side.

    `settings`: what we announce (MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE,
    MAX_HEADER_LIST_SIZE ...); `stream_wall`: open streams beyond which the peer's
    next one ends the connection (the session refuses streams one by one below it);
    `decode_limit`: where HPACK decoding of one block stops."""

    def __init__(self, settings: list[tuple[int, int]], stream_wall: int,
                 decode_limit: int) -> None:
        self.local_settings = settings
        self.receive_window_size = DEFAULT_WINDOW    # a new stream's, as we announce
        for code, value in settings:
            if code == INITIAL_WINDOW_SIZE:
                self.receive_window_size = value
        self.stream_wall = stream_wall
        self.decoder = FieldDecoder(decode_limit)
        self.encoder = AnswerEncoder()
        self.streams: dict[int, _Stream] = {}
        self.recently_reset: dict[int, None] = {}     # ids we reset, newest last
        self.highest_inbound_stream_id = 0
        self.max_outbound_frame_size = DEFAULT_FRAME_SIZE
        self.peer_initial_window = DEFAULT_WINDOW
        self.send_window = DEFAULT_WINDOW            # the connection's, for our DATA
        self.receive_window = DEFAULT_WINDOW         # the connection's, for the peer's
        self.receive_window_max = DEFAULT_WINDOW
        self.unacknowledged = 0
        self.out: list[bytes] = []
        self.closed = False                          # GOAWAY sent or received
        self._buffer = b""
        self._preface_seen = False
        self._block: list[bytes] = []                # a header block's fragments ...
        self._block_stream = 0                       # ... while CONTINUATIONs follow
        self._block_ends = False
        self._block_refusal = 0
        self._block_size = 0

    # ------------------------------------------------------------ starting
    def initiate_connection(self) -> None:
        """Our SETTINGS, the first frame we send (RFC 9113 3.4)."""
        payload = _settings_payload(self.local_settings)
        self.out.append(frame_head(len(payload), SETTINGS, 0, 0) + payload)

    def initiate_upgrade_connection(self, http2_settings: bytes) -> None:
        """After `Upgrade: h2c` (RFC 7540 3.2): the HTTP2-Settings field's SETTINGS
        are the peer's, and the upgrading request is stream 1, complete."""
        self.initiate_connection()
        self._apply_settings(*_upgrade_settings(http2_settings))
        stream = _Stream(self.peer_initial_window, self.receive_window_size)
        stream.remote_open = False
        self.streams[1] = stream
        self.highest_inbound_stream_id = 1

    def increment_flow_control_window(self, increment: int) -> None:
        """The connection's receive window widened (WINDOW_UPDATE on stream 0)."""
        self.receive_window += increment
        self.receive_window_max += increment
        self._window_update(0, increment)

    # ------------------------------------------------------------- input
    def receive_data(self, data: bytes) -> list[Event]:
        """The frames of `data` (with what an earlier read left): their events."""
        buffer = self._buffer + data if self._buffer else data
        events: list[Event] = []
        at = 0
        if not self._preface_seen:
            if len(buffer) < len(PREFACE):
                if not PREFACE.startswith(buffer):
                    raise self._connection_error(PROTOCOL_ERROR, "no connection preface")
                self._buffer = buffer
                return events
            if not buffer.startswith(PREFACE):
                raise self._connection_error(PROTOCOL_ERROR, "no connection preface")
            self._preface_seen = True
            at = len(PREFACE)
        end = len(buffer)
        while end - at >= FRAME_HEAD:
            length = (buffer[at] << 16) | (buffer[at + 1] << 8) | buffer[at + 2]
            if length > DEFAULT_FRAME_SIZE:
                raise self._connection_error(FRAME_SIZE_ERROR, f"frame of {length} bytes")
            if end - at - FRAME_HEAD < length:
                break
            kind = buffer[at + 3]
            flags = buffer[at + 4]
            stream_id = _u32(buffer, at + 5) & MAX_WINDOW
            start = at + FRAME_HEAD
            at = start + length
            if self._block_stream and kind != CONTINUATION:
                raise self._connection_error(PROTOCOL_ERROR, "a header block interrupted")
            self._frame(events, kind, flags, stream_id, buffer, start, at)
        self._buffer = buffer[at:] if at < end else b""
        return events

    def _frame(self, events: list[Event], kind: int, flags: int, stream_id: int,
               data: bytes, start: int, end: int) -> None:
        if kind == HEADERS:
            self._headers(events, flags, stream_id, data, start, end)
        elif kind == DATA:
            self._data(events, flags, stream_id, data, start, end)
        elif kind == CONTINUATION:
            self._continuation(events, flags, stream_id, data, start, end)
        elif kind == WINDOW_UPDATE:
            self._window_updated(events, stream_id, data, start, end)
        elif kind == SETTINGS:
            self._settings(events, flags, stream_id, data, start, end)
        elif kind == RST_STREAM:
            self._rst_stream(events, stream_id, data, start, end)
        elif kind == PING:
            self._ping(events, flags, stream_id, data, start, end)
        elif kind == PRIORITY:
            self._priority(events, stream_id, data, start, end)
        elif kind == GOAWAY:
            self._goaway(events, stream_id, data, start, end)
        elif kind == PUSH_PROMISE:
            raise self._connection_error(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        else:                                    # unknown types are ignored (RFC 9113 4.1)
            events.append(Event(UNKNOWN_FRAME, stream_id))

    def _unpadded(self, flags: int, data: bytes, start: int, end: int) -> tuple[int, int]:
        """Where the payload starts and ends once its padding is off (PADDED frames:
        a length byte first, that many bytes of padding last)."""
        if not flags & PADDED:
            return start, end
        if start >= end or data[start] >= end - start:
            raise self._connection_error(PROTOCOL_ERROR, "padding as long as the frame")
        return start + 1, end - data[start]

    def _headers(self, events: list[Event], flags: int, stream_id: int, data: bytes,
                 start: int, end: int) -> None:
        if stream_id == 0:
            raise self._connection_error(PROTOCOL_ERROR, "HEADERS on stream 0")
        start, stop = self._unpadded(flags, data, start, end)
        refusal = 0          # the stream's error instead of its request, once decoded
        if flags & PRIORITY_FLAG:
            if stop - start < 5:
                raise self._connection_error(FRAME_SIZE_ERROR, "HEADERS too short")
            if _u32(data, start) & MAX_WINDOW == stream_id:
                refusal = PROTOCOL_ERROR          # 5.3.1: depending on itself
            start += 5
        fragment = data[start:stop]
        if flags & END_HEADERS:
            self._header_block(events, stream_id, fragment, bool(flags & END_STREAM),
                               refusal)
        else:
            self._block = [fragment]
            self._block_stream = stream_id
            self._block_ends = bool(flags & END_STREAM)
            self._block_refusal = refusal
            self._block_size = len(fragment)

    def _continuation(self, events: list[Event], flags: int, stream_id: int, data: bytes,
                      start: int, end: int) -> None:
        if not self._block_stream or stream_id != self._block_stream:
            raise self._connection_error(PROTOCOL_ERROR, "CONTINUATION out of place")
        self._block.append(data[start:end])
        self._block_size += end - start
        if self._block_size > self.decoder.max_header_list_size:
            raise self._connection_error(ENHANCE_YOUR_CALM, "a header block without end")
        if flags & END_HEADERS:
            block = b"".join(self._block)
            self._block = []
            self._block_stream = 0
            self._header_block(events, stream_id, block, self._block_ends,
                               self._block_refusal)

    def _header_block(self, events: list[Event], stream_id: int, block: bytes,
                      ends: bool, refusal: int) -> None:
        """A whole header block: a new request, or trailers of an open one; decoded
        whatever comes of it (the HPACK table stays in step with the peer's), then
        `refusal`, when set, resets the stream instead."""
        try:
            fields = self.decoder.decode(block)
        except HeaderListTooLarge as too_large:
            raise self._connection_error(ENHANCE_YOUR_CALM, f"header list: {too_large}") from None
        except HpackError as malformed:      # (mypyc: one name, one type)
            raise self._connection_error(COMPRESSION_ERROR, f"HPACK: {malformed}") from None
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id <= self.highest_inbound_stream_id:
                if stream_id not in self.recently_reset:      # 5.1.1: never opened
                    raise self._connection_error(PROTOCOL_ERROR,
                                                 f"stream {stream_id} is not open")
                self._stream_error(events, stream_id, STREAM_CLOSED)   # reset, in flight
                return
            if not stream_id & 1:
                raise self._connection_error(PROTOCOL_ERROR, f"even stream id {stream_id}")
            if refusal:
                self.highest_inbound_stream_id = stream_id
                self._stream_error(events, stream_id, refusal)
                return
            if self.closed:
                self.highest_inbound_stream_id = stream_id
                self._reset(stream_id, REFUSED_STREAM)
                return
            if len(self.streams) >= self.stream_wall:
                raise self._connection_error(PROTOCOL_ERROR, "too many open streams")
            self.highest_inbound_stream_id = stream_id
            stream = _Stream(self.peer_initial_window, self.receive_window_size)
            self.streams[stream_id] = stream
            event = Event(REQUEST, stream_id)
            event.headers = fields
            event.ended = ends
            events.append(event)
        elif not stream.remote_open:
            self._stream_error(events, stream_id, STREAM_CLOSED)
            return
        elif not ends or refusal:       # 8.1: trailers end the stream (malformed)
            self._stream_error(events, stream_id, refusal or PROTOCOL_ERROR)
            return
        else:
            event = Event(TRAILERS, stream_id)
            event.headers = fields
            events.append(event)
        if ends:
            self._remote_ended(events, stream_id, stream)

    def _remote_ended(self, events: list[Event], stream_id: int, stream: _Stream) -> None:
        stream.remote_open = False
        events.append(Event(STREAM_ENDED, stream_id))
        if not stream.local_open:
            del self.streams[stream_id]

    def _data(self, events: list[Event], flags: int, stream_id: int, data: bytes,
              start: int, end: int) -> None:
        if stream_id == 0:
            raise self._connection_error(PROTOCOL_ERROR, "DATA on stream 0")
        length = end - start
        self.receive_window -= length
        if self.receive_window < 0:
            raise self._connection_error(FLOW_CONTROL_ERROR, "DATA past the connection's window")
        start, stop = self._unpadded(flags, data, start, end)
        stream = self.streams.get(stream_id)
        if stream is None or not stream.remote_open:
            if stream_id > self.highest_inbound_stream_id:
                raise self._connection_error(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            self._connection_consumed(length)        # a closed stream's: given back
            if stream is not None:
                self._stream_error(events, stream_id, STREAM_CLOSED)
            return
        stream.receive_window -= length
        if stream.receive_window < 0:
            self._connection_consumed(length)
            self._stream_error(events, stream_id, FLOW_CONTROL_ERROR)
            return
        event = Event(BODY, stream_id)
        event.data = data[start:stop]
        event.flow_length = length
        event.ended = bool(flags & END_STREAM)
        events.append(event)
        if event.ended:
            self._remote_ended(events, stream_id, stream)

    def _window_updated(self, events: list[Event], stream_id: int, data: bytes,
                        start: int, end: int) -> None:
        if end - start != 4:
            raise self._connection_error(FRAME_SIZE_ERROR, "WINDOW_UPDATE not of 4 bytes")
        delta = _u32(data, start) & MAX_WINDOW
        if stream_id == 0:
            if delta == 0:
                raise self._connection_error(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += delta
            if self.send_window > MAX_WINDOW:
                raise self._connection_error(FLOW_CONTROL_ERROR, "connection window overflow")
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                if stream_id > self.highest_inbound_stream_id:
                    raise self._connection_error(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
                return                                  # a closed stream's: ignored
            if delta == 0:
                self._stream_error(events, stream_id, PROTOCOL_ERROR)
                return
            stream.send_window += delta
            if stream.send_window > MAX_WINDOW:
                self._stream_error(events, stream_id, FLOW_CONTROL_ERROR)
                return
        event = Event(WINDOW_UPDATED, stream_id)
        event.delta = delta
        events.append(event)

    def _settings(self, events: list[Event], flags: int, stream_id: int, data: bytes,
                  start: int, end: int) -> None:
        if stream_id != 0:
            raise self._connection_error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if end != start:
                raise self._connection_error(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if (end - start) % 6:
            raise self._connection_error(FRAME_SIZE_ERROR, "SETTINGS not in 6-byte entries")
        self._apply_settings(data, start, end)
        self.out.append(frame_head(0, SETTINGS, ACK, 0))
        events.append(Event(SETTINGS_CHANGED, 0))

    def _apply_settings(self, data: bytes, start: int, end: int) -> None:
        for at in range(start, end, 6):
            code = (data[at] << 8) | data[at + 1]
            value = _u32(data, at + 2)
            if code == HEADER_TABLE_SIZE:
                self.encoder.header_table_size = value
            elif code == ENABLE_PUSH:
                if value > 1:
                    raise self._connection_error(PROTOCOL_ERROR, "ENABLE_PUSH not 0 or 1")
            elif code == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise self._connection_error(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise self._connection_error(FLOW_CONTROL_ERROR, "a window overflowed")
            elif code == MAX_FRAME_SIZE:
                if value < DEFAULT_FRAME_SIZE or value > LARGEST_FRAME_SIZE:
                    raise self._connection_error(PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value}")
                self.max_outbound_frame_size = value

    def _rst_stream(self, events: list[Event], stream_id: int, data: bytes,
                    start: int, end: int) -> None:
        if stream_id == 0:
            raise self._connection_error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if end - start != 4:
            raise self._connection_error(FRAME_SIZE_ERROR, "RST_STREAM not of 4 bytes")
        if stream_id > self.highest_inbound_stream_id:
            raise self._connection_error(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        if self.streams.pop(stream_id, None) is not None:
            event = Event(STREAM_RESET, stream_id)
            event.code = _u32(data, start)
            events.append(event)

    def _ping(self, events: list[Event], flags: int, stream_id: int, data: bytes,
              start: int, end: int) -> None:
        if stream_id != 0:
            raise self._connection_error(PROTOCOL_ERROR, "PING on a stream")
        if end - start != 8:
            raise self._connection_error(FRAME_SIZE_ERROR, "PING not of 8 bytes")
        opaque = data[start:end]
        if flags & ACK:
            event = Event(PING_ACK, 0)
            event.data = opaque
            events.append(event)
        else:
            self.out.append(frame_head(8, PING, ACK, 0) + opaque)
            events.append(Event(PING_RECEIVED, 0))

    def _priority(self, events: list[Event], stream_id: int, data: bytes, start: int,
                  end: int) -> None:
        if stream_id == 0:
            raise self._connection_error(PROTOCOL_ERROR, "PRIORITY on stream 0")
        if end - start != 5:
            self._stream_error(events, stream_id, FRAME_SIZE_ERROR)
            return
        if _u32(data, start) & MAX_WINDOW == stream_id:     # 5.3.1: a stream error
            self._stream_error(events, stream_id, PROTOCOL_ERROR)
            return
        events.append(Event(PRIORITY_UPDATED, stream_id))

    def _goaway(self, events: list[Event], stream_id: int, data: bytes,
                start: int, end: int) -> None:
        if stream_id != 0:
            raise self._connection_error(PROTOCOL_ERROR, "GOAWAY on a stream")
        if end - start < 8:
            raise self._connection_error(FRAME_SIZE_ERROR, "GOAWAY too short")
        event = Event(TERMINATED, 0)
        event.last_stream = _u32(data, start) & MAX_WINDOW
        event.code = _u32(data, start + 4)
        events.append(event)

    def _stream_error(self, events: list[Event], stream_id: int, code: int) -> None:
        """RFC 9113 5.4.2: RST_STREAM for this stream alone; the session hears of it
        as a reset when the stream was open."""
        self._reset(stream_id, code)
        if self.streams.pop(stream_id, None) is not None:
            event = Event(STREAM_RESET, stream_id)
            event.code = code
            events.append(event)

    def _connection_error(self, code: int, message: str) -> ProtocolError:
        """RFC 9113 5.4.1: GOAWAY queued; the error for the caller to raise."""
        self.close_connection(code)
        return ProtocolError(message, code)

    # ----------------------------------------------------- flow control in
    def acknowledge_received_data(self, length: int, stream_id: int) -> None:
        """The session has taken `length` flow-controlled bytes of the stream in: the
        windows are given back once half of one has been used."""
        self._connection_consumed(length)
        stream = self.streams.get(stream_id)
        if stream is None or not stream.remote_open:
            return
        stream.unacknowledged += length
        if stream.unacknowledged >= self.receive_window_size // 2:
            stream.receive_window += stream.unacknowledged
            self._window_update(stream_id, stream.unacknowledged)
            stream.unacknowledged = 0

    def _connection_consumed(self, length: int) -> None:
        self.unacknowledged += length
        if self.unacknowledged >= self.receive_window_max // 2:
            self.receive_window += self.unacknowledged
            self._window_update(0, self.unacknowledged)
            self.unacknowledged = 0

    def _window_update(self, stream_id: int, increment: int) -> None:
        self.out.append(frame_head(4, WINDOW_UPDATE, 0, stream_id) + _u32_bytes(increment))

    # ------------------------------------------------------------ output
    def _sending(self, stream_id: int) -> _Stream:
        stream = self.streams.get(stream_id)
        if stream is None or not stream.local_open:
            raise StreamClosedError(f"stream {stream_id} is closed for sending")
        return stream

    def _local_ended(self, stream_id: int, stream: _Stream) -> None:
        stream.local_open = False
        if not stream.remote_open:
            del self.streams[stream_id]

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                     end_stream: bool = False) -> int:
        """A header block (an answer's head, or its trailers with end_stream),
        in HEADERS and as many CONTINUATIONs as the peer's frame size asks; returns
        the bytes queued (frames and block)."""
        stream = self._sending(stream_id)
        block = self.encoder.encode(headers)
        flags = END_STREAM if end_stream else 0
        size = self.max_outbound_frame_size
        if len(block) <= size:
            self.out.append(frame_head(len(block), HEADERS, flags | END_HEADERS, stream_id))
            self.out.append(block)
        else:
            self.out.append(frame_head(size, HEADERS, flags, stream_id))
            self.out.append(block[:size])
            for at in range(size, len(block), size):
                piece = block[at:at + size]
                last = END_HEADERS if at + size >= len(block) else 0
                self.out.append(frame_head(len(piece), CONTINUATION, last, stream_id))
                self.out.append(piece)
        if end_stream:
            self._local_ended(stream_id, stream)
        return len(block) + FRAME_HEAD * (1 + max(len(block) - 1, 0) // size)

    def local_flow_control_window(self, stream_id: int) -> int:
        """How many body bytes the stream may send now."""
        stream = self._sending(stream_id)
        return min(stream.send_window, self.send_window)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        """One DATA frame, within the windows and the frame size (the caller's to
        keep to: local_flow_control_window, max_outbound_frame_size)."""
        stream = self._sending(stream_id)
        length = len(data)
        if length and length > min(stream.send_window, self.send_window,
                                   self.max_outbound_frame_size):
            raise ProtocolError(f"{length} bytes past stream {stream_id}'s window", INTERNAL_ERROR)
        stream.send_window -= length
        self.send_window -= length
        self.out.append(frame_head(length, DATA, END_STREAM if end_stream else 0, stream_id))
        if length:
            self.out.append(data)
        if end_stream:
            self._local_ended(stream_id, stream)

    def end_stream(self, stream_id: int) -> None:
        """END_STREAM on an empty DATA frame."""
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """RST_STREAM for an open stream (StreamClosedError for a closed one)."""
        if self.streams.pop(stream_id, None) is None:
            raise StreamClosedError(f"stream {stream_id} is closed")
        self._reset(stream_id, error_code)

    def _reset(self, stream_id: int, code: int) -> None:
        self.out.append(frame_head(4, RST_STREAM, 0, stream_id) + _u32_bytes(code))
        reset = self.recently_reset
        reset[stream_id] = None
        if len(reset) > RESETS_KEPT:
            del reset[next(iter(reset))]

    def ping(self, opaque: bytes) -> None:
        """A PING of 8 opaque bytes; its ACK comes back as a PING_ACK event."""
        self.out.append(frame_head(8, PING, 0, 0) + opaque)

    def goaway(self, last_stream_id: int, error_code: int) -> None:
        """A GOAWAY naming `last_stream_id`, the connection kept usable (a drain's
        first step may send several)."""
        self.out.append(frame_head(8, GOAWAY, 0, 0) +
                        _u32_bytes(last_stream_id & MAX_WINDOW) + _u32_bytes(error_code))

    def close_connection(self, error_code: int) -> None:
        """GOAWAY with the last stream taken in, once: nothing new opens after it."""
        if self.closed:
            return
        self.closed = True
        self.goaway(self.highest_inbound_stream_id, error_code)

    def data_to_send(self) -> bytes:
        """The frames queued since the last call, as one string."""
        if not self.out:
            return b""
        data = b"".join(self.out)
        self.out = []
        return data


def _upgrade_settings(http2_settings: bytes) -> tuple[bytes, int, int]:
    """The SETTINGS payload of an HTTP2-Settings field: base64 (url-safe, or the
    standard alphabet, padding optional) of whole 6-byte settings; ProtocolError
    otherwise."""
    text = http2_settings.replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
    try:
        payload = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ProtocolError(f"HTTP2-Settings: {err}") from None
    if len(payload) % 6:
        raise ProtocolError("HTTP2-Settings of a length not a multiple of 6")
    return payload, 0, len(payload)


def upgrade_settings_refused(http2_settings: bytes) -> str:
    """Why an `Upgrade: h2c` request's HTTP2-Settings cannot start a session (a
    setting's value included), "" when it can: the request is then answered over
    HTTP/1.1, as if it had not asked."""
    try:
        H2Connection([], 1, 1).initiate_upgrade_connection(http2_settings)
    except ProtocolError as err:
        return str(err)
    return ""
