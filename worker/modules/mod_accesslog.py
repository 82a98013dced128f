"""mod_accesslog: one line per request, in lighttpd's (Apache's) log format.

The format is compiled once, when the config is checked (the `accesslog.format`
converter): into a tuple of `Field` objects, one per field that varies, and the
literal text around them; what is constant (literals, %l, %%, %P, an empty %{}i
...) is in that text, never made per request.  Per request the module puts each
field's text in its place, escapes the texts only when one check over all of them
finds something to escape, joins and encodes the line and hands it to its log's
buffer; the `%t` field makes its text once per second.  The line is written when the
response has been sent in full or the connection was lost (the core calls
handle_request_done then), so `%b`, `%O` and `%X` tell what really went out.
`answer` is the core's record of that (`request.plugin_ctx["answer"]`, see
worker/connection.py: bytes out, header length, bytes in, keep-alive, aborted, end
time, request count on the connection).

Where lines go (a choice, stated here because lighttpd differs): lighttpd opens every
log in the master before it forks and drops privileges, and starts a `|command` logger
once.  pylighttpd opens each log lazily, in each worker, the first time a request uses
it: files with O_APPEND, so the lines of all workers interleave whole (one write() per
line is atomic for appends); for `accesslog.filename = "|command"` each worker starts
its own logger (`/bin/sh -c command`) and writes to its pipe; `|cat >> file` loggers
append whole lines too.  Files are opened after chroot and with the worker's user, so
the path must be reachable and writable there; the master checks that when it loads
the config (`Module.log_files`, master/configload.py), so a start-up with a log the
workers could not open fails, as lighttpd's does, and a reload with one is refused.
SIGUSR1 (logrotate) reopens files; pipes stay.  Lines are buffered, as lighttpd's are,
and written once the buffer fills, about once a second (handle_trigger) and when the
worker exits, whether it stops or a reload retires it (shared/log.py close_all).

`accesslog.use-syslog` sends lines to syslog at `accesslog.syslog-level` (default 6,
LOG_INFO).  `accesslog.escaping`: "default" escapes as lighttpd does (`"` and `\\`
backslashed, \\t \\n ..., other non-printable bytes and bytes >= 0x80 as \\xHH);
"json" makes the fields safe inside JSON strings.

Codes (lighttpd 1.4.69): %% %a %A %b %B %{name}C %D %{name}e %f %h %H %{name}i %I %k %l
%m %{name}n %{name}o %O %p %{local|remote|canonical}p %P %q %r %s %>s %<s %t
%{strftime}t %{[begin:|end:]sec|msec|usec|nsec|msec_frac|usec_frac|nsec_frac}t %T
%{s|ms|us|ns}T %u %U %v %V %X.  %u, %e and %n read `request.env` (what auth / setenv
modules set for the backends); without it they log "-".
"""

from __future__ import annotations

import math
import syslog
import time
from typing import Any, Callable, Final

from shared import log
from shared.config import ConfigTree, Position
from shared.config.directives import (CheckResult, Directive, DirectiveValueError, Scope,
                                      Type)

from ..bytesets import all_kept, table_keeping
from ..connection import Answer
from ..http import has_no_body, header_characters
from ..module import Module as BaseModule
from ..request import Request

DEFAULT_FORMAT: Final = '%h %V %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"'
MAX_FIELDS: Final = 127
_BACKSLASH: Final = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_CODES: Final = frozenset("aAbBCDefhHiIkmnoOpPqrstTuUvVX")
_TIME_UNITS: Final = {"": 1, "s": 1, "sec": 1, "ms": 1000, "msec": 1000, "us": 10**6,
                      "usec": 10**6, "ns": 10**9, "nsec": 10**9}
_EPOCH_UNITS: Final = {"sec": 1, "msec": 1000, "usec": 10**6, "nsec": 10**9}
_FRAC_UNITS: Final = {"msec_frac": 3, "usec_frac": 6, "nsec_frac": 9}


