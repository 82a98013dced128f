"""mod_access: deny (or only allow) URL paths by suffix, answering 403.

Like lighttpd it checks twice: after URL cleaning, and again at handler selection,
because mod_indexfile may have appended an index name ("/" -> "/index.inc").
"""

from __future__ import annotations

from shared import log
from shared.config.directives import Directive, Type

from ..module import HandlerResult, Module as BaseModule
from ..http import ascii_lower
from ..request import Request

DIRECTIVES = (
    Directive("url.access-deny", Type.ARRAY_VLIST, (), doc="URL path suffixes to deny"),
    Directive("url.access-allow", Type.ARRAY_VLIST, (),
              doc="if set, only URL paths with one of these suffixes are allowed"),
)


def allowed(path: str, allow: tuple[str, ...], deny: tuple[str, ...],
            ignore_case: bool) -> bool:
    """lighttpd's rule: a non-empty allow list decides alone; else the deny list."""
    if ignore_case:
        path = ascii_lower(path)
        allow = tuple(ascii_lower(s) for s in allow)
        deny = tuple(ascii_lower(s) for s in deny)
    if allow:
        return path.endswith(allow)
    if deny:
        return not path.endswith(deny)
    return True


def _log_denial(path: str, by_allow_list: bool) -> None:
    """lighttpd's debug.log-request-handling line for a denied URL."""
    if by_allow_list:
        log.error("mod_access.c.84", f"url denied as failed to match any from access_allow {path}")
    else:
        log.error("mod_access.c.88", f"url denied as we match access_deny {path}")


class Module(BaseModule):
    name = "access"
    replay_safe = True
    directives = DIRECTIVES

    def handle_uri_clean(self, request: Request) -> HandlerResult:
        values = request.settings.values
        allow, deny = values["url.access-allow"], values["url.access-deny"]
        if not (allow or deny) or not request.uri_path:
            return None
        if allowed(request.uri_path, allow, deny,
                   values["server.force-lowercase-filenames"]):
            return None
        if values["debug.log-request-handling"]:
            _log_denial(request.uri_path, bool(allow))
        return 403

    def handle_subrequest_start(self, request: Request) -> HandlerResult:
        """The same check again: mod_indexfile may have appended an index name."""
        return self.handle_uri_clean(request)
