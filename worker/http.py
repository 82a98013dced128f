"""HTTP/1.x vocabulary shared by the core and modules: reasons, dates, error pages,
and the rendering of a response head.

Everything here is computed once (status lines, error bodies, Server lines) or once a
second (the `Date:` line), so building a response head costs a few dict lookups and
one join.  A head is rendered in parts around what changes per answer: the status
line, headers and Content-Length (`render_start`), then the Connection line and the
Date line, then the Server line and the blank line (`server_line`).
"""

from __future__ import annotations

import calendar
import email.utils
import re
import time
from http import HTTPStatus
from typing import TYPE_CHECKING, Final, Sequence

from shared import log

from .errors import BadRequest
from .throttle import slowed

if TYPE_CHECKING:
    from .answercache import Answer
    from .request import Request, Response

# methods whose requests may not carry a body: 400, unless server.http-parseopts has
# method-get-body on (see body_refused)
BODYLESS_METHODS: Final = frozenset({"GET", "HEAD"})
# fields that may come once: a repeat with another value is a 400, an equal one is
# ignored, as lighttpd 1.4.69 takes them (Host: always 400, RFC 9112 3.2)
_SINGLE_FIELDS: Final = frozenset({"content-type", "if-modified-since", "http2-settings"})


def repeated_field(key: str, before: str, text: str) -> str:
    """The value of a request field `key` that came again with `text`: the values
    joined (with "; " for Cookie), or BadRequest for a field that may come once."""
    if key == "host" or key == "content-length":
        raise BadRequest(400, f"duplicate {key}")
    if key in _SINGLE_FIELDS:
        if before.lower() != text.lower():
            raise BadRequest(400, f"duplicate {key} with another value")
        return before
    return before + ("; " if key == "cookie" else ", ") + text


# the methods lighttpd 1.4.69 knows (http_kv.c, IANA's registry); over HTTP/2, where no
# parser's list decides, another is 501 as in lighttpd (over HTTP/1 llhttp's list does)
REGISTERED_METHODS: Final = frozenset({
    "GET", "HEAD", "QUERY", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "ACL",
    "BASELINE-CONTROL", "BIND", "CHECKIN", "CHECKOUT", "COPY", "LABEL", "LINK", "LOCK",
    "MERGE", "MKACTIVITY", "MKCALENDAR", "MKCOL", "MKREDIRECTREF", "MKWORKSPACE", "MOVE",
    "ORDERPATCH", "PATCH", "PROPFIND", "PROPPATCH", "REBIND", "REPORT", "SEARCH", "UNBIND",
    "UNCHECKOUT", "UNLINK", "UNLOCK", "UPDATE", "UPDATEREDIRECTREF", "VERSION-CONTROL"})
REASONS: Final[dict[int, str]] = {s.value: s.phrase for s in HTTPStatus}
REASONS[413] = "Payload Too Large"
REASONS[416] = "Range Not Satisfiable"

# lighttpd's error page, byte for byte (its body for a 404 is 341 bytes).
_ERROR_PAGE: Final = (
    '<?xml version="1.0" encoding="iso-8859-1"?>\n'
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"\n'
    '         "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n'
    '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">\n'
    " <head>\n"
    "  <title>{status}</title>\n"
    " </head>\n"
    " <body>\n"
    "  <h1>{status}</h1>\n"
    " </body>\n"
    "</html>\n"
)
_error_bodies: Final[dict[int, bytes]] = {}


def body_refused(request: "Request") -> bool:
    """Whether a body on this request is refused (400): GET and HEAD, unless
    server.http-parseopts' method-get-body allows one."""
    if request.method not in BODYLESS_METHODS:
        return False
    config = request.config
    return config is None or not config.method_get_body


def list_tokens(value: str | None) -> frozenset[str]:
    """A list field's members in lower case, spaces and tabs around them dropped (the
    blanks lighttpd's token readers skip; str.strip() takes 0xA0 and 0x85 too)."""
    if not value:
        return frozenset()
    return frozenset(token.strip(" \t").lower() for token in value.split(","))


