"""Pieces of static file serving the core shares with modules (staticfile, dirlisting).

Content-Type by `mimetype.assign` (or an xattr), lighttpd-compatible ETags,
Last-Modified, the preconditions of RFC 9110 §13.2.2 (304 / 412) and byte ranges
(206, multipart/byteranges, 416).  A file body is a file range in the chunk queue
(sendfile), except small files: those are read at once so headers and body leave in a
single system call, and kept (`SmallFiles`) while the stat cache reports the same file.
Headers and body always come from one snapshot: fstat() of the opened fd, or the kept
stat with the kept bytes; a large file that shrinks while it is sent makes the
connection close rather than break its Content-Length.  A large file's fd is kept open
until the stat cache's next tick (`OpenFiles`), shared by the answers sending it, so a
file asked for again within the second costs no open, fstat or close (lighttpd's stat
cache keeps fds the same way).

With server.follow-symlink off, a file (and an error document) is opened by a walk that
follows no symlink at any component (open_without_symlinks), and everything sent comes
from that fd: no check made earlier, cached or not, stands between a decision and the
open it relies on.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
import sys
from collections import OrderedDict
from typing import TYPE_CHECKING, Callable, Final

from mypy_extensions import mypyc_attr

from .chunkqueue import SharedFd
from .http import ascii_lower, http_date, lower_name, parse_http_date
from .settled import settled
from .statcache import CACHE

if TYPE_CHECKING:
    from .request import Request, Response

# the file type bits of st_mode, as constants: compiled, a test is then two machine
# operations, not a lookup in the stat module and a call
_S_IFMT: Final = 0o170000
_S_IFREG: Final = stat_module.S_IFREG
_S_IFDIR: Final = stat_module.S_IFDIR
# a stat_result is a tuple: these fields by index cost no attribute lookup (compiled)
_ST_MODE: Final = stat_module.ST_MODE
_ST_INO: Final = stat_module.ST_INO
_ST_SIZE: Final = stat_module.ST_SIZE
SMALL_FILE: Final = 16 * 1024          # read into memory below this size: one send for all
DEFAULT_MIME: Final = "application/octet-stream"
_GET_HEAD: Final = frozenset({"GET", "HEAD"})
# where each byte of a 64-bit value is, first to last in memory
_BYTE_SHIFTS: Final = tuple(range(0, 64, 8)) if sys.byteorder == "little" \
    else tuple(range(56, -8, -8))

# mimetype.assign tuple (by identity; it lives as long as the config) -> its lookup:
# the keys in order (lower case) for a table of under 16, else a dict of them (the
# other one empty)
_mime_tables: Final[dict[int, tuple[tuple, tuple[tuple[str, str], ...] | None,
                                    dict[str, str]]]] = {}
_date_cache: Final[dict[int, str]] = {}
_ORDERED_BELOW: Final = 16         # lighttpd's stat_cache_mimetype_by_ext: first match


def _mime_table(assign: tuple[tuple[str, str], ...]
                ) -> tuple[tuple[tuple[str, str], ...] | None, dict[str, str]]:
    entry = _mime_tables.get(id(assign))
    if entry is None or entry[0] is not assign:
        table: dict[str, str] = {}
        ordered: tuple[tuple[str, str], ...] | None = None
        if len(assign) < _ORDERED_BELOW:
            ordered = tuple((ascii_lower(key), value) for key, value in assign)
        else:
            for key, value in assign:
                table.setdefault(ascii_lower(key), value)
        entry = (assign, ordered, table)
        _mime_tables[id(assign)] = entry
    return entry[1], entry[2]


def mime_type(assign: tuple[tuple[str, str], ...], name: str) -> str:
    """Content type of file `name` (assigned_type, else application/octet-stream)."""
    found = assigned_type(assign, name)
    return found if found is not None else DEFAULT_MIME


def assigned_type(assign: tuple[tuple[str, str], ...], name: str) -> str | None:
    """What mimetype.assign gives file `name`, as lighttpd finds it (None: nothing): in
    a table of under 16 keys, the first (in config order) that ends the name, in any
    case (so "" first takes everything, and ".gz" before ".tar.gz" takes x.tar.gz); in
    a larger one the whole base name, then the longest `.ext2.ext1` suffix down to
    `.ext1` (each also without its dot), then the "" default.  A few C calls: cheaper
    than a memo keyed by the path, whose key costs as much."""
    ordered, table = _mime_table(assign)
    if ordered is not None:
        lowered = ascii_lower(name)
        for key, value in ordered:
            if lowered.endswith(key):
                return value
        return None
    base = ascii_lower(name[name.rfind("/") + 1:])
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
    return table.get("")


def last_modified(mtime: float) -> str:
    """Last-Modified text, memoised per second (many files share few mtimes)."""
    second = int(mtime)
    text = _date_cache.get(second)
    if text is None:
        if len(_date_cache) > 4096:
            _date_cache.clear()
        text = _date_cache[second] = http_date(second)
    return text


def etag_for(ino: int, size: int, mtime_ns: int,
             use_inode: bool, use_size: bool, use_mtime: bool) -> str:
    """lighttpd's ETag: a 32-bit dekhash of inode, size and mtime (seconds and ns),
    so pylighttpd and lighttpd behind one balancer give the same validators.  The
    hash runs over the 64-bit values' bytes in memory order, as lighttpd's does."""
    values = []
    if use_inode:
        values.append(ino)
    if use_size:
        values.append(size)
    if use_mtime:
        values.append(mtime_ns // 1_000_000_000)
        values.append(mtime_ns % 1_000_000_000)
    if not values:
        return ""
    h = 8 * len(values)
    for value in values:
        for shift in _BYTE_SHIFTS:
            h = ((h << 5) ^ (h >> 27) ^ ((value >> shift) & 0xFF)) & 0xFFFFFFFF
    return f'"{h}"'


def etag_matches(etag: str, header: str, weak_ok: bool = True) -> bool:
    """If-None-Match / If-Match list test (weak comparison for If-None-Match), read as
    lighttpd's http_etag_matches reads it: `*` alone, or a member (after blanks and
    commas) that starts with the ETag or `*` and ends there (a blank, a comma or the
    end follows); a weak member (W/) only when weak comparison is asked for, and a
    weak ETag of ours then only."""
    if header == "*":
        return True
    if not etag:
        return False
    if etag.startswith("W/"):
        if not weak_ok:
            return False
        etag = etag[2:]
    size, position = len(header), 0
    while position < size:
        while position < size and header[position] in " \t,":
            position += 1
        asked = True
        if header.startswith("W/", position):
            position += 2
            asked = weak_ok
        if asked:
            end = position + len(etag) if header.startswith(etag, position) else \
                position + 1 if header.startswith("*", position) else -1
            if end >= 0 and (end == size or header[end] in " \t,"):
                return True
        comma = header.find(",", position)
        if comma < 0:
            return False
        position = comma
    return False


def check_preconditions(request: "Request", etag: str, mtime: float) -> int:
    """RFC 9110 §13.2.2, in its order: If-Match, else If-Unmodified-Since (412);
    If-None-Match (304 for GET/HEAD, else 412), else If-Modified-Since (304).
    0 when the request goes on.  lighttpd 1.4.69 reads only the last two."""
    headers = request.headers
    if_match = headers.get("if-match")
    if if_match is not None:
        if not etag_matches(etag, if_match, weak_ok=False):
            return 412
    else:
        since_text = headers.get("if-unmodified-since")
        if since_text is not None:
            since = parse_http_date(since_text)
            if since is not None and int(mtime) > since:
                return 412
    inm = headers.get("if-none-match")
    if inm is not None:
        if etag_matches(etag, inm):
            return 304 if request.method in _GET_HEAD else 412
        return 0
    ims = headers.get("if-modified-since")
    if ims is not None and request.method in _GET_HEAD:
        if ims == last_modified(mtime):
            return 304
        since = parse_http_date(ims)
        if since is not None and int(mtime) <= since:
            return 304
    return 0


# lighttpd's limits on a Range set (http_range.c): at most RANGE_MAX ranges, or
# UNSORTED_MAX once they stop ascending; ranges less than RANGE_GAP bytes apart are
# merged (a part header costs about that much), so overlapping and tiny-range abuse
# (RFC 9110 §14.2, "a set of many small ranges") shrinks to a few parts.
RANGE_MAX: Final = 128
UNSORTED_MAX: Final = 10
RANGE_GAP: Final = 80
BOUNDARY: Final = "fkj49sn38dcn3"     # lighttpd's, so multipart bodies are byte-identical


def _one_range(text: str, size: int) -> tuple[int, int] | None:
    """One byte-range-spec as (first, last) within `size`, or None if invalid or not
    satisfiable (a first byte at or past the end)."""
    first_text, dash, last_text = text.partition("-")
    first_text, last_text = first_text.strip(" \t"), last_text.strip(" \t")
    if not dash or not (last_text.isdecimal() or (first_text and not last_text)):
        return None
    if not first_text:                         # suffix: the last N bytes
        suffix = int(last_text)
        return (max(0, size - suffix), size - 1) if suffix else None
    if not first_text.isdecimal():
        return None
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if first >= size or last < first:
        return None
    return first, min(last, size - 1)


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable ranges of a `Range:` value, coalesced; None to ignore the header
    (not `bytes=`); an empty list means 416."""
    if header[:6].lower() != "bytes=":
        return None
    ranges: list[tuple[int, int]] = []
    limit = RANGE_MAX
    for item in header[6:].split(","):
        chosen = _one_range(item, size)
        if chosen is None:
            continue
        if ranges:
            first, last = ranges[-1]
            if first <= chosen[0]:
                if last >= chosen[0] - RANGE_GAP:     # close or overlapping: merge
                    ranges[-1] = (first, max(last, chosen[1]))
                    continue
            else:
                if len(ranges) >= UNSORTED_MAX:
                    break
                limit = UNSORTED_MAX
        ranges.append(chosen)
        if len(ranges) >= limit:
            break
    if limit == UNSORTED_MAX:
        ranges = _coalesce_unsorted(ranges)
    return ranges


