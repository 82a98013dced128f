"""worker/h2_connection.py, the server's HTTP/2 engine: spoken to by the h2 library's
client side (an independent implementation) and by hand-made frames for each error
RFC 9113 names, every frame type both ways."""

from __future__ import annotations

import base64
import struct

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest

from worker import h2_connection as wire

WINDOW = 1 << 20
SETTINGS = [(wire.MAX_CONCURRENT_STREAMS, 100), (wire.INITIAL_WINDOW_SIZE, WINDOW),
            (wire.MAX_HEADER_LIST_SIZE, 8192), (wire.ENABLE_PUSH, 0)]
REQUEST = [(":method", "GET"), (":path", "/a"), (":scheme", "http"),
           (":authority", "x.example"), ("user-agent", "test/1.0")]


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def frames_of(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of each frame in `data`."""
    out = []
    while data:
        length = int.from_bytes(data[:3], "big")
        out.append((data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7fffffff,
                    data[9:9 + length]))
        data = data[9 + length:]
    return out


def engine(wall: int = 200, decode_limit: int = 32768) -> wire.H2Connection:
    connection = wire.H2Connection(SETTINGS, wall, decode_limit)
    connection.initiate_connection()
    return connection


class Pair:
    """The engine and an h2 client, the client's bytes fed to the engine."""

    def __init__(self, client_settings: dict | None = None) -> None:
        self.server = engine()
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        if client_settings:
            self.client.local_settings = h2.settings.Settings(client=True,
                                                              initial_values=client_settings)
        self.client.initiate_connection()
        self.events: list[wire.Event] = []
        self.client_events: list = []
        self.exchange()

    def exchange(self) -> None:
        """Bytes both ways until neither side has more to say."""
        while True:
            to_server = self.client.data_to_send()
            if to_server:
                self.events += self.server.receive_data(to_server)
            to_client = self.server.data_to_send()
            if to_client:
                self.client_events += self.client.receive_data(to_client)
            if not to_server and not to_client:
                return

    def kinds(self) -> list[int]:
        return [event.kind for event in self.events]


def test_a_request_and_its_answer():
    pair = Pair()
    assert isinstance(pair.client_events[0], h2.events.RemoteSettingsChanged)
    settings = pair.client_events[0].changed_settings
    assert settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE].new_value == WINDOW
    assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS].new_value == 100
    pair.events.clear()
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    assert pair.kinds() == [wire.REQUEST, wire.STREAM_ENDED]
    request = pair.events[0]
    assert request.stream_id == 1 and request.ended
    assert request.headers == [(k.encode(), v.encode()) for k, v in REQUEST]
    pair.server.send_headers(1, [(b":status", b"200"), (b"content-length", b"5")])
    pair.server.send_data(1, b"hello", end_stream=True)
    pair.exchange()
    kinds = [type(event) for event in pair.client_events]
    assert h2.events.ResponseReceived in kinds and h2.events.StreamEnded in kinds
    data = [event.data for event in pair.client_events if isinstance(event, h2.events.DataReceived)]
    assert data == [b"hello"]
    assert 1 not in pair.server.streams                        # closed both ways
    with pytest.raises(wire.StreamClosedError):
        pair.server.send_data(1, b"more")


def test_every_byte_boundary_of_a_read_gives_the_same_events():
    pair = Pair()
    pair.client.send_headers(1, REQUEST, end_stream=False)
    pair.client.send_data(1, b"body" * 100, end_stream=True)
    wire_bytes = pair.client.data_to_send()
    whole = engine()
    whole.receive_data(wire.PREFACE + frame(wire.SETTINGS, 0, 0))
    expected = [(e.kind, e.stream_id, e.data, e.headers)
                for e in whole.receive_data(wire_bytes)]
    split = engine()
    got = []
    for byte in wire.PREFACE + frame(wire.SETTINGS, 0, 0) + wire_bytes:
        got += split.receive_data(bytes([byte]))
    got_kinds = [(e.kind, e.stream_id, e.data, e.headers) for e in got
                 if e.kind != wire.SETTINGS_CHANGED]
    assert got_kinds == expected
    assert [k for k, *_ in expected] == [wire.REQUEST, wire.BODY, wire.STREAM_ENDED]


