"""worker/websocket.py without sockets: the handshake key, RFC 6455 frames both ways
(masking, fragmentation, control frames, close codes, limits) fed in every split, and
hybi-00 frames."""

from __future__ import annotations

import os

import pytest

from worker import websocket as ws
from worker.websocket import Control, Data, FrameDecoder, Hybi00Decoder, ProtocolError

MASK = b"\x37\xfa\x21\x3d"


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    return ws.encode_frame(opcode, payload, fin, MASK)


def decode_all(data: bytes, step: int = 0) -> list:
    """Events of `data` fed whole (step 0) or `step` bytes at a time, with the pieces of
    a message's data joined per event kind."""
    decoder = FrameDecoder()
    if not step:
        return decoder.feed(data)
    events: list = []
    for start in range(0, len(data), step):
        events += decoder.feed(data[start:start + step])
    return events


def messages(events: list) -> list:
    """Data pieces joined into whole messages; control frames as they are."""
    result, parts = [], []
    for event in events:
        if type(event) is Data:
            parts.append(event.payload)
            if event.last:
                result.append((event.opcode, b"".join(parts)))
                parts = []
        else:
            result.append(event)
    return result


def test_accept_key_is_rfc_6455s_example():
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_lengths_round_trip_in_every_header_form(length):
    payload = os.urandom(length)
    frame = client_frame(ws.OP_BINARY, payload)
    assert messages(decode_all(frame)) == [(ws.OP_BINARY, payload)]


def test_unmasked_server_frame_lengths():
    assert ws.encode_frame(ws.OP_TEXT, b"hello") == b"\x81\x05hello"
    assert ws.encode_frame(ws.OP_BINARY, b"x" * 126)[:4] == b"\x82\x7e\x00\x7e"
    assert ws.encode_frame(ws.OP_BINARY, b"x" * 65536)[:10] == \
        b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"


@pytest.mark.parametrize("offset", [0, 1, 2, 3, 5])
def test_masking_is_its_own_inverse_at_any_offset(offset):
    data = os.urandom(1001)
    masked = ws.mask_bytes(data, MASK, offset)
    assert ws.mask_bytes(masked, MASK, offset) == data
    rotated = MASK[offset % 4:] + MASK[:offset % 4]
    assert masked[0] == data[0] ^ rotated[0]


@pytest.mark.parametrize("step", [0, 1, 2, 3, 7, 64])
def test_fragmented_message_with_control_frames_between_in_any_split(step):
    stream = (client_frame(ws.OP_TEXT, "héllo ".encode(), fin=False)
              + client_frame(ws.OP_PING, b"are you there")
              + client_frame(ws.OP_CONTINUATION, b"wor", fin=False)
              + client_frame(ws.OP_CONTINUATION, b"ld")
              + client_frame(ws.OP_BINARY, b"\x00\xff")
              + client_frame(ws.OP_CLOSE, ws.close_payload(1000, "bye")))
    assert messages(decode_all(stream, step)) == [
        Control(ws.OP_PING, b"are you there"),
        (ws.OP_TEXT, "héllo world".encode()),
        (ws.OP_BINARY, b"\x00\xff"),
        Control(ws.OP_CLOSE, b"\x03\xe8bye"),
    ]


def test_payload_is_handed_on_as_it_arrives():
    """A long frame gives its bytes as they come: nothing waits for the whole frame."""
    frame = client_frame(ws.OP_BINARY, b"a" * 100_000)
    decoder = FrameDecoder()
    first = decoder.feed(frame[:1000])
    assert len(first) == 1 and len(first[0].payload) == 1000 - 14 and not first[0].last
    rest = decoder.feed(frame[1000:])
    assert rest[-1].last and sum(len(e.payload) for e in first + rest) == 100_000


def test_empty_messages_and_empty_control_frames():
    events = decode_all(client_frame(ws.OP_TEXT) + client_frame(ws.OP_PONG))
    assert events == [Data(ws.OP_TEXT, b"", True), Control(ws.OP_PONG, b"")]


