"""File system work of WebDAV methods, in steps.

A COPY, MOVE or DELETE of a collection, or a PROPFIND of a deep tree, may touch any
number of files.  Each operation here is a generator that yields after every file or
directory (and every MiB copied), so mod_webdav runs it in slices of a few
milliseconds between the event loop's rounds: a large tree delays no other client by
more than a slice.  Walks never follow a symlink into another directory: a symlink is
copied, deleted or moved as a link; and every file that is written is written to a
temporary name in its own directory first and renamed into place, so no reader (nor
a failure half-way) ever sees a truncated file.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat as stat_module
from typing import Callable, Final, Generator, Iterator

from .settled import settled

STEP: Final = "step"                 # yielded: a unit of work done, the slice may end here
COPY_STEP: Final = 1 << 20           # bytes copied between two yields
TEMP_SUFFIX: Final = ".webdav-tmp"   # a file being written (hidden from PROPFIND)
FILE_MODE: Final = 0o666             # lighttpd's WEBDAV_FILE_MODE (less the umask)
DIR_MODE: Final = 0o777

Steps = Generator[str, None, list[tuple[str, OSError]]]
# copy_file_range cannot copy between these two files (another file system, an old
# kernel): sendfile can
_NO_COPY_RANGE: Final = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


def temp_name(name: str) -> str:
    """A hidden name beside `name` for a file being written (its start only: a
    name near NAME_MAX still leaves room for the rest)."""
    return f".{name[:128]}.{secrets.token_hex(6)}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


LISTINGS_KEPT: Final = 256           # directory listings kept per worker ...
LISTING_MAX: Final = 4096            # ... of at most this many entries
_listings: Final[dict[tuple, list[tuple[str, bool]]]] = {}


def members_of(path: str, st: os.stat_result) -> list[tuple[str, bool]]:
    """The entries of the directory `path` as (name, is a symlink), sorted by name,
    files being written left out; kept while the directory's stat `st` (taken just
    now) is the same (an entry added, removed or renamed changes its mtime) and
    settled (worker/settled.py)."""
    key = (path, st.st_ino, st.st_dev, st.st_mtime_ns, st.st_ctime_ns)
    found = _listings.get(key)
    if found is not None:
        return found
    with os.scandir(path) as listing:
        found = sorted((entry.name, entry.is_symlink()) for entry in listing
                       if not is_temp_name(entry.name))
    if len(found) <= LISTING_MAX and settled(st):
        if len(_listings) >= LISTINGS_KEPT:
            _listings.clear()
        _listings[key] = found
    return found


def create_temp(dir_fd: int, name: str) -> tuple[int, str]:
    """A new empty file in the directory `dir_fd`, for `name`: (fd, its name)."""
    while True:
        tmp = temp_name(name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                         | os.O_NOFOLLOW, FILE_MODE, dir_fd=dir_fd)
            return fd, tmp
        except FileExistsError:
            continue


def remove_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def split_path(path: str) -> tuple[str, str]:
    """(parent directory, last name) of an absolute path without a trailing slash."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return parent or "/", name


def write_replacement(dir_fd: int, name: str, fill: Callable[[int], Generator[str, None, None]]
                      ) -> Generator[str, None, os.stat_result]:
    """A new version of the file `name` in the directory `dir_fd`: a temporary file
    that `fill(fd)` writes, renamed over `name` once complete, removed if anything
    fails or the work is abandoned (the generator closed).  Returns its fstat."""
    fd, tmp = create_temp(dir_fd, name)
    try:
        try:
            yield from fill(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        remove_quietly(tmp, dir_fd)
        raise
    return st


def copy_contents(src: int, fd: int) -> Generator[str, None, None]:
    """The bytes of the open file `src` from its position on, written to `fd` at its
    position: copy_file_range (shared extents where the file system can), or
    sendfile where the two files lie on file systems it cannot cross."""
    copy: Callable[[int, int, int], int] = os.copy_file_range
    while True:
        try:
            copied = copy(src, fd, COPY_STEP)
        except OSError as err:
            if copy is _sendfile or err.errno not in _NO_COPY_RANGE:
                raise
            copy = _sendfile                 # nothing was copied by the failed call
            continue
        if not copied:
            return
        yield STEP


def _sendfile(src: int, fd: int, count: int) -> int:
    return os.sendfile(fd, src, None, count)


def copy_file(source: str, target: str) -> Generator[str, None, None]:
    """Copy the regular file `source` to `target` (replaced whole when it exists)."""
    parent, name = split_path(target)
    dir_fd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        src = os.open(source, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            yield from write_replacement(dir_fd, name, lambda fd: copy_contents(src, fd))
        finally:
            os.close(src)
    finally:
        os.close(dir_fd)


def copy_link(source: str, target: str) -> None:
    os.symlink(os.readlink(source), target)


def copy_tree(source: str, target: str, members: bool = True) -> Steps:
    """Copy the directory `source` to the new `target` (only the directory itself
    when `members` is off: COPY with Depth 0).  Returns the members that failed, as
    (target path, error); a failed directory's members are not tried."""
    failed: list[tuple[str, OSError]] = []
    os.mkdir(target, DIR_MODE)
    if not members:
        return failed
    pending = [(source, target)]
    while pending:
        src_dir, dst_dir = pending.pop()
        for entry, src, dst in _entries(src_dir, dst_dir, failed):
            try:
                if entry.is_symlink():
                    copy_link(src, dst)
                elif entry.is_dir(follow_symlinks=False):
                    os.mkdir(dst, DIR_MODE)
                    pending.append((src, dst))
                else:
                    yield from copy_file(src, dst)
            except OSError as err:
                failed.append((dst, err))
            yield STEP
    return failed


def _entries(src_dir: str, dst_dir: str,
             failed: list[tuple[str, OSError]]) -> Iterator[tuple[os.DirEntry, str, str]]:
    try:
        with os.scandir(src_dir) as listing:
            entries = list(listing)
    except OSError as err:
        failed.append((dst_dir, err))
        return
    for entry in entries:
        yield entry, entry.path, f"{dst_dir}/{entry.name}"


def delete_tree(top: str) -> Steps:
    """Delete the directory `top` and everything below it, depth first.  Returns the
    paths that could not be removed (a directory above one of them stays too)."""
    failed: list[tuple[str, OSError]] = []
    pending: list[tuple[str, bool]] = [(top, False)]   # (directory, members done)
    while pending:
        path, emptied = pending.pop()
        if emptied:
            try:
                os.rmdir(path)
            except OSError as err:
                if err.errno != errno.ENOTEMPTY:    # a member failed: reported already
                    failed.append((path, err))
            yield STEP
            continue
        pending.append((path, True))
        try:
            with os.scandir(path) as listing:
                entries = list(listing)
        except OSError as err:
            failed.append((path, err))
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                pending.append((entry.path, False))
                continue
            try:
                os.unlink(entry.path)
            except OSError as err:
                failed.append((entry.path, err))
            yield STEP
    return failed


def remove(path: str, st: os.stat_result) -> Steps:
    """Delete a file, a symlink or a whole directory tree (`st` from lstat)."""
    if stat_module.S_ISDIR(st.st_mode):
        return (yield from delete_tree(path))
    os.unlink(path)
    return []


def lstat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