class CompiledFormat:
    """A parsed accesslog.format: the source text, the fields that vary (`escaped`:
    the places of those whose text is escaped) and `parts`, the line's template: the
    literal text before each field, then to the line's end (its newline included),
    with a place between each two for a field's text."""

    __slots__ = ("text", "fields", "escaped", "parts")

    def __init__(self, text: str, literals: tuple[str, ...], fields: tuple[Field, ...]
                 ) -> None:
        self.text = text
        self.fields = fields
        self.escaped = tuple([index for index, field in enumerate(fields)
                              if isinstance(field, EscapedField)])
        parts = [literals[0]]
        for literal in literals[1:]:
            parts += ("", literal)
        self.parts = tuple(parts)

    def render(self, request: Request, answer: Answer, escape: Callable[[str], str]
               ) -> bytes:
        """The log line's bytes, ending in a newline: the fields' texts put in their
        places among the literals, joined and encoded once.  One check over all the
        texts decides whether any needs escaping (see worker/bytesets.py); only then
        are the texts of the escaped fields escaped."""
        parts = list(self.parts)
        place = 1
        for field in self.fields:
            parts[place] = field.text(request, answer)
            place += 2
        if not all_kept("".join(parts[1::2]), _PLAIN_TABLE):
            for index in self.escaped:
                place = 2 * index + 1
                parts[place] = escape(parts[place])
        return "".join(parts).encode("utf-8", "surrogateescape")

    def __repr__(self) -> str:
        return f"CompiledFormat({self.text!r})"


# --------------------------------------------------------------------- parsing
def unbackslash(text: str) -> str:
    """lighttpd's backslash escapes in accesslog.format: \\t \\n ..., any other
    character after a backslash stands for itself, a trailing backslash is dropped."""
    if "\\" not in text:
        return text
    out = []
    chars = iter(text)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, None)
        if following is not None:
            out.append(_BACKSLASH.get(following, following))
    return "".join(out)


def parse_format(text: str) -> list[tuple[str, str]]:
    """(code, argument) pairs; code "" is a literal.  %% and %l become literals and
    %< / %> are dropped, as lighttpd does.  Raises DirectiveValueError."""
    items: list[tuple[str, str]] = []

    def literal(piece: str) -> None:
        if items and items[-1][0] == "":
            items[-1] = ("", items[-1][1] + piece)
        else:
            items.append(("", piece))

    i, end = 0, len(text)
    while i < end:
        percent = text.find("%", i)
        if percent < 0:
            literal(text[i:])
            break
        if percent > i:
            literal(text[i:percent])
        i = percent + 1
        if i == end:
            raise DirectiveValueError("% must be followed by a format-specifier")
        argument = ""
        if text[i] == "{":
            close = text.find("}", i + 1)
            if close < 0 or close == i + 1:
                raise DirectiveValueError(
                    "%{...} must contain string and %{ must be terminated by }")
            argument = text[i + 1:close]
            i = close + 1
        else:
            if text[i] in "<>":
                i += 1
            if i < end and text[i] in "%l":
                literal("%" if text[i] == "%" else "-")
                i += 1
                continue
        if i >= end or text[i] not in _CODES:
            raise DirectiveValueError(
                "% or %{...} must be followed by a valid format-specifier")
        items.append((text[i], argument))
        i += 1
    if len(items) > MAX_FIELDS - 1:
        raise DirectiveValueError("too many fields (>= 127) in accesslog.format")
    return items


def compile_format(text: str) -> CompiledFormat:
    """The Directive converter of accesslog.format (runs once, at config load)."""
    if not text:
        raise DirectiveValueError("parsing accesslog-definition failed: empty format")
    items = parse_format(unbackslash(text))
    strftime_fields = 0
    literals = [""]
    fields: list[Field] = []
    for code, argument in items:
        if code == "t" and not _time_option(argument)[1]:
            strftime_fields += 1
            if strftime_fields > 1:
                raise DirectiveValueError(
                    "you may not use strftime timestamp format %{}t twice in the same "
                    f"access log: {text}")
        made = argument if code == "" else _field(code, argument, text)
        if isinstance(made, str):
            literals[-1] += made
        else:
            fields.append(made)
            literals.append("")
    literals[-1] += "\n"
    return CompiledFormat(text, tuple(literals), tuple(fields))


