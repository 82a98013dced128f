"""HPACK for the requests' fields (RFC 7541): the decoder of the server's own HTTP/2
engine, in place of the hpack library's.

The library's decoder costs some 25 µs a request: it slices a memoryview for every
field, builds its integers and strings through several calls each, and decodes
Huffman strings nibble by nibble through Python tuples.  This one does the same work
in a single loop over the block:
- one-byte integers (nearly all indexes and lengths) are read in place, longer ones
  by `_integer`, which refuses encodings longer than five continuation bytes;
- a field of the static table is the tuple built at import, a field of the dynamic
  table the tuple inserted there: an indexed field allocates nothing;
- Huffman strings go through a finite state machine (nghttp2's): a state for each
  inner node of the code's tree (plus one for an error), a transition for each state
  and 4 bits, giving the next state and the byte a completed code emits, built once
  from the hpack library's code table; whether the padding at the end is legal (all
  ones, fewer than 8 bits, no EOS) is whether the last state accepts;
- the strings decoded are kept per worker, up to HUFFMAN_KEPT of them, each
  HUFFMAN_KEPT_SIZE coded bytes long at most (the same user-agent, accept and
  accept-language come on every connection of a browser, and from every browser of a
  kind): a new connection's block costs dictionary lookups, not decoding.  Not the
  values of cookie and authorization fields, nor those sent "never indexed": whether
  a string is kept shows in the time it takes, and what one client sent is no other's
  to probe.
A block that would expand to a long list (an HPACK bomb: one large entry of the
dynamic table named thousands of times by one-byte fields) stops as soon as the
fields decoded so far pass max_header_list_size, before the next field is kept: the
work is bounded by the limit, not by what the block asks for.
"""

from __future__ import annotations

from typing import Any, Final

from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

DEFAULT_TABLE_SIZE: Final = 4096       # RFC 7540 6.5.2: SETTINGS_HEADER_TABLE_SIZE
ENTRY_OVERHEAD: Final = 32             # RFC 7541 4.1
INTEGER_LIMIT: Final = 1 << 32         # no larger index, length or size makes sense
HUFFMAN_KEPT: Final = 1024             # Huffman strings kept per worker, at most ...
HUFFMAN_KEPT_SIZE: Final = 128         # ... each this many coded bytes long at most

# The static table, from index 1 (index 0 is no field: its place holds a filler), and
# each entry's size.  Fields are typed Any here and in the tables: mypyc keeps a
# tuple[bytes, bytes] as two references and would build a new tuple object every
# time one went into a list; as an object, the tuple made once is the one returned.
_STATIC: Final[list[Any]] = [(b"", b"")] + list(HeaderTable.STATIC_TABLE)
_STATIC_SIZES: Final[list[int]] = [0] + [
    len(name) + len(value) + ENTRY_OVERHEAD for name, value in HeaderTable.STATIC_TABLE]
_FIRST_DYNAMIC: Final = len(_STATIC)            # 62


class HpackError(Exception):
    """A malformed header block (the connection ends with COMPRESSION_ERROR)."""


class HeaderListTooLarge(HpackError):
    """The decoded list passed max_header_list_size (the connection ends with
    ENHANCE_YOUR_CALM)."""


# The Huffman machine's transitions: _HUFFMAN[state << 4 | bits] is the next state
# (shifted left by 4, ready to take the next 4 bits), the byte emitted (bits 16 to 23)
# when a code ended on the way, and _EMITS then.  _ACCEPTS[state] is 1 where a string
# may end: no code begun, or only ones, fewer than 8 of them, since the last.
_EMITS: Final = 1 << 15
_STATE_BITS: Final = _EMITS - 1


def _huffman_tree() -> tuple[list[list[int]], list[int]]:
    """The inner nodes of the Huffman code's tree (the root first), each its two
    children (another node's number, or ~symbol for a leaf); and for each node the
    number of bits that lead to it when they are all ones, or 8 when they are not."""
    children: list[list[int]] = [[0, 0]]
    ones: list[int] = [0]
    for symbol in range(len(REQUEST_CODES)):
        code, length = REQUEST_CODES[symbol], REQUEST_CODES_LENGTH[symbol]
        node = 0
        for shift in range(length - 1, 0, -1):
            bit = (code >> shift) & 1
            child = children[node][bit]
            if child == 0:
                child = len(children)
                children[node][bit] = child
                children.append([0, 0])
                ones.append(ones[node] + 1 if bit and ones[node] < 8 else 8)
            node = child
        children[node][code & 1] = ~symbol
    return children, ones


