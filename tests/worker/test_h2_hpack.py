"""worker/h2_hpack.py: the examples of RFC 7541 Appendix C decode to their fields and
leave the dynamic table the RFC shows; size updates, eviction and every malformed
block behave as RFC 7541 says; an HPACK bomb stops at the header list limit; and
whatever the hpack library's encoder or the server's own sends, block after block on
one connection, decodes to the very fields encoded."""

from __future__ import annotations

import random
import time

import hpack
import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

from worker import h2_hpack
from worker.h2_encoder import AnswerEncoder, encode_integer
from worker.h2_hpack import FieldDecoder, HeaderListTooLarge, HpackError, huffman_decode

LARGE = 1 << 20                                 # a header list limit never reached
HUFFMAN = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
Fields = list[tuple[bytes, bytes]]


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def _fields(*pairs: tuple[str, str]) -> Fields:
    return [(name.encode(), value.encode()) for name, value in pairs]


def _table(decoder: FieldDecoder) -> Fields:
    """The dynamic table, newest first, as indexed fields (62, 63, ...) decode it:
    indexed fields change nothing, and the first index past the table is an error."""
    entries = []
    for index in range(62, 62 + 4096 // 32 + 1):
        try:
            entries += decoder.decode(encode_integer(index, 7, 0x80))
        except HpackError:
            return entries
    raise AssertionError("the table holds more entries than its size allows")


def _table_size(entries: Fields) -> int:
    return sum(len(name) + len(value) + 32 for name, value in entries)


# RFC 7541 C.3.x / C.4.x: the same requests, without and with Huffman coding
REQUESTS = [
    _fields((":method", "GET"), (":scheme", "http"), (":path", "/"),
            (":authority", "www.example.com")),
    _fields((":method", "GET"), (":scheme", "http"), (":path", "/"),
            (":authority", "www.example.com"), ("cache-control", "no-cache")),
    _fields((":method", "GET"), (":scheme", "https"), (":path", "/index.html"),
            (":authority", "www.example.com"), ("custom-key", "custom-value")),
]
REQUEST_TABLES = [
    _fields((":authority", "www.example.com")),
    _fields(("cache-control", "no-cache"), (":authority", "www.example.com")),
    _fields(("custom-key", "custom-value"), ("cache-control", "no-cache"),
            (":authority", "www.example.com")),
]
REQUEST_TABLE_SIZES = [57, 110, 164]
C3_BLOCKS = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
]
C4_BLOCKS = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
]