def _time_option(argument: str) -> tuple[bool, str]:
    """(use request start, numeric unit or "") of a %{...}t argument; "sec" counts
    as a strftime field in lighttpd's twice-check, so it is reported as ""."""
    begin = argument.startswith("begin:")
    if begin:
        argument = argument[6:]
    elif argument.startswith("end:"):
        argument = argument[4:]
    if argument in _FRAC_UNITS or (argument in _EPOCH_UNITS and argument != "sec"):
        return begin, argument
    return begin, ""


# --------------------------------------------------------------------- helpers
def _target_path_form(request: Request) -> str:
    target = request.target
    if not target or target.startswith("/") or target == "*":
        return target
    query = "?" + request.uri_query if "?" in target else ""
    return request.uri_path_raw + query


def _elapsed(answer: Answer, request: Request) -> float:
    return answer.end_monotonic - request.start


def _when(request: Request, answer: Answer, begin: bool) -> float:
    return answer.end_time - _elapsed(answer, request) if begin else answer.end_time


_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_URL_SAFE: Final = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/?#[]")
_URL_SAFE_TABLE: Final = table_keeping(_URL_SAFE)
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")


def normalize_url(text: str) -> str:
    """The target as lighttpd keeps it after its basic URL normalisation (what %U and
    %q log): unsafe bytes %XX-encoded, %XX of unreserved characters decoded, other
    %xx upper-cased."""
    if all_kept(text, _URL_SAFE_TABLE):
        return text
    data = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    i, end = 0, len(data)
    while i < end:
        byte = data[i]
        if byte == 0x25 and i + 2 < end and data[i + 1] in _HEX and data[i + 2] in _HEX:
            value = int(data[i + 1:i + 3], 16)
            out += bytes((value,)) if value in _UNRESERVED else b"%%%02X" % value
            i += 3
            continue
        out += bytes((byte,)) if byte in _URL_SAFE else b"%%%02X" % byte
        i += 1
    return out.decode("ascii")


# ---------------------------------------------------------------------- fields
class Field:
    """One varying part of a line.  `text` gives it raw; a field whose text may hold
    what the escaping changes is an EscapedField, escaped when the line is made (one
    check over all of a line's texts, see CompiledFormat.render).  Fields are classes,
    not closures: compiled, a call of `text` is a native method call, not a Python
    call with its arguments boxed."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        raise NotImplementedError


class EscapedField(Field):
    """A field with text from the client, a backend or the file system."""

    __slots__ = ()


class RemoteAddr(Field):
    """%a %h: the client's address."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        return request.remote_ip or "-"


class LocalAddr(Field):
    """%A: the address of the socket the request came in on."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        spec = request.socket_spec
        colon = spec.rfind(":")
        return spec[:colon] if colon >= 0 else spec


class LocalPort(Field):
    """%p %{local}p %{canonical}p: the port of the socket the request came in on."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        spec = request.socket_spec
        colon = spec.rfind(":")
        return spec[colon + 1:] if colon >= 0 else ""


class RemotePort(Field):
    """%{remote}p: the client's port."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        return str(request.remote_port)


class Env(EscapedField):
    """%{name}e %{name}n %u: a variable the modules set for backends (request.env)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def text(self, request: Request, answer: Answer) -> str:
        env = request.env
        value = env.get(self.name) if env else None
        return value if value else "-"


class RequestLine(EscapedField):
    """%r: method, target and protocol, as the client sent them (before a rewrite,
    with a fragment); the method is a token and the protocol digits, so escaping the
    whole line escapes just the target."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        target = request.target_orig
        if not target:      # not even a request line could be parsed
            return "  "
        if target[0] != "/":
            target = _target_path_form(request)
        return f"{request.method} {target} HTTP/{request.version}"


class Status(Field):
    """%s %>s: the answer's status."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        return str(request.response.status)


class BytesBody(Field):
    """%b %B: bytes of the body sent."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        sent = answer.bytes_out
        if sent <= 0:
            return "-"
        body = sent - answer.head_len
        return str(body) if body > 0 else "0"


class BytesOut(Field):
    """%O: bytes sent, head included."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        return str(answer.bytes_out) if answer.bytes_out else "-"