def test_the_answer_keeps_to_the_peers_window_and_frame_size():
    pair = Pair({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    assert pair.server.local_flow_control_window(1) == 100
    pair.server.send_headers(1, [(b":status", b"200")])
    pair.server.send_data(1, b"x" * 100)
    assert pair.server.local_flow_control_window(1) == 0
    with pytest.raises(wire.ProtocolError):
        pair.server.send_data(1, b"y")
    pair.exchange()
    pair.client.increment_flow_control_window(50, stream_id=1)
    pair.exchange()
    assert pair.events[-1].kind == wire.WINDOW_UPDATED and pair.events[-1].delta == 50
    assert pair.server.local_flow_control_window(1) == 50
    assert pair.server.max_outbound_frame_size == 16384


def test_a_lowered_initial_window_may_leave_a_stream_in_debt():
    pair = Pair()
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    pair.server.send_headers(1, [(b":status", b"200")])
    pair.server.send_data(1, b"x" * 1000)
    pair.server.receive_data(frame(wire.SETTINGS, 0, 0, struct.pack(">HI", 4, 10)))
    assert pair.server.local_flow_control_window(1) == 10 - 1000
    pair.server.end_stream(1)                     # an empty END_STREAM needs no window


def test_a_large_upload_is_acknowledged_as_it_is_taken_in():
    """4 MiB through a 1 MiB stream window: WINDOW_UPDATEs let the client go on."""
    pair = Pair()
    pair.client.send_headers(1, [(":method", "POST"), *REQUEST[1:]])
    pair.exchange()
    body = b"z" * (4 << 20)
    sent = received = 0
    while sent < len(body):
        room = min(pair.client.local_flow_control_window(1), 16384, len(body) - sent)
        assert room > 0, "the client ran out of window"
        pair.client.send_data(1, body[sent:sent + room], end_stream=sent + room == len(body))
        sent += room
        for event in pair.server.receive_data(pair.client.data_to_send()):
            if event.kind == wire.BODY:
                received += len(event.data)
                pair.server.acknowledge_received_data(event.flow_length, event.stream_id)
        pair.client.receive_data(pair.server.data_to_send())
    assert received == len(body)


def test_padding_is_taken_off_and_counted_against_the_window():
    server = engine()
    block = hpack.Encoder().encode(REQUEST)
    padded = bytes([3]) + block + b"\0\0\0"
    events = server.receive_data(wire.PREFACE + frame(wire.HEADERS, 0x4 | 0x8, 1, padded))
    assert events[0].headers[0] == (b":method", b"GET")
    events = server.receive_data(frame(wire.DATA, 0x8 | 0x1, 1, bytes([4]) + b"abc" + b"\0" * 4))
    assert events[0].data == b"abc" and events[0].flow_length == 8 and events[0].ended


def test_a_priority_in_headers_is_skipped_and_priority_frames_are_reported():
    server = engine()
    block = hpack.Encoder().encode(REQUEST)
    events = server.receive_data(wire.PREFACE + frame(
        wire.HEADERS, 0x4 | 0x1 | 0x20, 3, struct.pack(">IB", 1, 15) + block))
    assert events[0].headers[1] == (b":path", b"/a")
    events = server.receive_data(frame(wire.PRIORITY, 0, 5, struct.pack(">IB", 3, 1)))
    assert [e.kind for e in events] == [wire.PRIORITY_UPDATED]


def test_a_header_block_in_continuations():
    server = engine()
    block = hpack.Encoder().encode(REQUEST + [("x-long", "v" * 3000)])
    parts = [block[:1000], block[1000:2000], block[2000:]]
    data = wire.PREFACE + frame(wire.HEADERS, 0x1, 1, parts[0]) + \
        frame(wire.CONTINUATION, 0, 1, parts[1]) + frame(wire.CONTINUATION, 0x4, 1, parts[2])
    events = server.receive_data(data)
    assert [e.kind for e in events] == [wire.REQUEST, wire.STREAM_ENDED]
    assert events[0].headers[-1] == (b"x-long", b"v" * 3000)


def test_a_long_answer_head_goes_out_in_continuations():
    pair = Pair()
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    head = [(b":status", b"200")] + [(b"x-%d" % i, b"v" * 1000) for i in range(40)]
    pair.client.local_settings.max_header_list_size = 1 << 20
    pair.server.send_headers(1, head, end_stream=True)
    sent = frames_of(pair.server.data_to_send())
    assert [kind for kind, *_ in sent] == [wire.HEADERS, wire.CONTINUATION, wire.CONTINUATION]
    events = pair.client.receive_data(b"".join(frame(k, f, s, p) for k, f, s, p in sent))
    response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
    assert len(response.headers) == 41


def test_trailers_end_the_stream():
    pair = Pair()
    pair.client.send_headers(1, [(":method", "POST"), *REQUEST[1:]])
    pair.client.send_data(1, b"abc")
    pair.client.send_headers(1, [("x-sum", "1")], end_stream=True)
    pair.exchange()
    assert pair.kinds()[-4:] == [wire.REQUEST, wire.BODY, wire.TRAILERS, wire.STREAM_ENDED]
    assert pair.events[-2].headers == [(b"x-sum", b"1")]


def test_ping_is_answered_and_its_ack_reported():
    server = engine()
    server.data_to_send()
    events = server.receive_data(wire.PREFACE + frame(wire.PING, 0, 0, b"12345678"))
    assert [e.kind for e in events] == [wire.PING_RECEIVED]
    assert frames_of(server.data_to_send()) == [(wire.PING, wire.ACK, 0, b"12345678")]
    server.ping(b"drain\0\0\0")
    assert frames_of(server.data_to_send()) == [(wire.PING, 0, 0, b"drain\0\0\0")]
    events = server.receive_data(frame(wire.PING, wire.ACK, 0, b"drain\0\0\0"))
    assert events[0].kind == wire.PING_ACK and events[0].data == b"drain\0\0\0"


def test_a_reset_by_the_peer_closes_its_stream():
    pair = Pair()
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.client.reset_stream(1, 8)
    pair.exchange()
    assert pair.kinds()[-1] == wire.STREAM_RESET and pair.events[-1].code == 8
    with pytest.raises(wire.StreamClosedError):
        pair.server.send_headers(1, [(b":status", b"200")])
    with pytest.raises(wire.StreamClosedError):
        pair.server.reset_stream(1, wire.CANCEL)


def test_our_reset_and_goaways():
    pair = Pair()
    pair.client.send_headers(1, REQUEST, end_stream=True)
    pair.exchange()
    pair.server.reset_stream(1, wire.REFUSED_STREAM)
    pair.server.goaway(0x7fffffff, wire.NO_ERROR)
    pair.server.close_connection(wire.NO_ERROR)
    pair.server.close_connection(wire.PROTOCOL_ERROR)          # once only
    sent = frames_of(pair.server.data_to_send())
    assert sent == [(wire.RST_STREAM, 0, 1, struct.pack(">I", wire.REFUSED_STREAM)),
                    (wire.GOAWAY, 0, 0, struct.pack(">II", 0x7fffffff, 0)),
                    (wire.GOAWAY, 0, 0, struct.pack(">II", 1, 0))]


def test_a_goaway_from_the_peer_is_reported():
    server = engine()
    events = server.receive_data(wire.PREFACE + frame(wire.GOAWAY, 0, 0, struct.pack(">II", 7, 2)))
    assert events[0].kind == wire.TERMINATED and (events[0].last_stream, events[0].code) == (7, 2)


def test_the_upgrade_makes_stream_one_and_takes_the_clients_settings():
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    field = client.initiate_upgrade_connection()
    server = wire.H2Connection(SETTINGS, 200, 32768)
    server.initiate_upgrade_connection(field)
    assert server.local_flow_control_window(1) == 1000
    assert server.highest_inbound_stream_id == 1
    server.send_headers(1, [(b":status", b"200")], end_stream=True)
    events = client.receive_data(server.data_to_send())
    assert any(isinstance(e, h2.events.ResponseReceived) and e.stream_id == 1 for e in events)
    with pytest.raises(wire.ProtocolError):
        wire.H2Connection(SETTINGS, 200, 32768).initiate_upgrade_connection(
            base64.urlsafe_b64encode(b"12345"))


def _connection_error(data: bytes, server: wire.H2Connection | None = None) -> int:
    """The GOAWAY code the engine answers `data` (after the preface) with."""
    if server is None:
        server = engine()
        server.receive_data(wire.PREFACE)
    server.data_to_send()
    with pytest.raises(wire.ProtocolError) as raised:
        server.receive_data(data)
    goaway = [p for kind, _, _, p in frames_of(server.data_to_send()) if kind == wire.GOAWAY]
    assert len(goaway) == 1
    code = struct.unpack(">I", goaway[0][4:8])[0]
    assert code == raised.value.error_code
    return code


BLOCK = hpack.Encoder().encode(REQUEST)


@pytest.mark.parametrize("data, code", [
    (frame(wire.DATA, 0, 0, b"x"), wire.PROTOCOL_ERROR),
    (frame(wire.DATA, 0, 1, b"x"), wire.PROTOCOL_ERROR),                    # idle stream
    (frame(wire.HEADERS, 0x4, 0, BLOCK), wire.PROTOCOL_ERROR),
    (frame(wire.HEADERS, 0x4, 2, BLOCK), wire.PROTOCOL_ERROR),              # even id
    (frame(wire.HEADERS, 0x4 | 0x1, 5, BLOCK) + frame(wire.HEADERS, 0x4 | 0x1, 3, BLOCK),
     wire.PROTOCOL_ERROR),                                  # 5.1.1: below an id in use
    (frame(wire.HEADERS, 0x4 | 0x8, 1, bytes([200]) + BLOCK), wire.PROTOCOL_ERROR),
    (frame(wire.HEADERS, 0, 1, BLOCK) + frame(wire.PING, 0, 0, b"12345678"),
     wire.PROTOCOL_ERROR),                                                  # interrupted
    (frame(wire.HEADERS, 0, 1, BLOCK) + frame(wire.CONTINUATION, 0x4, 3, b""),
     wire.PROTOCOL_ERROR),
    (frame(wire.CONTINUATION, 0x4, 1, BLOCK), wire.PROTOCOL_ERROR),
    (frame(wire.HEADERS, 0, 1, BLOCK) + frame(wire.CONTINUATION, 0, 1, b"a" * 16000) * 3,
     wire.ENHANCE_YOUR_CALM),                                               # no end
    (frame(wire.HEADERS, 0x4, 1, b"\x80"), wire.COMPRESSION_ERROR),        # index 0
    (frame(wire.HEADERS, 0x4, 1, BLOCK + b"\x40\x01a\x7f\x7f" + b"\xff" * 8),
     wire.COMPRESSION_ERROR),
    (b"\x00\x40\x01" + bytes([wire.DATA, 0]) + b"\0\0\0\1" + b"x" * 16385,
     wire.FRAME_SIZE_ERROR),
    (frame(wire.SETTINGS, 0, 1), wire.PROTOCOL_ERROR),
    (frame(wire.SETTINGS, 0, 0, b"\0\1\0"), wire.FRAME_SIZE_ERROR),
    (frame(wire.SETTINGS, wire.ACK, 0, b"\0\1\0\0\0\0"), wire.FRAME_SIZE_ERROR),
    (frame(wire.SETTINGS, 0, 0, struct.pack(">HI", 2, 2)), wire.PROTOCOL_ERROR),
    (frame(wire.SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 31)), wire.FLOW_CONTROL_ERROR),
    (frame(wire.SETTINGS, 0, 0, struct.pack(">HI", 5, 100)), wire.PROTOCOL_ERROR),
    (frame(wire.PING, 0, 1, b"12345678"), wire.PROTOCOL_ERROR),
    (frame(wire.PING, 0, 0, b"1234"), wire.FRAME_SIZE_ERROR),
    (frame(wire.RST_STREAM, 0, 0, b"\0\0\0\1"), wire.PROTOCOL_ERROR),
    (frame(wire.RST_STREAM, 0, 9, b"\0\0\0\1"), wire.PROTOCOL_ERROR),        # idle
    (frame(wire.RST_STREAM, 0, 1, b"\0\0\1"), wire.FRAME_SIZE_ERROR),
    (frame(wire.WINDOW_UPDATE, 0, 0, b"\0\0\0\0"), wire.PROTOCOL_ERROR),
    (frame(wire.WINDOW_UPDATE, 0, 0, b"\0\0\0"), wire.FRAME_SIZE_ERROR),
    (frame(wire.WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7fffffff)), wire.FLOW_CONTROL_ERROR),
    (frame(wire.WINDOW_UPDATE, 0, 9, b"\0\0\0\1"), wire.PROTOCOL_ERROR),    # idle
    (frame(wire.PRIORITY, 0, 0, b"\0\0\0\1\1"), wire.PROTOCOL_ERROR),
    (frame(wire.PUSH_PROMISE, 0x4, 1, b"\0\0\0\2" + BLOCK), wire.PROTOCOL_ERROR),
    (frame(wire.GOAWAY, 0, 1, b"\0" * 8), wire.PROTOCOL_ERROR),
], ids=lambda value: "" if isinstance(value, bytes) else str(value))
def test_connection_errors_get_goaway_with_their_code(data, code):
    assert _connection_error(data) == code


