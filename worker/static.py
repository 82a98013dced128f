"""Pieces of static file serving the core shares with modules (staticfile, dirlisting).

Content-Type by `mimetype.assign`, lighttpd-compatible ETags, Last-Modified,
conditional requests (304 / 412) and single byte ranges (206 / 416).  A file body is a
file range in the chunk queue (sendfile), except small files: those are read at once
so headers and body leave in a single system call.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
import struct
from typing import TYPE_CHECKING

from .http import http_date, parse_http_date

if TYPE_CHECKING:
    from .request import Request

SMALL_FILE = 16 * 1024          # read into memory below this size: one send for all
DEFAULT_MIME = "application/octet-stream"
_GET_HEAD = frozenset({"GET", "HEAD"})

# mimetype.assign tuple (by identity; it lives as long as the config) -> lookup dict
_mime_tables: dict[int, tuple[tuple, dict[str, str]]] = {}
_date_cache: dict[int, str] = {}


def _mime_table(assign: tuple[tuple[str, str], ...]) -> dict[str, str]:
    entry = _mime_tables.get(id(assign))
    if entry is None or entry[0] is not assign:
        table: dict[str, str] = {}
        for key, value in assign:
            table.setdefault(key.lower(), value)
        entry = (assign, table)
        _mime_tables[id(assign)] = entry
    return entry[1]


def mime_type(assign: tuple[tuple[str, str], ...], name: str) -> str:
    """Content type of file `name`: the whole base name, then the longest `.ext2.ext1`
    suffix down to `.ext1` (each also without its dot), then the "" default."""
    table = _mime_table(assign)
    base = name[name.rfind("/") + 1:].lower()
    found = table.get(base)
    if found is not None:
        return found
    dot = base.find(".", 1 if base.startswith(".") else 0)
    while dot >= 0:
        suffix = base[dot:]
        found = table.get(suffix) or table.get(suffix[1:])
        if found is not None:
            return found
        dot = base.find(".", dot + 1)
    return table.get("", DEFAULT_MIME)


def last_modified(mtime: float) -> str:
    """Last-Modified text, memoised per second (many files share few mtimes)."""
    second = int(mtime)
    text = _date_cache.get(second)
    if text is None:
        if len(_date_cache) > 4096:
            _date_cache.clear()
        text = _date_cache[second] = http_date(second)
    return text


def etag_for(st: os.stat_result, use_inode: bool, use_size: bool, use_mtime: bool) -> str:
    """lighttpd's ETag: a 32-bit dekhash of inode, size and mtime (seconds and ns),
    so pylighttpd and lighttpd behind one balancer give the same validators."""
    values = []
    if use_inode:
        values.append(st.st_ino)
    if use_size:
        values.append(st.st_size)
    if use_mtime:
        values.append(int(st.st_mtime))
        values.append(st.st_mtime_ns % 1_000_000_000)
    if not values:
        return ""
    data = struct.pack(f"={len(values)}Q", *values)
    h = len(data)
    for byte in data:
        h = ((h << 5) ^ (h >> 27) ^ byte) & 0xFFFFFFFF
    return f'"{h}"'


def etag_matches(etag: str, header: str, weak_ok: bool = True) -> bool:
    """If-None-Match / If-Match list test (weak comparison for If-None-Match)."""
    if header.strip() == "*":
        return True
    if not etag:
        return False
    strong = etag[2:] if etag.startswith("W/") else etag
    for item in header.split(","):
        item = item.strip()
        if item.startswith("W/"):
            if not weak_ok:
                continue
            item = item[2:]
        if item == strong or item == "*":
            return True
    return False


def not_modified(request: "Request", etag: str, modified: str, mtime: float) -> int:
    """0, or 304 / 412 for a conditional request that the validators answer."""
    headers = request.headers
    inm = headers.get("if-none-match")
    if inm is not None:
        if etag_matches(etag, inm):
            return 304 if request.method in _GET_HEAD else 412
        return 0
    ims = headers.get("if-modified-since")
    if ims is not None and request.method in _GET_HEAD:
        if ims == modified:
            return 304
        since = parse_http_date(ims)
        if since is not None and int(mtime) <= since:
            return 304
    return 0


def parse_range(header: str, size: int) -> tuple[int, int] | None | bool:
    """One `bytes=` range as (first, last); None to ignore the header (send it all);
    False if it cannot be satisfied (416)."""
    if not header.startswith("bytes="):
        return None
    spec = header[6:].strip()
    if "," in spec:
        return None           # several ranges: answer with the whole file (RFC 9110)
    first_text, dash, last_text = spec.partition("-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if not dash or not (first_text.isdigit() or first_text == "") or \
            not (last_text.isdigit() or last_text == ""):
        return None
    if first_text == "":
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0:
            return False
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last < first:
        return None
    if first >= size:
        return False
    return first, min(last, size - 1)


def _range_applies(request: "Request", etag: str, modified: str) -> bool:
    if_range = request.headers.get("if-range")
    if if_range is None:
        return True
    if if_range.startswith('"') or if_range.startswith("W/"):
        return if_range == etag
    return if_range == modified


def serve_file(request: "Request", path: str, st: os.stat_result,
               content_type: str | None = None) -> int:
    """Answer with the regular file at `path` (stat `st`); returns the status."""
    settings = request.settings.values
    response = request.response
    mtime = st.st_mtime
    modified = last_modified(mtime)
    etag = ""
    if settings.get("static-file.etags", True):
        etag = etag_for(st, settings["etag.use-inode"], settings["etag.use-size"],
                        settings["etag.use-mtime"])
    response.add_header("Content-Type", content_type or mime_type(
        settings["mimetype.assign"], path))
    if etag:
        response.add_header("ETag", etag)
    response.add_header("Last-Modified", modified)
    status = not_modified(request, etag, modified, mtime)
    if status:
        return status
    size = st.st_size
    first, last = 0, size - 1
    status = 200
    range_header = request.headers.get("range")
    if range_header is not None and settings["server.range-requests"] and \
            request.method == "GET" and _range_applies(request, etag, modified):
        chosen = parse_range(range_header, size)
        if chosen is False:
            response.reset_body()
            response.add_header("Content-Range", f"bytes */{size}")
            return 416
        if chosen:
            first, last = chosen
            status = 206
    if settings["server.range-requests"]:
        response.add_header("Accept-Ranges", "bytes")
    if status == 206:
        response.add_header("Content-Range", f"bytes {first}-{last}/{size}")
    return _attach_body(request, path, first, last - first + 1, status)


def _attach_body(request: "Request", path: str, offset: int, length: int,
                 status: int) -> int:
    response = request.response
    if request.method == "HEAD" or length <= 0:
        response.length = max(length, 0)
        response.head_only = request.method == "HEAD"
        return status
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as err:
        return errno_status(err)
    if length <= SMALL_FILE:
        try:
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        if len(data) != length:
            return 500
        response.write(data)
    else:
        response.send_file_range(fd, offset, length)
    return status


def errno_status(err: OSError) -> int:
    """The status for a failed stat/open, as lighttpd maps errno."""
    if err.errno in (errno.EACCES, errno.EPERM):
        return 403
    if err.errno == errno.ENAMETOOLONG:
        return 414
    if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        return 404
    return 500


def is_regular(st: os.stat_result) -> bool:
    return stat_module.S_ISREG(st.st_mode)


def is_directory(st: os.stat_result) -> bool:
    return stat_module.S_ISDIR(st.st_mode)
