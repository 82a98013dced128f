"""mod_indexfile: a URL ending in "/" is served by the first index file that exists.

The name is appended to both the physical path and `uri.path` (as lighttpd does), so
later checks such as mod_access see "/dir/index.php" and not "/dir/".  A name that
starts with "/" is taken from the document root: one index generator for every
directory.
"""

from __future__ import annotations

from typing import Final

from shared.config.directives import Directive, Type

from ..module import HandlerResult, Module as BaseModule
from ..request import Request
from ..static import is_regular
from ..statcache import CACHE

DIRECTIVES: Final = (
    Directive("index-file.names", Type.ARRAY_VLIST, ()),
    Directive("server.indexfiles", Type.ARRAY_VLIST, (), doc="old name of index-file.names"),
)


class Module(BaseModule):
    name = "indexfile"
    replay_safe = True
    directives = DIRECTIVES

    def handle_subrequest_start(self, request: Request) -> HandlerResult:
        if not request.uri_path.endswith("/"):
            return None
        values = request.values
        names = values["index-file.names"] or values["server.indexfiles"]
        for name in names:
            if not name:
                continue
            if name.startswith("/"):
                candidate = request.docroot.rstrip("/") + name
            else:
                candidate = request.physical_path + name
            st = CACHE.lookup(candidate)       # mostly not there: an errno, no raise
            if isinstance(st, int):
                continue
            if is_regular(st):
                request.uri_path += name.lstrip("/") if name.startswith("/") else name
                request.physical_path = candidate
                request.remember_stat(candidate, st)
                return None
        return None