_CONTINUE_ONLY: Final = frozenset({"100-continue"})


def expects_continue(headers: dict[str, str]) -> bool:
    """RFC 9110 10.1.1: whether the client waits for 100 Continue before its body;
    BadRequest(417) for an expectation the server cannot meet (the field is a list: a
    100-continue sent twice is one expectation)."""
    expect = headers.get("expect")
    if expect is None:
        return False
    if expect.lower() != "100-continue" and list_tokens(expect) != _CONTINUE_ONLY:
        raise BadRequest(417)
    return True


def reason(status: int) -> str:
    return REASONS.get(status, "Unknown")


def error_body(status: int) -> bytes:
    """The HTML body of an error response, cached per status."""
    body = _error_bodies.get(status)
    if body is None:
        body = _ERROR_PAGE.format(status=f"{status} {reason(status)}").encode()
        _error_bodies[status] = body
    return body


def http_date(timestamp: float) -> str:
    """RFC 7231 IMF-fixdate, e.g. `Mon, 23 Nov 2026 12:09:06 GMT`."""
    return email.utils.formatdate(timestamp, usegmt=True)


_DAYS: Final = "(Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                  "Dec")
_MONTH: Final = f"({'|'.join(_MONTHS)})"
_TIME: Final = r"(\d\d):(\d\d):(\d\d)"
# RFC 9110 5.6.7's three forms, case-sensitive, as lighttpd's http_date.c reads them:
# IMF-fixdate whole (29 characters), rfc850-date and asctime-date as a prefix
_IMF_FIXDATE: Final = re.compile(f"{_DAYS}, (\\d\\d) {_MONTH} (\\d{{4}}) {_TIME} GMT")
_RFC_850: Final = re.compile(f"{_DAYS}[^,]*, (\\d\\d)-{_MONTH}-(\\d\\d) {_TIME} GMT")
_ASCTIME: Final = re.compile(f"{_DAYS} {_MONTH} ([ \\d]\\d) {_TIME} (\\d{{4}})")


def parse_http_date(text: str) -> float | None:
    """Seconds since the epoch of an HTTP-date, or None for anything else (RFC 9110
    13.1.3: such a validator is ignored): `Sun, 06 Nov 1994 08:49:37 GMT`, its obsolete
    `Sunday, 06-Nov-94 ...` and asctime forms; no other zone, no other case, nothing
    after an IMF-fixdate."""
    if len(text) == 29:
        found = _IMF_FIXDATE.fullmatch(text)
        if found is None:
            return None
        _, day, month, year, hour, minute, second = found.groups()
    elif len(text) > 29:
        found = _RFC_850.match(text)
        if found is None:
            return None
        _, day, month, short_year, hour, minute, second = found.groups()
        year = str(_century_year(int(short_year)))
    else:
        found = _ASCTIME.match(text)
        if found is None:
            return None
        _, month, day, hour, minute, second, year = found.groups()
    return float(calendar.timegm((int(year), _MONTHS.index(month) + 1, int(day),
                                  int(hour), int(minute), int(second))))


def _century_year(short: int) -> int:
    """A two-digit year in this century, or the last one when that would lie more than
    50 years ahead (RFC 9110 5.6.7)."""
    this_year = time.gmtime().tm_year
    year = this_year - this_year % 100 + short
    return year - 100 if year > this_year + 50 else year


class DateCache:
    """The `Date:` header value, recomputed only when the second changes."""

    __slots__ = ("second", "value", "line", "field")

    def __init__(self) -> None:
        self.second = -1
        self.value = ""
        self.line = b""         # the whole header line, as a response carries it
        self.field = (b"date", b"")   # name and value, as HTTP/2 encodes them
        self.refresh(time.time())

    def refresh(self, now: float) -> str:
        second = int(now)
        if second != self.second:
            self.second = second
            self.value = http_date(second)
            self.line = f"Date: {self.value}\r\n".encode()
            self.field = (b"date", self.value.encode())
        return self.value


DATE: Final = DateCache()   # one per process; the loop's timer refreshes it