def _huffman_machine() -> tuple[list[int], bytes]:
    """The transitions and accepting states of the Huffman decoder (module comment)."""
    children, ones = _huffman_tree()
    eos = len(REQUEST_CODES) - 1
    failed = len(children)                  # the state after EOS, or a dead end: stays
    transitions: list[int] = []
    for state in range(failed + 1):
        for bits in range(16):
            if state == failed:
                transitions.append(failed << 4)
                continue
            node, emitted = state, -1
            for shift in (3, 2, 1, 0):
                child = children[node][(bits >> shift) & 1]
                if child > 0:
                    node = child
                elif child == 0 or ~child == eos:     # (the code has no dead end)
                    node = failed
                    break
                else:                       # codes are 5 bits at least: one per 4 bits
                    emitted, node = ~child, 0
            entry = node << 4
            if emitted >= 0:
                entry |= _EMITS | emitted << 16
            transitions.append(entry)
    accepts = bytes([1 if ones[state] < 8 else 0 for state in range(failed)] + [0])
    return transitions, accepts


_HUFFMAN_TABLES: Final = _huffman_machine()
_HUFFMAN: Final[list[int]] = _HUFFMAN_TABLES[0]
_ACCEPTS: Final[bytes] = _HUFFMAN_TABLES[1]
_huffman_kept: Final[dict[bytes, bytes]] = {}
# Values never kept: secrets, whose presence in what is kept a connection could time;
# and the values a client says are never to be indexed (RFC 7541 6.2.3, 7.1.3).
_PRIVATE: Final = frozenset({b"cookie", b"authorization", b"proxy-authorization"})


def huffman_decode(coded: bytes) -> bytes:
    """The bytes a Huffman-coded string stands for (RFC 7541 5.2), or HpackError."""
    table = _HUFFMAN
    out: list[int] = []                 # (mypyc appends to a list natively)
    state = 0
    for i in range(len(coded)):         # (mypyc compiles this loop better than `in`)
        byte = coded[i]
        entry = table[state | byte >> 4]
        if entry & _EMITS:
            out.append(entry >> 16)
        entry = table[(entry & _STATE_BITS) | (byte & 15)]
        if entry & _EMITS:
            out.append(entry >> 16)
        state = entry & _STATE_BITS
    if not _ACCEPTS[state >> 4]:
        raise HpackError("a Huffman string with EOS or bad padding")
    return bytes(out)


def _huffman(coded: bytes) -> bytes:
    """huffman_decode(coded), from what this worker already decoded when it is kept
    (module docstring)."""
    if len(coded) > HUFFMAN_KEPT_SIZE:
        return huffman_decode(coded)
    kept = _huffman_kept
    text = kept.get(coded)
    if text is None:
        text = huffman_decode(coded)
        if len(kept) >= HUFFMAN_KEPT:       # strings that never came back
            kept.clear()
        kept[coded] = text
    return text


def _integer(block: bytes, pos: int, value: int) -> tuple[int, int]:
    """The integer (RFC 7541 5.1) whose prefix was full (`value`, 2**N - 1) and whose
    continuation bytes start at `pos`; and the position after them."""
    shift = 0
    end = len(block)
    while True:
        if pos >= end:
            raise HpackError("a truncated integer")
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 28:
            raise HpackError("an integer of more than five continuation bytes")
    if value > INTEGER_LIMIT:
        raise HpackError("an integer beyond 2**32")
    return value, pos


def _string(block: bytes, pos: int, keep: bool) -> tuple[bytes, int]:
    """The string literal (RFC 7541 5.2) at `pos`, and the position after it; if it is
    Huffman-coded and `keep`, from (or into) the strings kept."""
    if pos >= len(block):
        raise HpackError("a truncated block")
    head = block[pos]
    length = head & 0x7F
    pos += 1
    if length == 0x7F:
        length, pos = _integer(block, pos, 0x7F)
    stop = pos + length
    if stop > len(block):
        raise HpackError("a truncated string")
    if head & 0x80:
        if keep:
            return _huffman(block[pos:stop]), stop
        return huffman_decode(block[pos:stop]), stop
    return block[pos:stop], stop


