"""mod_evhost: the document root built from a pattern over the parts of the host name.

`evhost.path-pattern` as lighttpd 1.4.69 reads it, for the host `sub2.sub1.domain.tld`:
`%0` domain.tld, `%1` tld, `%2` domain, `%3` sub1, `%4` sub2 ... (a part the host
does not have is empty), `%_` the whole host without its port, `%%` a percent sign,
`%{n}` as `%n`, `%{n.m}` the m-th character of part n (`%{n.0}` the whole part).  An
IPv6 literal has `%0` only.  Any other `%` sequence is a config error.  The path gets
a trailing slash; when it is no directory the error log says so and the request keeps
its document root.
"""

from __future__ import annotations

import os

from shared import log
from shared.config.directives import Directive, DirectiveValueError, Type

from ..module import HandlerResult, Module as BaseModule
from ..request import Request
from ..vhost import directory_errno, without_port

# a pattern: literal text, or ("%", part, character) for a sequence: part "%" or "_"
# or a digit, character 0 for the whole part
Piece = str | tuple[str, str, int]
_DIGITS = frozenset("0123456789")


def parse_pattern(pattern: str) -> tuple[Piece, ...] | None:
    """The pieces of a path pattern (None for an empty one, the module then off)."""
    if not pattern:
        return None
    pieces: list[Piece] = []
    literal_start = position = 0
    while position < len(pattern):
        if pattern[position] != "%":
            position += 1
            continue
        piece, length = _sequence(pattern, position)
        if position > literal_start:
            pieces.append(pattern[literal_start:position])
        pieces.append(piece)
        position += length
        literal_start = position
    if literal_start < len(pattern):
        pieces.append(pattern[literal_start:])
    return tuple(pieces)


def _sequence(pattern: str, at: int) -> tuple[Piece, int]:
    """The `%` sequence at `at` and its length; DirectiveValueError if it is none of
    lighttpd's."""
    follows = pattern[at + 1:at + 6]
    first = follows[:1]
    if first in ("%", "_") or (first and first in _DIGITS):
        return ("%", first, 0), 2
    if first == "{" and follows[1:2] and follows[1] in _DIGITS:
        if follows[2:3] == "}":
            return ("%", follows[1], 0), 4
        if follows[2:3] == "." and follows[3:4] and follows[3] in _DIGITS \
                and follows[4:5] == "}":
            return ("%", follows[1], int(follows[3])), 6
    raise DirectiveValueError(f"invalid evhost.path-pattern: {pattern}")


DIRECTIVES = (
    Directive("evhost.path-pattern", Type.STRING, None, convert=parse_pattern),
)


def host_parts(authority: str) -> dict[str, str]:
    """%0 ... %n of a (normalised) host, as lighttpd's mod_evhost_parse_host."""
    if authority.startswith("["):
        return {"0": authority[:authority.index("]") + 1]}
    name = without_port(authority)
    labels = [label for label in name.split(".") if label]
    parts = {"0": ".".join(name.split(".")[-2:])}
    for number, label in enumerate(reversed(labels), 1):
        parts[str(number)] = label
    return parts


def build_path(pieces: tuple[Piece, ...], authority: str) -> str:
    parts = host_parts(authority)
    out: list[str] = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        _, part, character = piece
        if part == "%":
            out.append("%")
        elif part == "_":
            out.append(without_port(authority))
        else:
            value = parts.get(part, "")
            if not character:
                out.append(value)
            elif character <= len(value):
                out.append(value[character - 1])
    path = "".join(out)
    return path if path.endswith("/") else path + "/"


class Module(BaseModule):
    name = "evhost"
    replay_safe = True      # the docroot follows from Host and the directories there
    directives = DIRECTIVES

    def handle_docroot(self, request: Request) -> HandlerResult:
        pieces = request.settings.values["evhost.path-pattern"]
        if pieces is None or not request.host:
            return None
        path = build_path(pieces, request.host)
        missing = directory_errno(path)
        if missing:
            log.error("mod_evhost.c.340", f"{path}: {os.strerror(missing)}")
        else:
            request.docroot = path
        return None
