"""The checks RFC 9113 asks of a received field block (8.2, 8.3), made by the session
on each request and trailer block.

Each field is checked once with a regular expression, and a field already found
valid (the same User-Agent, Accept, :method, :authority ... on every request of a
client; not :path, which seldom repeats) is a set lookup.  What is refused is what
the h2 library's inbound validation refuses (tests/worker/test_h2_fields.py asks
both), and the pseudo-field values 8.3.1 rules out that it lets through (empty ones,
a :path that is no absolute path), as lighttpd refuses them; a violation makes the
request malformed, which RFC 9113 8.1.1 makes an error of its stream only: the
session answers it 400, as lighttpd does, and goes on:
- a field name empty, with upper case, a byte <= 0x20 or >= 0x7f, or a colon past
  its first byte; a value with NUL, CR or LF, or starting or ending with a space or
  tab;
- connection-specific fields (Connection, Keep-Alive, Proxy-Connection,
  Transfer-Encoding, Upgrade), TE other than "trailers";
- pseudo-fields: unknown ones (":status" in a request), repeated, after a regular
  field, any in trailers; a request without :method, or (but for CONNECT) without
  :scheme and :path; an empty :method, :scheme or :authority; a :path that is not
  an absolute path (or `*` for OPTIONS); an ordinary CONNECT with :scheme or :path;
  :protocol without CONNECT;
- a request with neither :authority nor Host, with two Hosts, or with both and
  differing (an empty Host is none).
"""

from __future__ import annotations

import re
from typing import Final

from .h2_connection import ProtocolError

_NAME: Final = re.compile(rb"[\x21-\x39\x3b-\x40\x5b-\x7e]+")      # no upper case, no colon
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
_CONNECTION_SPECIFIC: Final = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                                         b"transfer-encoding", b"upgrade"})
_REQUEST_PSEUDO: Final = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
VALID_KEPT: Final = 4096                      # fields remembered as valid, per worker ...
VALID_KEPT_SIZE: Final = 256                  # ... each this long at most
_valid: Final[set[tuple[bytes, bytes]]] = set()


def check_request(fields: list[tuple[bytes, bytes]]) -> None:
    """Raises ProtocolError when the request's field block breaks a rule above."""
    pseudo: dict[bytes, bytes] = {}
    regular_seen = False
    hosts = []
    for field in fields:
        name = field[0]
        if name[:1] == b":":
            if regular_seen:
                raise ProtocolError(f"pseudo-field {name!r} after a regular field")
            if name not in _REQUEST_PSEUDO:
                raise ProtocolError(f"pseudo-field {name!r} in a request")
            if name in pseudo:
                raise ProtocolError(f"repeated pseudo-field {name!r}")
            if field not in _valid:
                _check_value(field[1])
                if name != b":path":            # the one that seldom repeats
                    _remember(field)
            pseudo[name] = field[1]
            continue
        regular_seen = True
        if field not in _valid:
            _check_regular(field)
        if name == b"host" and field[1]:      # an empty field is none
            hosts.append(field[1])
    _check_pseudo(pseudo)
    _check_host(pseudo.get(b":authority"), hosts)


def check_trailers(fields: list[tuple[bytes, bytes]]) -> None:
    """Raises ProtocolError when trailer fields break a rule above."""
    for field in fields:
        if field[0][:1] == b":":
            raise ProtocolError(f"pseudo-field {field[0]!r} in trailers")
        if field not in _valid:
            _check_regular(field)


def _check_regular(field: tuple[bytes, bytes]) -> None:
    name, value = field
    if not _NAME.fullmatch(name):
        raise ProtocolError(f"field name {name!r} not allowed")
    if name in _CONNECTION_SPECIFIC:
        raise ProtocolError(f"connection-specific field {name!r}")
    if name == b"te" and value.lower() != b"trailers":
        raise ProtocolError(f"TE {value!r}")
    _check_value(value)
    _remember(field)


def _remember(field: tuple[bytes, bytes]) -> None:
    """A field found valid, kept when short (a pseudo-field's name starts with a colon,
    so no regular field is taken for it)."""
    if len(field[0]) + len(field[1]) <= VALID_KEPT_SIZE:
        if len(_valid) >= VALID_KEPT:       # fields seen once do not hold the set
            _valid.clear()
        _valid.add(field)


def _check_value(value: bytes) -> None:
    if _BAD_VALUE.search(value):
        raise ProtocolError(f"field value {value[:64]!r} not allowed")


def _check_pseudo(pseudo: dict[bytes, bytes]) -> None:
    method = pseudo.get(b":method")
    if method is None:
        raise ProtocolError("request without :method")
    if method == b"CONNECT" and b":protocol" not in pseudo:
        if b":scheme" in pseudo or b":path" in pseudo:
            raise ProtocolError("ordinary CONNECT with :scheme or :path")
        return
    if method != b"CONNECT" and b":protocol" in pseudo:
        raise ProtocolError(":protocol without CONNECT")
    if not method:
        raise ProtocolError("empty :method")
    if not pseudo.get(b":scheme") or b":path" not in pseudo:
        raise ProtocolError("request without :scheme or :path")
    path = pseudo[b":path"]
    if path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"):
        raise ProtocolError(f":path {path[:64]!r} is no absolute path")   # 8.3.1
    if pseudo.get(b":authority", b"x") == b"":
        raise ProtocolError("empty :authority")


def _check_host(authority: bytes | None, hosts: list[bytes]) -> None:
    if len(hosts) > 1:
        raise ProtocolError("request with several Host fields")
    if authority is None and not hosts:
        raise ProtocolError("request with neither :authority nor Host")
    if authority is not None and hosts and hosts[0] != authority:
        raise ProtocolError(":authority and Host differ")
