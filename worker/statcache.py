"""The worker's stat cache: lighttpd's `server.stat-cache-engine`.

"simple" (the default, and what "inotify" / "fam" fall back to here) keeps the
`stat()` of every path asked for until the next once-a-second tick clears them all, so
an entry lives at most about a second; "disable" stats every time.  Only successful
stats are kept: a file created after a 404 is served at once.  A path found missing
within the second is asked of the kernel again each time, but with access(), which
answers without an exception where stat() raises one (a sixth of a 404's CPU).

The cache decides which file a request names and what kind it is; headers and body of
a response always come from one snapshot of the file (see static.serve_file), so a file
replaced within that second can serve its old contents for that second but never make
the headers disagree with the body.  Nor does it stand between a check and an open:
with server.follow-symlink off, what is served is opened through no symlink whatever
the cache says (static.open_without_symlinks).

One cache per worker process (`CACHE`); the worker's Server configures it and the
request pipeline drives its tick, so no module needs to know about the others.
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from typing import Final

MAX_ENTRIES: Final = 65536    # a flood of distinct paths clears the cache, never grows it
# looked up once (compiled, `os.stat` is an attribute look-up on the module each call)
_STAT: Final = os.stat
_ACCESS: Final = os.access
_F_OK: Final = os.F_OK
_EIO: Final = errno.EIO
_ENOENT: Final = errno.ENOENT


class StatCache:
    __slots__ = ("enabled", "entries", "links", "missing", "second")

    def __init__(self) -> None:
        self.enabled = True
        self.entries: dict[str, os.stat_result] = {}
        self.links: dict[str, bool] = {}   # path -> "is a symlink" (lstat), for follow-symlink
        self.missing: set[str] = set()     # paths stat() found absent (ENOENT) this second
        self.second = -1

    def configure(self, engine: str) -> None:
        self.enabled = engine != "disable"
        self.clear()

    def clear(self) -> None:
        self.entries.clear()
        self.links.clear()
        self.missing.clear()

    def tick(self, now: float) -> None:
        """Called once a second: every entry is dropped, so none outlives ~1 s."""
        second = int(now)
        if second != self.second:
            self.second = second
            if self.entries or self.links or self.missing:
                self.clear()

    def stat(self, path: str) -> os.stat_result:
        """`os.stat(path)`, from the cache when it is on; raises OSError."""
        st = self.entries.get(path)
        if st is None:
            st = self._keep(path, os.stat(path))
        return st

    def lookup(self, path: str) -> os.stat_result | int:
        """`stat(path)`, or the errno it failed with: a path that is not there (every
        404) costs no exception past this call, where raising one through the
        request's frames cost a quarter of its instructions."""
        st = self.entries.get(path)
        if st is None:
            if path in self.missing and not _ACCESS(path, _F_OK):
                return _ENOENT          # still absent, by a call that raises nothing
            try:
                st = _STAT(path)
            except OSError as err:
                return self._note_failure(path, err.errno or _EIO)  # always set by stat
            st = self._keep(path, st)
        return st

    def _note_failure(self, path: str, error: int) -> int:
        """Remember a path found absent for the rest of the second, so that the next
        asks with access().  (A path access() cannot reach for another reason, a
        directory made unsearchable since, reads as absent until the tick.)"""
        if error == _ENOENT and self.enabled:
            missing = self.missing
            if len(missing) >= MAX_ENTRIES:
                missing.clear()
            missing.add(path)
        return error

    def _keep(self, path: str, st: os.stat_result) -> os.stat_result:
        if self.enabled:
            entries = self.entries
            if len(entries) >= MAX_ENTRIES:
                entries.clear()
            entries[path] = st
        return st

    def invalidate(self, path: str) -> None:
        self.entries.pop(path, None)

    def invalidate_tree(self, path: str) -> None:
        """Forget `path` and everything below it (lighttpd's stat_cache_delete_dir):
        after a WebDAV DELETE, MOVE or COPY of a collection, a member asked for in
        the same second must not be answered from what was there before."""
        top = path.rstrip("/") or "/"
        below = top.rstrip("/") + "/"
        for kept in (self.entries, self.links):
            for name in [name for name in kept if name == top or name.startswith(below)]:
                del kept[name]

    def refresh(self, path: str, st: os.stat_result) -> None:
        """A fresher stat (fstat of an opened file) replaces the cached one."""
        if self.enabled and path in self.entries:
            self.entries[path] = st

    def _is_link(self, path: str) -> bool:
        found = self.links.get(path)
        if found is None:
            try:
                found = stat_module.S_ISLNK(os.lstat(path).st_mode)
            except OSError:
                found = False
            if self.enabled:
                if len(self.links) >= MAX_ENTRIES:
                    self.links.clear()
                self.links[path] = found
        return found

    def contains_symlink(self, path: str) -> bool:
        """True if any component of the absolute `path` is a symlink.  Like lighttpd's
        stat_cache_path_contains_symlink, this walks every component up to "/", so a
        document root reached through a symlink is refused too.

        The answer may be a second old, so it only chooses lighttpd's 403 early and
        guards nothing by itself: with follow-symlink off, every file or directory
        that is served is opened by static.open_without_symlinks, which refuses a
        symlink that appeared since."""
        path = path.rstrip("/")
        while path:
            if self._is_link(path):
                return True
            cut = path.rfind("/")
            if cut < 0:
                break
            path = path[:cut]
        return False


CACHE: Final = StatCache()
