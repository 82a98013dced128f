"""HTTP/1.x vocabulary shared by the core and modules: reasons, dates, error pages.

Everything here is computed once (status lines, error bodies) or once a second (the
`Date:` value), so building a response costs a few dict lookups and one join.
"""

from __future__ import annotations

import email.utils
import time
from http import HTTPStatus

REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}
REASONS[413] = "Payload Too Large"
REASONS[416] = "Range Not Satisfiable"

# lighttpd's error page, byte for byte (its body for a 404 is 341 bytes).
_ERROR_PAGE = (
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
_error_bodies: dict[int, bytes] = {}


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


def parse_http_date(text: str) -> float | None:
    """Seconds since the epoch, or None for a date we cannot read (then it is ignored)."""
    try:
        parsed = email.utils.parsedate_tz(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    try:
        return float(email.utils.mktime_tz(parsed))
    except (OverflowError, ValueError):
        return None


class DateCache:
    """The `Date:` header value, recomputed only when the second changes."""

    __slots__ = ("second", "value", "line")

    def __init__(self) -> None:
        self.second = -1
        self.value = ""
        self.line = b""         # the whole header line, as a response carries it
        self.refresh(time.time())

    def refresh(self, now: float) -> str:
        second = int(now)
        if second != self.second:
            self.second = second
            self.value = http_date(second)
            self.line = f"Date: {self.value}\r\n".encode()
        return self.value


DATE = DateCache()   # one per process; the loop's timer refreshes it
