"""mod_expire: Cache-Control (HTTP/1.1) or Expires (HTTP/1.0) on answers to GET/HEAD.

`expire.url` maps URL path prefixes, `expire.mimetypes` Content-Type prefixes (a
trailing `*` is dropped, `""` is the catch-all) to a time in lighttpd's grammar:

    (access|now|modification) [plus] <num> <unit> [<num> <unit> ...]

with units year (360 days, as lighttpd counts), month (30 days), week, day, hour,
minute, second, each optionally plural.  The first prefix that matches wins (config
order, not the longest); expire.url is looked at before expire.mimetypes.  Only 200
and 206 answers to GET and HEAD get the header, and only when they carry no
Cache-Control yet; a base of "modification" needs the file's mtime.  An expiry in the
past is now (max-age=0).

The grammar is read once, at config load: a bad value is a config error at its line.
lighttpd 1.4.69's parser is followed step for step, including its 32-bit arithmetic
(an offset that overflows wraps, as in C), so a config means the same on both servers.

"Now" is the second the answer's Date header gives (http.DATE), as lighttpd counts
from its own Date second.  That second moves only on the worker's tick, the tick that
empties the answer cache, so a kept answer (Expires date or max-age alike) agrees
with the Date of every replay of it.
"""

from __future__ import annotations

from typing import NamedTuple

from shared.config.directives import Directive, DirectiveValueError, Type

from ..http import DATE, http_date
from ..module import Module as BaseModule
from ..request import Request

_UNITS = {"year": 60 * 60 * 24 * 30 * 12, "month": 60 * 60 * 24 * 30,
          "week": 60 * 60 * 24 * 7, "day": 60 * 60 * 24, "hour": 60 * 60,
          "minute": 60, "second": 1}
_BASES = (("access ", False), ("now ", False), ("modification ", True))
_LAST_DATE = 253402300799          # 9999-12-31 23:59:59: the last date HTTP can write


class Expiry(NamedTuple):
    """A parsed time: seconds after the request (or after the file's mtime)."""

    from_modification: bool
    offset: int


def _int32(value: int) -> int:
    """`value` as a C int holds it (lighttpd keeps each term in an int)."""
    return (value + 2**31) % 2**32 - 2**31


def _leading_int(text: str) -> tuple[int, str]:
    """strtol(text, &end, 10): leading blanks, a sign and digits; 0 and the text
    unchanged when there are no digits."""
    stripped = text.lstrip(" \t\n\r\f\v")
    sign = stripped[:1] if stripped[:1] in ("+", "-") else ""
    rest = stripped[len(sign):]
    digits = len(rest) - len(rest.lstrip("0123456789"))
    if not digits:
        return 0, text
    number = int(rest[:digits]) * (-1 if sign == "-" else 1)
    return max(-2**63, min(2**63 - 1, number)), rest[digits:]


def parse_expiry(text: str) -> Expiry:
    """lighttpd 1.4.69's mod_expire_get_offset; DirectiveValueError with its words."""
    if not text:
        raise DirectiveValueError("mod_expire empty string")
    for prefix, from_modification in _BASES:
        if text.startswith(prefix):
            rest = text[len(prefix):]
            break
    else:
        raise DirectiveValueError(f"invalid <base>: {text}")
    if rest.startswith("plus "):
        rest = rest[5:]
    offset = 0
    left: str | None = rest
    while left is not None:
        term, left = _term(left)
        offset += term
    return Expiry(from_modification, offset)


def _term(text: str) -> tuple[int, str | None]:
    """One `<num> <unit>`: its seconds and the text after it (None at the end)."""
    space = text.find(" ")
    if space < 0:
        raise DirectiveValueError(f"missing space after <num>: {text}")
    number, after = _leading_int(text)
    if not after.startswith(" "):
        raise DirectiveValueError(f"missing <type> after <num>: {text}")
    text = text[space + 1:]
    end = text.find(" ")
    unit, rest = (text, None) if end < 0 else (text[:end], text[end + 1:])
    name = unit[:-1] if unit.endswith("s") else unit
    if name not in _UNITS:
        raise DirectiveValueError(f"unknown type: {text}")
    if rest == "":
        rest = None
    return _int32(_int32(number) * _UNITS[name]), rest


def _parse_all(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, Expiry], ...]:
    parsed = []
    for prefix, value in pairs:
        try:
            parsed.append((prefix, parse_expiry(value)))
        except DirectiveValueError as err:
            raise DirectiveValueError(f'invalid "{prefix}" => "{value}": {err}') from None
    return tuple(parsed)


def _mimetype_prefixes(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, Expiry], ...]:
    return _parse_all(tuple((key[:-1] if key.endswith("*") else key, value)
                            for key, value in pairs))


DIRECTIVES = (
    Directive("expire.url", Type.ARRAY_KVSTRING, (), convert=_parse_all,
              doc="URL path prefix => expiry"),
    Directive("expire.mimetypes", Type.ARRAY_KVSTRING, (), convert=_mimetype_prefixes,
              doc="Content-Type prefix => expiry"),
)


def first_prefix(table: tuple[tuple[str, Expiry], ...], text: str) -> Expiry | None:
    for prefix, expiry in table:
        if text.startswith(prefix):
            return expiry
    return None


def expiry_for(request: Request) -> Expiry | None:
    """The expire.url rule for the path, else the expire.mimetypes one for the
    Content-Type, else the mimetypes catch-all."""
    values = request.settings.values
    found = first_prefix(values["expire.url"], request.uri_path)
    types = values["expire.mimetypes"]
    if found is not None or not types:
        return found
    content_type = request.response.get_header("Content-Type")
    if content_type is not None:
        found = first_prefix(types, content_type)
    if found is None:
        found = next((expiry for prefix, expiry in types if prefix == ""), None)
    return found


class Module(BaseModule):
    name = "expire"
    replay_safe = True      # its clock is the Date header's: see above
    directives = DIRECTIVES

    def handle_response_start(self, request: Request) -> None:
        values = request.settings.values
        if not (values["expire.url"] or values["expire.mimetypes"]):
            return
        response = request.response
        if response.status not in (200, 206) or request.method not in ("GET", "HEAD") \
                or response.get_header("Cache-Control") is not None:
            return
        expiry = expiry_for(request)
        if expiry is None:
            return
        now = DATE.second               # the second the Date header gives
        expires = expiry.offset
        if expiry.from_modification:
            try:
                expires += int(request.physical_stat().st_mtime)
            except OSError:
                return            # no file, no mtime: no header (as lighttpd)
        else:
            expires += now
        expires = max(now, min(expires, _LAST_DATE))
        if request.version == "1.0":
            response.set_header("Expires", http_date(expires))
        else:
            response.set_header("Cache-Control", f"max-age={expires - now}")
