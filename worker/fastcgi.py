"""The FastCGI protocol (version 1, the 1996 Open Market specification), sans I/O:
records built as bytes and parsed from bytes, never a socket in sight, so that the
codec is tested alone and mod_fastcgi only moves bytes.

A record is an 8-byte header (version, type, request id, content length, padding
length), its content (at most 65535 bytes) and padding (here: up to a multiple of 8,
as lighttpd and the reference library align them).  Name-value pairs (FCGI_PARAMS,
FCGI_GET_VALUES) give each length in one byte below 128, else in four with the top
bit set.  A stream (PARAMS, STDIN, STDOUT, STDERR) ends with a record without content.
"""

from __future__ import annotations

import struct
from typing import Final, Iterable

from .gateway import PairEncoder

VERSION: Final = 1
HEADER: Final = struct.Struct(">BBHHBx")
HEADER_SIZE: Final = HEADER.size
MAX_CONTENT: Final = 0xFFFF
STREAM_PART: Final = 0xFFF8        # the largest content a multiple of 8 (no padding needed)

# record types (each Final: compiled, a use is the number, not a look-up)
BEGIN_REQUEST: Final = 1
ABORT_REQUEST: Final = 2
END_REQUEST: Final = 3
PARAMS: Final = 4
STDIN: Final = 5
STDOUT: Final = 6
STDERR: Final = 7
DATA: Final = 8
GET_VALUES: Final = 9
GET_VALUES_RESULT: Final = 10
UNKNOWN_TYPE: Final = 11
# roles and flags of BEGIN_REQUEST
RESPONDER: Final = 1
AUTHORIZER: Final = 2
FILTER: Final = 3
KEEP_CONN: Final = 1
# protocol status of END_REQUEST
REQUEST_COMPLETE: Final = 0
CANT_MPX_CONN: Final = 1
OVERLOADED: Final = 2
UNKNOWN_ROLE: Final = 3
_BEGIN: Final = struct.Struct(">HB5x")
_END: Final = struct.Struct(">IB3x")
_LONG_LENGTH: Final = 0x80000000


class ProtocolError(Exception):
    """The bytes are no FastCGI: a wrong version, a bad length, a cut pair."""


class Record:
    """One record read: a native object, made without the Python call that
    `tuple.__new__` (a NamedTuple made natively) was, one per record."""

    __slots__ = ("type", "request_id", "content")

    def __init__(self, kind: int, request_id: int, content: bytes) -> None:
        self.type = kind
        self.request_id = request_id
        self.content = content


# ---------------------------------------------------------------------- records
_PADDING: Final = tuple(b"\0" * size for size in range(8))


def record(kind: int, request_id: int, content: bytes = b"") -> bytes:
    """One record (content of at most MAX_CONTENT bytes), padded to 8."""
    padding = -len(content) % 8
    return b"".join((HEADER.pack(VERSION, kind, request_id, len(content), padding), content,
                     _PADDING[padding]))


def stream(kind: int, request_id: int, data: bytes) -> bytes:
    """`data` as records of one stream (no end record: the caller says when it ends)."""
    if len(data) <= MAX_CONTENT:
        return record(kind, request_id, data) if data else b""
    view = memoryview(data)
    return b"".join(record(kind, request_id, bytes(view[start:start + STREAM_PART]))
                    for start in range(0, len(data), STREAM_PART))


def begin_request(request_id: int, role: int, keep_conn: bool) -> bytes:
    return record(BEGIN_REQUEST, request_id,
                  _BEGIN.pack(role, KEEP_CONN if keep_conn else 0))


def abort_request(request_id: int) -> bytes:
    return record(ABORT_REQUEST, request_id)


def end_request(request_id: int, app_status: int = 0,
                protocol_status: int = REQUEST_COMPLETE) -> bytes:
    return record(END_REQUEST, request_id, _END.pack(app_status & 0xFFFFFFFF,
                                                     protocol_status))


