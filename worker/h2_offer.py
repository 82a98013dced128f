"""When HTTP/2 may take a connection: the feature flags and the h2c upgrade request.

Kept apart from worker/h2.py so that deciding costs no import of the HTTP/2 stack
(the session, its engine and hpack's tables: about 0.7 MB a process): the core loads
that stack when a connection first speaks HTTP/2 (Server.take_over_h2), and
mod_openssl loads it in the master when TLS offers "h2" by ALPN, so that the workers
share it.
"""

from __future__ import annotations

from shared.config.feature_flags import flag_bool

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
    return settings is not None and "h2c" in _tokens(headers.get("upgrade", "")) and \
        "http2-settings" in _tokens(headers.get("connection", ""))


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def enabled(settings: dict, cleartext: bool) -> bool:
    """Whether server.feature-flags allow HTTP/2 here (TLS: h2proto; cleartext: h2c
    as well)."""
    return flag_bool(settings, "server.h2proto", True) and (
        not cleartext or flag_bool(settings, "server.h2c", True))