class FieldDecoder:
    """The HPACK decoder of one connection's requests: its dynamic table, and the
    limits of our SETTINGS (the engine sets them).

    The two tables are one list, as the indexes number them: 1 to 61 the static
    table (a copy of _STATIC), then the dynamic table, the newest entry first; and
    beside it the size of each entry.  An index is then one bounds check and one
    lookup, whatever its table, and an insertion moves the dynamic entries only."""

    def __init__(self, max_header_list_size: int,
                 max_table_size: int = DEFAULT_TABLE_SIZE) -> None:
        # sum over a block's fields of len(name) + len(value) + 32, at most
        self.max_header_list_size: int = max_header_list_size
        # our SETTINGS_HEADER_TABLE_SIZE: the ceiling of the encoder's size updates
        self.max_table_size: int = max_table_size
        # the dynamic table's size: the protocol's default until the encoder says
        # otherwise (or our setting, when lower)
        self.table_size: int = min(max_table_size, DEFAULT_TABLE_SIZE)
        self._size: int = 0                 # what its entries take
        self._fields: list[Any] = list(_STATIC)          # (name, value) tuples
        self._sizes: list[int] = list(_STATIC_SIZES)

    def decode(self, block: bytes) -> list[tuple[bytes, bytes]]:
        """The fields of a header block, as sent; HpackError when it is malformed,
        HeaderListTooLarge as soon as they pass max_header_list_size."""
        fields: list[Any] = []
        table = self._fields
        sizes = self._sizes
        total = 0
        limit = self.max_header_list_size
        end = len(block)
        pos = 0
        while pos < end:
            byte = block[pos]
            pos += 1
            if byte & 0x80:                                 # indexed (6.1)
                index = byte & 0x7F
                if index == 0x7F:
                    index, pos = _integer(block, pos, 0x7F)
                if index == 0 or index >= len(table):
                    raise HpackError(f"no field at index {index}")
                total += sizes[index]
                if total > limit:
                    raise HeaderListTooLarge("the header list passed its limit")
                fields.append(table[index])
                continue
            if byte & 0x40:                                 # incremental indexing (6.2.1)
                index = byte & 0x3F
                if index == 0x3F:
                    index, pos = _integer(block, pos, 0x3F)
            elif byte & 0x20:                               # table size update (6.3)
                pos = self._resize(fields, byte, block, pos)
                continue
            else:                               # without indexing, never indexed (6.2.2-3)
                index = byte & 0x0F
                if index == 0x0F:
                    index, pos = _integer(block, pos, 0x0F)
            if index == 0:
                name, pos = _string(block, pos, True)
            elif index < len(table):
                name = table[index][0]
            else:
                raise HpackError(f"no field at index {index}")
            private = (byte & 0xF0) == 0x10 or name in _PRIVATE
            value, pos = _string(block, pos, not private)
            size = len(name) + len(value) + ENTRY_OVERHEAD
            total += size
            if total > limit:
                raise HeaderListTooLarge("the header list passed its limit")
            field: Any = (name, value)
            if byte & 0x40:
                self._insert(field, size)
            fields.append(field)
        return fields

    def _resize(self, fields: list[Any], byte: int, block: bytes, pos: int) -> int:
        """A dynamic table size update whose first byte is `byte` (its continuation
        bytes, if any, from `pos`): legal before the block's first field only, and up
        to our setting; the table evicts down to it.  The position after it."""
        if fields:
            raise HpackError("a dynamic table size update after a field")
        size = byte & 0x1F
        if size == 0x1F:
            size, pos = _integer(block, pos, 0x1F)
        if size > self.max_table_size:
            raise HpackError(f"a dynamic table size update to {size}, above "
                             f"{self.max_table_size}")
        self.table_size = size
        self._evict(0)
        return pos

    def _insert(self, field: Any, size: int) -> None:
        """A field in the dynamic table, after the evictions it needs (RFC 7541 4.4:
        one larger than the table empties it)."""
        if size > self.table_size:
            del self._fields[_FIRST_DYNAMIC:]
            del self._sizes[_FIRST_DYNAMIC:]
            self._size = 0
            return
        self._evict(size)
        self._fields.insert(_FIRST_DYNAMIC, field)
        self._sizes.insert(_FIRST_DYNAMIC, size)
        self._size += size

    def _evict(self, room: int) -> None:
        """The oldest entries out until `room` more bytes fit."""
        fields, sizes = self._fields, self._sizes
        while self._size + room > self.table_size and len(sizes) > _FIRST_DYNAMIC:
            fields.pop()
            self._size -= sizes.pop()