def test_a_body_past_the_connections_window_is_a_flow_control_error():
    server = engine()
    server.receive_data(wire.PREFACE + frame(wire.HEADERS, 0x4, 1, BLOCK))
    data = b"".join(frame(wire.DATA, 0, 1, b"d" * 16384) for _ in range(4))   # 64 KiB
    assert _connection_error(data, server) == wire.FLOW_CONTROL_ERROR


def test_a_bad_preface_is_a_protocol_error():
    server = engine()
    with pytest.raises(wire.ProtocolError):
        server.receive_data(b"GET / HTTP/1.1\r\n\r\n" + b"x" * 10)
    assert engine().receive_data(wire.PREFACE[:10]) == []          # not yet known


def test_too_many_open_streams_end_the_connection():
    server = engine(wall=3)
    encoder = hpack.Encoder()
    data = b"".join(frame(wire.HEADERS, 0x4, stream, encoder.encode(REQUEST))
                    for stream in (1, 3, 5))
    server.receive_data(wire.PREFACE + data)
    assert _connection_error(frame(wire.HEADERS, 0x4, 7, encoder.encode(REQUEST)),
                             server) == wire.PROTOCOL_ERROR


@pytest.mark.parametrize("late, code", [
    (frame(wire.DATA, 0, 1, b"late"), wire.STREAM_CLOSED),              # half-closed
    (frame(wire.WINDOW_UPDATE, 0, 1, b"\0\0\0\0"), wire.PROTOCOL_ERROR),
    (frame(wire.WINDOW_UPDATE, 0, 1, struct.pack(">I", 0x7fffffff)), wire.FLOW_CONTROL_ERROR),
    (frame(wire.PRIORITY, 0, 1, b"\0\0"), wire.FRAME_SIZE_ERROR),
])
def test_stream_errors_reset_that_stream_alone(late, code):
    server = engine()
    server.receive_data(wire.PREFACE + frame(wire.HEADERS, 0x4 | 0x1, 1, BLOCK))
    server.data_to_send()
    events = server.receive_data(late)
    assert frames_of(server.data_to_send()) == [(wire.RST_STREAM, 0, 1, struct.pack(">I", code))]
    assert events[-1].kind == wire.STREAM_RESET and events[-1].code == code
    assert 1 not in server.streams and not server.closed


