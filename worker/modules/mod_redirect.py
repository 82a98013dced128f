"""mod_redirect: answer with a redirect when the request URI matches a regex.

The patterns are matched, in config order, against the request-target as received
(path and query, still %-encoded), as lighttpd does.  The target may use `$n` (groups
of the rule), `%n` (groups of the enclosing regex condition) and `${url.scheme}`,
`${url.authority}`, `${url.port}`, `${url.path}`, `${url.query}`, `${qsa}`.  Patterns
and targets are compiled once, when the config is loaded.
"""

from __future__ import annotations

import re

from shared.config.captures import expand, match_groups
from shared.config.directives import Directive, DirectiveValueError, Type

from ..module import HandlerResult, Module as BaseModule
from ..request import Request

_VARIABLE = re.compile(r"\$\{(url\.scheme|url\.authority|url\.port|url\.path|url\.query"
                       r"|qsa)\}")

# a target: literal pieces (with $n / %n) and ${...} variables, alternating
Template = tuple[tuple[bool, str], ...]


def split_template(text: str) -> Template:
    """Literal text (expanded later) and variable names, so that captured text can
    never be read as a variable."""
    parts: list[tuple[bool, str]] = []
    position = 0
    for match in _VARIABLE.finditer(text):
        if match.start() > position:
            parts.append((False, text[position:match.start()]))
        parts.append((True, match.group(1)))
        position = match.end()
    if position < len(text):
        parts.append((False, text[position:]))
    return tuple(parts)


def compile_rules(pairs: tuple[tuple[str, str], ...]
                  ) -> tuple[tuple[re.Pattern[str], Template], ...]:
    rules = []
    for pattern, target in pairs:
        try:
            rules.append((re.compile(pattern), split_template(target)))
        except re.error as err:
            raise DirectiveValueError(f'bad regex "{pattern}": {err}') from None
    return tuple(rules)


def _redirect_code(code: int) -> int:
    if not 100 <= code <= 999:
        raise DirectiveValueError("url.redirect-code must be a 3-digit HTTP status")
    return code


DIRECTIVES = (
    Directive("url.redirect", Type.ARRAY_KVSTRING, (), convert=compile_rules),
    Directive("url.redirect-code", Type.SHORT, 301, convert=_redirect_code),
)


def variable(request: Request, name: str) -> str:
    if name == "url.path":
        return request.uri_path_raw
    if name == "url.query":
        return request.uri_query
    if name == "qsa":
        return ("&" + request.uri_query) if request.uri_query else ""
    if name == "url.scheme":
        return request.scheme
    host = request.host
    if name == "url.authority":
        return host
    colon = host.rfind(":")
    return host[colon + 1:] if colon > host.rfind("]") else ""


def substitute(request: Request, template: Template, groups: tuple[str, ...],
               condition_groups: tuple[str, ...]) -> str:
    return "".join(variable(request, text) if is_variable
                   else expand(text, groups, condition_groups)
                   for is_variable, text in template)


class Module(BaseModule):
    name = "redirect"
    replay_safe = True
    directives = DIRECTIVES

    def handle_uri_clean(self, request: Request) -> HandlerResult:
        rules = request.settings.values["url.redirect"]
        if not rules:
            return None
        target = request.target
        for pattern, template in rules:
            match = pattern.search(target)
            if match is None:
                continue
            location = substitute(request, template, match_groups(match),
                                  request.settings.captures("url.redirect"))
            request.response.set_header("Location", location)
            return request.settings.values["url.redirect-code"]
        return None
