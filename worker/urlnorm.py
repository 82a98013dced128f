"""The request-target as lighttpd 1.4.69 normalises it (src/burl.c), under the URL rules
of server.http-parseopts (shared/config/parseopts.py: `flags` below is its URL_* sum).

Three things follow from a target and the flags:
- `refusal`: why lighttpd answers 400 to it (a control character, an octet never found
  in UTF-8, `%2F` in the path, a dot segment), each only under the rule that asks;
- `normalised`: the target as rules match it, `${url.path}` shows it and mod_proxy
  passes it on: escapes of unreserved characters decoded (with
  `url-normalize-required`, of every character that needs none), the others'
  hexadecimal upper-cased, characters that need an escape escaped; `%2F` decoded in
  the path, dot segments removed, `%20` in the query as `+`, as the flags say;
- `split_at`: where the path ends.  As in lighttpd, with `url-normalize-required` the
  query starts after the last raw `?`, not the first.

The decoded, simplified `uri.path` (`clean_path`) never depends on the flags: decoding
undoes the normalisation, and a path is simplified after decoding whatever the flags
say, so no encoding can name a file above the document root.
"""

from __future__ import annotations

import re
from typing import Final

from shared.config.parseopts import (URL_2F_DECODE, URL_2F_REJECT,
                                     URL_CTRLS_REJECT, URL_DOTSEG_REJECT, URL_DOTSEG_REMOVE,
                                     URL_INVALID_UTF8_REJECT, URL_NORMALIZE,
                                     URL_QUERY_20_PLUS, URL_REQUIRED)

from .bytesets import all_kept, table_keeping

# what a request-target may hold unescaped (burl.c: encoded_chars_http_uri_reqd)
_AS_IS: Final = b"!$&'()*+,-./0123456789:;=?@_~ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
AS_IS_TABLE: Final = table_keeping(_AS_IS)
_AS_IS_SET: Final = frozenset(_AS_IS)
_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                               b"-._~")
_HEXDIGITS: Final = frozenset(b"0123456789ABCDEFabcdef")
_SLASH: Final = 0x2F
_DOT: Final = 0x2E
_KEPT_ESCAPED_IN_PATH: Final = frozenset(b"/?")        # url-normalize-required
_KEPT_ESCAPED_IN_QUERY: Final = frozenset(b"&=;+")
_TARGET_FIX: Final = re.compile(rb"%[0-9A-Fa-f]{2}|[^!$&'()*+,\-./0-9:;=?@A-Z_a-z~]")
_DOT_SEGMENT: Final = re.compile(r"(?:^|/)\.\.?(?:/|$)|//")
_PERCENT: Final = re.compile(rb"%([0-9A-Fa-f]{2})")
# a decoded control character is "_" in uri.path (buffer_urldecode_path)
_DECODED: Final = tuple(bytes((byte,)) if 32 <= byte != 127 else b"_" for byte in range(256))

# What is refused (400), raw or %-encoded, in the path and the query alike, by
# url-ctrls-reject and url-invalid-utf8-reject: control characters; the bytes that never
# occur in UTF-8 (0xC0, 0xC1, 0xF5-0xFF; the target is decoded with surrogateescape, so
# a raw one is a lone surrogate).  Without url-ctrls-reject lighttpd's strict request
# line still refuses raw controls, spaces, DEL and 0xFF.  One character class each:
# linear in the length of the target.
_RAW_CTRLS: Final = "\\x00-\\x20\\x7f"
_RAW_UTF8: Final = "\\udcc0\\udcc1\\udcf5-\\udcff"
_ESCAPED_CTRLS: Final = "[01][0-9a-fA-F]|7[fF]"
_ESCAPED_UTF8: Final = "[cC][01]|[fF][5-9a-fA-F]"
_REFUSALS: Final[dict[int, tuple[re.Pattern[str], re.Pattern[str] | None]]] = {
    URL_CTRLS_REJECT | URL_INVALID_UTF8_REJECT: (
        re.compile(f"[{_RAW_CTRLS}{_RAW_UTF8}]"),
        re.compile(f"%(?:{_ESCAPED_CTRLS}|{_ESCAPED_UTF8})")),
    URL_CTRLS_REJECT: (re.compile(f"[{_RAW_CTRLS}]"), re.compile(f"%(?:{_ESCAPED_CTRLS})")),
    URL_INVALID_UTF8_REJECT: (re.compile(f"[{_RAW_CTRLS}{_RAW_UTF8}]"),
                              re.compile(f"%(?:{_ESCAPED_UTF8})")),
    0: (re.compile(f"[{_RAW_CTRLS}\\udcff]"), None),
}
_REFUSAL_BITS: Final = URL_CTRLS_REJECT | URL_INVALID_UTF8_REJECT
_PATH_REFUSAL_BITS: Final = URL_2F_REJECT | URL_DOTSEG_REJECT
REFUSED_OCTET: Final = "control character or invalid UTF-8 octet in the URL"