class BytesIn(Field):
    """%I: bytes received for the request."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        return str(answer.bytes_in) if answer.bytes_in else "-"


class Cookie(EscapedField):
    """%{name}C: a cookie's value, empty when the client sent none."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def text(self, request: Request, answer: Answer) -> str:
        cookies = request.headers.get("cookie")
        if not cookies:
            return ""
        for part in cookies.split(";"):
            name, eq, value = part.strip(" \t").partition("=")
            if eq and name == self.name:
                return header_characters(value.rstrip(" \t"))
        return ""


class Duration(Field):
    """%D %{ms|us|ns}T: the time taken, rounded up, in 1/`scale` seconds."""

    __slots__ = ("scale",)

    def __init__(self, scale: int) -> None:
        self.scale = scale

    def text(self, request: Request, answer: Answer) -> str:
        elapsed = _elapsed(answer, request)
        return str(math.ceil(elapsed * self.scale)) if elapsed > 0 else "-1"


class WholeSeconds(Field):
    """%T %{s}T: whole seconds of wall clock taken, as lighttpd counts them."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        end = answer.end_time
        return str(int(end) - int(end - _elapsed(answer, request)))


class SecondFraction(Field):
    """%{[begin:|end:]msec_frac|usec_frac|nsec_frac}t: the fraction of the second,
    rounded up as lighttpd does."""

    __slots__ = ("begin", "digits", "divisor")

    def __init__(self, begin: bool, digits: int) -> None:
        self.begin = begin
        self.digits = digits
        self.divisor = 10 ** (9 - digits)

    def text(self, request: Request, answer: Answer) -> str:
        ns = int((_when(request, answer, self.begin) % 1) * 10**9)
        digits = self.digits
        return f"{-(-ns // self.divisor):0{digits}d}"[-digits:]


class Epoch(Field):
    """%{[begin:|end:]sec|msec|usec|nsec}t: the time since the epoch in 1/`scale`
    seconds (whole seconds rounded down, smaller units up, as lighttpd)."""

    __slots__ = ("begin", "scale")

    def __init__(self, begin: bool, scale: int) -> None:
        self.begin = begin
        self.scale = scale

    def text(self, request: Request, answer: Answer) -> str:
        when = _when(request, answer, self.begin)
        if self.scale == 1:
            return str(int(when))
        return str(math.ceil(when * self.scale))


class Stamp(Field):
    """%t %{strftime}t: the time as `strftime` formats it, made once a second and the
    same text for every line of that second."""

    __slots__ = ("strftime", "begin", "made_for", "made")

    def __init__(self, strftime: str, begin: bool) -> None:
        self.strftime = strftime
        self.begin = begin
        self.made_for = -1
        self.made = ""

    def text(self, request: Request, answer: Answer) -> str:
        second = int(_when(request, answer, True)) if self.begin else int(answer.end_time)
        if second != self.made_for:
            self.made = time.strftime(self.strftime, time.localtime(second))
            self.made_for = second
        return self.made


class RequestHeader(EscapedField):
    """%{name}i: a header of the request."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def text(self, request: Request, answer: Answer) -> str:
        value = request.headers.get(self.name)     # its octets, escaped as the line's
        return header_characters(value) if value else "-"


class ResponseLength(Field):
    """%{Content-Length}o: the length announced, for answers that have one."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        status = request.response.status
        return str(answer.length) if status >= 200 and not has_no_body(status) else "-"


class ResponseConnection(Field):
    """%{Connection}o: what the answer said of the connection."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        if not answer.keep_alive:
            return "close"
        return "keep-alive" if request.version == "1.0" else "-"


class ResponseHeader(EscapedField):
    """%{name}o: a header of the answer."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def text(self, request: Request, answer: Answer) -> str:
        value = request.response.get_header(self.name)
        return header_characters(value) if value else "-"


class Filename(EscapedField):
    """%f: the file the request mapped to; for an error page, its file if it has one."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        page = request.response.page_file
        return (request.physical_path if page is None else page) or "-"


class Protocol(Field):
    """%H: the request's protocol."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        return f"HTTP/{request.version}" if request.target else ""


class Method(Field):
    """%m: the request's method."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        return request.method if request.target else ""


class Query(EscapedField):
    """%q: the query string, normalised as lighttpd keeps it."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        return normalize_url(request.uri_query)


class UrlPath(EscapedField):
    """%U: the path of the target, normalised as lighttpd keeps it."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        return normalize_url(_target_path_form(request).partition("?")[0])


