"""worker/fastcgi.py: records, padding, name-value pairs (short and long lengths),
streams split at 64 KiB, END_REQUEST and GET_VALUES, and a reader that takes any
read sizes."""

from __future__ import annotations

import struct

import pytest

from worker import fastcgi
from worker.fastcgi import ProtocolError, Record, RecordReader


def test_a_record_is_padded_to_eight_bytes() -> None:
    data = fastcgi.record(fastcgi.STDOUT, 1, b"hello")
    assert data[:8] == bytes((1, 6, 0, 1, 0, 5, 3, 0))
    assert data[8:13] == b"hello" and data[13:] == b"\0\0\0"
    assert len(fastcgi.record(fastcgi.STDIN, 1, b"12345678")) == 16


def test_begin_request_carries_role_and_keep_conn() -> None:
    data = fastcgi.begin_request(7, fastcgi.AUTHORIZER, True)
    record = RecordReader().feed(data)[0]
    assert (record.type, record.request_id) == (fastcgi.BEGIN_REQUEST, 7)
    assert record.content[:3] == b"\x00\x02\x01"
    assert fastcgi.begin_request(1, fastcgi.RESPONDER, False)[8:11] == b"\x00\x01\x00"


def test_pairs_use_four_byte_lengths_from_128() -> None:
    long_value = b"v" * 200
    encoded = fastcgi.encode_pairs([(b"SHORT", b"x"), (b"LONG", long_value)])
    assert encoded.startswith(b"\x05\x01SHORTx\x04\x80\x00\x00\xc8LONG")
    assert fastcgi.decode_pairs(encoded) == [(b"SHORT", b"x"), (b"LONG", long_value)]
    long_name = b"N" * 130
    again = fastcgi.encode_pairs([(long_name, b"")])
    assert again[:5] == b"\x80\x00\x00\x82\x00"
    assert fastcgi.decode_pairs(again) == [(long_name, b"")]


def test_cut_pairs_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        fastcgi.decode_pairs(b"\x05\x01SHO")
    with pytest.raises(ProtocolError):
        fastcgi.decode_pairs(b"\x80\x00")


def test_params_end_with_an_empty_record_and_split_long_streams() -> None:
    env = {"QUERY_STRING": "a=1", "BIG": "x" * 70000}
    records = RecordReader().feed(fastcgi.params(1, env))
    assert [r.type for r in records] == [fastcgi.PARAMS] * 3
    assert records[-1].content == b""
    assert all(len(r.content) <= fastcgi.MAX_CONTENT for r in records)
    joined = b"".join(r.content for r in records)
    assert fastcgi.decode_pairs(joined) == [(b"QUERY_STRING", b"a=1"), (b"BIG", b"x" * 70000)]


def test_the_reader_takes_records_byte_by_byte() -> None:
    data = fastcgi.record(fastcgi.STDOUT, 1, b"Status: 200\r\n\r\nbody") + \
        fastcgi.record(fastcgi.STDERR, 1, b"warn") + fastcgi.end_request(1, 3)
    reader = RecordReader()
    records: list[Record] = []
    for index in range(len(data)):
        records += reader.feed(data[index:index + 1])
    assert [r.type for r in records] == [fastcgi.STDOUT, fastcgi.STDERR, fastcgi.END_REQUEST]
    assert records[0].content == b"Status: 200\r\n\r\nbody"
    assert fastcgi.parse_end_request(records[2].content) == (3, fastcgi.REQUEST_COMPLETE)
    assert reader.pending == 0


def test_the_reader_takes_two_byte_ids_and_lengths_big_endian() -> None:
    content = bytes(range(256)) * 3 + b"end"
    data = fastcgi.record(fastcgi.STDOUT, 0x1234, content) + fastcgi.end_request(0xFEDC, 0)
    records = RecordReader().feed(data)
    assert [(r.type, r.request_id) for r in records] == [(fastcgi.STDOUT, 0x1234),
                                                         (fastcgi.END_REQUEST, 0xFEDC)]
    assert records[0].content == content


def test_a_wrong_version_is_refused() -> None:
    with pytest.raises(ProtocolError):
        RecordReader().feed(b"HTTP/1.1 200 OK\r\n")


def test_get_values_round_trip() -> None:
    asked = RecordReader().feed(fastcgi.get_values(["FCGI_MAX_CONNS", "FCGI_MPXS_CONNS"]))[0]
    assert asked.type == fastcgi.GET_VALUES and asked.request_id == 0
    assert fastcgi.decode_pairs(asked.content) == [(b"FCGI_MAX_CONNS", b""),
                                                   (b"FCGI_MPXS_CONNS", b"")]
    answer = RecordReader().feed(fastcgi.get_values_result({"FCGI_MPXS_CONNS": "0"}))[0]
    assert answer.type == fastcgi.GET_VALUES_RESULT
    assert dict(fastcgi.decode_pairs(answer.content)) == {b"FCGI_MPXS_CONNS": b"0"}


def test_abort_and_end_request_records() -> None:
    assert fastcgi.abort_request(5) == struct.pack(">BBHHBx", 1, 2, 5, 0, 0)
    with pytest.raises(ProtocolError):
        fastcgi.parse_end_request(b"\0\0")