def url_decode(raw: str) -> str:
    """%XX-decode a path; the bytes are read as UTF-8, others kept as surrogates (the
    file system encoding), so any file name survives the round trip.  A decoded
    control character is `_`, as in lighttpd's uri.path."""
    if "%" not in raw:
        return raw
    return percent_decoded(raw.encode("utf-8", "surrogateescape")).decode(
        "utf-8", "surrogateescape")


def percent_decoded(data: bytes) -> bytes:
    """%XX escapes decoded, a decoded control character as `_`, a stray `%` kept
    (lighttpd's buffer_urldecode_path)."""
    return _PERCENT.sub(lambda m: _DECODED[int(m.group(1), 16)], data)


def decoded_utf8(raw: str) -> str | None:
    """url_decode(raw), or None when the octets are not valid UTF-8 (lighttpd refuses
    such an X-Sendfile path, SSI include or WebDAV Destination)."""
    decoded = url_decode(raw)
    try:
        decoded.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return decoded


def simplify_path(path: str) -> str:
    """Remove `//`, `/./` and `/../` like lighttpd's buffer_path_simplify: `..` at the
    root stays at the root.  The result always starts with `/`."""
    if "/." not in path and "//" not in path:
        return path
    parts: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if parts:
                parts.pop()
        elif segment and segment != ".":
            parts.append(segment)
    trailing = path.endswith(("/", "/.", "/..")) and parts
    return "/" + "/".join(parts) + ("/" if trailing else "")


def path_simplified(data: bytes) -> bytes:
    """buffer_path_simplify, step for step, for any path (simplify_path's for those
    starting with `/`): `//`, `/./` and `/../` resolved; a path not starting with `/`
    keeps its first segment (`./` and `../` in front dropped), and `..` alone is
    empty."""
    if not data:
        return data
    path = bytearray(data) + b"/"           # the end marked by a slash, as in C
    end = len(data)
    walk = out = 0
    if path[0] == _SLASH:
        walk = _first_dot_or_slash(path, end)
        if walk == end:
            return data
        out = walk - 1
    else:
        if path[0] == _DOT and path[1] == _SLASH:
            walk += 1
            path[out] = path[walk]
        elif path[0] == _DOT and path[1] == _DOT and path[2] == _SLASH:
            walk += 2
            path[out] = path[walk]
        else:
            walk = path.index(b"/", 1)
            out = walk
        walk += 1
    size = _simplified_rest(path, walk, out, end)   # apart: compiled, the slice came first
    return bytes(path[:size])


def _first_dot_or_slash(path: bytearray, end: int) -> int:
    """Where a segment of `path` starts with `.` or is empty, or `end`."""
    walk = 0
    while True:
        walk += 1
        if path[walk] in (_DOT, _SLASH):
            return walk
        walk = path.index(b"/", walk + 1)
        if walk == end:
            return walk


def _simplified_rest(path: bytearray, walk: int, out: int, end: int) -> int:
    """The main loop of buffer_path_simplify, in place: the simplified length."""
    while walk <= end:
        if path[walk] == _SLASH:
            walk += 1
            if walk < end:
                continue
            return out + 1
        if path[walk] == _DOT:
            if path[walk + 1] == _DOT and path[walk + 2] == _SLASH:
                while out > 0:
                    out -= 1
                    if path[out] == _SLASH:
                        break
                path[out] = _SLASH
                walk += 3
                if walk >= end:
                    return out + 1
                continue
            if path[walk + 1] == _SLASH:
                walk += 2
                if walk >= end:
                    return out + 1
                continue
            out += 1
            path[out] = _DOT
            walk += 1
        while True:
            out += 1
            path[out] = path[walk]
            walk += 1
            if path[out] == _SLASH:
                break
    return out


def clean_path(raw_path: str) -> str:
    """The decoded, simplified `uri.path` of a request-target path."""
    return simplify_path(url_decode(raw_path))


def split_at(target: str, flags: int) -> int:
    """The index of the `?` that ends the path of `target`, or -1."""
    return target.rfind("?") if flags & URL_REQUIRED else target.find("?")


def split_target(target: str, flags: int) -> tuple[str, str]:
    """`target`'s path and query (empty without one), split as split_at says."""
    mark = split_at(target, flags)
    return (target, "") if mark < 0 else (target[:mark], target[mark + 1:])


