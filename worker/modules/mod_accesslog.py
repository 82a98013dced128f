"""mod_accesslog: one line per request, in lighttpd's (Apache's) log format.

The format is compiled once, when the config is checked (the `accesslog.format`
converter): into a `%`-template of the line (its literal text, the newline included,
with a `%s` for each field) and a tuple of small functions
`field(request, answer, escape) -> str`, one per field that varies; what is constant
(literals, %l, %%, %P, an empty %{}i ...) is in the template, never called.  Per
request the module fills the template (`template % (...)`, done in C) and hands the
line to its log's buffer; the `%t` field makes its text once per second.  The line is
written when the response has been sent in full or the connection was lost (the core
calls handle_request_done then), so `%b`, `%O` and `%X` tell what really went out.
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
from typing import Any, Callable

from shared import log
from shared.config import ConfigTree, Position
from shared.config.directives import (CheckResult, Directive, DirectiveValueError, Scope,
                                      Type)

from ..module import Module as BaseModule
from ..request import Request

Escape = Callable[[str], str]
Field = Callable[[Request, Any, Escape], str]

DEFAULT_FORMAT = '%h %V %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"'
MAX_FIELDS = 127
_BACKSLASH = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_CODES = frozenset("aAbBCDefhHiIkmnoOpPqrstTuUvVX")
_TIME_UNITS = {"": 1, "s": 1, "sec": 1, "ms": 1000, "msec": 1000, "us": 10**6,
               "usec": 10**6, "ns": 10**9, "nsec": 10**9}
_EPOCH_UNITS = {"sec": 1, "msec": 1000, "usec": 10**6, "nsec": 10**9}
_FRAC_UNITS = {"msec_frac": 3, "usec_frac": 6, "nsec_frac": 9}
_NO_LENGTH = frozenset({204, 304})


class CompiledFormat:
    """A parsed accesslog.format: the source text, the template of its line and the
    functions of its varying fields."""

    __slots__ = ("text", "template", "fields")

    def __init__(self, text: str, template: str, fields: tuple[Field, ...]) -> None:
        self.text = text
        self.template = template
        self.fields = fields

    def render(self, request: Request, answer: Any, escape: Escape) -> str:
        """The log line, ending in a newline."""
        return self.template % tuple([field(request, answer, escape)
                                      for field in self.fields])

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
    pieces: list[str] = []
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
            pieces.append(made.replace("%", "%%"))
        else:
            pieces.append("%s")
            fields.append(made)
    return CompiledFormat(text, "".join(pieces) + "\n", tuple(fields))


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


# ---------------------------------------------------------------------- fields
# A maker returns a field function, or the field's text when that is constant.
Made = Field | str


def _field(code: str, argument: str, text: str) -> Made:
    maker = _MAKERS.get(code)
    if maker is None:
        return ""           # %P: lighttpd logs nothing for it
    return maker(argument, text)


def _or_dash(value: str | None, escape: Escape) -> str:
    return escape(value) if value else "-"


def _remote_addr(argument: str, text: str) -> Field:
    return lambda request, answer, escape: request.remote_ip or "-"


def _local_addr(argument: str, text: str) -> Field:
    def field(request: Request, answer: Any, escape: Escape) -> str:
        spec = request.socket_spec
        colon = spec.rfind(":")
        return spec[:colon] if colon >= 0 else spec
    return field


def _port(argument: str, text: str) -> Field:
    if argument in ("", "local", "canonical"):
        def local(request: Request, answer: Any, escape: Escape) -> str:
            spec = request.socket_spec
            colon = spec.rfind(":")
            return spec[colon + 1:] if colon >= 0 else ""
        return local
    if argument == "remote":
        return lambda request, answer, escape: str(request.remote_port)
    raise DirectiveValueError(f"invalid format %{{canonical,local,remote}}p: {text}")


def _env(name: str) -> Field:
    def field(request: Request, answer: Any, escape: Escape) -> str:
        env = request.env
        value = env.get(name) if env else None
        return escape(value) if value else "-"
    return field


def _env_code(argument: str, text: str) -> Made:
    return _env(argument) if argument else ""


def _remote_user(argument: str, text: str) -> Field:
    return _env("REMOTE_USER")


def _target_path_form(request: Request) -> str:
    target = request.target
    if target.startswith("/") or not target:
        return target
    if target == "*":
        return target
    query = "?" + request.uri_query if "?" in target else ""
    return request.uri_path_raw + query


def _request_line(argument: str, text: str) -> Field:
    def field(request: Request, answer: Any, escape: Escape) -> str:
        target = request.target
        if not target:      # not even a request line could be parsed
            return "  "
        if target[0] != "/":
            target = _target_path_form(request)
        return f"{request.method} {escape(target)} HTTP/{request.version}"
    return field


def _status(argument: str, text: str) -> Field:
    return lambda request, answer, escape: str(request.response.status)


def _bytes_body(argument: str, text: str) -> Field:
    def field(request: Request, answer: Any, escape: Escape) -> str:
        sent = answer.bytes_out
        if sent <= 0:
            return "-"
        body = sent - answer.head_len
        return str(body) if body > 0 else "0"
    return field


def _bytes_out(argument: str, text: str) -> Field:
    return lambda request, answer, escape: str(answer.bytes_out) if answer.bytes_out \
        else "-"


def _bytes_in(argument: str, text: str) -> Field:
    return lambda request, answer, escape: str(answer.bytes_in) if answer.bytes_in \
        else "-"


def _cookie(argument: str, text: str) -> Made:
    if not argument:
        return ""

    def field(request: Request, answer: Any, escape: Escape) -> str:
        cookies = request.headers.get("cookie")
        if not cookies:
            return ""
        for part in cookies.split(";"):
            name, eq, value = part.strip(" \t").partition("=")
            if eq and name == argument:
                return escape(value.rstrip(" \t"))
        return ""
    return field


def _elapsed(answer: Any, request: Request) -> float:
    return answer.end_monotonic - request.start


def _micros(argument: str, text: str) -> Field:
    return _duration(10**6)


def _duration(scale: int) -> Field:
    def field(request: Request, answer: Any, escape: Escape) -> str:
        elapsed = _elapsed(answer, request)
        return str(math.ceil(elapsed * scale)) if elapsed > 0 else "-1"
    return field


def _time_used(argument: str, text: str) -> Field:
    scale = _TIME_UNITS.get(argument)
    if scale is None:
        raise DirectiveValueError(f"invalid time unit in %{{UNIT}}T: {text}")
    if scale == 1:           # whole seconds of wall clock, as lighttpd counts them
        def seconds(request: Request, answer: Any, escape: Escape) -> str:
            return str(int(answer.end_time) - int(answer.end_time - _elapsed(answer,
                                                                              request)))
        return seconds
    return _duration(scale)


def _timestamp(argument: str, text: str) -> Field:
    begin, unit = _time_option(argument)
    pattern = argument[6:] if begin else argument[4:] if argument.startswith("end:") \
        else argument
    if unit in _FRAC_UNITS:
        digits = _FRAC_UNITS[unit]

        divisor = 10 ** (9 - digits)

        def fraction(request: Request, answer: Any, escape: Escape) -> str:
            ns = int((_when(request, answer, begin) % 1) * 10**9)
            return f"{-(-ns // divisor):0{digits}d}"[-digits:]     # ceil, as lighttpd
        return fraction
    if unit:
        scale = _EPOCH_UNITS[unit]
        return lambda request, answer, escape: str(math.ceil(_when(request, answer,
                                                                   begin) * scale))
    if pattern == "sec":
        return lambda request, answer, escape: str(int(_when(request, answer, begin)))
    if pattern and "%" not in pattern:
        raise DirectiveValueError("constant string for time format (misspelled token? "
                                  f"or missing '%%'): {text}")
    return _strftime_stamp(pattern or "[%d/%b/%Y:%H:%M:%S %z]", begin)


def _strftime_stamp(strftime: str, begin: bool) -> Field:
    """The time as `strftime` formats it: made once a second, the same text for every
    line of that second."""
    made_for, made = -1, ""

    def stamp(request: Request, answer: Any, escape: Escape) -> str:
        nonlocal made_for, made
        # the end time read here, not through _when: one call less on every line
        second = int(answer.end_time) if not begin else int(_when(request, answer, True))
        if second != made_for:
            made = time.strftime(strftime, time.localtime(second))
            made_for = second
        return made
    return stamp


def _when(request: Request, answer: Any, begin: bool) -> float:
    return answer.end_time - _elapsed(answer, request) if begin else answer.end_time


def _request_header(argument: str, text: str) -> Made:
    if not argument:
        return ""
    name = argument.lower()

    def field(request: Request, answer: Any, escape: Escape) -> str:
        value = request.headers.get(name)
        return escape(value) if value else "-"
    return field


def _response_header(argument: str, text: str) -> Made:
    if not argument:
        return ""
    name = argument.lower()
    if name == "content-length":
        def length(request: Request, answer: Any, escape: Escape) -> str:
            status = request.response.status
            return str(answer.length) if status >= 200 and status not in _NO_LENGTH \
                else "-"
        return length
    if name == "connection":
        def connection(request: Request, answer: Any, escape: Escape) -> str:
            if not answer.keep_alive:
                return "close"
            return "keep-alive" if request.version == "1.0" else "-"
        return connection
    return lambda request, answer, escape: _or_dash(request.response.get_header(name),
                                                    escape)


def _filename(argument: str, text: str) -> Field:
    def field(request: Request, answer: Any, escape: Escape) -> str:
        if request.response.status == 404:    # lighttpd clears a path it did not find
            return "-"
        return _or_dash(request.physical_path, escape)
    return field


def _protocol(argument: str, text: str) -> Field:
    return lambda request, answer, escape: f"HTTP/{request.version}" if request.target \
        else ""


def _method(argument: str, text: str) -> Field:
    return lambda request, answer, escape: request.method if request.target else ""


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_URL_SAFE = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/?#[]")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def normalize_url(text: str) -> str:
    """The target as lighttpd keeps it after its basic URL normalisation (what %U and
    %q log): unsafe bytes %XX-encoded, %XX of unreserved characters decoded, other
    %xx upper-cased."""
    data = text.encode("utf-8", "surrogateescape")
    if all(byte in _URL_SAFE for byte in data):
        return text
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


def _query(argument: str, text: str) -> Field:
    return lambda request, answer, escape: escape(normalize_url(request.uri_query))


def _url_path(argument: str, text: str) -> Field:
    def field(request: Request, answer: Any, escape: Escape) -> str:
        return escape(normalize_url(_target_path_form(request).partition("?")[0]))
    return field


def _server_name(argument: str, text: str) -> Field:
    def field(request: Request, answer: Any, escape: Escape) -> str:
        name = request.values["server.name"] or request.host
        return _or_dash(name, escape)
    return field


def _host(argument: str, text: str) -> Field:
    def field(request: Request, answer: Any, escape: Escape) -> str:
        host = request.host
        return escape(host) if host else "-"
    return field


def _connection_status(argument: str, text: str) -> Field:
    def field(request: Request, answer: Any, escape: Escape) -> str:
        if answer.aborted:
            return "X"
        return "+" if answer.keep_alive else "-"
    return field


def _keepalive_count(argument: str, text: str) -> Field:
    return lambda request, answer, escape: str(max(answer.count - 1, 0))


_MAKERS: dict[str, Callable[[str, str], Made]] = {
    "a": _remote_addr, "h": _remote_addr, "A": _local_addr, "p": _port,
    "b": _bytes_body, "B": _bytes_body, "O": _bytes_out, "I": _bytes_in,
    "C": _cookie, "D": _micros, "T": _time_used, "t": _timestamp,
    "e": _env_code, "n": _env_code, "u": _remote_user,
    "f": _filename, "H": _protocol, "m": _method, "q": _query, "r": _request_line,
    "s": _status, "U": _url_path, "v": _server_name, "V": _host,
    "X": _connection_status, "k": _keepalive_count,
    "i": _request_header, "o": _response_header,
}


def _plain_first(escape: Escape) -> Escape:
    """`escape`, with the common case decided first by str methods in C: printable
    ASCII other than `"` and `\\` is returned as it is (twice as fast as a regex
    search for anything else, on a browser's User-Agent)."""
    def escaped(text: str) -> str:
        if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
            return text
        return escape(text)
    return escaped


_ESCAPE_DEFAULT = _plain_first(log.escape_bs)
_ESCAPE_JSON = _plain_first(log.escape_json)


def _escaping(value: str) -> Escape:
    return _ESCAPE_JSON if value == "json" else _ESCAPE_DEFAULT


def _syslog_level(value: int) -> int:
    return min(value, 7)


DIRECTIVES = (
    Directive("accesslog.filename", Type.STRING, "", Scope.CONNECTION,
              doc='a file, or "|command" to pipe lines to a logger'),
    Directive("accesslog.format", Type.STRING, compile_format(DEFAULT_FORMAT),
              Scope.CONNECTION, compile_format, doc="lighttpd / Apache log format"),
    Directive("accesslog.use-syslog", Type.BOOL, False, Scope.CONNECTION),
    Directive("accesslog.syslog-level", Type.SHORT, syslog.LOG_INFO, Scope.CONNECTION,
              _syslog_level),
    Directive("accesslog.escaping", Type.STRING, _ESCAPE_DEFAULT, Scope.CONNECTION,
              _escaping, doc='"default" or "json"'),
)


class Module(BaseModule):
    name = "accesslog"
    directives = DIRECTIVES

    def __init__(self, config: Any, services: Any = None) -> None:
        super().__init__(config, services)
        self.files: dict[str, log.LogFile | None] = {}   # None: could not be opened
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

    def _file(self, target: str) -> log.LogFile | None:
        try:
            return self.files[target]
        except KeyError:
            pass
        logfile: log.LogFile | None
        try:
            logfile = log.LogFile(target, buffered=True)
        except OSError as err:
            log.error("mod_accesslog.c", f"opening log '{target}' failed: {err.strerror}")
            logfile = None
        self.files[target] = logfile
        return logfile

    def handle_trigger(self, now: float) -> None:
        """Once a second: write the lines buffered since (lighttpd buffers them too)."""
        for logfile in self.files.values():
            if logfile is not None:
                logfile.flush()

    def handle_request_done(self, request: Request) -> None:
        values = request.values
        use_syslog = values["accesslog.use-syslog"]
        target = values["accesslog.filename"]
        if not (target or use_syslog):
            return None
        answer = request.plugin_ctx.get("answer")
        if answer is None:
            return None
        line = values["accesslog.format"].render(request, answer,
                                                 values["accesslog.escaping"])
        if use_syslog:
            log.open_syslog(self.facility)
            if len(line) > 1:
                syslog.syslog(values["accesslog.syslog-level"], line[:-1])
            return None
        logfile = self.files.get(target) or self._file(target)
        if logfile is not None:
            logfile.write(line.encode("utf-8", "surrogateescape"))
        return None


__all__ = ["Module", "DIRECTIVES", "compile_format", "parse_format", "CompiledFormat",
           "DEFAULT_FORMAT"]
