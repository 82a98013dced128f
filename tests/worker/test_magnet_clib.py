"""lighty.c's string helpers (worker/magnet_clib.py) on the inputs where a port that
only looked right differed from lighttpd 1.4.69: every expected value here is what
Debian's lighttpd answered for the same call (a generated probe compared both servers
on thousands of random strings; test_magnet_differential runs clib.lua through both).
"""

from __future__ import annotations

import pytest

from worker import magnet_clib
from worker.urlnorm import path_simplified

FUNCTIONS = {"fspath_simplify": path_simplified,
             "digest_eq": lambda data: magnet_clib.digest_eq(data, data.upper())}

STRING_CASES = [
    ('fspath_simplify', b'ABC', b'ABC'),
    ('fspath_simplify', b'..', b''),
    ('fspath_simplify', b'./a//b', b'/a/b'),
    ('fspath_simplify', b'a/../../b/.', b'/b/'),
    ('fspath_simplify', b'/a/./b/', b'/a/b/'),
    ('fspath_simplify', b'*//x', b'*/x'),
    ('urlenc_normalize', b'..', b''),
    ('urlenc_normalize', b"*//'", b"*/'"),
    ('urlenc_normalize', b'a/%2e%2E/b?x=%20', b'/b?x=+'),
    ('urlenc_normalize', b'/%7e%41/?a%2Bb', b'/~A/?a%2Bb'),
    ('bsdec', b'"', b''),
    ('bsdec', b'\\uzz12', b'\x12zz12'),
    ('bsdec', b'\\ud800x', b'\x00d800x'),
    ('bsdec', b'\\1!!', b'\xf9'),
    ('bsdec', b'\\a\\v\\f', b'\x07\x0b\x0c'),
    ('bsdec', b'\\t\\n\\r', b't\n\r'),
    ('bsdec', b'a\\', b'a\\'),
    ('bsdec', b'\\x4', b'x4'),
    ('bsdec', b'\\u20ac', b'\xe2\x82\xac'),
    ('bsenc', b'\x07\x0b\x7f\xff"\\', b'\\a\\v\x7f\xff\\"\\\\'),
    ('bsenc_json', b'\x07\x0b\x7f\xff"\\', b'\\a\\v\\x7F\\xFF\\"\\\\'),
    ('quoteddec', b'"ab"c', None),
    ('quoteddec', b'"a\\"b"', b'a"b'),
    ('quoteddec', b'"ab\\"', None),
    ('quoteddec', b'abc', b'abc'),
    ('quoteddec', b'"', None),
    ('quotedenc', b'', b''),
    ('quotedenc', b'a"b\\', b'"a\\"b\\\\"'),
    ('b64dec', b'ZYQ==9%', b'e\x84'),
    ('b64dec', b'YQ,', b'a'),
    ('b64dec', b'Y Q\tQ=', b'a\x04'),
    ('b64dec', b'Y', None),
    ('b64dec', b'====', None),
    ('b64dec', b'YQ\x00QQ', None),
    ('b64urldec', b'_-8', b'\xff\xef'),
    ('b64urldec', b'YQ/', b'a'),
    ('urldec', b'%00%1f%7f%41%zz%4', b'___A%zz%4'),
    ('urldec', b'%41\x00%42', b'A'),
    ('digest_eq', b"'", False),
    ('digest_eq', b'ab', True),
    ('digest_eq', b'aB0', False),
]


@pytest.mark.parametrize("name, given, expected", STRING_CASES)
def test_string_helper_answers_as_lighttpd(name: str, given: bytes, expected) -> None:
    function = FUNCTIONS.get(name) or getattr(magnet_clib, name)
    assert function(given) == expected


# the functions that give lighttpd's scripts a table: a sequence or name => value
TABLE_CASES = [
    ("header_tokens", b'<\r\n"\'', [b"<", b'"\'"']),   # an unclosed quoted-string is closed
    ("header_tokens", b'a="b,c" ,d;e=f',
     [b"a", b"=", b'"b,c"', b",", b"d", b";", b"e", b"=", b"f"]),
    ("header_tokens", b'"x\\', [b'"x\\\\"']),     # a backslash at the end is escaped
    ("cookie_pairs", b"a\\nYQ==+.$b?", {b"a\\nYQ": b""}),   # after a 2nd "=": dropped
    ("cookie_pairs", b' a=1 ; b = 2;c="q;r"; d; =e; f=',
     {b"": b"e", b"a": b"1", b"b": b"2", b"c": b'"q;r"', b"d": b"", b"f": b""}),
    ("cookie_pairs", b'x="y', {b"x": b'"y"'}),
    ("query_pairs", b"%00&a=b=c&&+%41=%7f", {b"_": b"", b"a": b"b=c", b" A": b"_"}),
    ("query_pairs", b"k", {b"k": b""}),
    ("query_pairs", b"a=1\x00&b=2", {b"a": b"1"}),          # C reads up to a NUL
]


@pytest.mark.parametrize("name, given, expected", TABLE_CASES)
def test_table_helper_answers_as_lighttpd(name: str, given: bytes, expected) -> None:
    assert getattr(magnet_clib, name)(given) == expected


def test_urlenc_query_keeps_what_lighttpd_keeps() -> None:
    table = {b"k=e y": b"v=a l&$,:?@'"}
    assert magnet_clib.query_from(table) == b"k%3De+y=v=a+l%26$,:?@%27"
