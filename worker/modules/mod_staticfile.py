"""mod_staticfile: serve regular files (GET, HEAD and POST, as lighttpd does).

Excluded extensions (scripts meant for another handler) and, if configured, any
PATH_INFO are left alone, so that no module serving them ends in 403 instead of
leaking source code.
"""

from __future__ import annotations

from typing import Final

from shared.config.directives import Directive, Type

from ..module import HandlerResult, Module as BaseModule
from ..request import Request
from ..static import errno_status, is_regular, serve_file

DIRECTIVES: Final = (
    Directive("static-file.exclude-extensions", Type.ARRAY_VLIST, ()),
    Directive("static-file.etags", Type.BOOL, True),
    Directive("static-file.disable-pathinfo", Type.BOOL, False),
)
_METHODS: Final = frozenset({"GET", "HEAD", "POST"})


class Module(BaseModule):
    name = "staticfile"
    replay_safe = True
    directives = DIRECTIVES

    def handle_subrequest_start(self, request: Request) -> HandlerResult:
        if request.method not in _METHODS:
            return None
        values = request.values
        if request.pathinfo and values["static-file.disable-pathinfo"]:
            return None
        path = request.physical_path
        excluded = values["static-file.exclude-extensions"]
        if excluded and path.endswith(excluded):
            return None
        try:
            st = request.physical_stat()
        except OSError as err:
            return errno_status(err)
        if not is_regular(st):
            return 403       # a directory too, as lighttpd: no module after this one lists it
        return serve_file(request, path, st)
