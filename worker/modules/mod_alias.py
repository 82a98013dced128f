"""mod_alias: map a URL prefix to a directory outside the document root.

The longest matching prefix wins.  The URL path is already cleaned, so only one
escape remains, and it is refused with 403 as in lighttpd: a prefix without a
trailing slash followed by ".."/"." ("/icons../x" with "/icons" => "/usr/share/icons/").
"""

from __future__ import annotations

from shared.config.directives import Directive, DirectiveValueError, Type

from ..handler import set_physical
from ..module import HandlerResult, Module as BaseModule
from ..request import Request


def _longest_first(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    for prefix, target in pairs:
        if not prefix:
            raise DirectiveValueError("alias.url: an empty URL prefix is not allowed")
        if not target:
            raise DirectiveValueError(f'alias.url: "{prefix}" has an empty target')
    return tuple(sorted(pairs, key=lambda pair: len(pair[0]), reverse=True))


DIRECTIVES = (
    Directive("alias.url", Type.ARRAY_KVSTRING, (), convert=_longest_first),
)


def _escapes(prefix: str, target: str, rest: str) -> bool:
    """'/alias..' or '/alias.' right after a prefix that has no slash of its own."""
    if not rest.startswith("."):
        return False
    tail = rest[2:] if rest.startswith("..") else rest[1:]
    return (tail == "" or tail.startswith("/")) and not prefix.endswith("/") \
        and target.endswith("/")


class Module(BaseModule):
    name = "alias"
    replay_safe = True
    directives = DIRECTIVES

    def handle_physical(self, request: Request) -> HandlerResult:
        aliases = request.settings.values["alias.url"]
        if not aliases:
            return None
        path = request.uri_path
        lower = request.settings.values["server.force-lowercase-filenames"]
        compare = path.lower() if lower else path
        for prefix, target in aliases:
            if compare.startswith(prefix.lower() if lower else prefix):
                rest = path[len(prefix):]
                if _escapes(prefix, target, rest):
                    return 403
                set_physical(request, target, rest)
                return None
        return None
