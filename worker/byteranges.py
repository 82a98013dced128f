"""Range requests on an answer the core has whole (lighttpd's http_range.c).

A file's answer decides its ranges where the file is opened (static.py, X-Sendfile
too: the parts go out of the file itself) and says so (`Response.ranged`).  Any
other 200 answer the core has whole before its head goes out (a directory listing,
an SSI page, the status page, a script's or a backend's answer read to its end
before its head went out, in memory or spooled to disk) is treated as lighttpd
1.4.69 treats it: `Accept-Ranges: bytes` on the answer to a GET or HEAD over
HTTP/1.1 or later, and a GET with a Range answered 206 (one part, or
multipart/byteranges) or 416, with If-Range compared with the answer's own ETag or
Last-Modified.  Left as it is: an answer with a content coding (mod_deflate's, a
backend's own) or a transfer coding, one that says `Accept-Ranges: none`, and one
whose head went out before its end (a stream).  Unlike lighttpd, a 416 keeps its
`Content-Range: bytes */N` (RFC 9110 §15.5.17), as a file's 416 does.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from .chunkqueue import SharedFd
from .handler import error_response
from .http import lower_name
from .request import Request, Response
from .static import multipart_ranges, parse_ranges

_GET_HEAD: Final = frozenset({"GET", "HEAD"})
_CODINGS: Final = frozenset({"content-encoding", "transfer-encoding"})   # 16, 17


def range_whole_answer(request: Request) -> None:
    """Accept-Ranges and the Range of a complete 200 answer no module ranged (the
    caller checked `response.status == 200 and not response.ranged`), before its
    head is rendered."""
    response = request.response
    if request.method not in _GET_HEAD or request.version == "1.0" or \
            not request.values["server.range-requests"]:
        return
    if not _advertises_ranges(response) or request.method == "HEAD":
        return
    range_header = request.headers.get("range")
    if range_header is None or not response.length or not _if_range_holds(request, response):
        return
    ranges = parse_ranges(range_header, response.length)
    if ranges is None:
        return
    if ranges:
        _answer_ranges(response, ranges)
    else:
        _not_satisfiable(request)


def _advertises_ranges(response: Response) -> bool:
    """Add `Accept-Ranges: bytes` unless the answer says its own; False when ranges
    do not apply (a coding, or `Accept-Ranges: none`)."""
    said = None
    for name, value in response.headers:
        size = len(name)           # the three names' lengths: most names never lowered
        if size != 13 and size != 16 and size != 17:
            continue
        lower = lower_name(name)
        if lower in _CODINGS:
            return False
        if lower == "accept-ranges":
            said = value
    if said is None:
        response.add_header("Accept-Ranges", "bytes")
    return said != "none"


def _if_range_holds(request: Request, response: Response) -> bool:
    """If-Range: an entity tag equal to the answer's ETag, or a date equal to its
    Last-Modified, byte for byte (a weak tag never matches a date)."""
    if_range = request.headers.get("if-range")
    if if_range is None:
        return True
    validator = response.get_header("ETag" if if_range.startswith('"') else "Last-Modified")
    return validator is not None and validator == if_range


def _not_satisfiable(request: Request) -> None:
    """416 with the error page, and the length the ranges missed."""
    response = request.response
    size = response.length
    replayable = response.replayable        # reset_body forgets it
    response.reset_body()
    response.remove_header("Content-Length")
    response.status = 416
    response.passthrough = False             # the page replaces a backend's body
    error_response(request, 416)
    response.set_header("Content-Range", f"bytes */{size}")
    response.replayable = replayable


def _answer_ranges(response: Response, ranges: list[tuple[int, int]]) -> None:
    """206 with the ranges of the body: one part, or multipart/byteranges.  The body's
    bytes are sliced, its file ranges narrowed (each file then shared by the parts
    that send from it)."""
    size = response.length
    parts = _shareable(response.body)
    response.body = []
    response.files = response.length = 0
    response.remove_header("Content-Length")
    response.remove_header("Content-Range")      # a backend's, of what it sent
    response.status = 206
    if len(ranges) == 1:
        first, last = ranges[0]
        response.add_header("Content-Range", f"bytes {first}-{last}/{size}")
        _add_range(response, parts, first, last)
    else:
        multipart_ranges(response, ranges, size, response.get_header("Content-Type"),
                         functools.partial(_add_range, response, parts))
    for part in parts:
        if type(part) is tuple:
            part[3].release()           # the parts hold their own shares


def _shareable(body: list[Any]) -> list[Any]:
    """The body with each file range it owns turned into a share of its file."""
    return [(part[0], part[1], part[2], SharedFd(part[0]).acquire())
            if type(part) is tuple and len(part) == 3 else part for part in body]


def _add_range(response: Response, parts: list[Any], first: int, last: int) -> None:
    """Bytes `first`..`last` of the body `parts` onto the response's body."""
    position = 0
    for part in parts:
        is_bytes = type(part) is bytes
        length = len(part) if is_bytes else part[2]
        start, end = max(first, position), min(last + 1, position + length)
        if start < end:
            if is_bytes:
                response.write(part[start - position:end - position])
            else:
                response.send_shared_range(part[3].acquire(), part[1] + start - position,
                                           end - start)
        position += length
        if position > last:
            return


__all__ = ["range_whole_answer"]
