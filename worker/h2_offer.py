"""When HTTP/2 may take a connection: the feature flags and the h2c upgrade request.

Kept apart from worker/h2.py so that deciding costs no import of the HTTP/2 stack
(the session, its engine and hpack's tables: about 0.7 MB a process): the core loads
that stack when a connection first speaks HTTP/2 (Server.take_over_h2), and
mod_openssl loads it in the master when TLS offers "h2" by ALPN, so that the workers
share it.
"""

from __future__ import annotations

import base64
import binascii

from shared.config.feature_flags import flag_bool

from .request import Request


def h2c_upgrade_asked(request: Request) -> bool:
    """`Upgrade: h2c` with a well-formed HTTP2-Settings and no body (RFC 7540 3.2: a
    request with a body is answered over HTTP/1.1, as lighttpd does)."""
    tokens = {t.strip().lower() for t in request.headers.get("upgrade", "").split(",")}
    settings = request.headers.get("http2-settings")
    if "h2c" not in tokens or settings is None or request.content_length > 0 or \
            "transfer-encoding" in request.headers:
        return False
    try:
        base64.urlsafe_b64decode(settings + "=" * (-len(settings) % 4))
    except (binascii.Error, ValueError):
        return False
    return True


def enabled(settings: dict, cleartext: bool) -> bool:
    """Whether server.feature-flags allow HTTP/2 here (TLS: h2proto; cleartext: h2c
    as well)."""
    return flag_bool(settings, "server.h2proto", True) and (
        not cleartext or flag_bool(settings, "server.h2c", True))
