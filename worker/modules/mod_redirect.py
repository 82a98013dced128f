"""mod_redirect: answer with a redirect when the request URI matches a regex.

The rules (`url.redirect`, regex => target) are tried in config order against the
request-target as lighttpd normalises it (path and query, still %-encoded); the first
that matches answers with `url.redirect-code` (301 unless set) and its target in
Location.  A rule with an empty target matches and stops the search without
redirecting.  The target takes lighttpd's substitutions, `$n`, `%n`, `${url.*}`,
`${qsa}` and the encoders (worker/urlsubst.py), compiled once when the config loads.
A rule whose pattern backtracks past its time limit fails the request (500), as a
PCRE2 match-limit error does in lighttpd.  Control characters a substitution brings
in (`${decb64u:n}` can decode CR LF) are %-encoded: the Location never carries a
second header.
"""

from __future__ import annotations

import re

from shared import log
from shared.config.directives import Directive, DirectiveValueError, Type

from ..http import header_text
from ..module import ERROR, HandlerResult, Module as BaseModule
from ..request import Request
from ..urlsubst import MatchTooLong, Rule, compile_rules, substitute

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _escaped_controls(location: str) -> str:
    if _CONTROL.search(location) is None:
        return location
    return _CONTROL.sub(lambda match: f"%{ord(match.group()):02X}", location)


def _redirect_code(code: int) -> int:
    """lighttpd sends whatever status is set (usually 301, 302, 303, 307 or 308)."""
    if not 100 <= code <= 999:
        raise DirectiveValueError("url.redirect-code must be a 3-digit HTTP status")
    return code


def _rules(pairs: tuple[tuple[str, str], ...]) -> tuple[Rule, ...]:
    return compile_rules(pairs)


DIRECTIVES = (
    Directive("url.redirect", Type.ARRAY_KVSTRING, (), convert=_rules),
    Directive("url.redirect-code", Type.SHORT, 301, convert=_redirect_code),
)


class Module(BaseModule):
    name = "redirect"
    replay_safe = True
    directives = DIRECTIVES
    active_when = {"handle_uri_clean": "url.redirect"}

    def handle_uri_clean(self, request: Request) -> HandlerResult:
        rules = request.settings.values["url.redirect"]
        if not rules:
            return None
        try:
            found = substitute(rules, request, request.settings.captures("url.redirect"))
        except MatchTooLong as err:
            log.error("mod_redirect.c", str(err))
            return ERROR
        if found is None:
            return None
        request.response.set_header("Location", header_text(_escaped_controls(found[1])))
        return request.settings.values["url.redirect-code"]
