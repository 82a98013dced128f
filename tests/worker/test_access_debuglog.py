"""mod_access under debug.log-request-handling: the line saying why a URL is denied (by
url.access-deny, or by missing url.access-allow), as lighttpd 1.4.69 writes it."""

from __future__ import annotations

from test_accesslog import needs_lighttpd
from test_errorlog import normalised, our_errorlog, their_errorlog

EXTRA = """server.modules += ("mod_access")
url.access-deny = (".inc")
$HTTP["host"] == "allow" { url.access-allow = (".html") }
debug.log-request-handling = "enable"
"""
REQUESTS = [b"GET /x.inc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET /a.txt HTTP/1.1\r\nHost: allow\r\nConnection: close\r\n\r\n",
            b"GET /index.html HTTP/1.1\r\nHost: allow\r\nConnection: close\r\n\r\n"]


def _denials(text: str) -> list[str]:
    return [line for line in normalised(text) if line.startswith("(mod_access.c")]


@needs_lighttpd
def test_denials_are_logged_as_lighttpd_logs_them(tmp_path):
    ours = _denials(our_errorlog(tmp_path / "ours", EXTRA, REQUESTS))
    assert ours == _denials(their_errorlog(tmp_path, EXTRA, REQUESTS))
    assert ours == ["(mod_access.c.88) url denied as we match access_deny /x.inc",
                    "(mod_access.c.84) url denied as failed to match any from access_allow "
                    "/a.txt"]
