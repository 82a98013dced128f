"""Reading an SSI page as lighttpd 1.4.69's mod_ssi reads it: in BUFFER_SIZE pieces,
each `<!--#cmd attr="v" -->` directive found (quotes respected, lighttpd's backslash
quirk included), at most two attributes taken, a directive longer than the buffer
refused.  What comes out depends on the page's bytes alone, so a small page is read
once into its pieces and kept (PageCache) until its file changes; so is the content of
a small file included as it stands (once settled: see worker/settled.py).
"""

from __future__ import annotations

import io
import os
import re
from collections import OrderedDict
from typing import Callable, Final, Generator, Iterator, Union

from .settled import settled

BUFFER_SIZE: Final = 8192            # lighttpd's read buffer: a longer directive is refused
TOO_LONG: Final = b"<!-- [an error occurred: directive too long] "
_SPACE: Final = b" \t\n\v\f\r"
_DIRECTIVE_SPECIALS: Final = re.compile(rb"[-\"'\\]")

# the kinds of pieces of a page
TEXT: Final = 0        # bytes: sent unless an if/else hides them
RAW: Final = 1         # bytes: sent whatever the conditions say (a directive lighttpd cannot read)
DIRECTIVE: Final = 2   # (command, ((name, value), ...)): what the page runs
Attributes = tuple[tuple[str, str], ...]
Piece = tuple[int, Union[bytes, tuple[str, Attributes]]]
_PIECES: Final = 0           # what PageCache keeps of a file
_CONTENT: Final = 1