@pytest.mark.parametrize("frame, code", [
    (ws.encode_frame(ws.OP_TEXT, b"unmasked"), 1002),
    (bytes([0xC1, 0x80]) + MASK, 1002),                                  # RSV1
    (bytes([0x83, 0x80]) + MASK, 1002),                                  # opcode 3
    (client_frame(ws.OP_PING, b"x", fin=False), 1002),
    (client_frame(ws.OP_PING, b"x" * 126), 1002),
    (client_frame(ws.OP_CONTINUATION, b"x"), 1002),
    (client_frame(ws.OP_TEXT, b"a", fin=False) + client_frame(ws.OP_TEXT, b"b"), 1002),
    (bytes([0x82, 0xFF]) + b"\x80" + b"\x00" * 7 + MASK, 1002),          # 64-bit length
    (client_frame(ws.OP_TEXT, b"\xff\xfe"), 1007),
    (client_frame(ws.OP_TEXT, b"\xe2\x82", fin=True), 1007),             # cut character
])
def test_protocol_errors_carry_their_close_code(frame, code):
    with pytest.raises(ProtocolError) as caught:
        FrameDecoder().feed(frame)
    assert caught.value.code == code


def test_text_split_inside_a_character_across_fragments_is_valid():
    euro = "€".encode()
    stream = client_frame(ws.OP_TEXT, euro[:1], fin=False) + \
        client_frame(ws.OP_CONTINUATION, euro[1:])
    assert messages(decode_all(stream)) == [(ws.OP_TEXT, euro)]


def test_a_client_side_decoder_refuses_masked_frames():
    assert FrameDecoder(masked=False).feed(b"\x81\x02hi") == [Data(ws.OP_TEXT, b"hi", True)]
    with pytest.raises(ProtocolError):
        FrameDecoder(masked=False).feed(client_frame(ws.OP_TEXT, b"hi"))


@pytest.mark.parametrize("payload, expected", [
    (b"", None), (b"\x03\xe8", 1000), (b"\x0f\xa0why", 4000),
])
def test_close_codes_accepted(payload, expected):
    assert ws.close_code(payload) == expected


@pytest.mark.parametrize("payload, code", [
    (b"\x03", 1002), (b"\x03\xed", 1002), (b"\x00\x01", 1002), (b"\x13\x88", 1002),
    (b"\x03\xe8\xff", 1007),
])
def test_close_codes_refused(payload, code):
    with pytest.raises(ProtocolError) as caught:
        ws.close_code(payload)
    assert caught.value.code == code


def test_utf8_complete_holds_back_a_cut_character():
    text = "a€b😀".encode()
    assert ws.utf8_complete(text) == len(text)
    for cut in range(len(text) + 1):
        whole = ws.utf8_complete(text[:cut])
        text[:whole].decode()                        # never cuts a character
        assert cut - whole < 4


def test_hybi00_handshake_answer_is_the_drafts_example():
    number1 = ws.hybi00_key_number("4 @1  46546xW%0l 1 5")
    number2 = ws.hybi00_key_number("12998 5 Y3 1  .P00")
    assert ws.hybi00_answer(number1, number2, b"^n:ds[4U") == b"8jKS'y:G*Co,Wxa-"
    assert ws.hybi00_key_number("123") is None                      # no space
    assert ws.hybi00_key_number(" 99999999999") is None             # beyond 32 bits


@pytest.mark.parametrize("step", [1, 3, 100])
def test_hybi00_frames_text_binary_and_close(step):
    text, binary = Hybi00Decoder(False), Hybi00Decoder(True)
    stream = b"\x00hello\xff\x00\xff"
    events: list = []
    for start in range(0, len(stream), step):
        events += text.feed(stream[start:start + step])
    assert b"".join(e.payload for e in events if type(e) is Data) == b"hello"
    assert binary.feed(b"\x00aGk=\xff\xff\x00") == [Data(ws.OP_BINARY, b"hi", True),
                                                    Control(ws.OP_CLOSE, b"")]
    assert ws.hybi00_frame(b"hi", True) == b"\x00aGk=\xff"
    assert ws.hybi00_frame(b"", False) == b""


def test_hybi00_limits_and_garbage():
    with pytest.raises(ProtocolError):
        Hybi00Decoder(False).feed(b"\x41")
    with pytest.raises(ProtocolError) as caught:
        Hybi00Decoder(False).feed(b"\x00" + b"x" * (ws.HYBI00_MAX_FRAME + 1))
    assert caught.value.code == 1009
    with pytest.raises(ProtocolError):
        Hybi00Decoder(True).feed(b"\x00not base64!\xff")
