"""Tokens of lighttpd's config language.

Newlines carry no meaning (`a = 1 b = 2` is two statements), `#` starts a comment, and
inside a string only `\\"` is an escape: every other backslash stays as written, which is
what makes regular expressions readable in lighttpd configs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from .errors import ConfigError, Position

STRING, INTEGER, NAME, ASSIGN, COMPARE, PUNCT, EOF = (
    "string", "integer", "name", "assign", "compare", "punct", "end of input",
)

_TWO_CHAR = {
    "+=": ASSIGN, ":=": ASSIGN, "=>": PUNCT,
    "==": COMPARE, "!=": COMPARE, "=~": COMPARE, "!~": COMPARE, "=^": COMPARE, "=$": COMPARE,
}
_ONE_CHAR = {"=": ASSIGN, "+": PUNCT, "(": PUNCT, ")": PUNCT, ",": PUNCT, "{": PUNCT,
             "}": PUNCT, "[": PUNCT, "]": PUNCT, "$": PUNCT}
_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_NAME_CHARS = _NAME_START | frozenset("0123456789.-")
_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    position: Position

    def describe(self) -> str:
        """How the token is named in 'expected X, found Y' messages."""
        if self.kind == EOF:
            return "end of input"
        if self.kind == STRING:
            return f'string "{self.text}"'
        return f"'{self.text}'"


def tokenize(text: str, source: str) -> Iterator[Token]:
    """Yield the tokens of `text`; `source` names it in positions (a path, or a command)."""
    index, line, line_start, length = 0, 1, 0, len(text)

    def here(at: int) -> Position:
        return Position(source, line, at - line_start + 1)

    while index < length:
        char = text[index]
        if char == "\n":
            index += 1
            line, line_start = line + 1, index
        elif char in " \t\r\f\v":
            index += 1
        elif char == "#":
            end = text.find("\n", index)
            index = length if end < 0 else end
        elif char == '"':
            start_pos = here(index)
            parts, index, line, line_start = _read_string(text, index, line, line_start, start_pos)
            yield Token(STRING, parts, start_pos)
        elif char in _DIGITS:
            end = index
            while end < length and text[end] in _DIGITS:
                end += 1
            if end < length and text[end] in _NAME_CHARS:
                raise ConfigError("a name cannot start with a digit", here(index))
            yield Token(INTEGER, text[index:end], here(index))
            index = end
        elif char in _NAME_START:
            end = index
            while end < length and text[end] in _NAME_CHARS:
                end += 1
            yield Token(NAME, text[index:end], here(index))
            index = end
        elif text[index:index + 2] in _TWO_CHAR:
            pair = text[index:index + 2]
            yield Token(_TWO_CHAR[pair], pair, here(index))
            index += 2
        elif char in _ONE_CHAR:
            yield Token(_ONE_CHAR[char], char, here(index))
            index += 1
        else:
            raise ConfigError(f"unexpected character {char!r}", here(index))
    yield Token(EOF, "", here(index))


def _read_string(
    text: str, index: int, line: int, line_start: int, start: Position
) -> tuple[str, int, int, int]:
    """Read a quoted string starting at `index`; return its value and the new cursor."""
    pieces: list[str] = []
    cursor = index + 1
    chunk_start = cursor
    while True:
        if cursor >= len(text):
            raise ConfigError("missing closing quote for the string that starts here", start)
        char = text[cursor]
        if char == "\\" and text.startswith('"', cursor + 1):
            pieces.append(text[chunk_start:cursor])
            cursor += 2
            chunk_start = cursor - 1
            continue
        if char == '"':
            pieces.append(text[chunk_start:cursor])
            return "".join(pieces), cursor + 1, line, line_start
        if char == "\n":
            line, line_start = line + 1, cursor + 1
        cursor += 1