def test_streams_depending_on_themselves_and_open_trailers_are_stream_errors():
    """5.3.1 (a HEADERS or PRIORITY frame making a stream depend on itself) and 8.1
    (trailers without END_STREAM: malformed): RST_STREAM PROTOCOL_ERROR, the header
    block decoded all the same so that the HPACK table stays in step."""
    server = engine()
    encoder = hpack.Encoder()
    server.receive_data(wire.PREFACE)
    server.data_to_send()
    self_dependent = frame(wire.HEADERS, 0x4 | 0x1 | 0x20, 1,
                           struct.pack(">IB", 1, 0) + encoder.encode(REQUEST))
    assert server.receive_data(self_dependent) == []
    open_trailers = (frame(wire.HEADERS, 0x4, 3, encoder.encode(REQUEST))
                     + frame(wire.HEADERS, 0x4, 3, encoder.encode([("x-t", "1")])))
    events = server.receive_data(open_trailers)
    assert [e.kind for e in events] == [wire.REQUEST, wire.STREAM_RESET]
    server.receive_data(frame(wire.PRIORITY, 0, 7, struct.pack(">IB", 7, 0)))
    assert [f[:3] for f in frames_of(server.data_to_send())] == [
        (wire.RST_STREAM, 0, 1), (wire.RST_STREAM, 0, 3), (wire.RST_STREAM, 0, 7)]
    events = server.receive_data(frame(wire.HEADERS, 0x4 | 0x1, 9, encoder.encode(REQUEST)))
    assert events[0].kind == wire.REQUEST and not server.closed