class ServerName(EscapedField):
    """%v: server.name, else the request's host."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        return request.values["server.name"] or request.host or "-"


class Host(EscapedField):
    """%V: the request's host."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        return request.host or "-"


class ConnectionStatus(Field):
    """%X: X aborted, + kept alive, - closed."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        if answer.aborted:
            return "X"
        return "+" if answer.keep_alive else "-"


class KeepaliveCount(Field):
    """%k: requests before this one on its connection."""

    __slots__ = ()

    def text(self, request: Request, answer: Answer) -> str:
        return str(max(answer.count - 1, 0))


# ---------------------------------------------------------------------- makers
# A maker returns the field of a code and its argument, or the field's text when
# that is constant.
Made = Field | str


def _field(code: str, argument: str, text: str) -> Made:
    maker = _MAKERS.get(code)
    if maker is None:
        return ""           # %P: lighttpd logs nothing for it
    return maker(argument, text)


def _port(argument: str, text: str) -> Made:
    if argument in ("", "local", "canonical"):
        return LocalPort()
    if argument == "remote":
        return RemotePort()
    raise DirectiveValueError(f"invalid format %{{canonical,local,remote}}p: {text}")


def _env_code(argument: str, text: str) -> Made:
    """%{NAME}e; a bare %e (or %n) names no variable: "-", as lighttpd logs it."""
    return Env(argument) if argument else "-"


def _cookie(argument: str, text: str) -> Made:
    return Cookie(argument) if argument else ""


def _time_used(argument: str, text: str) -> Made:
    scale = _TIME_UNITS.get(argument)
    if scale is None:
        raise DirectiveValueError(f"invalid time unit in %{{UNIT}}T: {text}")
    return WholeSeconds() if scale == 1 else Duration(scale)


def _timestamp(argument: str, text: str) -> Made:
    begin, unit = _time_option(argument)
    pattern = argument[6:] if begin else argument[4:] if argument.startswith("end:") \
        else argument
    if unit in _FRAC_UNITS:
        return SecondFraction(begin, _FRAC_UNITS[unit])
    if unit:
        return Epoch(begin, _EPOCH_UNITS[unit])
    if pattern == "sec":
        return Epoch(begin, 1)
    if pattern and "%" not in pattern:
        raise DirectiveValueError("constant string for time format (misspelled token? "
                                  f"or missing '%%'): {text}")
    return Stamp(pattern or "[%d/%b/%Y:%H:%M:%S %z]", begin)


def _request_header(argument: str, text: str) -> Made:
    return RequestHeader(argument.lower()) if argument else ""


def _response_header(argument: str, text: str) -> Made:
    if not argument:
        return ""
    name = argument.lower()
    if name == "content-length":
        return ResponseLength()
    if name == "connection":
        return ResponseConnection()
    return ResponseHeader(name)


def _always(kind: Callable[[], Field]) -> Callable[[str, str], Made]:
    """The maker of a field that takes no argument."""
    return lambda argument, text: kind()


_MAKERS: Final[dict[str, Callable[[str, str], Made]]] = {
    "a": _always(RemoteAddr), "h": _always(RemoteAddr), "A": _always(LocalAddr),
    "p": _port, "b": _always(BytesBody), "B": _always(BytesBody),
    "O": _always(BytesOut), "I": _always(BytesIn), "C": _cookie,
    "D": lambda argument, text: Duration(10**6), "T": _time_used, "t": _timestamp,
    "e": _env_code, "n": _env_code, "u": lambda argument, text: Env("REMOTE_USER"),
    "f": _always(Filename), "H": _always(Protocol), "m": _always(Method),
    "q": _always(Query), "r": _always(RequestLine), "s": _always(Status),
    "U": _always(UrlPath), "v": _always(ServerName), "V": _always(Host),
    "X": _always(ConnectionStatus), "k": _always(KeepaliveCount),
    "i": _request_header, "o": _response_header,
}


# -------------------------------------------------------------------- escaping
_PLAIN_TABLE: Final = table_keeping(log.PLAIN)    # what no escaping changes


def _escaping(value: str) -> Callable[[str], str]:
    return log.escape_json if value == "json" else log.escape_bs


def _syslog_level(value: int) -> int:
    return min(value, 7)


DIRECTIVES: Final = (
    Directive("accesslog.filename", Type.STRING, "", Scope.CONNECTION,
              doc='a file, or "|command" to pipe lines to a logger'),
    Directive("accesslog.format", Type.STRING, compile_format(DEFAULT_FORMAT),
              Scope.CONNECTION, compile_format, doc="lighttpd / Apache log format"),
    Directive("accesslog.use-syslog", Type.BOOL, False, Scope.CONNECTION),
    Directive("accesslog.syslog-level", Type.SHORT, syslog.LOG_INFO, Scope.CONNECTION,
              _syslog_level),
    Directive("accesslog.escaping", Type.STRING, log.escape_bs, Scope.CONNECTION,
              _escaping, doc='"default" or "json"'),
)


class LineBuffer:
    """The lines of one log on their way to its LogFile: appended straight to the list
    of lines that the LogFile's flush, reopen and close write out (shared/log.py), and
    written once they fill its buffer.  Compiled, that is a native append a line, where
    LogFile.write would be a call into interpreted code."""

    __slots__ = ("logfile", "lines", "size")

    def __init__(self, logfile: log.LogFile) -> None:
        self.logfile = logfile
        self.lines: list[bytes] = logfile.pending
        self.size = 0

    def add(self, line: bytes) -> None:
        lines = self.lines
        if not lines:           # written out since the last line (a flush, a reopen)
            self.size = 0
        lines.append(line)
        self.size += len(line)
        if self.size >= log.BUFFER_BYTES:
            self.logfile.flush()


class Module(BaseModule):
    name = "accesslog"
    directives = DIRECTIVES

    def __init__(self, config: Any, services: Any = None) -> None:
        super().__init__(config, services)
        self.files: dict[str, LineBuffer | None] = {}   # None: could not be opened
        self.facility = config.globals.get("server.syslog-facility", "daemon")

    @classmethod
    def log_files(cls, tree: ConfigTree, checked: CheckResult) -> list[tuple[str, Position]]:
        """Every accesslog.filename of the config that names a file, with its place, for
        the master's check at config load: not a `|command` logger, nor a file beside
        accesslog.use-syslog in the same block (lighttpd skips that one too)."""
        files = []
        for block in tree.blocks:
            settings = checked.settings.get(block.index, {})
            target = settings.get("accesslog.filename", "")
            entry = block.keys.get("accesslog.filename")
            if entry is not None and target and not target.startswith("|") and \
                    not settings.get("accesslog.use-syslog", False):
                files.append((target, entry.position))
        return files

    def _file(self, target: str) -> LineBuffer | None:
        try:
            return self.files[target]
        except KeyError:
            pass
        buffer: LineBuffer | None
        try:
            buffer = LineBuffer(log.LogFile(target, buffered=True))
        except OSError as err:
            log.error("mod_accesslog.c", f"opening log '{target}' failed: {err.strerror}")
            buffer = None
        self.files[target] = buffer
        return buffer

    def handle_trigger(self, now: float) -> None:
        """Once a second: write the lines buffered since (lighttpd buffers them too)."""
        for buffer in self.files.values():
            if buffer is not None:
                buffer.logfile.flush()

    def handle_request_done(self, request: Request) -> None:
        values = request.values
        use_syslog = values["accesslog.use-syslog"]
        target = values["accesslog.filename"]
        if not (target or use_syslog):
            return None
        answer = request.plugin_ctx.get("answer")
        if answer is None:
            return None
        # typed locals: the calls below are native ones, compiled
        compiled: CompiledFormat = values["accesslog.format"]
        line = compiled.render(request, answer, values["accesslog.escaping"])
        if use_syslog:
            log.open_syslog(self.facility)
            if len(line) > 1:
                syslog.syslog(values["accesslog.syslog-level"],
                              line[:-1].decode("utf-8", "surrogateescape"))
            return None
        buffer = self.files.get(target) or self._file(target)
        if buffer is not None:
            buffer.add(line)
        return None


__all__ = ["Module", "DIRECTIVES", "compile_format", "parse_format", "CompiledFormat",
           "DEFAULT_FORMAT"]
