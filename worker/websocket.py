"""The WebSocket protocol without I/O: the opening handshake's key, and frames both
ways, for RFC 6455 (versions 8 to 13) and for draft-ietf-hybi-thewebsocketprotocol-00
(hybi-00, version 0), the two mod_wstunnel speaks as lighttpd's does.

`FrameDecoder` takes the client's bytes in pieces of any size and gives back events:
`Data` for a piece of a text or binary message (its payload unmasked, handed on as it
arrives, so a message of any length costs no more memory than one read) and `Control`
for a whole ping, pong or close.  It keeps at most one frame header and one control
payload (125 bytes) between calls.  What breaks the protocol raises `ProtocolError`
with the close code to answer it with (1002, or 1007 for text that is not UTF-8).
`encode_frame` builds a frame, masked when a mask is given (a client's).

`Hybi00Decoder` and `hybi00_frame` are the same for hybi-00's 0x00 ... 0xFF text frames
and its 0xFF 0x00 close; `hybi00_answer` is its handshake's MD5 answer.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import struct
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
DATA_OPCODES = frozenset({OP_TEXT, OP_BINARY})
CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})
MAX_CONTROL_PAYLOAD = 125
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_PROTOCOL_ERROR = 1000, 1001, 1002
CLOSE_INVALID_DATA, CLOSE_TOO_BIG = 1007, 1009
# close codes an endpoint may not send (RFC 6455 7.4.1, 7.4.2): reserved or unassigned
_FORBIDDEN_CODES = frozenset({1004, 1005, 1006, 1015})
HYBI00_MAX_FRAME = 0x0FFFFF       # lighttpd's MOD_WEBSOCKET_BUFMAX for a hybi-00 frame


class ProtocolError(ValueError):
    """The peer broke the protocol: close with `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True, slots=True)
class Data:
    """A piece of a text or binary message; `last` on the message's final byte."""

    opcode: int
    payload: bytes
    last: bool


@dataclass(frozen=True, slots=True)
class Control:
    """A whole ping, pong or close frame."""

    opcode: int
    payload: bytes


# ------------------------------------------------------------------ handshake
def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 4.2.2)."""
    digest = hashlib.sha1(key.encode("latin-1") + GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def hybi00_key_number(value: str) -> int | None:
    """A hybi-00 Sec-WebSocket-Key1/Key2: its digits as a number divided by its spaces;
    None when it has no space or the number passes 32 bits (lighttpd's checks)."""
    digits = "".join(c for c in value if "0" <= c <= "9")
    spaces = value.count(" ")
    if not spaces or len(digits) > 10:
        return None
    number = int(digits or "0")
    if number > 0xFFFFFFFF:
        return None
    return number // spaces


def hybi00_answer(number1: int, number2: int, key3: bytes) -> bytes:
    """The 16 bytes that follow a hybi-00 101 head: MD5 of both key numbers (big-endian,
    as the draft says; lighttpd on a little-endian machine lays them out the other way,
    an answer no hybi-00 client accepts) and the 8 bytes the client sent after its head."""
    return hashlib.md5(struct.pack("!II", number1, number2) + key3).digest()


# ------------------------------------------------------------------ RFC 6455 frames
def mask_bytes(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    """XOR `data` with the 4-byte `mask`, starting `offset` bytes into the payload
    (masking is its own inverse).  One big-integer XOR: fast for long payloads."""
    if not data:
        return b""
    if offset % 4:
        shift = offset % 4
        mask = mask[shift:] + mask[:shift]
    length = len(data)
    key = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
        length, "little")


def encode_frame(opcode: int, payload: bytes = b"", fin: bool = True,
                 mask: bytes | None = None) -> bytes:
    """One frame; masked with `mask` (4 bytes) as a client sends it."""
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask is not None else 0
    length = len(payload)
    if length < 126:
        head = bytes((first, mask_bit | length))
    elif length <= 0xFFFF:
        head = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask is None:
        return head + payload
    return head + mask + mask_bytes(payload, mask)


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload: the status code, then a UTF-8 reason."""
    return struct.pack("!H", code) + reason.encode("utf-8")[:MAX_CONTROL_PAYLOAD - 2]


def close_code(payload: bytes) -> int | None:
    """The status code of a close frame's payload (None for an empty one), checked as
    RFC 6455 5.5.1 and 7.4 ask."""
    if not payload:
        return None
    if len(payload) == 1:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "close frame of one byte")
    code = struct.unpack("!H", payload[:2])[0]
    if code < 1000 or code in _FORBIDDEN_CODES or 1016 <= code < 3000 or code >= 5000:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"close code {code} may not be sent")
    try:
        payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
    return code


class FrameDecoder:
    """RFC 6455 frames as they arrive (see the module's docstring).  `masked` says
    which side it decodes: a server requires masked frames, a client refuses them."""

    __slots__ = ("masked", "pending", "opcode", "fin", "left", "mask", "offset",
                 "message", "utf8", "control")

    def __init__(self, masked: bool = True) -> None:
        self.masked = masked
        self.pending = b""          # bytes of a frame header not complete yet
        self.opcode = -1            # the current frame's opcode; -1 between frames
        self.fin = False
        self.left = 0               # payload bytes of the current frame still to come
        self.mask = b""
        self.offset = 0             # payload bytes of the current frame already seen
        self.message = -1           # the opcode of a fragmented message under way
        # checks a text message that comes in pieces
        self.utf8: codecs.IncrementalDecoder | None = None
        self.control = b""          # a control frame's payload so far

    def feed(self, data: bytes) -> list[Data | Control]:
        """The events `data` completes, in order."""
        events: list[Data | Control] = []
        data = self.pending + data if self.pending else data
        self.pending = b""
        position = 0
        end = len(data)
        while position < end or (self.opcode >= 0 and not self.left):
            if self.opcode < 0:
                used = self._header(data, position)
                if not used:
                    self.pending = data[position:]
                    break
                position += used
            take = min(self.left, end - position)
            piece = data[position:position + take]
            position += take
            event = self._payload(piece)
            if event is not None:
                events.append(event)
        return events

    def _header(self, data: bytes, start: int) -> int:
        """Parse a frame header at `start`: the bytes it took, 0 if it is not all here."""
        available = len(data) - start
        if available < 2:
            return 0
        first, second = data[start], data[start + 1]
        size = 2
        length = second & 0x7F
        if length == 126:
            size += 2
        elif length == 127:
            size += 8
        has_mask = bool(second & 0x80)
        if has_mask:
            size += 4
        if available < size:
            return 0
        if length == 126:
            length = struct.unpack_from("!H", data, start + 2)[0]
        elif length == 127:
            length = struct.unpack_from("!Q", data, start + 2)[0]
            if length >> 63:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "frame length beyond 63 bits")
        self._check(first, has_mask, length)
        self.opcode, self.fin, self.left, self.offset = first & 0x0F, bool(first & 0x80), \
            length, 0
        self.mask = data[start + size - 4:start + size] if has_mask else b""
        return size

    def _check(self, first: int, has_mask: bool, length: int) -> None:
        opcode = first & 0x0F
        if first & 0x70:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set")
        if has_mask != self.masked:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR,
                                "frame not masked" if self.masked else "frame masked")
        if opcode in CONTROL_OPCODES:
            if not first & 0x80 or length > MAX_CONTROL_PAYLOAD:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "control frame fragmented or "
                                    "longer than 125 bytes")
        elif opcode == OP_CONTINUATION:
            if self.message < 0:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "continuation of no message")
        elif opcode in DATA_OPCODES:
            if self.message >= 0:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "new message inside another")
            self.message = opcode
            self.utf8 = None
        else:
            raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")

    def _payload(self, piece: bytes) -> Data | Control | None:
        """Take a piece of the current frame's payload; the event it gives, if any."""
        if self.mask:
            piece = mask_bytes(piece, self.mask, self.offset)
        self.offset += len(piece)
        self.left -= len(piece)
        done = not self.left
        opcode = self.opcode
        if done:
            self.opcode = -1
        if opcode in CONTROL_OPCODES:
            self.control += piece
            if not done:
                return None
            payload, self.control = self.control, b""
            return Control(opcode, payload)
        last = done and self.fin
        message = self.message
        if message == OP_TEXT:
            self._check_text(piece, last)
        if last:
            self.message = -1
        if not piece and not last:
            return None
        return Data(message, piece, last)

    def _check_text(self, piece: bytes, last: bool) -> None:
        """A text message must be UTF-8: one that comes whole is checked at once, one
        in pieces by an incremental decoder (a character may straddle two)."""
        try:
            if last and self.utf8 is None:
                piece.decode("utf-8")
                return
            if self.utf8 is None:
                self.utf8 = codecs.getincrementaldecoder("utf-8")()
            self.utf8.decode(piece, last)
        except UnicodeDecodeError:
            raise ProtocolError(CLOSE_INVALID_DATA, "text message is not UTF-8") from None


def utf8_complete(data: bytes) -> int:
    """How many leading bytes of `data` end on a whole UTF-8 sequence: a text frame
    made of a backend's read must not split a character."""
    end = len(data)
    for back in range(1, min(4, end) + 1):
        byte = data[end - back]
        if byte < 0x80:
            return end
        if byte >= 0xC0:        # the lead byte of the last sequence
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return end if back >= need else end - back
    return end


# ------------------------------------------------------------------ hybi-00 frames
def hybi00_frame(payload: bytes, binary: bool) -> bytes:
    """A hybi-00 text frame (0x00 payload 0xFF); binary data goes base64-encoded, as
    lighttpd sends it.  Empty payloads are not sent (b"")."""
    if not payload:
        return b""
    if binary:
        payload = base64.b64encode(payload)
    return b"\x00" + payload + b"\xff"


HYBI00_CLOSE = b"\xff\x00"


class Hybi00Decoder:
    """hybi-00 frames from a client: the payload of each 0x00 ... 0xFF frame (base64
    decoded when `binary`), and a Control(OP_CLOSE) at its 0xFF closing frame.  A frame
    longer than HYBI00_MAX_FRAME is refused (lighttpd's limit)."""

    __slots__ = ("binary", "in_frame", "size", "encoded")

    def __init__(self, binary: bool) -> None:
        self.binary = binary
        self.in_frame = False
        self.size = 0
        self.encoded = b""        # base64 text of the current frame (binary)

    def feed(self, data: bytes) -> list[Data | Control]:
        events: list[Data | Control] = []
        position, end = 0, len(data)
        while position < end:
            if not self.in_frame:
                if data[position] == 0xFF:
                    events.append(Control(OP_CLOSE, b""))
                    return events
                if data[position]:
                    raise ProtocolError(CLOSE_PROTOCOL_ERROR, "not a hybi-00 frame")
                self.in_frame, self.size = True, 0
                position += 1
                continue
            stop = data.find(b"\xff", position)
            last = stop >= 0
            piece = data[position:stop if last else end]
            position = stop + 1 if last else end
            self.size += len(piece)
            if self.size > HYBI00_MAX_FRAME:
                raise ProtocolError(CLOSE_TOO_BIG, "hybi-00 frame too long")
            event = self._piece(piece, last)
            if last:
                self.in_frame = False
            if event is not None:
                events.append(event)
        return events

    def _piece(self, piece: bytes, last: bool) -> Data | None:
        if not self.binary:
            return Data(OP_TEXT, piece, last) if piece else None
        self.encoded += piece
        if not last:
            return None
        encoded, self.encoded = self.encoded, b""
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ProtocolError(CLOSE_INVALID_DATA, "hybi-00 frame is not base64") from None
        return Data(OP_BINARY, decoded, True) if decoded else None
