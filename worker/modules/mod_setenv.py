"""mod_setenv: add or set request headers, response headers and backend environment.

As lighttpd 1.4.69 does it:
- the settings are taken once per request, when its URL is first clean (the phases
  running again for another URL, an error handler's, do not take them again), so a
  request a module answered before this one's turn (mod_access's 403 when it comes
  first) gets none of them;
- request headers change at that moment: `add` appends `, value` to a header the
  client sent (`; value` to Cookie) or adds it, `set` replaces it, and `set` with an
  empty value removes it; an empty value is never added;
- the environment reaches the backends (CGI, FastCGI, SCGI) and wins over the
  variables the server sets itself: `add` appends `, value` to a variable set before
  (an empty value still creates it), `set` replaces it (empty included);
- response headers change on every answer, error pages too: `add` puts one more line
  with that name, `set` replaces the header where it stands, or removes it when empty.
"""

from __future__ import annotations

from shared.config.directives import Directive, Type

from ..http import header_text
from ..module import HandlerResult, Module as BaseModule
from ..request import Request, Response

_HEADER_KEYS = ("add-request-header", "set-request-header", "add-response-header",
                "set-response-header")
_ENVIRONMENT_KEYS = ("add-environment", "set-environment")


def _header_values(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The config's names and values as header fields hold them (the octets of their
    UTF-8)."""
    return tuple((header_text(name), header_text(value)) for name, value in pairs)


DIRECTIVES = tuple(Directive(f"setenv.{key}", Type.ARRAY_KVSTRING, (), convert=_header_values)
                   for key in _HEADER_KEYS) + \
    tuple(Directive(f"setenv.{key}", Type.ARRAY_KVSTRING, ()) for key in _ENVIRONMENT_KEYS)
CTX = "setenv"          # request.plugin_ctx: the response headers taken for the request

Pairs = tuple[tuple[str, str], ...]


def add_request_headers(request: Request, pairs: Pairs) -> None:
    headers = request.headers
    for name, value in pairs:
        if not value:
            continue
        key = name.lower()
        old = headers.get(key)
        separator = "; " if key == "cookie" else ", "     # cookies join as one header
        headers[key] = f"{old}{separator}{value}" if old else value


def set_request_headers(request: Request, pairs: Pairs) -> None:
    headers = request.headers
    for name, value in pairs:
        if value:
            headers[name.lower()] = value
        else:
            headers.pop(name.lower(), None)


def add_environment(request: Request, pairs: Pairs) -> None:
    for name, value in pairs:
        old = request.env.get(name) if request.env else None
        request.set_env(name, f"{old}, {value}" if old and value else (old or value))


def set_environment(request: Request, pairs: Pairs) -> None:
    for name, value in pairs:
        request.set_env(name, value)


def add_response_headers(response: Response, pairs: Pairs) -> None:
    for name, value in pairs:
        if value:
            response.add_header(name, value)


def set_response_headers(response: Response, pairs: Pairs) -> None:
    for name, value in pairs:
        if value:
            replace_header(response, name, value)
        else:
            response.remove_header(name)


def replace_header(response: Response, name: str, value: str) -> None:
    """`name: value` in place of the first header of that name (the others go), or
    at the end when there is none."""
    lower = name.lower()
    headers = response.headers
    for index, (key, _) in enumerate(headers):
        if key.lower() == lower:
            headers[index] = (key, value)
            response.headers = headers[:index + 1] + \
                [h for h in headers[index + 1:] if h[0].lower() != lower]
            return
    headers.append((name, value))


class Module(BaseModule):
    name = "setenv"
    replay_safe = True      # what it adds follows from the settings alone
    directives = DIRECTIVES

    def handle_uri_clean(self, request: Request) -> HandlerResult:
        if CTX in request.plugin_ctx:
            return None
        values = request.settings.values
        request.plugin_ctx[CTX] = (values["setenv.add-response-header"],
                                   values["setenv.set-response-header"])
        add_request_headers(request, values["setenv.add-request-header"])
        set_request_headers(request, values["setenv.set-request-header"])
        add_environment(request, values["setenv.add-environment"])
        set_environment(request, values["setenv.set-environment"])
        return None

    def handle_response_start(self, request: Request) -> None:
        taken = request.plugin_ctx.get(CTX)
        if taken is None:
            return
        added, replaced = taken
        add_response_headers(request.response, added)
        set_response_headers(request.response, replaced)