def refusal(target: str, flags: int, vetted: bool = False) -> str | None:
    """Why lighttpd answers 400 to `target` under `flags`, or None.  With `vetted`, its
    raw octets were checked where it was parsed (HTTP/1: llhttp refuses controls,
    spaces, DEL and non-ASCII octets anywhere in a target)."""
    if vetted and "%" not in target and not flags & _PATH_REFUSAL_BITS:
        return None                             # the usual case, told without a look-up
    raw, escaped = _REFUSALS[flags & _REFUSAL_BITS]
    if (not vetted and raw.search(_unfragmented(target))) or \
            (escaped is not None and "%" in target and escaped.search(_unfragmented(target))):
        return REFUSED_OCTET
    if flags & _PATH_REFUSAL_BITS:
        text, mark = _normalised(target, flags)
        path = text if mark < 0 else text[:mark]
        if flags & URL_2F_REJECT and "%2F" in path:
            return "%2F in the URL path"
        if flags & URL_DOTSEG_REJECT and _may_hold_dot_segment(path) and \
                _DOT_SEGMENT.search(path):
            return "dot segment in the URL path"
    return None


def _unfragmented(target: str) -> str:
    """`target` without its fragment, whose escapes lighttpd never reads."""
    return target.partition("#")[0] if "#" in target else target


def normalised(target: str, flags: int) -> str:
    """`target` as lighttpd keeps it after parsing under `flags` (see the top)."""
    if all_kept(target, AS_IS_TABLE):
        return normalised_plain(target, flags)
    return _normalised(target, flags)[0]


def normalised_plain(target: str, flags: int) -> str:
    """normalised() of a target all_kept(AS_IS_TABLE) holds for: itself unless dot
    segments are to go (nothing to decode nor escape: the usual case)."""
    if flags & URL_DOTSEG_REMOVE and _may_hold_dot_segment(target):
        return _normalised(target, flags)[0]
    return target


def normalised_query(target: str, flags: int) -> str:
    """The query of `target` (empty without one), normalised."""
    text, mark = _normalised(target, flags)
    return "" if mark < 0 else text[mark + 1:]


def _normalised(target: str, flags: int) -> tuple[str, int]:
    """The normalised target and where its path ends (split_at of the result, but for
    the last-`?` rule, which counts raw `?` only)."""
    target = _unfragmented(target)
    if not flags & URL_NORMALIZE:
        return target, split_at(target, flags)
    mark = -2                       # not known yet
    if not all_kept(target, AS_IS_TABLE):
        if flags & URL_REQUIRED:
            target, mark = _required(target)
        else:
            target = _TARGET_FIX.sub(_fix_escape, target.encode(
                "utf-8", "surrogateescape")).decode("latin-1")
    if mark == -2:
        mark = split_at(target, flags)
    slashes = flags & URL_2F_DECODE and "%2F" in target
    dots = flags & URL_DOTSEG_REMOVE and (slashes or _may_hold_dot_segment(target))
    plus = flags & URL_QUERY_20_PLUS and mark >= 0 and "%20" in target
    if not (slashes or dots or plus):
        return target, mark
    path, query = (target, None) if mark < 0 else (target[:mark], target[mark + 1:])
    if slashes:
        path = path.replace("%2F", "/")     # the slashes it makes are simplified too
    if dots and _may_hold_dot_segment(path) and _DOT_SEGMENT.search(path):
        path = simplify_path(path) if path.startswith("/") else path_simplified(
            path.encode("latin-1")).decode("latin-1")
    if query is None:
        return path, -1
    if plus:
        query = query.replace("%20", "+")
    return f"{path}?{query}", len(path)


def _fix_escape(match: re.Match[bytes]) -> bytes:
    """url-normalize-unreserved: an escape of an unreserved character decoded, any
    other's hexadecimal upper-cased; a character that needs an escape escaped."""
    text = match.group()
    if len(text) == 1:
        return b"%%%02X" % text[0]
    byte = int(text[1:], 16)
    return bytes((byte,)) if byte in _UNRESERVED else text.upper()


def _required(target: str) -> tuple[str, int]:
    """url-normalize-required: every escape decoded but of characters that need one,
    and of `/` and `?` in the path and `&`, `=`, `;` and `+` in the query (whose
    meaning an escape changes); the path ends at the last raw `?`."""
    data = target.encode("utf-8", "surrogateescape")
    out = bytearray()
    mark = -1
    index, end = 0, len(data)
    while index < end:
        byte = data[index]
        if byte in _AS_IS_SET:
            if byte == 0x3F:
                mark = len(out)
            out.append(byte)
            index += 1
        elif byte == 0x25 and index + 2 < end and data[index + 1] in _HEXDIGITS and \
                data[index + 2] in _HEXDIGITS:
            value = int(data[index + 1:index + 3], 16)
            kept = _KEPT_ESCAPED_IN_PATH if mark < 0 else _KEPT_ESCAPED_IN_QUERY
            if value in _AS_IS_SET and value not in kept:
                out.append(value)
            else:
                out += b"%%%02X" % value
            index += 3
        else:
            out += b"%%%02X" % byte
            index += 1
    return out.decode("latin-1"), mark


def _may_hold_dot_segment(text: str) -> bool:
    """A dot segment or an empty one needs "/." or "//" (or a leading "."): looked for
    in C, before the pattern."""
    return "/." in text or "//" in text or text.startswith(".")

