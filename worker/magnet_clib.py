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
import re
import secrets
import stat as stat_module
import time
from typing import Any, Callable
from urllib.parse import quote_from_bytes

from .urlnorm import simplify_path
from .static import stat_etag, content_type_for

_URLENC_SAFE = b"!()*-._~/"
_QUERY_SAFE = b"!()*-._~/="
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_XML_ESCAPED = frozenset(b"<>&'\"`") | frozenset(range(32)) | {127}
_BS_NAMED = {ord("\t"): b"\\t", ord("\n"): b"\\n", ord("\r"): b"\\r", ord('"'): b'\\"',
             ord("\\"): b"\\\\"}
_TOKEN_SPLIT = re.compile(rb'"(?:[^"\\]|\\.)*"|[;=,]|[^\s;=,"]+')
_DIGESTS = {b"md5": "md5", b"sha1": "sha1", b"sha256": "sha256", b"sha512": "sha512"}


def _hex(data: bytes) -> bytes:
    return binascii.hexlify(data).upper()


def _unpadded(data: bytes, altchars: bytes | None) -> bytes | None:
    """Decode base64 with or without its padding; None for anything invalid."""
    text = data.rstrip(b"=")
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), altchars=altchars,
                                validate=True)
    except (binascii.Error, ValueError):
        return None


def md(algorithm: bytes, data: bytes) -> bytes | None:
    name = _DIGESTS.get(algorithm.lower())
    return None if name is None else _hex(hashlib.new(name, data).digest())


def hmac_hex(algorithm: bytes, key: bytes, data: bytes) -> bytes | None:
    name = _DIGESTS.get(algorithm.lower())
    return None if name is None else _hex(hmac.new(key, data, name).digest())


def digest_eq(a: bytes, b: bytes) -> bool:
    """Timing-safe comparison of two hex digests, whatever their case."""
    return hmac.compare_digest(a.lower(), b.lower())


