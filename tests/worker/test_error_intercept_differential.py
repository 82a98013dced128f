"""Differential test of server.error-intercept: Debian's lighttpd 1.4.69 and a pylighttpd
worker run CGI scripts that answer errors (with a body, without one, a 401 with its
challenge, a long body, a success) with the switch off, on, on with an error handler
and on with server.errorfile-prefix, and must agree on every answer (module_diff.py).
Off, a backend's error goes to the client as the backend wrote it, an empty body
included; on, the server's error page or handler replaces it.

One known difference: with an error handler, lighttpd 1.4.69 answers an intercepted
error with its status and an empty body (the handler runs, its page is lost);
pylighttpd sends the handler's page with that status, as the error handler of any
other error is sent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from module_diff import compare, get, summary
from test_differential import LIGHTTPD, beside_lighttpd, exchange

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_cgi", "mod_staticfile")
server.tag = "difftest"
cgi.assign = (".cgi" => "")
mimetype.assign = (".html" => "text/html", "" => "application/octet-stream")
$HTTP["url"] =^ "/on/" {{ server.error-intercept = "enable" }}
$HTTP["url"] =^ "/handler/" {{
  server.error-intercept = "enable"
  server.error-handler = "/show.cgi"
}}
$HTTP["url"] =^ "/files/" {{
  server.error-intercept = "enable"
  server.errorfile-prefix = "{docroot}/status-"
}}
"""

SCRIPTS = {
    "empty404.cgi": "printf 'Status: 404\\r\\nX-Mine: 1\\r\\nContent-Type: text/plain\\r\\n\\r\\n'",
    "body500.cgi": "printf 'Status: 500\\r\\nContent-Type: text/plain\\r\\n\\r\\nbackend says no\\n'",
    "auth401.cgi": "printf 'Status: 401\\r\\nWWW-Authenticate: Basic realm=\"r\"\\r\\n"
                   "X-Other: 2\\r\\n\\r\\nlog in\\n'",
    "long403.cgi": "printf 'Status: 403\\r\\n\\r\\n'; head -c 300000 /dev/zero | tr '\\\\0' x",
    "fine.cgi": "printf 'Content-Type: text/plain\\r\\n\\r\\nfine\\n'",
}
SHOW = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
printf 'REDIRECT_STATUS=%s\\nREQUEST_URI=%s\\n' "$REDIRECT_STATUS" "$REQUEST_URI"
"""


def _make_site(base: Path) -> Path:
    docroot = base / "www"
    for folder in ("off", "on", "handler", "files"):
        (docroot / folder).mkdir(parents=True)
        for name, body in SCRIPTS.items():
            script = docroot / folder / name
            script.write_text(f"#!/bin/sh\n{body}\n")
            script.chmod(0o755)
    (docroot / "show.cgi").write_text(SHOW)
    (docroot / "show.cgi").chmod(0o755)
    (docroot / "status-404.html").write_text("<p>our own 404 page</p>\n")
    (docroot / "status-500.html").write_text("<p>our own 500 page</p>\n")
    return docroot


def _requests(folders: tuple[str, ...]) -> list[tuple[str, bytes]]:
    return [(f"{folder}-{name}{'-head' if method == 'HEAD' else ''}",
             get(f"/{folder}/{name}", method=method))
            for folder in folders for name in SCRIPTS for method in ("GET", "HEAD")]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("intercept")
    conf = base / "common.conf"
    conf.write_text(CONFIG.format(docroot=_make_site(base)))
    with beside_lighttpd(conf) as ports:
        yield ports


def test_backend_errors_are_answered_as_lighttpd_answers_them(servers):
    assert compare(servers, _requests(("off", "on", "files"))) == {}


def test_an_intercepted_error_gets_the_error_handlers_page(servers):
    """The known difference (see the top): the status and the challenge agree."""
    theirs, ours = servers
    for name, raw in _requests(("handler",)):
        their, our = summary(exchange(theirs, raw)), summary(exchange(ours, raw))
        assert (our["status"], our.get("www-authenticate")) == \
            (their["status"], their.get("www-authenticate")), name
        if our["status"] >= 400 and not name.endswith("-head"):
            script = name.split("-", 1)[1]
            assert their["body"] == b""
            assert our["body"] == (f"REDIRECT_STATUS={our['status']}\n"
                                   f"REQUEST_URI=/handler/{script}\n").encode()