# status -> status line, for HTTP/1.1 and HTTP/1.0 answers, made when first sent: lists
# indexed natively by the status (a dict boxed and hashed it)
_STATUS_COUNT: Final = 1000
_STATUS_LINES_11: Final[list[bytes]] = [b""] * _STATUS_COUNT
_STATUS_LINES_10: Final[list[bytes]] = [b""] * _STATUS_COUNT
CONNECTION_CLOSE: Final = b"Connection: close\r\n"
CONNECTION_KEEP_ALIVE: Final = b"Connection: keep-alive\r\n"
_server_lines: Final[dict[str, bytes]] = {}   # server.tag -> its line and the blank line
_lowered: Final[dict[str, str]] = {}          # a header name -> the same in lower case


def has_no_body(status: int) -> bool:
    """204 and 304, whose answers carry no Content-Length (RFC 9110 8.6), compared as
    native ints: a set look-up of the boxed status costs more, compiled."""
    return status == 204 or status == 304


def _status_line(status: int, http10: bool) -> bytes:
    """The status line of an answer (a status past the lists, which no parser lets
    through, is made each time)."""
    lines = _STATUS_LINES_10 if http10 else _STATUS_LINES_11
    known = 0 <= status < _STATUS_COUNT
    if known:
        line = lines[status]
        if line:
            return line
    line = f"{'HTTP/1.0' if http10 else 'HTTP/1.1'} {status} {reason(status)}\r\n".encode(
        "latin-1", "replace")
    if known:
        lines[status] = line
    return line


def render_start(request: "Request") -> bytes:
    """Status line, the handler's headers and Content-Length."""
    response = request.response
    status = response.status
    http10 = request.version == "1.0"
    line = _status_line(status, http10)
    if status == 304:            # as lighttpd: a 304 carries no body, nor its coding
        response.remove_header("Content-Encoding")
    if response.replayable:      # a file's answer: its fields come again with the next
        fields = tuple(response.headers)
        block = _rendered_fields.get(fields) or _render_fields(request, fields, True)
    else:
        block = _render_fields(request, response.headers, False)
    if block is None:
        return _without_line_breaks(request)     # a value would forge header lines
    if not has_no_body(status) and status >= 200 and not response.streaming:
        return b"%s%sContent-Length: %d\r\n" % (line, block, response.length)
    return line + block


# the header fields of static answers, rendered: a file's answers carry the same ones
_rendered_fields: Final[dict[tuple[tuple[str, str], ...], bytes]] = {}
_RENDERED_MAX: Final = 16384


def _render_fields(request: "Request", fields: Sequence[tuple[str, str]],
                   remember: bool) -> bytes | None:
    """`fields` as header lines, but those never sent (omitted_field) (remembered with
    `remember`: the answer is a file's, whose next answers carry the same fields, not
    a backend's), empty ones left out; None when a name or value holds CR or LF."""
    parts: list[str] = []      # one join of the pieces: no string made per line
    lines = 0
    for name, value in fields:
        if not value:
            continue                    # an empty field is not sent, as in lighttpd
        first = name[:1]
        if (first == "X" or first == "x") and omitted_field(request, name, value):
            remember = False            # its effect is the answer's, each time
            continue
        parts.append(name)
        parts.append(": ")
        parts.append(value)
        parts.append("\r\n")
        lines += 1
    text = "".join(parts)
    if text.count("\n") != lines or text.count("\r") != lines:
        return None
    block = text.encode("latin-1", "replace")
    if remember:
        if len(_rendered_fields) >= _RENDERED_MAX:
            _rendered_fields.clear()
        _rendered_fields[tuple(fields)] = block
    return block


def server_only(lower: str) -> bool:
    """Whether an answer's field (by its lower-case name) is the server's business,
    never sent (lighttpd's http_response_omit_header): X-Sendfile and every
    X-LIGHTTPD-* field, whoever set it."""
    return lower == "x-sendfile" or lower.startswith("x-lighttpd-")