# RFC 7541 C.5.x / C.6.x: the same responses, a 256-byte table, without and with Huffman
COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
RESPONSES = [
    _fields((":status", "302"), ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"), ("location", "https://www.example.com")),
    _fields((":status", "307"), ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"), ("location", "https://www.example.com")),
    _fields((":status", "200"), ("cache-control", "private"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT"), ("location", "https://www.example.com"),
            ("content-encoding", "gzip"), ("set-cookie", COOKIE)),
]
RESPONSE_TABLES = [
    _fields(("location", "https://www.example.com"), ("date", "Mon, 21 Oct 2013 20:13:21 GMT"),
            ("cache-control", "private"), (":status", "302")),
    _fields((":status", "307"), ("location", "https://www.example.com"),
            ("date", "Mon, 21 Oct 2013 20:13:21 GMT"), ("cache-control", "private")),
    _fields(("set-cookie", COOKIE), ("content-encoding", "gzip"),
            ("date", "Mon, 21 Oct 2013 20:13:22 GMT")),
]
RESPONSE_TABLE_SIZES = [222, 222, 215]
C5_BLOCKS = [
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133"
    "2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70"
    "6c65 2e63 6f6d",
    "4803 3330 37c1 c0bf",
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d"
    "54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049"
    "5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e"
    "3d31",
]
C6_BLOCKS = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6"
    "2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab"
    "77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f"
    "9587 3160 65c0 03ed 4ee5 b106 3d50 07",
]
TO_256 = encode_integer(256, 5, 0x20)           # a dynamic table size update to 256


@pytest.mark.parametrize("block, fields, table", [
    ("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",   # C.2.1
     _fields(("custom-key", "custom-header")), _fields(("custom-key", "custom-header"))),
    ("040c 2f73 616d 706c 652f 7061 7468",                                  # C.2.2
     _fields((":path", "/sample/path")), []),
    ("1008 7061 7373 776f 7264 0673 6563 7265 74",                          # C.2.3
     _fields(("password", "secret")), []),
    ("82", _fields((":method", "GET")), []),                                # C.2.4
])
def test_the_field_representations_of_appendix_c2(block: str, fields: Fields,
                                                  table: Fields) -> None:
    decoder = FieldDecoder(LARGE)
    assert decoder.decode(_hex(block)) == fields
    assert _table(decoder) == table


@pytest.mark.parametrize("blocks", [C3_BLOCKS, C4_BLOCKS], ids=["C.3", "C.4"])
def test_the_requests_of_appendix_c3_and_c4_on_one_decoder(blocks: list[str]) -> None:
    decoder = FieldDecoder(LARGE)
    for block, fields, table, size in zip(blocks, REQUESTS, REQUEST_TABLES,
                                          REQUEST_TABLE_SIZES):
        assert decoder.decode(_hex(block)) == fields
        assert _table(decoder) == table
        assert _table_size(table) == size


@pytest.mark.parametrize("blocks", [C5_BLOCKS, C6_BLOCKS], ids=["C.5", "C.6"])
@pytest.mark.parametrize("told_by", ["constructor", "size update"])
def test_the_responses_of_appendix_c5_and_c6_evict_from_a_256_byte_table(
        blocks: list[str], told_by: str) -> None:
    if told_by == "constructor":
        decoder, first = FieldDecoder(LARGE, max_table_size=256), b""
    else:
        decoder, first = FieldDecoder(LARGE), TO_256
    for number, (block, fields, table, size) in enumerate(zip(
            blocks, RESPONSES, RESPONSE_TABLES, RESPONSE_TABLE_SIZES)):
        assert decoder.decode((first if number == 0 else b"") + _hex(block)) == fields
        assert _table(decoder) == table
        assert _table_size(table) == size


def test_huffman_strings_of_appendix_c6_and_every_byte() -> None:
    assert huffman_decode(_hex("d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff")) \
        == b"Mon, 21 Oct 2013 20:13:21 GMT"
    assert huffman_decode(b"") == b""
    everything = bytes(range(256)) * 2
    assert huffman_decode(HUFFMAN.encode(everything)) == everything
    for byte in range(256):
        assert huffman_decode(HUFFMAN.encode(bytes([byte]))) == bytes([byte])


def test_huffman_strings_are_kept_but_not_secrets_nor_never_indexed_values() -> None:
    h2_hpack._huffman_kept.clear()
    agent, secret, token = b"Mozilla/5.0 (agent)", b"session=s3cr3t", b"Bearer xyz"

    def huffman(data: bytes) -> bytes:
        coded = HUFFMAN.encode(data)
        return encode_integer(len(coded), 7, 0x80) + coded

    block = (b"\x7a" + huffman(agent) + b"\x60" + huffman(secret)         # 58, 32
             + b"\x57" + huffman(token)                                    # 23
             + b"\x10" + huffman(b"x-mine") + huffman(b"never"))          # never indexed
    assert FieldDecoder(LARGE).decode(block) == [
        (b"user-agent", agent), (b"cookie", secret), (b"authorization", token),
        (b"x-mine", b"never")]
    assert sorted(h2_hpack._huffman_kept.values()) == [agent, b"x-mine"]


# dynamic table size updates, eviction

def _literal(name: bytes, value: bytes, flags: int = 0x40) -> bytes:
    """A literal field (`flags`: 0x40 indexed, 0x00 not, 0x10 never), its name and
    value as raw strings (no Huffman)."""
    return (bytes([flags]) + encode_integer(len(name), 7, 0) + name
            + encode_integer(len(value), 7, 0) + value)


def test_size_updates_at_the_start_of_a_block_are_legal_and_shrinking_evicts() -> None:
    decoder = FieldDecoder(LARGE)
    first, second = (b"x-first", b"1" * 50), (b"x-second", b"2" * 50)   # 89 and 90 bytes
    assert decoder.decode(_literal(*first) + _literal(*second)) == [first, second]
    assert decoder.decode(encode_integer(100, 5, 0x20) + b"\x82") == [(b":method", b"GET")]
    assert _table(decoder) == [second]                 # the oldest evicted
    # two updates in a row (the least, then the last): the table empties, then grows
    assert decoder.decode(encode_integer(0, 5, 0x20) + encode_integer(4096, 5, 0x20)) == []
    assert _table(decoder) == []
    assert decoder.decode(_literal(*first)) == [first]
    assert _table(decoder) == [first]


def test_a_size_update_after_a_field_is_an_error() -> None:
    with pytest.raises(HpackError, match="after a field"):
        FieldDecoder(LARGE).decode(b"\x82" + encode_integer(100, 5, 0x20))


@pytest.mark.parametrize("ceiling, size", [(4096, 4097), (256, 257), (0, 1), (4096, 1 << 20)])
def test_a_size_update_above_our_setting_is_an_error(ceiling: int, size: int) -> None:
    decoder = FieldDecoder(LARGE, max_table_size=ceiling)
    with pytest.raises(HpackError, match="above"):
        decoder.decode(encode_integer(size, 5, 0x20))
    assert FieldDecoder(LARGE, max_table_size=ceiling).decode(
        encode_integer(ceiling, 5, 0x20)) == []


def test_a_raised_setting_allows_larger_updates_and_a_larger_table() -> None:
    decoder = FieldDecoder(LARGE, max_table_size=8192)
    fields = [(b"x-%d" % number, b"v" * 1000) for number in range(6)]    # 6 x 1035 bytes
    assert decoder.decode(encode_integer(8192, 5, 0x20)
                          + b"".join(_literal(*field) for field in fields)) == fields
    assert _table(decoder) == fields[::-1]
    assert FieldDecoder(LARGE, max_table_size=8192).decode(
        b"".join(_literal(*field) for field in fields)) == fields     # table still 4096
    decoder = FieldDecoder(LARGE, max_table_size=8192)
    decoder.decode(b"".join(_literal(*field) for field in fields))
    assert _table(decoder) == fields[:2:-1]            # only three fit in 4096


def test_eviction_makes_room_and_a_field_larger_than_the_table_empties_it() -> None:
    decoder = FieldDecoder(LARGE, max_table_size=200)
    a, b, c = (b"a", b"x" * 60), (b"b", b"y" * 60), (b"c", b"z" * 60)    # 93 bytes each
    decoder.decode(_literal(*a) + _literal(*b))
    assert _table(decoder) == [b, a]
    decoder.decode(_literal(*c))
    assert _table(decoder) == [c, b]
    huge = (b"huge", b"h" * 200)
    assert decoder.decode(_literal(*huge)) == [huge]   # still decoded ...
    assert _table(decoder) == []                       # ... but the table is empty
    # a literal naming an entry that its own insertion evicts keeps that name
    decoder.decode(_literal(*a))
    d = (b"a", b"w" * 150)
    assert decoder.decode(b"\x7e" + encode_integer(len(d[1]), 7, 0) + d[1]) == [d]
    assert _table(decoder) == [d]


def test_literals_without_indexing_and_never_indexed_leave_the_table_alone() -> None:
    decoder = FieldDecoder(LARGE)
    # name by a static index past the 4-bit prefix (58, user-agent), raw value
    block = (encode_integer(58, 4, 0x00) + b"\x03abc" + encode_integer(58, 4, 0x10)
             + b"\x03def" + _literal(b"X-Mixed-Case", b"As Sent\x00\xff", 0x00)
             + _literal(b"x-secret", b"s", 0x10))
    assert decoder.decode(block) == [(b"user-agent", b"abc"), (b"user-agent", b"def"),
                                     (b"X-Mixed-Case", b"As Sent\x00\xff"),
                                     (b"x-secret", b"s")]
    assert _table(decoder) == []


def test_a_name_from_the_dynamic_table() -> None:
    decoder = FieldDecoder(LARGE)
    decoder.decode(_literal(b"x-custom", b"one"))
    assert decoder.decode(b"\x7e\x03two" + b"\x0f\x30\x05three") == [
        (b"x-custom", b"two"), (b"x-custom", b"three")]     # 62 (6-bit), then 63 (4-bit)


# malformed blocks

BAD_BLOCKS = {
    "index 0": b"\x80",
    "index past the static table, empty dynamic table": b"\xbe",
    "index far past the tables": b"\xff\xff\x7f",
    "name index past the tables": b"\x7e\x01a",
    "name index past the tables (4-bit prefix)": b"\x0f\x2f\x01a",
    "truncated integer": b"\xff",
    "truncated integer after continuation bytes": b"\xff\x80\x80",
    "huge string length": b"\x40\x7f\xff\xff\xff\x0f",
    "string length beyond 2**32": b"\x40\x7f\xff\xff\xff\xff\x0f",
    "literal without its name": b"\x40",
    "literal without its value": b"\x40\x01a",
    "literal without its value (indexed name)": b"\x44",
    "string longer than the block": b"\x44\x05/ab",
    "name string longer than the block": b"\x40\x09abc",
    "Huffman string longer than the block": b"\x44\x85\x1f",
    "size update without its continuation": b"\x3f",
    "EOS inside a Huffman string": b"\x44\x85\x1f\xff\xff\xff\xff",    # a, EOS, padding
    "Huffman padding of 11 bits": b"\x44\x82\x1f\xff",                   # a, 11 ones
    "Huffman padding of a whole byte": b"\x44\x81\xff",
    "Huffman padding not all ones": b"\x44\x81\x18",                     # a, 000
    "Huffman padding with a zero": b"\x44\x81\x1d",                      # a, 101
}


@pytest.mark.parametrize("block", BAD_BLOCKS.values(), ids=BAD_BLOCKS.keys())
def test_a_malformed_block_is_an_error(block: bytes) -> None:
    decoder = FieldDecoder(LARGE)
    for _attempt in range(2):                  # the second time, nothing kept says yes
        with pytest.raises(HpackError) as raised:
            decoder.decode(block)
        assert not isinstance(raised.value, HeaderListTooLarge)


def test_huffman_padding_of_up_to_7_ones_is_legal() -> None:
    decoder = FieldDecoder(LARGE)
    assert decoder.decode(b"\x44\x81\x1f") == [(b":path", b"a")]         # a, 111
    assert decoder.decode(b"\x44\x81\x07") == [(b":path", b"0")]         # 0, 111
    assert decoder.decode(b"\x44\x82\x00\x3f") == [(b":path", b"00")]    # 0, 0, 111111
    assert decoder.decode(b"\x44\x82\x00\x01") == [(b":path", b"000")]       # 0, 0, 0, 1
    assert decoder.decode(b"\x44\x83\x00\x00\x0f") == [(b":path", b"0000")]  # 0 x 4, 1111


def test_integers_longer_than_five_continuation_bytes_or_beyond_2_32_are_errors() -> None:
    # size updates, which would be legal values: only the integer's encoding is wrong
    decoder = FieldDecoder(LARGE, max_table_size=1 << 40)
    with pytest.raises(HpackError, match="five"):      # 31 in seven bytes
        decoder.decode(b"\x3f\x80\x80\x80\x80\x80\x00")
    with pytest.raises(HpackError, match="five"):      # never-ending
        decoder.decode(b"\x3f" + b"\xff" * 100)
    with pytest.raises(HpackError, match="2\\*\\*32"):
        decoder.decode(encode_integer((1 << 32) + 1, 5, 0x20))
    with pytest.raises(HpackError, match="2\\*\\*32"):
        decoder.decode(b"\x3f\xff\xff\xff\xff\x7f")
    assert decoder.decode(encode_integer(1 << 32, 5, 0x20)) == []
    assert decoder.decode(b"\x3f\x80\x80\x80\x80\x00") == []     # 31 in six bytes


def test_the_longest_legal_integer() -> None:
    decoder = FieldDecoder(LARGE)
    value = b"v" * 300
    # 300 = 127 + 45 + 1 * 128, then redundant zero continuation bytes: five in all
    length = b"\x7f" + bytes([45 | 0x80, 1 | 0x80, 0x80, 0x80, 0x00])
    assert decoder.decode(b"\x44" + length + value) == [(b":path", value)]


# the header list limit, and the HPACK bomb

def test_the_header_list_limit_counts_names_values_and_32_per_field() -> None:
    block = b"\x82" + _literal(b"x-a", b"12345", 0x00)     # 7 + 3 + 32, 3 + 5 + 32
    assert FieldDecoder(82).decode(block) == [(b":method", b"GET"), (b"x-a", b"12345")]
    with pytest.raises(HeaderListTooLarge):
        FieldDecoder(81).decode(block)
    with pytest.raises(HeaderListTooLarge):
        FieldDecoder(41).decode(block)
    decoder = FieldDecoder(81)
    decoder.max_header_list_size = 82                      # settable
    assert len(decoder.decode(block)) == 2
    assert issubclass(HeaderListTooLarge, HpackError)


def test_an_hpack_bomb_stops_at_the_limit() -> None:
    decoder = FieldDecoder(32768)
    bomb = (b"x-bomb", b"v" * 4000)
    assert decoder.decode(_literal(*bomb)) == [bomb]
    block = b"\xbe" * 16000                                # index 62, 16000 times
    start = time.perf_counter()
    with pytest.raises(HeaderListTooLarge):
        decoder.decode(block)
    assert time.perf_counter() - start < 0.05             # nine fields, not 16000
    # with a limit that allows them all, the same block is 16000 fields: the
    # limit, not the block, bounded the work above
    assert len(FieldDecoder(LARGE * 100).decode(_literal(*bomb) + block)) == 16001


# round trips

NAMES = [b"accept", b"accept-language", b"cookie", b"user-agent", b"x-custom", b"etag",
         b"x-a-rather-long-field-name-to-need-more-than-one-length-byte" * 3,
         b"referer", b":path", b"content-type", b"x-\xe9\x00\xff"]
VALUE_BYTES = b"abcdefxyzABC0123456789 -/;=.,*\x00\x7f\xe9\xff"


def _request(chooser: random.Random) -> Fields:
    fields = [(b":method", chooser.choice([b"GET", b"POST", b"HEAD"])),
              (b":scheme", b"https"),
              (b":path", b"/" + bytes(chooser.choices(VALUE_BYTES, k=chooser.randint(0, 40)))),
              (b":authority", chooser.choice([b"example.com", b"www.example.org"]))]
    for _ in range(chooser.randint(0, 12)):
        size = chooser.choice([0, 1, 5, 30, 126, 127, 128, 200, 1000])
        fields.append((chooser.choice(NAMES), bytes(chooser.choices(VALUE_BYTES, k=size))))
    return fields


def test_what_the_hpack_library_encodes_decodes_to_the_same_fields() -> None:
    chooser = random.Random(7541)
    for _connection in range(4):
        encoder, decoder = hpack.Encoder(), FieldDecoder(LARGE)
        previous: Fields = []
        for _block in range(100):
            if chooser.random() < 0.1:
                encoder.header_table_size = chooser.choice([0, 100, 256, 1000, 4096])
            fields = _request(chooser)
            if previous and chooser.random() < 0.5:          # a page's next request
                fields = previous[:4] + fields[4:] + previous[4:]
            previous = fields
            sent = [(name, value, chooser.random() < 0.1) for name, value in fields]
            block = encoder.encode(sent, huffman=chooser.random() < 0.8)
            extra = []                                       # not indexed: table unchanged
            for _ in range(chooser.randint(0, 2)):
                name, value = chooser.choice(NAMES), bytes(chooser.choices(VALUE_BYTES, k=9))
                extra.append((name, value))
                block += _literal(name, value, chooser.choice([0x00, 0x10]))
            assert decoder.decode(block) == fields + extra


def _answer(chooser: random.Random) -> Fields:
    fields = [(b":status", chooser.choice([b"200", b"304", b"404", b"207"]))]
    for _ in range(chooser.randint(0, 8)):
        size = chooser.choice([0, 1, 5, 30, 200, 3000])
        fields.append((chooser.choice(NAMES), bytes(chooser.choices(VALUE_BYTES, k=size))))
    return fields


def test_what_the_servers_encoder_encodes_decodes_to_the_same_fields() -> None:
    chooser = random.Random(12)
    for _connection in range(10):
        encoder, decoder = AnswerEncoder(), FieldDecoder(LARGE)
        for _block in range(60):
            if chooser.random() < 0.1:
                encoder.header_table_size = chooser.choice([0, 100, 256, 4096, 65536])
            fields = _answer(chooser)
            if chooser.random() < 0.3:
                fields += fields[1:]
            assert decoder.decode(encoder.encode(fields)) == fields