def test_frames_on_a_closed_stream_are_passed_over():
    server = engine()
    encoder = hpack.Encoder()
    server.receive_data(wire.PREFACE + frame(wire.HEADERS, 0x4, 1, encoder.encode(REQUEST)))
    server.reset_stream(1, wire.CANCEL)
    server.data_to_send()
    assert server.receive_data(frame(wire.DATA, 0, 1, b"in flight")) == []
    assert server.receive_data(frame(wire.RST_STREAM, 0, 1, b"\0\0\0\x08")) == []
    events = server.receive_data(frame(wire.HEADERS, 0x4 | 0x1, 1, encoder.encode(REQUEST)))
    assert events == [] and frames_of(server.data_to_send()) == [
        (wire.RST_STREAM, 0, 1, struct.pack(">I", wire.STREAM_CLOSED))]
    events = server.receive_data(frame(wire.HEADERS, 0x4 | 0x1, 3, encoder.encode(REQUEST)))
    assert events[0].kind == wire.REQUEST                 # the HPACK table stayed in step


def test_unknown_frames_are_reported_and_ignored():
    server = engine()
    events = server.receive_data(wire.PREFACE + frame(0xfa, 0, 0, b"anything"))
    assert [e.kind for e in events] == [wire.UNKNOWN_FRAME]
