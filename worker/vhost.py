"""What the virtual-host modules (mod_simple_vhost, mod_evhost, mod_userdir) share:
lighttpd's path joining and its directory check, through the worker's stat cache.
"""

from __future__ import annotations

import errno

from .static import is_directory
from .statcache import CACHE


def append_path(base: str, part: str) -> str:
    """lighttpd's buffer_append_path_len: exactly one slash between the two."""
    if base.endswith("/"):
        return base + (part[1:] if part.startswith("/") else part)
    return base + (part if part.startswith("/") else "/" + part)


def directory_errno(path: str) -> int:
    """0 when `path` is a directory, else the errno that says why not (ENOTDIR for
    a file): the reason is only worded when it is logged."""
    st = CACHE.lookup(path)
    if isinstance(st, int):
        return st
    return 0 if is_directory(st) else errno.ENOTDIR


def without_port(authority: str) -> str:
    """The authority up to its first colon, as lighttpd cuts it for a path (an IPv6
    literal is cut at its first colon too: lighttpd's own behaviour)."""
    return authority.partition(":")[0]
