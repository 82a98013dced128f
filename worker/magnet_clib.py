"""`lighty.c`: the helper functions lighttpd 1.4.69's mod_magnet gives Lua scripts.

Lua strings are bytes here (the runtime has no encoding), so every function takes and
returns bytes, as the C functions do; what lighttpd returns as a Lua table is built
with the runtime's `table_from`.  The outputs follow lighttpd byte for byte
(tests/worker/test_magnet_differential.py runs the same script through both): digests
and hex in upper case, base64 without padding, the sets of characters each encoder
leaves alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import stat as stat_module
import time
from typing import Any, Callable
from urllib.parse import quote_from_bytes

from shared.config.parseopts import (URL_2F_DECODE, URL_DOTSEG_REMOVE, URL_NORMALIZE,
                                     URL_QUERY_20_PLUS, URL_REQUIRED, URL_UNRESERVED)

from .urlnorm import normalised, path_simplified, percent_decoded
from .urlsubst import B64_STANDARD_VALUES, base64_decoded, percent_encoded
from .static import stat_etag, content_type_for

_URLENC_SAFE = b"!()*-._~/"
_ALNUM = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# a query part as magnet_urlenc_query writes it: "=" kept in values only, " " as "+"
_QUERY_KEPT = frozenset(_ALNUM + b"!$()*,-./:?@_~")
_QUERY_VALUE_KEPT = _QUERY_KEPT | {ord("=")}
_XML_ESCAPED = frozenset(b"<>&'\"`") | frozenset(range(32)) | {127}
_BS_NAMED = {7: b"\\a", 8: b"\\b", 9: b"\\t", 10: b"\\n", 11: b"\\v", 12: b"\\f",
             13: b"\\r", ord('"'): b'\\"', ord("\\"): b"\\\\"}
# the named escapes bsdec decodes: lighttpd 1.4.69's table has "t" where "\t" should
# be, so "\t" stands for "t" there, and here
_BS_LETTERS = {ord("a"): 7, ord("b"): 8, ord("n"): 10, ord("v"): 11, ord("f"): 12,
               ord("r"): 13}
_DIGESTS = {b"md5": "md5", b"sha1": "sha1", b"sha256": "sha256", b"sha512": "sha512"}
_SPACE = b" \t\r\n"
_QUOTE, _BACKSLASH = 0x22, 0x5C
_URL_NORMALIZE_ALL = (URL_NORMALIZE | URL_UNRESERVED | URL_REQUIRED | URL_2F_DECODE
                      | URL_DOTSEG_REMOVE | URL_QUERY_20_PLUS)


def _hex(data: bytes) -> bytes:
    return binascii.hexlify(data).upper()


def md(algorithm: bytes, data: bytes) -> bytes | None:
    """A digest in upper-case hex; nil for an algorithm lighttpd does not name (in
    lower case: "SHA256" is none)."""
    name = _DIGESTS.get(algorithm)
    return None if name is None else _hex(hashlib.new(name, data).digest())


def hmac_hex(algorithm: bytes, key: bytes, data: bytes) -> bytes | None:
    name = _DIGESTS.get(algorithm)
    return None if name is None else _hex(hmac.new(key, data, name).digest())


def digest_eq(a: bytes, b: bytes) -> bool:
    """Timing-safe comparison of two hex digests of the same length, whatever their
    case; anything that is not hex (or longer than a SHA-512's) is unequal."""
    if len(a) != len(b) or len(a) > 128:
        return False
    first, second = hexdec(a), hexdec(b)
    return first is not None and second is not None and hmac.compare_digest(first, second)


def secret_eq(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def b64enc(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def b64urlenc(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64dec(data: bytes) -> bytes | None:
    """lighttpd's base64 decoding (urlsubst.base64_decoded); None when nothing came
    out of a string that was not empty."""
    return base64_decoded(data, B64_STANDARD_VALUES) or (None if data else data)


def b64urldec(data: bytes) -> bytes | None:
    return base64_decoded(data) or (None if data else data)


def hexdec(data: bytes) -> bytes | None:
    try:
        return binascii.unhexlify(data)
    except (binascii.Error, ValueError):
        return None


def xmlenc(data: bytes) -> bytes:
    return b"".join(b"&#x%02X;" % byte if byte in _XML_ESCAPED else bytes((byte,))
                    for byte in data)


def urlenc(data: bytes) -> bytes:
    return quote_from_bytes(data, safe=_URLENC_SAFE).encode("ascii")


def urldec(data: bytes) -> bytes:
    """buffer_urldecode_path: %XX decoded (a control character as `_`), a stray `%`
    kept, `+` kept; the C string ends at a raw NUL after the first `%`."""
    first = data.find(b"%")
    if first < 0:
        return data
    nul = data.find(b"\0", first)
    return percent_decoded(data if nul < 0 else data[:nul])


def _query_part_decoded(data: bytes) -> bytes:
    return urldec(data.replace(b"+", b" "))


def _query_part_encoded(data: bytes, is_key: bool) -> bytes:
    return percent_encoded(data, _QUERY_KEPT if is_key else _QUERY_VALUE_KEPT,
                           True).replace(b"%20", b"+")


def urlenc_normalize(data: bytes) -> bytes:
    """The URL as the request parser normalises one under every url-normalize rule:
    escapes of what needs none decoded, the others upper-cased, what must be escaped
    escaped, `%2F` decoded and dot segments removed in the path, `%20` as `+` in the
    query."""
    text = data.decode("utf-8", "surrogateescape")
    return normalised(text, _URL_NORMALIZE_ALL).encode("utf-8", "surrogateescape")


def quotedenc(data: bytes) -> bytes:
    if not data:
        return data
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def quoteddec(data: bytes) -> bytes | None:
    """A quoted-string's content; anything not starting with `"` as it is; None when
    the string does not end at its closing quote."""
    if not data or data[0] != _QUOTE:
        return data
    out = bytearray()
    index, size = 1, len(data)
    while index < size and data[index] != _QUOTE:
        if data[index] == _BACKSLASH:
            if index + 2 >= size:
                break
            index += 1
        out.append(data[index])
        index += 1
    return bytes(out) if index == size - 1 and data[index] == _QUOTE else None


def bsenc(data: bytes) -> bytes:
    """Backslash escapes for `"`, `\\` and control characters (named or \\u00XX);
    DEL and bytes above it pass as they are (lighttpd's JSON flavour)."""
    return b"".join(_BS_NAMED.get(byte) or (b"\\u00%02X" % byte if byte < 32 else
                                            bytes((byte,))) for byte in data)


def bsenc_json(data: bytes) -> bytes:
    """As bsenc, but control characters, DEL and every byte above as \\xXX (the two
    are the other way round in lighttpd 1.4.69, and kept so)."""
    return b"".join(_BS_NAMED.get(byte) or (b"\\x%02X" % byte if byte < 32 or byte > 126
                                            else bytes((byte,))) for byte in data)


def _hex_value(byte: int) -> int:
    """A hexadecimal digit's value, or -1."""
    if 48 <= byte <= 57:
        return byte - 48
    byte |= 0x20
    return byte - 87 if 97 <= byte <= 102 else -1


def bsdec(data: bytes) -> bytes:
    """magnet_bsdec: backslash escapes decoded (\\xHH, \\uHHHH as UTF-8, \\ooo, the
    named ones; any other character stands for itself), quotes around the whole
    string dropped."""
    if data[:1] == b"\"" and data[-1:] == b"\"":      # a lone `"` too
        data = data[1:-1]
    out = bytearray()
    index, size = 0, len(data)
    while index < size:
        mark = data.find(b"\\", index)
        if mark < 0:
            out += data[index:]
            break
        out += data[index:mark]
        index = mark + 1
        if index == size:
            out.append(_BACKSLASH)          # a stray backslash at the end stays
            break
        byte, index = _bs_unescaped(data, index, out)
        out.append(byte & 0xFF)
        index += 1
    return bytes(out)


def _bs_unescaped(data: bytes, index: int, out: bytearray) -> tuple[int, int]:
    """The byte the escape at data[index] (after its backslash) stands for and the
    index of its last character; a \\u escape's leading UTF-8 bytes go to `out`."""
    byte, size = data[index], len(data)
    if byte in _BS_LETTERS:
        return _BS_LETTERS[byte], index
    if byte == 0x78 and index + 3 <= size:                               # x
        high, low = _hex_value(data[index + 1]), _hex_value(data[index + 2])
        if high >= 0 and low >= 0:
            return high << 4 | low, index + 2
    elif byte == 0x75 and index + 5 <= size:                             # u
        return _bs_code_point(data, index, out)
    elif 0x30 <= byte <= 0x33:                                          # 0-3
        if index + 3 <= size and data[index + 1] < 0x38 and data[index + 2] < 0x38:
            return (byte - 48) << 6 | (data[index + 1] - 48) << 3 | (data[index + 2] - 48), \
                index + 2
        if byte == 0x30:
            return 0, index
    return byte, index


def _bs_code_point(data: bytes, index: int, out: bytearray) -> tuple[int, int]:
    """A \\uHHHH escape as UTF-8 (its last byte returned).  As in lighttpd: the `u`
    itself when the last two are not hexadecimal; the byte they make when the first
    two are not; the low byte (0) of a surrogate; the four characters kept after
    either."""
    high, low = _hex_value(data[index + 3]), _hex_value(data[index + 4])
    if high < 0 or low < 0:
        return 0x75, index
    point = high << 4 | low
    if data[index + 1] != 0x30 or data[index + 2] != 0x30:
        top, next_top = _hex_value(data[index + 1]), _hex_value(data[index + 2])
        if top < 0 or next_top < 0:
            return point, index
        point |= top << 12 | next_top << 8
        if 0xD800 <= point < 0xE000:
            return point, index
    if point > 0x7F:
        if point < 0x800:
            out.append(0xC0 | point >> 6)
        else:
            out += bytes((0xE0 | point >> 12, 0x80 | (point >> 6 & 0x3F)))
        point = 0x80 | (point & 0x3F)
    return point, index + 4


def _c_string(data: bytes) -> bytes:
    """What C reads of a Lua string: up to its first NUL."""
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


def _quoted_end(data: bytes, start: int) -> int:
    """magnet_scan_quoted_string: the index of the closing quote of the quoted-string
    at data[start], of a backslash that ends the string, or the end."""
    index, size = start + 1, len(data)
    while index < size and data[index] != _QUOTE:
        if data[index] == _BACKSLASH:
            if index + 1 >= size:
                break
            index += 1
        index += 1
    return index


def _quoted_token(data: bytes, start: int) -> tuple[bytes, int]:
    """A quoted-string as it is, closed when it was not; and where the scan goes on."""
    end = _quoted_end(data, start)
    if end < len(data) and data[end] == _QUOTE:
        return data[start:end + 1], end + 1
    if end < len(data):                     # a backslash at the end: escaped and closed
        return data[start:end] + b'\\\\"', end + 1
    return data[start:end] + b'"', end


def _token(data: bytes, start: int, stops: bytes) -> tuple[bytes, int]:
    end = start
    while end < len(data) and data[end] not in stops:
        end += 1
    return data[start:end], end


def _skip(data: bytes, index: int, skipped: bytes) -> int:
    while index < len(data) and data[index] in skipped:
        index += 1
    return index


def header_tokens(data: bytes) -> list[bytes]:
    """magnet_header_tokens: words, quoted-strings and each `,` `;` `=` in order,
    whitespace dropped."""
    data = _c_string(data)
    tokens: list[bytes] = []
    index = _skip(data, 0, _SPACE)
    while index < len(data):
        byte = data[index]
        if byte in b",;=":
            tokens.append(data[index:index + 1])
            index += 1
        elif byte == _QUOTE:
            token, index = _quoted_token(data, index)
            tokens.append(token)
        else:
            token, index = _token(data, index, _SPACE + b",;=")
            tokens.append(token)
        index = _skip(data, index, _SPACE)
    return tokens


def cookie_pairs(data: bytes) -> dict[bytes, bytes]:
    """magnet_cookie_tokens: name => value of a Cookie header (a later name wins); a
    quoted value keeps its quotes, and the semicolons in it."""
    data = _c_string(data)
    pairs: dict[bytes, bytes] = {}
    index = 0
    while True:
        index = _skip(data, index, b";" + _SPACE)
        if index >= len(data):
            return pairs
        name, index = _token(data, index, b"=;" + _SPACE)
        index = _skip(data, index, _SPACE)
        value = b""
        if index < len(data) and data[index] == 0x3D:
            index = _skip(data, index + 1, _SPACE)
            if index < len(data) and data[index] == _QUOTE:
                value, index = _quoted_token(data, index)
            elif index < len(data) and data[index] != 0x3B:
                value, index = _token(data, index, b"=;" + _SPACE)
        pairs[name] = value
        index = data.find(b";", index)
        if index < 0:
            return pairs
        index += 1


def query_pairs(data: bytes) -> dict[bytes, bytes]:
    """magnet_urldec_query: name => value of each `&`-separated piece, `+` as a space
    and %XX decoded (a control character as `_`)."""
    pairs: dict[bytes, bytes] = {}
    for piece in _c_string(data).split(b"&"):
        if piece:
            name, _, value = piece.partition(b"=")
            pairs[_query_part_decoded(name)] = _query_part_decoded(value)
    return pairs


def query_from(table: Any) -> bytes:
    """magnet_urlenc_query: a table's string (or number) keys and their values as a
    query string."""
    return b"&".join(_query_part_encoded(_text(key), True) + b"=" +
                     _query_part_encoded(_text(value), False)
                     for key, value in table.items() if isinstance(key, (bytes, int, float)))


def _text(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def stat_fields(path: bytes, values: dict) -> dict[bytes, Any] | None:
    """The fields lighty.c.stat shows; None for a path that cannot be stat'ed.  As
    lighttpd's stat cache has them: the stat follows symlinks (so `is_link` is never
    true), an ETag only for a file or a directory; `st_*tim` are (seconds,
    nanoseconds), which the Lua side hands out as functions returning both."""
    name = os.fsdecode(path)
    if not name:
        return None
    try:
        st = os.stat(name)
    except (OSError, ValueError):
        return None
    mode = st.st_mode
    fields: dict[bytes, Any] = {
        b"is_file": stat_module.S_ISREG(mode), b"is_dir": stat_module.S_ISDIR(mode),
        b"is_char": stat_module.S_ISCHR(mode), b"is_block": stat_module.S_ISBLK(mode),
        b"is_socket": stat_module.S_ISSOCK(mode), b"is_fifo": stat_module.S_ISFIFO(mode),
        b"is_link": stat_module.S_ISLNK(mode),
        b"st_mtime": int(st.st_mtime), b"st_ctime": int(st.st_ctime),
        b"st_atime": int(st.st_atime), b"st_uid": st.st_uid, b"st_gid": st.st_gid,
        b"st_size": st.st_size, b"st_ino": st.st_ino, b"st_mode": mode,
        b"st_mtim": divmod(st.st_mtime_ns, 1_000_000_000),
        b"st_ctim": divmod(st.st_ctime_ns, 1_000_000_000),
        b"st_atim": divmod(st.st_atime_ns, 1_000_000_000),
    }
    if stat_module.S_ISREG(mode) or stat_module.S_ISDIR(mode):
        fields[b"etag"] = stat_etag(st, values).encode("latin-1")
    content_type = content_type_for(values, name) if stat_module.S_ISREG(mode) else ""
    if content_type:
        fields[b"content-type"] = content_type.encode("latin-1")
    return fields


def _lua_stat_fields(fields: dict[bytes, Any] | None,
                     table_from: Callable[..., Any]) -> dict[bytes, Any] | None:
    """stat_fields for Lua: the (seconds, nanoseconds) pairs as two-element tables."""
    if fields is None:
        return None
    for key in (b"st_mtim", b"st_ctim", b"st_atim"):
        fields[key] = table_from(list(fields[key]))
    return fields


def readdir_names(path: bytes) -> list[bytes] | None:
    try:
        return os.listdir(path)
    except (OSError, ValueError):
        return None


def functions(table_from: Callable[..., Any], settings: Callable[[], dict]) -> dict[bytes, Any]:
    """lighty.c for one Lua state: `table_from` builds its Lua tables, `settings` gives
    the running request's config values (content types and ETags of stat)."""
    def as_table(value: Any) -> Any:
        return None if value is None else table_from(value)

    return {
        b"md": md, b"hmac": hmac_hex, b"digest_eq": digest_eq, b"secret_eq": secret_eq,
        b"b64enc": b64enc, b"b64urlenc": b64urlenc, b"b64dec": b64dec,
        b"b64urldec": b64urldec, b"hexenc": _hex, b"hexdec": hexdec, b"xmlenc": xmlenc,
        b"urlenc": urlenc, b"urldec": urldec, b"urlenc_normalize": urlenc_normalize,
        b"urlenc_query": query_from,
        b"urldec_query": lambda data: table_from(query_pairs(data)),
        b"fspath_simplify": path_simplified, b"quotedenc": quotedenc,
        b"quoteddec": quoteddec, b"bsenc": bsenc, b"bsenc_json": bsenc_json,
        b"bsdec": bsdec,
        b"cookie_tokens": lambda data: table_from(cookie_pairs(data)),
        b"header_tokens": lambda data: table_from(header_tokens(data)),
        b"stat": lambda path: as_table(_lua_stat_fields(stat_fields(path, settings()),
                                                        table_from)),
        b"readdir": lambda path: as_table(readdir_names(path)),
        b"time": lambda: int(time.time()),
        b"hrtime": lambda: divmod(time.time_ns(), 1_000_000_000),
        b"rand": lambda: secrets.randbits(31),
    }