def text_of(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def directive_length(buf: bytes | bytearray, start: int, end: int) -> int:
    """The length of the directive at `start` ("<!--#..." up to its "-->" outside
    quotes), or 0 when `buf[start:end]` holds no end yet.  As in lighttpd, a backslash
    inside quotes stays in force to the end (a quote after it never closes)."""
    single = double = backslash = False
    for match in _DIRECTIVE_SPECIALS.finditer(buf, start + 5, end):
        char = match.group()
        if char == b"-":
            n = match.start()
            if not single and not double and n + 2 < end and buf[n + 1:n + 3] == b"->":
                return n + 3 - start
        elif char == b'"':
            if not single and (not double or not backslash):
                double = not double
        elif char == b"'":
            if not double and (not single or not backslash):
                single = not single
        elif single or double:                                 # a backslash
            backslash = not backslash
    return 0


def _value_length(s: bytes, start: int, end: int) -> int:
    """The length of an attribute value at `start` (quoted or bare), 0 if invalid."""
    quote = s[start] if s[start] in b"\"'" else 0
    n = start + 1 if quote else start
    while n < end:
        if quote and s[n] == quote:
            return n + 1 - start
        if not quote and s[n] in _SPACE:
            return n - start
        if s[n] == 0x5C:
            if n + 1 == end:
                return 0
            n += 1
        n += 1
    return 0 if quote else n - start


def _alpha_run(s: bytes, n: int) -> int:
    while n < len(s) and (0x41 <= s[n] <= 0x5A or 0x61 <= s[n] <= 0x7A):
        n += 1
    return n


def _skip_space(s: bytes, n: int) -> int:
    while s[n] in _SPACE:
        n += 1
    return n


def _words(words: list[bytes]) -> list[str]:
    """As lighttpd reads them, each a C string: up to a NUL byte."""
    return [text_of(word.split(b"\0", 1)[0]) for word in words]


def parse_directive(s: bytes) -> list[str] | None:
    """`<!--#cmd a="x" b=y -->` as ["cmd", "a", "x", "b", "y"]; None when it is not a
    directive lighttpd reads (no command, a third attribute, a bad value)."""
    end = len(s) - 3                      # where "-->" starts
    n = _alpha_run(s, 5)
    if n == 5:
        return None
    words = [s[5:n]]
    for _ in range(2):
        if n == end:
            return _words(words)
        if s[n] not in _SPACE:
            return None
        n = _skip_space(s, n)
        if n == end:
            return _words(words)
        name_end = _alpha_run(s, n)
        if name_end == n or s[name_end] != 0x3D:                # =
            return None
        size = _value_length(s, name_end + 1, end)
        if size == 0:
            return None
        value = s[name_end + 1:name_end + 1 + size]
        if value[:1] in (b'"', b"'"):
            value = value[1:-1]
        words += [s[n:name_end], value]
        n = name_end + 1 + size
    if n != end and (s[n] not in _SPACE or _skip_space(s, n) != end):
        return None
    return _words(words)


def _is_comment(s: bytes) -> bool:
    return len(s) >= 16 and s[5:12] == b"comment" and s[12:13] in (b" ", b"\t")


def pieces(read: Callable[[int], bytes]) -> Iterator[Piece]:
    """The page that `read(n)` gives, as lighttpd's mod_ssi_read_fd cuts it: text,
    directives, and an unfinished directive kept until more comes (or sent as text at
    the end)."""
    buf = bytearray()
    pretag = 0
    while True:
        data = read(BUFFER_SIZE - len(buf))
        if not data:
            break
        buf += data
        pretag = yield from _scan(buf, pretag)
        if len(buf) == BUFFER_SIZE:
            if len(buf) > pretag:
                yield TEXT, bytes(buf[pretag:])
            buf.clear()
            pretag = 0
    if len(buf) > pretag:
        yield TEXT, bytes(buf[pretag:])


def _scan(buf: bytearray, pretag: int) -> Generator[Piece, None, int]:
    """The complete directives in `buf` and the text before them; an unfinished one
    is moved to the start of `buf`.  Returns where the text not sent yet begins."""
    prelen = 0
    while True:
        start = buf.find(b"<", prelen)
        if start < 0:
            return pretag
        offset = len(buf)
        if start + 5 <= offset:
            if buf[start + 1:start + 5] != b"!--#":
                prelen = start + 1
                continue
            if start > pretag:
                yield TEXT, bytes(buf[pretag:start])
            size = directive_length(buf, start, offset)
            if size:
                yield from _directive(bytes(buf[start:start + size]))
                prelen = pretag = start + size
                if pretag == offset:
                    buf.clear()
                    return 0
                continue
            if start == 0 and offset == BUFFER_SIZE:
                yield RAW, TOO_LONG + (b"--" if buf.endswith(b"--") else
                                       b"-" if buf.endswith(b"-") else b"")
                buf.clear()
                return 0
            del buf[:start]
            return 0
        if b"<!--"[:offset - start] == buf[start:]:
            if start > pretag:
                yield TEXT, bytes(buf[pretag:start])
            del buf[:start]
            return 0
        prelen = start + 1


def _directive(text: bytes) -> Iterator[Piece]:
    words = parse_directive(text)
    if words is not None:
        yield DIRECTIVE, (words[0], tuple(zip(words[1::2], words[2::2])))
    elif not _is_comment(text):
        yield RAW, text                # sent as it stands, as lighttpd does


class PageCache:
    """Pieces of small pages, and the content of small files included as they are,
    by path and the stat that says the file is unchanged; the least recently used
    dropped beyond `budget` bytes of files."""

    def __init__(self, page_max: int, budget: int) -> None:
        self.page_max = page_max
        self.budget = budget
        self.size = 0
        self.files: OrderedDict[tuple, tuple[object, int]] = OrderedDict()

    @staticmethod
    def _key(kind: int, path: str, st: os.stat_result) -> tuple:
        return (kind, path, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _find(self, key: tuple) -> object:
        kept = self.files.get(key)
        if kept is None:
            return None
        self.files.move_to_end(key)
        return kept[0]

    def pieces_kept(self, path: str, st: os.stat_result) -> list[Piece] | None:
        """The pieces of the page at `path` when it is kept and `st` still says so."""
        return self._find(self._key(_PIECES, path, st))  # type: ignore[return-value]

    def content_kept(self, path: str, st: os.stat_result) -> bytes | None:
        """The bytes of the file at `path` when they are kept and `st` still says so."""
        return self._find(self._key(_CONTENT, path, st))  # type: ignore[return-value]

    def pieces_of(self, path: str, fd: int, st: os.stat_result) -> Iterator[Piece]:
        """The pieces of the open file `fd` (`st` its fstat): kept ones, or read now."""
        kept = self.pieces_kept(path, st)
        if kept is not None:
            return iter(kept)
        if st.st_size > self.page_max:
            return pieces(lambda n: os.read(fd, n))
        data = os.read(fd, self.page_max + 1)
        if len(data) > self.page_max:            # it grew: read on from the file
            head = io.BytesIO(data)
            return pieces(lambda n: head.read(n) or os.read(fd, n))
        found = list(pieces(io.BytesIO(data).read))
        self._keep(self._key(_PIECES, path, st), st, found, len(data))
        return iter(found)

    def keep_content(self, path: str, st: os.stat_result, data: bytes) -> None:
        """The whole content of a small file, as its fstat `st` describes it."""
        if len(data) == st.st_size <= self.page_max:
            self._keep(self._key(_CONTENT, path, st), st, data, len(data))

    def _keep(self, key: tuple, st: os.stat_result, value: object, size: int) -> None:
        if not settled(st):          # changed just now: its stat cannot vouch for it
            return
        self.files[key] = (value, size)
        self.size += size
        while self.size > self.budget and self.files:
            _, (_, dropped) = self.files.popitem(last=False)
            self.size -= dropped
