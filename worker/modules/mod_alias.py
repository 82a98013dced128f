"""mod_alias: map a URL prefix to a directory outside the document root.

The first prefix in config order that the path starts with wins; as in lighttpd a
prefix listed after a shorter one it starts with could never match, and the config is
refused, so the longest matching prefix always wins.  The rest of the path is appended
to the target as it is: "/icons" => "/usr/share/icons" maps "/icons.txt" too.  The URL
path is already cleaned, so only one escape remains, and it is refused with 403 as in
lighttpd: a prefix without a trailing slash followed by ".."/"." ("/icons../x" with
"/icons" => "/usr/share/icons/").  Targets are taken literally (no `%n`).
"""

from __future__ import annotations

from shared.config.directives import Directive, DirectiveValueError, Type

from ..handler import set_physical
from ..http import ascii_lower
from ..module import HandlerResult, Module as BaseModule
from ..request import Request


def _reachable(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The aliases in config order; each must be able to match (lighttpd's check).
    An empty target is refused (lighttpd 1.4.69 aborts on the first request to it)."""
    for index, (prefix, target) in enumerate(pairs):
        if not target:
            raise DirectiveValueError(f'alias.url: "{prefix}" has an empty target')
        for earlier, _ in pairs[:index]:
            if prefix.startswith(earlier):
                raise DirectiveValueError(f"alias.url: `{prefix}' will never match as "
                                          f"`{earlier}' matched first")
    return pairs


DIRECTIVES = (
    Directive("alias.url", Type.ARRAY_KVSTRING, (), convert=_reachable),
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
    active_when = {"handle_physical": "alias.url"}

    def handle_physical(self, request: Request) -> HandlerResult:
        aliases = request.settings.values["alias.url"]
        if not aliases:
            return None
        path = request.uri_path
        lower = request.settings.values["server.force-lowercase-filenames"]
        compare = ascii_lower(path) if lower else path
        for prefix, target in aliases:
            if compare.startswith(ascii_lower(prefix) if lower else prefix):
                rest = path[len(prefix):]
                if _escapes(prefix, target, rest):
                    return 403
                set_physical(request, target, rest)
                return None
        return None