def secret_eq(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def b64enc(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def b64urlenc(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64dec(data: bytes) -> bytes | None:
    return _unpadded(data, None)


def b64urldec(data: bytes) -> bytes | None:
    return _unpadded(data, b"-_")


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
    """%XX decoded (a NUL becomes `_`, as in lighttpd's path decoding); `+` stays."""
    return _PERCENT.sub(lambda m: bytes((int(m.group(1), 16) or ord("_"),)), data)


def _query_part_decoded(data: bytes) -> bytes:
    return _PERCENT.sub(lambda m: bytes((int(m.group(1), 16),)), data.replace(b"+", b" "))


def _query_part_encoded(data: bytes) -> bytes:
    return quote_from_bytes(data, safe=_QUERY_SAFE).replace("%20", "+").encode("ascii")


def urlenc_normalize(data: bytes) -> bytes:
    """A URL with the %-escapes of characters that need none decoded, the others in
    upper case, and what must be escaped escaped (the query keeps `+`)."""
    path, mark, query = data.partition(b"?")
    path = urlenc(urldec(path))
    if mark:
        query = b"&".join(b"=".join(_query_part_encoded(_query_part_decoded(piece))
                                    for piece in pair.split(b"=", 1))
                          for pair in query.split(b"&"))
    return path + mark + query


def fspath_simplify(data: bytes) -> bytes:
    path = data.decode("utf-8", "surrogateescape")
    return simplify_path(path if path.startswith("/") else "/" + path).encode(
        "utf-8", "surrogateescape")


def quotedenc(data: bytes) -> bytes:
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def quoteddec(data: bytes) -> bytes | None:
    if not data.startswith(b'"'):
        return data
    out = bytearray()
    index = 1
    while index < len(data):
        byte = data[index]
        if byte == ord('"'):
            return bytes(out)
        if byte == ord("\\") and index + 1 < len(data):
            index += 1
            byte = data[index]
        out.append(byte)
        index += 1
    return None


def bsenc(data: bytes) -> bytes:
    """Backslash escapes for `"`, `\\` and control characters (\\uXXXX); bytes above
    0x7e pass as they are."""
    return b"".join(_BS_NAMED.get(byte) or (b"\\u%04x" % byte if byte < 32 else
                                            bytes((byte,))) for byte in data)


def bsenc_json(data: bytes) -> bytes:
    """As bsenc, but control characters and every byte above 0x7e as \\xXX."""
    return b"".join(_BS_NAMED.get(byte) or (b"\\x%02X" % byte if byte < 32 or byte > 126
                                            else bytes((byte,))) for byte in data)


_BS_ESCAPE = re.compile(rb"\\(x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|[0-7]{1,3}|.)", re.S)


def _bs_unescaped(match: re.Match) -> bytes:
    text = match.group(1)
    lead = text[:1]
    if lead == b"x":
        return bytes((int(text[1:], 16),))
    if lead == b"u":
        return chr(int(text[1:], 16)).encode("utf-8", "surrogatepass")
    if lead.isdigit() and lead < b"8":
        return bytes((int(text, 8) & 0xFF,))
    return text


def bsdec(data: bytes) -> bytes:
    return _BS_ESCAPE.sub(_bs_unescaped, data)


def header_tokens(data: bytes) -> list[bytes]:
    return _TOKEN_SPLIT.findall(data)


_COOKIE = re.compile(rb'\s*([^=;]*?)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;]*?))?\s*(?:;|$)')


def cookie_pairs(data: bytes) -> dict[bytes, bytes]:
    """name => value of a Cookie header; a quoted value keeps its quotes (and the
    semicolons in it)."""
    pairs: dict[bytes, bytes] = {}
    for match in _COOKIE.finditer(data):
        name, value = match.group(1), match.group(2) or b""
        if name or value:
            pairs[name] = value
    return pairs


def query_pairs(data: bytes) -> dict[bytes, bytes]:
    pairs: dict[bytes, bytes] = {}
    for piece in data.split(b"&"):
        if piece:
            name, _, value = piece.partition(b"=")
            pairs[_query_part_decoded(name)] = _query_part_decoded(value)
    return pairs


def query_from(table: Any) -> bytes:
    return b"&".join(_query_part_encoded(_text(key)) + b"=" + _query_part_encoded(_text(value))
                     for key, value in table.items())


def _text(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def stat_fields(path: bytes, values: dict) -> dict[bytes, Any] | None:
    """The table lighty.c.stat returns; None for a path that cannot be stat'ed."""
    name = os.fsdecode(path)
    try:
        st = os.stat(name)
    except (OSError, ValueError):
        return None
    mode = st.st_mode
    fields: dict[bytes, Any] = {
        b"is_file": stat_module.S_ISREG(mode), b"is_dir": stat_module.S_ISDIR(mode),
        b"is_char": stat_module.S_ISCHR(mode), b"is_block": stat_module.S_ISBLK(mode),
        b"is_socket": stat_module.S_ISSOCK(mode), b"is_fifo": stat_module.S_ISFIFO(mode),
        b"is_link": os.path.islink(name),
        b"st_mtime": int(st.st_mtime), b"st_ctime": int(st.st_ctime),
        b"st_atime": int(st.st_atime), b"st_uid": st.st_uid, b"st_gid": st.st_gid,
        b"st_size": st.st_size, b"st_ino": st.st_ino,
        b"etag": stat_etag(st, values).encode("latin-1"),
    }
    content_type = content_type_for(values, name) if stat_module.S_ISREG(mode) else ""
    if content_type:
        fields[b"content-type"] = content_type.encode("latin-1")
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
        b"fspath_simplify": fspath_simplify, b"quotedenc": quotedenc,
        b"quoteddec": quoteddec, b"bsenc": bsenc, b"bsenc_json": bsenc_json,
        b"bsdec": bsdec,
        b"cookie_tokens": lambda data: table_from(cookie_pairs(data)),
        b"header_tokens": lambda data: table_from(header_tokens(data)),
        b"stat": lambda path: as_table(stat_fields(path, settings())),
        b"readdir": lambda path: as_table(readdir_names(path)),
        b"time": lambda: int(time.time()),
        b"hrtime": lambda: divmod(time.time_ns(), 1_000_000_000),
        b"rand": lambda: secrets.randbits(31),
    }