def omitted_field(request: "Request", name: str, value: str) -> bool:
    """server_only, read on HTTP/1: X-LIGHTTPD-KBytes-per-second also slows the
    answer's connection."""
    lower = lower_name(name)
    if not server_only(lower):
        return False
    if lower == "x-lighttpd-kbytes-per-second":
        wire = request.wire
        wire.throttle = slowed(wire.throttle, value)
    return True


def _without_line_breaks(request: "Request") -> bytes:
    """The head without the header fields whose name or value holds CR or LF (a
    module passing on what a client or backend sent); logged, never sent."""
    response = request.response
    broken = [name for name, value in response.headers
              if "\r" in name or "\n" in name or "\r" in value or "\n" in value]
    log.error("response.c", f"dropped response header(s) with a line break in "
              f"{', '.join(repr(name) for name in broken)} for {request.target}")
    response.headers = [h for h in response.headers
                        if not any(c in h[0] or c in h[1] for c in "\r\n")]
    return render_start(request)


def core_fields(response: "Response", server_tag: str) -> bytes:
    """The Date line, then the Server line and the blank line that end a head.  A
    Date or Server header a module set (setenv.set-response-header ...) stands
    instead of the core's, as in lighttpd."""
    if not response.own_fields:
        return DATE.line + server_line(server_tag)
    names = {lower_name(name) for name, _ in response.headers}
    return (b"" if "date" in names else DATE.line) + \
        server_line("" if "server" in names else server_tag)


# Header values are held one character per octet (latin-1), as they came and as they
# go: a backend's field passes through unchanged.  The config's strings and a URL's
# path are characters (their octets decoded as UTF-8), as the file system wants them.
# Where one crosses to the other, its octets are what lighttpd, all octets, would send.

def header_text(text: str) -> str:
    """Characters (the config's, a URL path's) as a header value holds them: one
    character per octet of their UTF-8."""
    return text if text.isascii() else text.encode("utf-8", "surrogateescape").decode("latin-1")


def header_characters(value: str) -> str:
    """A header value's octets read as UTF-8 (surrogates for those that are not), for a
    backend's environment, which is written out as UTF-8."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:          # already characters (a Lua script's value)
        return value


_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """`text` with A-Z in lower case and nothing else, as lighttpd's buffer_to_lower
    and its case-blind compares (str.lower() lowers É and the like too)."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


def lower_name(name: str) -> str:
    """`name.lower()`, remembered: an answer's field names are a few strings, mostly
    the core's own constants, where lower() makes a new string each time, whose hash
    a set or dict look-up then computes anew."""
    lower = _lowered.get(name)
    if lower is None:
        if len(_lowered) >= 1024:
            _lowered.clear()
        lower = _lowered[name] = name.lower()
    return lower


def connection_line(request: "Request", keep_alive: bool) -> bytes:
    if not keep_alive:
        return CONNECTION_CLOSE
    return CONNECTION_KEEP_ALIVE if request.version == "1.0" else b""


def server_line(server_tag: str) -> bytes:
    """`Server: tag` and the blank line that ends the head (just the blank line
    without a tag)."""
    line = _server_lines.get(server_tag)
    if line is None:
        if len(_server_lines) >= 64:
            _server_lines.clear()
        line = _server_lines[server_tag] = (
            f"Server: {server_tag}\r\n\r\n" if server_tag else "\r\n").encode(
                "utf-8", "surrogateescape")         # the config's characters
    return line


def kept_head(kept: "Answer", keep_alive: bool) -> bytes:
    """A kept answer's head as it goes out again over HTTP/1, with this answer's
    Connection and Date lines between the parts rendered when it was first sent:
    made once per second and Connection line (the Date line is a new object each
    second, which the answer holds while it compares it)."""
    date = DATE.line
    if kept.head_date is date and kept.head_keeps_alive == keep_alive:
        return kept.head
    start, tail = kept.http1
    head = b"".join((start, kept.keep_alive_line if keep_alive else CONNECTION_CLOSE,
                     date, tail))
    kept.head, kept.head_date, kept.head_keeps_alive = head, date, keep_alive
    return head
