"""The Host check: lighttpd's host-strict and host-normalize rules, in linear time.

Every byte of a Host header (or of an absolute-form request-target's authority) reaches
this code, so it uses no regular expression with nested quantifiers, only splits and
set tests: its cost grows with the length of the value and nothing else.

What it accepts and how it rewrites it is lighttpd 1.4.69's, checked side by side
(tests/worker/test_host.py): names are lowercased labels of letters, digits and `-`
(not at a label's start), one trailing dot is dropped, a name whose last label is
numeric must be a dotted-quad IPv4 address; IPv4 and bracketed IPv6 literals take
their canonical form; a port is 1-65535 and dropped when it is the scheme's default.
So `Denied.Example.:80` is `denied.example` to every `$HTTP["host"]` condition.
"""

from __future__ import annotations

import socket
from typing import Final

from .errors import BadRequest

MAX_LENGTH: Final = 1024                  # lighttpd: "uri-authority too long -> 400"
_LABEL_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_DIGITS: Final = frozenset("0123456789")
_IPV6_CHARS: Final = frozenset("0123456789abcdef:.")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_MEMO_SIZE: Final = 1024

# checked values by scheme: clients send the same few Host values again and again
_memo: Final[dict[str, dict[str, str]]] = {"http": {}, "https": {}}


def normalize_host(value: str, scheme: str = "http") -> str:
    """The Host as conditions see it; BadRequest(400) if it is not a valid host."""
    memo = _memo.get(scheme)
    if memo is None:
        memo = _memo.setdefault(scheme, {})
    known = memo.get(value)
    if known is not None:
        return known
    host = _normalized(value, _DEFAULT_PORTS.get(scheme, 0))
    if len(memo) >= _MEMO_SIZE:
        memo.clear()
    memo[value] = host
    return host


def _bad(reason: str) -> BadRequest:
    return BadRequest(400, f"bad Host: {reason}")


def _normalized(value: str, default_port: int) -> str:
    host = value.strip(" \t").lower()
    if not host:
        raise _bad("empty")
    if len(host) >= MAX_LENGTH:
        raise _bad("too long")
    if host[0] == "[":
        end = host.find("]")
        if end < 0:
            raise _bad("no closing bracket")
        name, rest = _ipv6(host[1:end]), host[end + 1:]
        if rest and rest[0] != ":":
            raise _bad("text after the address")
        port_text = rest[1:]
    else:
        text, _, port_text = host.partition(":")
        name = _hostname(text)
    port = _port(port_text)
    return f"{name}:{port}" if port and port != default_port else name


def _hostname(name: str) -> str:
    """A DNS name or a dotted-quad IPv4 address (canonical, as inet_aton reads it)."""
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise _bad("empty name")
    labels = name.split(".")
    for label in labels:
        if not label or label[0] == "-" or not _LABEL_CHARS.issuperset(label):
            raise _bad("not a host name")
    if not _DIGITS.issuperset(labels[-1]):
        return name
    if len(labels) != 4 or not all(_DIGITS.issuperset(label) for label in labels):
        raise _bad("a numeric name that is no IPv4 address")
    try:
        return socket.inet_ntoa(socket.inet_aton(name))
    except OSError:
        return name          # 999.1.1.1: a valid-looking name lighttpd keeps as it is


def _ipv6(inner: str) -> str:
    if not inner or not _IPV6_CHARS.issuperset(inner):
        raise _bad("not an IPv6 address")
    try:
        packed = socket.inet_pton(socket.AF_INET6, inner)
    except OSError:
        raise _bad("not an IPv6 address") from None
    return f"[{socket.inet_ntop(socket.AF_INET6, packed)}]"


def _port(text: str) -> int:
    """0 for no port (a bare trailing `:` included, as lighttpd ignores it).

    A port with a leading zero is refused: lighttpd reads `:010` as octal (port 8) and
    `:080` as invalid, RFC 3986 reads both as decimal; a Host that two readers read
    differently is refused rather than guessed at."""
    if not text:
        return 0
    if len(text) > 5 or text[0] == "0" or not _DIGITS.issuperset(text):
        raise _bad("bad port")
    port = int(text)
    if port > 65535:
        raise _bad("port out of range")
    return port