def _coalesce_unsorted(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge any two ranges that overlap or nearly touch, keeping the request's order
    for the rest (RFC 9110 §14.6); quadratic, so only for UNSORTED_MAX ranges."""
    i = 0
    while i < len(ranges):
        first, last = ranges[i]
        for j in range(i + 1, len(ranges)):
            other_first, other_last = ranges[j]
            if (last < other_first - RANGE_GAP) if first <= other_first else \
                    (other_last < first - RANGE_GAP):
                continue
            ranges[i] = (min(first, other_first), max(last, other_last))
            del ranges[j]
            i = -1
            break
        i += 1
    return ranges


def _range_applies(request: "Request", etag: str, mtime: float) -> bool:
    """If-Range: an entity tag must equal ours (a weak one never does), a date must
    equal Last-Modified exactly (RFC 9110 §13.1.5)."""
    if_range = request.headers.get("if-range")
    if if_range is None:
        return True
    if if_range.startswith('"'):
        return bool(etag) and if_range == etag
    return if_range == last_modified(mtime)


# how many file versions the ETag and header-field memos each keep: a site's 10,000
# files and their next versions
_VERSIONS_KEPT: Final = 16384
_etags: Final[dict[tuple, str]] = {}


def stat_etag(st: os.stat_result, values: dict) -> str:
    """The ETag of the file `st` describes, as the etag.use-* settings make it:
    etag_for, memoised by what it hashes (its 32 rounds cost about six times the
    look-up; a static file's fields are kept whole besides, see file_fields, but
    mod_deflate, WebDAV and magnet ask here each time)."""
    use = (values["etag.use-inode"], values["etag.use-size"], values["etag.use-mtime"])
    key = (st.st_ino, st.st_size, st.st_mtime_ns, use)
    etag = _etags.get(key)
    if etag is None:
        if len(_etags) >= _VERSIONS_KEPT:
            _etags.clear()
        etag = _etags[key] = etag_for(st.st_ino, st.st_size, st.st_mtime_ns, *use)
    return etag


def content_type_for(values: dict, path: str, fd: int = -1) -> str:
    """The `user.Content-Type` extended attribute when mimetype.use-xattr is on (of the
    open file `fd` when there is one, else of `path`), otherwise mimetype.assign."""
    if values["mimetype.use-xattr"]:
        try:
            return os.getxattr(fd if fd >= 0 else path,
                               "user." + values["mimetype.xattr-name"]).decode("latin-1")
        except OSError:
            pass
    return mime_type(values["mimetype.assign"], path)


_OPEN_FLAGS: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
# One step of a walk down a path: a directory only, never through a symlink.  O_PATH
# needs search permission alone, as a path lookup does.
_STEP_FLAGS: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@mypyc_attr(native_class=False)    # mypyc builds no subclass of OSError
class SymlinkInPath(PermissionError):
    """A symlink on the path of a file opened with follow-symlink off: 403, as
    lighttpd answers (its errno is EACCES, so errno_status maps it like one)."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.EACCES, "symbolic link on the path", path)


def open_without_symlinks(path: str, flags: int, dir_fd: int | None = None) -> int:
    """Open `path` with `flags` following no symlink at any component: a walk from "/"
    (or, for a relative path, from `dir_fd` / the working directory) that opens each
    directory relative to the one before with O_NOFOLLOW, and the last name with
    O_NOFOLLOW too.  What is opened is what the walk saw, so a file or directory
    swapped for a symlink at any moment is refused, never followed (a separate
    check, then an open by path, leaves a window between them).  Raises
    SymlinkInPath for a symlink, OSError otherwise."""
    names = [name for name in path.split("/") if name and name != "."]
    last = names.pop() if names else "."
    step_fd = os.open("/" if path.startswith("/") else ".", _STEP_FLAGS, dir_fd=dir_fd)
    try:
        for name in names:
            next_fd = _open_step(name, _STEP_FLAGS, step_fd, path)
            os.close(step_fd)
            step_fd = next_fd
        return _open_step(last, flags | os.O_NOFOLLOW | os.O_CLOEXEC, step_fd, path)
    finally:
        os.close(step_fd)


def _open_step(name: str, flags: int, dir_fd: int, path: str) -> int:
    """`name` opened in `dir_fd`.  O_NOFOLLOW fails on a symlink with ELOOP (the walk
    follows none, so nothing else gives ELOOP), or with ENOTDIR when a directory is
    wanted: that one is told apart from a plain file by a look at the name itself."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ELOOP or (err.errno == errno.ENOTDIR and
                                        _is_symlink(name, dir_fd)):
            raise SymlinkInPath(path) from None
        raise


def _is_symlink(name: str, dir_fd: int) -> bool:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return stat_module.S_ISLNK(st.st_mode)


def open_file_without_symlinks(path: str) -> tuple[int, os.stat_result]:
    """The regular file at `path` opened through no symlink, and its fstat.  Raises
    OSError (IsADirectoryError when it is not a regular file)."""
    fd = open_without_symlinks(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if not is_regular(st):
            raise _not_a_regular_file(path)
    except OSError:
        os.close(fd)
        raise
    return fd, st


def _not_a_regular_file(path: str) -> IsADirectoryError:
    """What an open raises for a path that names no regular file (answered 403)."""
    return IsADirectoryError(errno.EISDIR, "not a regular file", path)


def open_checked(path: str, st: os.stat_result) -> tuple[int, os.stat_result]:
    """Open `path` and fstat it.  The headers are built from this fstat, not from the
    (up to a second old) stat cache, so what we announce is what the fd holds; a
    changed file refreshes the cache.  Raises OSError (IsADirectoryError when the
    path no longer names a regular file)."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        fresh = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not same_file(fresh, st):
        CACHE.refresh(path, fresh)
        if not is_regular(fresh):
            os.close(fd)
            raise _not_a_regular_file(path)
    return fd, fresh


# (settings values, ETag, Content-Type, header fields) of a file version
FieldsMemo = tuple[dict, str, str, tuple[tuple[str, str], ...]]


class KeptFile:
    """One version of a small file, kept: its stat, its bytes and, once an answer
    was made of it, the header fields for the settings that made them (`fields`: the
    values dict, ETag, Content-Type, the fields).  One record per file, so a request
    finds bytes and fields with one lookup, and a new version starts with no fields."""

    __slots__ = ("st", "data", "fields")

    def __init__(self, st: os.stat_result, data: bytes) -> None:
        self.st = st
        self.data = data
        self.fields: FieldsMemo | None = None


class SmallFiles:
    """Contents of small files, valid while the stat cache reports the same inode, size
    and mtime: a hot small file costs no open/fstat/pread/close per request.  Staleness
    is the stat cache's (at most a second with "simple", as in lighttpd), and body and
    headers always come from the same snapshot, so lengths always agree.  Only a
    settled file is kept (worker/settled.py): one changed twice within a tick of the
    kernel's clock keeps its stat, and its first contents would pass for the second.

    The budget holds a site of 10,000 small files per worker (images, icons,
    scripts) of up to about 9.5 KiB on average: a budget below the working set of a
    site whose requests spread over it would be emptied and refilled all the time,
    paying the reads and the keeping too.  64 MiB held 9,400 of the benchmark's
    10,000 files of 2-12 KiB, and the misses cost ~2k instructions a request."""

    def __init__(self, max_bytes: int = 96 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[str, KeptFile] = OrderedDict()
        self.size = 0

    def get(self, path: str, st: os.stat_result) -> KeptFile | None:
        kept = self.entries.get(path)
        if kept is None or kept.st is st:      # the stat cache's own snapshot: the
            return kept                        # usual case within its second
        if not same_file(kept.st, st):
            return None
        kept.st = st           # the same file, stat'ed anew: the next ask is an `is`
        return kept

    def put(self, path: str, st: os.stat_result, data: bytes) -> KeptFile | None:
        """Keep `data`, dropping the oldest kept files while over the budget (what a
        site asks for most was read again lately: it stays)."""
        if len(data) > self.max_bytes:
            return None
        entries = self.entries
        old = entries.pop(path, None)
        if old is not None:
            self.size -= len(old.data)
        self.size += len(data)
        while self.size > self.max_bytes:
            self.size -= len(entries.popitem(last=False)[1].data)
        kept = entries[path] = KeptFile(st, data)
        return kept


SMALL_FILES: Final = SmallFiles()


class OpenFiles:
    """Large files' fds, open until the stat cache's next tick and valid while it
    reports the same inode, size and mtime: the answers sending one share it
    (SharedFd), the table holding a share of its own, so the fd closes once the tick
    dropped it and its last answer is out.  Only with the stat cache on, whose
    staleness this is (a second at most), and only for a settled file
    (worker/settled.py): the body is read as it is sent, and the headers come from the
    fstat made at the open, so a file changed in place since then would be sent
    under its older length and ETag."""

    MAX_FILES: Final = 64     # fds held at most: more files in a second empty the table

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[str, tuple[os.stat_result, SharedFd]] = {}

    def get(self, path: str, st: os.stat_result) -> tuple[os.stat_result, SharedFd] | None:
        """The file held for `path` if it is the version `st` shows; then held with
        `st` itself, the stat cache's object for the second, which the next look-up
        finds by `is` (its inode, size and mtime, all the answer reads, are the same)."""
        entries = self.entries
        held = entries.get(path)
        if held is None or held[0] is st:
            return held
        if not same_file(held[0], st):
            return None
        held = entries[path] = (st, held[1])
        return held

    def hold(self, path: str, st: os.stat_result, shared: SharedFd) -> None:
        """Hold a share of the file `shared` (version `st`) for the rest of the second."""
        entries = self.entries
        older = entries.pop(path, None)     # a version the stat cache no longer shows
        if older is not None:
            older[1].release()
        if len(entries) >= self.MAX_FILES:
            self.clear()
        entries[path] = (st, shared.acquire())

    def clear(self) -> None:
        """Let go of every file (those still being sent close after their answers)."""
        for _st, shared in self.entries.values():
            shared.release()
        self.entries.clear()

    def tick(self, _now: float) -> None:
        self.clear()


OPEN_FILES: Final = OpenFiles()


def _open_body(path: str, st: os.stat_result
               ) -> tuple[os.stat_result, bytes | None, KeptFile | None, SharedFd | None]:
    """(fresh stat, None, None, the file) for a large file (held open by OPEN_FILES
    when it can be); (stat, contents, its record if it is kept, None) for a small one."""
    if st[_ST_SIZE] <= SMALL_FILE:
        kept = SMALL_FILES.get(path, st)
        if kept is not None:
            return kept.st, kept.data, kept, None
    elif CACHE.enabled:
        held = OPEN_FILES.get(path, st)
        if held is not None:
            return held[0], None, None, held[1]
    fd, st = open_checked(path, st)
    data, shared = _take_body(fd, st, path)
    if data is not None:
        kept = SMALL_FILES.put(path, st, data) if settled(st) else None
        return st, data, kept, None
    if CACHE.enabled and settled(st) and shared is not None:
        OPEN_FILES.hold(path, st, shared)
    return st, None, None, shared


def _take_body(fd: int, st: os.stat_result, path: str
               ) -> tuple[bytes | None, SharedFd | None]:
    """(None, the file to share) for a large file; (contents, None) for a small one,
    read at once and its fd closed."""
    if st.st_size > SMALL_FILE:
        return None, SharedFd(fd)
    try:
        data = os.pread(fd, st.st_size, 0)
    finally:
        os.close(fd)
    if len(data) != st.st_size:        # shrank since fstat: nothing is sent yet, so
        raise _ShortRead(path)         # an error page still has a correct length
    return data, None


@mypyc_attr(native_class=False)    # mypyc builds no subclass of OSError
class _ShortRead(OSError):
    """A file shorter than its fstat said: answered 500, never a wrong length."""


def serve_file(request: "Request", path: str, st: os.stat_result,
               content_type: str | None = None) -> int:
    """Answer with the regular file at `path` (stat `st`); returns the status."""
    values = request.values
    if not values["server.follow-symlink"]:
        return _serve_without_symlinks(request, path, content_type, values)
    data, kept, shared = None, None, None
    if request.method != "HEAD":
        try:
            st, data, kept, shared = _open_body(path, st)
        except OSError as err:
            return _open_failure(err, path)
    return _respond_owning(request, path, st, shared, data, content_type, values, kept)


def _serve_without_symlinks(request: "Request", path: str, content_type: str | None,
                            values: dict) -> int:
    """serve_file with server.follow-symlink off.  What decides is the open, which
    follows no symlink (open_without_symlinks: 403 for one anywhere on the path), not
    the earlier checks of the path, which the stat cache may answer a second late;
    everything served, headers and body, xattr type included, comes from that one fd.
    So the kept small-file contents (SmallFiles) are neither read nor filled here:
    they are matched by path and by a stat that follows links, and no such match can
    prove the bytes came through no symlink.  Nor is such an answer kept for replay
    (answercache).  HEAD opens the file too, for the same headers."""
    try:
        fd, st = open_file_without_symlinks(path)
        content_type = content_type or content_type_for(values, path, fd)
        if request.method == "HEAD":
            os.close(fd)
            data, shared = None, None
        else:
            data, shared = _take_body(fd, st, path)
    except OSError as err:
        return _open_failure(err, path)
    return _respond_owning(request, path, st, shared, data, content_type, values)


def _open_failure(err: OSError, path: str) -> int:
    """The status for a file that could not be opened or read (its stat is dropped):
    403 for one that is no longer a regular file or is reached through a symlink,
    500 for one shorter than its stat."""
    CACHE.invalidate(path)
    return 403 if err.errno == errno.EISDIR else errno_status(err)


def _respond_owning(request: "Request", path: str, st: os.stat_result,
                    shared: SharedFd | None, data: bytes | None, content_type: str | None,
                    values: dict, kept: KeptFile | None = None) -> int:
    """_respond, closing the file unless the response (or OPEN_FILES) took a share."""
    try:
        return _respond(request, path, st, shared, data, content_type, values, kept)
    finally:
        if shared is not None:
            shared.close_unused()


# path -> (stat, memo): the files that have no KeptFile record
_file_fields: Final[dict[str, tuple[os.stat_result, FieldsMemo]]] = {}


def file_fields(path: str, st: os.stat_result, values: dict, content_type: str | None,
                kept: KeptFile | None = None) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """(ETag, Content-Type, the fields naming them and Last-Modified) of the file:
    computed once per file version and settings, since every answer for it carries
    them (an xattr type, or one the caller chose, is looked up each time).  They are
    kept in `kept`, the small file's record for `st`, when there is one, else by path."""
    if content_type is None:
        memo = kept.fields if kept is not None else _memo_by_path(path, st)
        if memo is not None and memo[0] is values:
            return memo[1], memo[2], memo[3]
    etag = stat_etag(st, values) if values.get("static-file.etags", True) else ""
    by_xattr = content_type is not None or values["mimetype.use-xattr"]
    content_type = content_type or content_type_for(values, path)
    fields = (("Content-Type", content_type),) + ((("ETag", etag),) if etag else ()) + \
        (("Last-Modified", last_modified(st.st_mtime)),)
    if by_xattr:
        return etag, content_type, fields
    made: FieldsMemo = (values, etag, content_type, fields)
    if kept is not None:
        kept.fields = made
    else:
        if len(_file_fields) >= _VERSIONS_KEPT:
            _file_fields.clear()
        _file_fields[path] = (st, made)
    return etag, content_type, fields


def _fields_not_set(headers: list[tuple[str, str]],
                    fields: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """The file's fields but those a module set already (a script's Content-Type or
    ETag stays, as lighttpd leaves them)."""
    present = {lower_name(name) for name, _ in headers}
    return [field for field in fields if lower_name(field[0]) not in present]


def _memo_by_path(path: str, st: os.stat_result) -> FieldsMemo | None:
    """The fields kept for the file at `path` when it is still the version `st` shows."""
    entry = _file_fields.get(path)
    if entry is None:
        return None
    if entry[0] is not st:
        if not same_file(entry[0], st):
            return None
        entry = _file_fields[path] = (st, entry[1])    # stat'ed anew: an `is` next time
    return entry[1]


def _respond(request: "Request", path: str, st: os.stat_result, shared: SharedFd | None,
             data: bytes | None, content_type: str | None, values: dict,
             kept: KeptFile | None) -> int:
    response = request.response
    response.ranged = True                  # a file's ranges are decided here
    mtime = st.st_mtime
    etag, content_type, fields = file_fields(path, st, values, content_type, kept)
    if response.headers:
        response.headers += _fields_not_set(response.headers, fields)
    else:
        response.headers += fields
    status = check_preconditions(request, etag, mtime)
    if status:
        response.replayable = status == 304     # the validators are part of the key
        return status
    size = st.st_size
    method = request.method
    if request.version == "1.0" or not values["server.range-requests"] or \
            method not in _GET_HEAD:
        return _attach_body(request, shared, data, 0, size, 200)
    response.add_header("Accept-Ranges", "bytes")
    range_header = request.headers.get("range")
    if range_header is None or method != "GET" or size == 0 or \
            not _range_applies(request, etag, mtime):
        return _attach_body(request, shared, data, 0, size, 200)
    ranges = parse_ranges(range_header, size)
    if ranges is None:
        return _attach_body(request, shared, data, 0, size, 200)
    if not ranges:
        response.add_header("Content-Range", f"bytes */{size}")
        return 416
    if len(ranges) == 1:
        first, last = ranges[0]
        response.add_header("Content-Range", f"bytes {first}-{last}/{size}")
        return _attach_body(request, shared, data, first, last - first + 1, 206)
    return _file_multipart(request, shared, data, ranges, size, content_type)


def _file_multipart(request: "Request", shared: SharedFd | None, data: bytes | None,
                    ranges: list[tuple[int, int]], size: int, content_type: str) -> int:
    """206 multipart/byteranges of a file: each part's bytes go out of the file itself
    (one shared fd, a sendfile per part); only a small file is read, once."""
    response = request.response

    def write_range(first: int, last: int) -> None:
        if data is not None:
            response.write(data[first:last + 1])
        elif shared is not None:
            response.send_shared_range(shared.acquire(), first, last - first + 1)

    multipart_ranges(response, ranges, size, content_type, write_range)
    return 206


def multipart_ranges(response: "Response", ranges: list[tuple[int, int]], size: int,
                     content_type: str | None,
                     write_range: Callable[[int, int], None]) -> None:
    """The body of a 206 multipart/byteranges: each range's part head, then its bytes
    as `write_range(first, last)` adds them; a part names the answer's Content-Type
    when it had one."""
    response.set_header("Content-Type", f"multipart/byteranges; boundary={BOUNDARY}")
    type_line = "" if content_type is None else f"Content-Type: {content_type}\r\n"
    separator = ""
    for first, last in ranges:
        response.write(f"{separator}--{BOUNDARY}\r\n{type_line}"
                       f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n".encode(
                           "latin-1", "replace"))
        separator = "\r\n"
        write_range(first, last)
    response.write(f"\r\n--{BOUNDARY}--\r\n".encode())


def _attach_body(request: "Request", shared: SharedFd | None, data: bytes | None,
                 offset: int, length: int, status: int) -> int:
    """The body: a small file's bytes from memory, a large one's range by sendfile."""
    response = request.response
    if data is not None and length > 0:
        response.write(data if length == len(data) else data[offset:offset + length])
        response.replayable = True       # from memory: a snapshot the tick bounds
    elif shared is None or length <= 0:      # HEAD, or an empty file
        response.length = max(length, 0)
        response.passthrough = True          # the file is the answer: an error handler's
                                             # page of a HEAD keeps it, no error page
    else:
        response.send_shared_range(shared.acquire(), offset, length)
    return status


def error_document(request: "Request", status: int) -> str:
    """server.errorfile-prefix: the body of an error answer from PREFIX + "404.html"
    (lighttpd's static error pages); its path, or "" when there is no such file."""
    prefix = request.values["server.errorfile-prefix"]
    if not prefix:
        return ""
    path = f"{prefix}{status}.html"
    try:
        st, data, shared = _open_page(path, request.values["server.follow-symlink"])
    except OSError:
        return ""
    response = request.response
    kind = assigned_type(request.values["mimetype.assign"], path)
    if kind:                             # as lighttpd: no type assigned, no Content-Type
        response.add_header("Content-Type", kind)
    if data is not None:
        response.write(data)
    elif shared is not None:
        response.send_shared_range(shared.acquire(), 0, st.st_size)
    return path


def _open_page(path: str, follow_symlinks: bool
               ) -> tuple[os.stat_result, bytes | None, SharedFd | None]:
    """An error document's (stat, contents, file), as _open_body gives them; with
    follow-symlink off, opened through no symlink and read from that fd alone (as
    _serve_without_symlinks does).  Raises OSError, IsADirectoryError for other than a
    regular file."""
    if not follow_symlinks:
        fd, st = open_file_without_symlinks(path)
        data, shared = _take_body(fd, st, path)
        return st, data, shared
    st = CACHE.stat(path)
    if not is_regular(st):
        raise _not_a_regular_file(path)
    st, data, _kept, shared = _open_body(path, st)
    return st, data, shared


def errno_status(err: OSError) -> int:
    """The status for a failed stat/open, as lighttpd maps errno."""
    return status_of_errno(err.errno or 0)     # none (not from the kernel): 500


# a name or path too long for the file system is a file not there (404), as lighttpd
# says: 414 is for a request-target too long to read
_STATUS_OF_ERRNO: Final = {errno.EACCES: 403, errno.EPERM: 403, errno.ENAMETOOLONG: 404,
                           errno.ENOENT: 404, errno.ENOTDIR: 404, errno.ELOOP: 404}


def status_of_errno(code: int) -> int:
    """errno_status of the errno alone (a table: compiled, each `errno.NAME` is a
    look-up on the module, six of them on every 404)."""
    return _STATUS_OF_ERRNO.get(code, 500)


def same_file(st: os.stat_result, other: os.stat_result) -> bool:
    """Whether two stats show the same version of a file (what ETags, kept contents
    and kept fields are valid for): the same inode, size and mtime.  (The kept ones
    test `is` first: the stat cache hands out one object within its second.)"""
    return (st.st_mtime_ns == other.st_mtime_ns and st[_ST_SIZE] == other[_ST_SIZE] and
            st[_ST_INO] == other[_ST_INO])


def is_regular(st: os.stat_result) -> bool:
    return st[_ST_MODE] & _S_IFMT == _S_IFREG


def is_directory(st: os.stat_result) -> bool:
    return st[_ST_MODE] & _S_IFMT == _S_IFDIR
