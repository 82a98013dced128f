"""Whether every character of a text is one of a set of ASCII bytes, in one C call.

`bytes.translate` returns its very bytes object when its table changed no byte.  A
table that keeps the allowed bytes and changes every other one (into the next byte)
turns "are they all allowed?" into an identity test: a few instructions a byte, where
`str.isprintable()` costs tens and a regular expression's character class more.  The
access log asks it whether a line needs escaping, the URL rules whether a target is
kept as it came.
"""

from __future__ import annotations

from typing import Iterable


def table_keeping(allowed: Iterable[int]) -> bytes:
    """The translate table that keeps the bytes of `allowed` and changes every other."""
    kept = frozenset(allowed)
    return bytes([byte if byte in kept else (byte + 1) % 256 for byte in range(256)])


def all_kept(text: str, table: bytes) -> bool:
    """Whether `text` is ASCII and `table` keeps each of its bytes.  Its encoding to
    ASCII tells the first (compiled, one C call, where `str.isascii` is a Python
    method call; a surrogate or any other non-ASCII character fails it)."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        return False
    return data.translate(table) is data