def parse_end_request(content: bytes) -> tuple[int, int]:
    """(application status, protocol status) of an END_REQUEST's content."""
    if len(content) < _END.size:
        raise ProtocolError("END_REQUEST too short")
    return _END.unpack_from(content)


def params(request_id: int, env: dict[str, str]) -> bytes:
    """The request's environment as PARAMS records, with the end record."""
    return stream(PARAMS, request_id, PAIRS.block(env)) + record(PARAMS, request_id)


def get_values(names: Iterable[str]) -> bytes:
    """A GET_VALUES record asking for `names` (FCGI_MAX_CONNS, FCGI_MPXS_CONNS ...)."""
    return record(GET_VALUES, 0, encode_pairs((name.encode(), b"") for name in names))


def get_values_result(values: dict[str, str]) -> bytes:
    return record(GET_VALUES_RESULT, 0, encode_pairs(
        (name.encode(), value.encode()) for name, value in values.items()))


# ------------------------------------------------------------ name-value pairs
def _length(size: int) -> bytes:
    if size < 0x80:
        return bytes((size,))
    if size > 0x7FFFFFFF:
        raise ProtocolError("name or value longer than 2 GiB")
    return struct.pack(">I", size | _LONG_LENGTH)


def encode_pair(name: bytes, value: bytes) -> bytes:
    """One name-value pair."""
    name_len, value_len = len(name), len(value)
    if name_len < 0x80 and value_len < 0x80:
        return bytes((name_len, value_len)) + name + value
    return _length(name_len) + _length(value_len) + name + value


PAIRS: Final = PairEncoder(encode_pair)         # the environment as PARAMS carries it


def encode_pairs(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Name-value pairs: each length in 1 byte (< 128) or 4 (top bit set)."""
    return b"".join([encode_pair(name, value) for name, value in pairs])


def decode_pairs(data: bytes) -> list[tuple[bytes, bytes]]:
    """The pairs of a PARAMS stream or GET_VALUES(_RESULT) content."""
    pairs = []
    offset, end = 0, len(data)
    while offset < end:
        name_len, offset = _read_length(data, offset)
        value_len, offset = _read_length(data, offset)
        if offset + name_len + value_len > end:
            raise ProtocolError("name-value pair cut short")
        name = data[offset:offset + name_len]
        offset += name_len
        pairs.append((name, data[offset:offset + value_len]))
        offset += value_len
    return pairs


def _read_length(data: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(data):
        raise ProtocolError("name-value pair cut short")
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    if offset + 4 > len(data):
        raise ProtocolError("name-value pair cut short")
    return struct.unpack_from(">I", data, offset)[0] & ~_LONG_LENGTH, offset + 4


# ------------------------------------------------------------------- reading
class RecordReader:
    """Splits a byte stream into records, whatever the sizes it arrives in.  What is
    left of a record not complete yet is kept as bytes: most reads hold whole records,
    which are then cut from the read itself."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[Record]:
        """The records completed by `data`; raises ProtocolError on a bad header."""
        buffer = self.buffer + data if self.buffer else data
        size = len(buffer)
        records = []
        offset = 0
        while size - offset >= HEADER_SIZE:
            # HEADER's fields read byte by byte: native int operations, compiled,
            # where unpack_from's tuple holds objects every later sum is generic on
            version = buffer[offset]
            if version != VERSION:
                raise ProtocolError(f"unknown FastCGI version {version}")
            length = buffer[offset + 4] << 8 | buffer[offset + 5]
            end = offset + HEADER_SIZE + length
            padding = buffer[offset + 6]
            if size < end + padding:
                break
            request_id = buffer[offset + 2] << 8 | buffer[offset + 3]
            records.append(Record(buffer[offset + 1], request_id,
                                  buffer[offset + HEADER_SIZE:end]))
            offset = end + padding
        self.buffer = buffer[offset:] if offset else buffer
        return records

    @property
    def pending(self) -> int:
        """Bytes of a record not complete yet."""
        return len(self.buffer)
