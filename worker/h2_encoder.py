"""HPACK for the answers' fields (RFC 7541): the encoder an H2Session gives its h2
connection in place of the hpack library's.

The library's encoder searches its tables field by field and Huffman-codes every
literal again, answer after answer: a third of an HTTP/2 answer's cost for a small
file.  This one keeps what it learnt:
- a field of the static table (":status: 200") is its index, a byte made once;
- the dynamic table is a dict from field to insertion number (and the entries in
  insertion order, for eviction), so finding a field is one lookup;
- a literal's bytes (its name as a static-table index or as a string, its value
  Huffman-coded when shorter and not long) do not depend on the connection's state: they are
  made once per worker and kept (short ones, up to LITERALS_KEPT: the table is
  emptied when full, so that values seen once do not hold it).
Like the library's, it indexes every field it sends as a literal ("incremental
indexing"), so a repeated answer's fields go out as one or two bytes each.  The
table's size is the peer's SETTINGS_HEADER_TABLE_SIZE at most, DEFAULT_TABLE_SIZE
(the protocol's default) when larger: a smaller one is announced to the peer at the
start of the next block (a dynamic table size update), as RFC 7541 4.2 asks.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

DEFAULT_TABLE_SIZE: Final = 4096
ENTRY_OVERHEAD: Final = 32                     # RFC 7541 4.1
LITERALS_KEPT: Final = 2048                    # literals kept per worker, at most ...
LITERAL_KEPT_SIZE: Final = 128                 # ... each of a value this long at most
_STATIC_COUNT: Final = len(HeaderTable.STATIC_TABLE)
_STATIC_FIELDS: Final[dict[tuple[bytes, bytes], int]] = {}
_STATIC_NAMES: Final[dict[bytes, int]] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_FIELDS.setdefault((_name, _value), _index)
    _STATIC_NAMES.setdefault(_name, _index)
_HUFFMAN: Final = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def encode_integer(value: int, prefix_bits: int, flags: int) -> bytes:
    """An HPACK integer (RFC 7541 5.1) whose first byte also carries `flags`."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    """A string literal (RFC 7541 5.2): Huffman-coded when that is shorter, and the
    string short enough to be kept (the library's Huffman coder takes milliseconds
    over a few KiB, every time)."""
    if len(data) <= LITERAL_KEPT_SIZE:
        coded = _HUFFMAN.encode(data)
        if len(coded) < len(data):
            return encode_integer(len(coded), 7, 0x80) + coded
    return encode_integer(len(data), 7, 0) + data


# an indexed field's byte(s), for every index the tables can have (a dynamic entry
# takes ENTRY_OVERHEAD bytes at least)
_INDEXED: Final = [encode_integer(index, 7, 0x80)
                   for index in range(_STATIC_COUNT + DEFAULT_TABLE_SIZE // ENTRY_OVERHEAD + 1)]
_literals: Final[dict[tuple[bytes, bytes], bytes]] = {}


def _literal(name: bytes, value: bytes) -> bytes:
    """A literal field with incremental indexing (RFC 7541 6.2.1), its name by its
    static index when it has one: the same bytes on every connection."""
    field = (name, value)
    encoded = _literals.get(field)
    if encoded is None:
        name_index = _STATIC_NAMES.get(name)
        head = encode_integer(name_index, 6, 0x40) if name_index else b"\x40" + _string(name)
        encoded = head + _string(value)
        if len(value) <= LITERAL_KEPT_SIZE:
            if len(_literals) >= LITERALS_KEPT:     # values that never came back
                _literals.clear()
            _literals[field] = encoded
    return encoded


class AnswerEncoder:
    """The HPACK encoder of one connection's answers: what h2 calls as it calls
    hpack's Encoder (`encode`, and `header_table_size` from the peer's SETTINGS)."""

    __slots__ = ("_limit", "_size", "_inserted", "_entries", "_numbers", "_smallest")

    def __init__(self) -> None:
        self._limit = DEFAULT_TABLE_SIZE     # the table's size (the peer's, at most 4096)
        self._size = 0                        # what its entries take
        self._inserted = 0                    # entries ever inserted
        self._entries: deque[tuple[tuple[bytes, bytes], int, int]] = deque()
        self._numbers: dict[tuple[bytes, bytes], int] = {}   # field -> insertion number
        self._smallest: int | None = None     # the least size since the last block

    @property
    def header_table_size(self) -> int:
        return self._limit

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE: the table shrinks to it at once (and
        says so in the next block); above the default, it stays at the default."""
        limit = min(value, DEFAULT_TABLE_SIZE)
        if limit == self._limit:
            return
        self._limit = limit
        self._evict(0)
        self._smallest = limit if self._smallest is None else min(self._smallest, limit)

    def encode(self, headers: list[tuple[bytes, bytes]], huffman: bool = True) -> bytes:
        """The header block of `headers` (lower-case byte names, pseudo-fields first;
        the session makes them so)."""
        block = []
        if self._smallest is not None:      # RFC 7541 4.2: the least size, then the last
            if self._smallest < self._limit:
                block.append(encode_integer(self._smallest, 5, 0x20))
            block.append(encode_integer(self._limit, 5, 0x20))
            self._smallest = None
        numbers = self._numbers
        for field in headers:
            index = _STATIC_FIELDS.get(field)
            if index is not None:
                block.append(_INDEXED[index])
                continue
            number = numbers.get(field)
            if number is not None:
                block.append(_INDEXED[_STATIC_COUNT + self._inserted - number])
                continue
            block.append(_literal(field[0], field[1]))
            self._insert(field)
        return b"".join(block)

    def _insert(self, field: tuple[bytes, bytes]) -> None:
        size = len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
        if size > self._limit:                # RFC 7541 4.4: the table empties
            self._evict(self._limit)
            return
        self._evict(size)
        self._entries.append((field, self._inserted, size))
        self._numbers[field] = self._inserted
        self._inserted += 1
        self._size += size

    def _evict(self, room: int) -> None:
        """The oldest entries out until `room` more bytes fit."""
        entries, numbers = self._entries, self._numbers
        while entries and self._size + room > self._limit:
            field, number, size = entries.popleft()
            self._size -= size
            if numbers.get(field) == number:
                del numbers[field]
