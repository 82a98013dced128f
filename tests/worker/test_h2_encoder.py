"""worker/h2_encoder.py: every block decodes, with the hpack library's decoder, to the
fields encoded, whatever the dynamic table went through; repeated fields cost a byte
or two; a smaller table from the peer is announced and kept to."""

from __future__ import annotations

import random

import hpack

from worker.h2_encoder import DEFAULT_TABLE_SIZE, AnswerEncoder, encode_integer

NAMES = [b"content-type", b"etag", b"date", b"server", b"x-custom", b"set-cookie",
         b"content-length", b"last-modified", b"vary", b"x-a-rather-long-field-name"]


def _answer(chooser: random.Random) -> list[tuple[bytes, bytes]]:
    fields = [(b":status", chooser.choice([b"200", b"304", b"404", b"207"]))]
    for _ in range(chooser.randint(0, 8)):
        size = chooser.choice([0, 1, 5, 30, 200, 3000, 5000])
        value = bytes(chooser.choices(b"abcdefxyz0123456789 -/;=\x7f\xe9", k=size))
        fields.append((chooser.choice(NAMES), value))
    return fields


def test_blocks_decode_to_the_fields_whatever_the_table_went_through():
    chooser = random.Random(12)
    for _connection in range(20):
        encoder, decoder = AnswerEncoder(), hpack.Decoder()
        for _block in range(60):
            if chooser.random() < 0.1:
                size = chooser.choice([0, 100, 256, 4096, 65536])
                encoder.header_table_size = size        # the peer's SETTINGS ...
                decoder.max_allowed_table_size = min(size, DEFAULT_TABLE_SIZE)
            fields = _answer(chooser)
            if chooser.random() < 0.3:
                fields += fields[1:]                    # the same fields again
            assert decoder.decode(encoder.encode(fields), raw=True) == fields


def test_a_repeated_answer_costs_a_byte_or_two_per_field():
    encoder, decoder = AnswerEncoder(), hpack.Decoder()
    fields = [(b":status", b"200"), (b"content-type", b"text/html"),
              (b"etag", b'"1234-5678"'), (b"server", b"pylighttpd"), (b"x-custom", b"yes")]
    first = encoder.encode(fields)
    again = encoder.encode(fields)
    assert len(again) == len(fields)          # :status 200 static, the rest dynamic
    assert decoder.decode(first, raw=True) == decoder.decode(again, raw=True) == fields


def test_a_smaller_table_is_announced_in_the_next_block_the_least_first():
    encoder = AnswerEncoder()
    encoder.encode([(b"x-custom", b"1")])
    encoder.header_table_size = 0
    encoder.header_table_size = 1000
    block = encoder.encode([(b"x-custom", b"1")])
    # size update to 0 (everything evicted), then to 1000; then a literal
    assert block.startswith(encode_integer(0, 5, 0x20) + encode_integer(1000, 5, 0x20))
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 1000
    assert decoder.decode(block, raw=True) == [(b"x-custom", b"1")]
    assert encoder.encode([]) == b""              # announced once


def test_a_larger_table_than_the_default_is_not_used():
    encoder = AnswerEncoder()
    encoder.header_table_size = 65536
    assert encoder.header_table_size == DEFAULT_TABLE_SIZE
    assert encoder.encode([]) == b""              # nothing changed: nothing to say


def test_a_field_larger_than_the_table_empties_it():
    encoder, decoder = AnswerEncoder(), hpack.Decoder()
    small = [(b"x-custom", b"kept")]
    huge = [(b"x-custom", b"v" * 5000)]
    for fields in (small, huge, small, small):
        assert decoder.decode(encoder.encode(fields), raw=True) == fields
    assert len(encoder.encode(small)) == 1


def test_integers_past_the_prefix():
    for value, prefix in ((10, 5), (1337, 5), (42, 8), (31, 5), (127, 7), (4096, 5)):
        encoded = encode_integer(value, prefix, 0)
        assert hpack.hpack.decode_integer(encoded, prefix) == (value, len(encoded))
