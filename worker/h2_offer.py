"""When HTTP/2 may take a connection: the feature flags and the h2c upgrade request.

Kept apart from worker/h2.py so that deciding costs no import of the HTTP/2 stack
(the session, its engine and hpack's tables: about 0.7 MB a process): the core loads
that stack when a connection first speaks HTTP/2 (Server.take_over_h2), and
mod_openssl loads it in the master when TLS offers "h2" by ALPN, so that the workers
share it.
"""

from __future__ import annotations

from shared.config.feature_flags import flag_bool

from .http import list_tokens
from .request import Request


def h2c_upgrade_asked(request: Request) -> bool:
    """`Upgrade: h2c` on HTTP/1.1 with an HTTP2-Settings (one: a second of another value
    is a 400, http.repeated_field), named in Connection, and no body (RFC 7540 3.2 and
    3.2.1; RFC 9110 7.8: an HTTP/1.0 request's Upgrade is ignored; a request with a
    body is answered over HTTP/1.1, as lighttpd does).  The field's content is the
    engine's to judge (h2_connection.upgrade_settings_refused)."""
    if request.version != "1.1" or request.content_length > 0 or \
            "transfer-encoding" in request.headers:
        return False
    headers = request.headers
    settings = headers.get("http2-settings")
    return settings is not None and "h2c" in list_tokens(headers.get("upgrade")) and \
        "http2-settings" in list_tokens(headers.get("connection"))


def drop_h2c_offer(headers: dict[str, str]) -> None:
    """What lighttpd does with the Upgrade field of an HTTP/1.1 request it does not
    upgrade (h2_check_con_upgrade_h2c), so that no backend sees an offer the server
    turned down: without a Connection field the Upgrade goes; one that names h2c goes
    with HTTP2-Settings, and Connection loses their tokens.  Another protocol's offer
    (websocket) stays."""
    if "connection" not in headers:
        del headers["upgrade"]
        return
    if "h2c" not in list_tokens(headers["upgrade"]):
        return
    drop_offer_tokens(headers)
    headers.pop("http2-settings", None)
    del headers["upgrade"]


def drop_offer_tokens(headers: dict[str, str]) -> None:
    """Connection without the tokens of an h2c offer (HTTP2-Settings when that field
    came, Upgrade), as lighttpd leaves it.  All an upgraded request loses: lighttpd
    moves the fields to stream 1 before it drops the offer's own."""
    connection = headers["connection"]
    if "http2-settings" in headers:
        connection = _without_token(connection, "http2-settings")
    headers["connection"] = _without_token(connection, "upgrade")


def _without_token(value: str, token: str) -> str:
    """`value` without each `token` in it, spaced as lighttpd's
    http_header_remove_token leaves it (blanks where the token and its comma were; a
    last token cut with the comma before it)."""
    chars = list(value)
    length = len(token)
    position: int | None = 0
    while position is not None:
        while position < len(chars) and chars[position] in " \t,":
            position += 1
        end = position + length
        if "".join(chars[position:end]).lower() == token and \
                (end == len(chars) or chars[end] in " \t,;"):
            chars[position:end] = " " * length
            comma = value.find(",", end)
            if comma >= 0:
                chars[comma] = " "
                position = comma + 1
                continue
            left = "".join(chars)
            return left[:max(left.rfind(",", 0, position), 0)]
        comma = value.find(",", position)
        position = comma if comma >= 0 else None
    return "".join(chars)


def enabled(settings: dict, cleartext: bool) -> bool:
    """Whether server.feature-flags allow HTTP/2 here (TLS: h2proto; cleartext: h2c
    as well)."""
    return flag_bool(settings, "server.h2proto", True) and (
        not cleartext or flag_bool(settings, "server.h2c", True))
