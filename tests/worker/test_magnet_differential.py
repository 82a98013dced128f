"""Differential test of mod_magnet: Debian's lighttpd 1.4.69 (with its mod_magnet,
package lighttpd-mod-magnet) and a pylighttpd worker run the same Lua scripts
(tests/worker/magnet_scripts) on the same config; each request's status, body and
the headers scripts set must agree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_differential import LIGHTTPD, beside_lighttpd, exchange, get11, parse

pytest.importorskip("lupa")
SCRIPTS = Path(__file__).with_name("magnet_scripts")
LIGHTTPD_MAGNET = Path("/usr/lib/lighttpd/mod_magnet.so")
pytestmark = pytest.mark.skipif(
    not os.access(LIGHTTPD, os.X_OK) or not LIGHTTPD_MAGNET.exists(),
    reason="Debian's lighttpd with mod_magnet (lighttpd-mod-magnet) is not installed")

COMPARED_HEADERS = ("content-type", "content-length", "x-magnet", "x-one", "x-two",
                    "x-legacy", "transfer-encoding")
CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_magnet")
mimetype.assign = (".html" => "text/html", ".txt" => "text/plain")
$HTTP["url"] == "/clib" {{
    magnet.attract-raw-url-to = ("{scripts}/clib.lua")
}} else $HTTP["url"] =~ "^/raw/" {{
    magnet.attract-raw-url-to = ("{scripts}/request.lua")
}} else {{
    magnet.attract-physical-path-to = ("{scripts}/request.lua")
}}
"""
REQUESTS = {
    "clib": get11("/clib"),
    "attrs": get11("/attrs?a=1&b=%20", "X-Test: hello"),
    "files": get11("/files"),
    "legacy": get11("/legacy"),
    "request-body": get11("/body", "Content-Length: 3", method="POST") + b"abc",
    "status-string": get11("/status"),
    "restart": get11("/rewrite"),
    "restart-loop": get11("/restart-loop"),
    "raw-attrs": get11("/raw/attrs?x", "X-Test: raw"),
    # octets beyond ASCII as sent: uri.path decoded, request.uri normalised,
    # request.orig-uri as received
    "attrs-raw-octets": get11("/attrs?q=é&r=%C3%A9#ü", "X-Test: ünï"),
    "raw-attrs-raw-octets": get11("/raw/attrs?q=é#\x01ü", "X-Test: raw"),
    "physical": get11("/physical"),
    "error": get11("/error"),
    "stat": get11("/stat"),
    "passes-through": get11("/index.html"),
    "missing": get11("/missing.html"),
}

# request name -> why pylighttpd answers otherwise
KNOWN_DIFFERENCES = {
    "restart": "lighttpd 1.4.69 ignores lighty.RESTART_REQUEST from "
               "attract-physical-path-to (it keeps the physical path it had, 404 here); "
               "pylighttpd runs the phases again for the uri.path the script set, as "
               "later lighttpd releases do (in attract-raw-url-to 1.4.69 drops the "
               "connection without an answer)",
    "restart-loop": "the same: lighttpd 1.4.69 goes on (404), pylighttpd stops the "
                    "loop after 10 restarts with a 500",
    "missing": "a header the script set before the file was found missing: lighttpd's "
               "error page drops it, pylighttpd's core keeps the headers modules set",
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("magnet")
    docroot = base / "www"
    docroot.mkdir()
    (docroot / "index.html").write_text("<p>index</p>\n")
    (docroot / "other.txt").write_text("the other file\n")
    conf = base / "common.conf"
    conf.write_text(CONFIG.format(docroot=docroot, scripts=SCRIPTS))
    with beside_lighttpd(conf) as ports:
        yield ports


def _summary(raw: bytes) -> dict:
    status, headers, body = parse(raw)
    return {"status": status, "body": body,
            **{name: headers.get(name) for name in COMPARED_HEADERS}}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_same_answer_as_lighttpd(servers, name):
    theirs, ours = servers
    data = REQUESTS[name]
    same = _summary(exchange(ours, data)) == _summary(exchange(theirs, data))
    assert same != (name in KNOWN_DIFFERENCES), KNOWN_DIFFERENCES.get(name, name)
