"""mod_scgi: SCGI and uwsgi backends as lighttpd 1.4.69's mod_scgi: `scgi.server`,
`scgi.balance`, `scgi.debug`, `scgi.map-extensions`, `scgi.protocol` ("scgi", the
default, or "uwsgi").

Which requests go to which backend, authorizers, SCRIPT_NAME and PATH_INFO,
X-Sendfile: worker/gw_cgi.py; connecting, sending, timeouts and errors:
worker/gw_exchange.py.  A request is its CGI environment, framed as the protocol
says, then its body as it is (from memory, with sendfile from its temp file, or as
it arrives):

- SCGI: a netstring (`LENGTH:` NAME NUL VALUE NUL ... `,`), CONTENT_LENGTH first and
  `SCGI` = 1 with the rest;
- uwsgi: a 4-byte header (modifier 0, the size of the variables as 16 bits little
  endian, modifier 0), then each name and value after its 16-bit length.  Variables
  of more than 64 KiB cannot be framed: 431, as lighttpd.

The answer is read as a CGI head (Status:, or an `HTTP/1.x NNN` status line as uwsgi
writes it) and its body, until the backend closes the connection: one connection
per request, as both protocols have it.
"""

from __future__ import annotations

import struct
from typing import Final

from shared.config.directives import Directive, DirectiveValueError, Type
from shared.config.values import Array
from shared.gateway_hosts import Extension, parse_balance, parse_servers

from ..backend import Backend
from ..gateway import PairEncoder
from ..gw_cgi import CgiExchange, CgiGatewayModule
from ..module import HandlerResult
from ..request import Request

PROTOCOLS: Final = ("scgi", "uwsgi")
UWSGI_MAX: Final = 0xFFFF
_UWSGI_LENGTH: Final = struct.Struct("<H")


def _protocol(value: str) -> str:
    if value not in PROTOCOLS:
        raise DirectiveValueError(f'unexpected value for scgi.protocol: "{value}"; '
                                  'expected "scgi" or "uwsgi"')
    return value


def _servers(value: Array) -> tuple[Extension, ...]:
    """scgi.server: a bin-path runs through the shell, as lighttpd's mod_scgi runs it."""
    return parse_servers(value, bin_shell=True)


DIRECTIVES: Final = (
    Directive("scgi.server", Type.ARRAY_KVANY, (), convert=_servers),
    Directive("scgi.balance", Type.STRING, "fair", convert=parse_balance),
    Directive("scgi.debug", Type.INT, 0),
    Directive("scgi.protocol", Type.STRING, "scgi", convert=_protocol),
    Directive("scgi.map-extensions", Type.ARRAY_KVSTRING, ()),
)


def _scgi_pair(name: bytes, value: bytes) -> bytes:
    return name + b"\0" + value + b"\0"


def _uwsgi_pair(name: bytes, value: bytes) -> bytes:
    if len(name) > UWSGI_MAX or len(value) > UWSGI_MAX:
        raise ValueError("a uwsgi variable longer than 64 KiB")
    return _UWSGI_LENGTH.pack(len(name)) + name + _UWSGI_LENGTH.pack(len(value)) + value


_SCGI_PAIRS: Final = PairEncoder(_scgi_pair)
_UWSGI_PAIRS: Final = PairEncoder(_uwsgi_pair)
_SCGI_MARK: Final = _scgi_pair(b"SCGI", b"1")


def scgi_request(env: dict[str, str]) -> bytes:
    """The SCGI header netstring (CONTENT_LENGTH is first in `env`)."""
    return scgi_head(_SCGI_PAIRS.block(env))


def scgi_head(block: bytes) -> bytes:
    """The SCGI header netstring of encoded variables (CONTENT_LENGTH first)."""
    block += _SCGI_MARK
    return b"%d:%s," % (len(block), block)


def uwsgi_request(env: dict[str, str]) -> bytes | None:
    """The uwsgi packet header and variables; None when they exceed 64 KiB."""
    try:
        return uwsgi_head(_UWSGI_PAIRS.block(env))
    except ValueError:
        return None


def uwsgi_head(block: bytes) -> bytes | None:
    """The uwsgi packet header and encoded variables; None past 64 KiB."""
    if len(block) > UWSGI_MAX:
        return None
    return b"\0" + _UWSGI_LENGTH.pack(len(block)) + b"\0" + block


class ScgiExchange(CgiExchange):
    """One request to an SCGI or uwsgi backend."""

    __slots__ = ()

    def prepare(self) -> HandlerResult:
        uwsgi = self.request.settings.values["scgi.protocol"] == "uwsgi"
        try:
            block = self.environment(_UWSGI_PAIRS if uwsgi else _SCGI_PAIRS)
            head = None if block is None else uwsgi_head(block) if uwsgi else scgi_head(block)
        except ValueError:                    # a uwsgi variable of more than 64 KiB
            block, head = b"", None
        if block is None:
            return self.error(411, "")
        if head is None:
            self.module.log(f"uwsgi request variables too long for {self.request.uri_path}")
            return self.error(431, "")
        if self.authorizer:
            self.outgoing = head               # the body stays for the responder
        else:
            self.send_body(head, whole_raw=True)
        return None

    def take(self, data: bytes) -> HandlerResult:
        return self.output(data)

    def closed(self, err: OSError | None) -> HandlerResult:
        if err is not None or not self.received:
            return None                       # a failure: 502
        return self.output_ended(False)


class Module(CgiGatewayModule):
    name = "scgi"
    source = "mod_scgi.c"
    directives = DIRECTIVES

    def new_exchange(self, request: Request, extension: Extension, backend: Backend,
                     authorizer: bool) -> CgiExchange:
        return ScgiExchange(self, request, extension, backend, authorizer)
