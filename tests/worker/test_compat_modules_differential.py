"""server.compat-module-load beside Debian's lighttpd 1.4.69: a server.modules list
without mod_indexfile, mod_dirlisting or mod_staticfile gets them as lighttpd adds
them, mod_indexfile *first*, so that a directory's index file is found before
mod_staticfile or a gateway answers for the directory itself (it was added last: the
directory got 403).  mod_staticfile answers 403 for a directory, as lighttpd's does:
listed before mod_dirlisting, it leaves no listing.  Off, nothing is added."""

from __future__ import annotations

import os

import pytest

from module_diff import summary
from test_differential import LIGHTTPD, beside_lighttpd, exchange

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

CONFIG = """
server.document-root = "{docroot}"
server.modules = ({modules})
server.compat-module-load = "{compat}"
server.tag = "difftest"
index-file.names = ("index.html", "index.cgi")
cgi.assign = (".cgi" => "")
mimetype.assign = (".txt" => "text/plain", ".html" => "text/html")
$HTTP["url"] =^ "/list/" {{ dir-listing.activate = "enable" }}
"""
SCRIPT = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\nscript %s\\n' "$SCRIPT_NAME"
"""
URLS = ["/", "/index.html", "/cgi/", "/cgi/index.cgi", "/a.txt", "/list/", "/missing/"]


@pytest.fixture(scope="module", params=[
        ('"mod_cgi"', "enable"),
        ('"mod_cgi", "mod_staticfile"', "enable"),   # listings off: static answers first
        ('"mod_indexfile", "mod_cgi", "mod_dirlisting", "mod_staticfile"', "disable"),
        ('"mod_indexfile", "mod_cgi", "mod_staticfile"', "disable")],
    ids=["cgi-only", "cgi-static", "listed-compat-off", "no-dirlisting"])
def servers(request, tmp_path_factory):
    base = tmp_path_factory.mktemp("compat")
    docroot = base / "www"
    for folder in ("cgi", "list"):
        (docroot / folder).mkdir(parents=True)
    (docroot / "index.html").write_text("<p>index</p>\n")
    (docroot / "a.txt").write_text("a\n")
    (docroot / "list" / "b.txt").write_text("b\n")
    (docroot / "cgi" / "index.cgi").write_text(SCRIPT)
    (docroot / "cgi" / "index.cgi").chmod(0o755)
    modules, compat = request.param
    conf = base / "common.conf"
    conf.write_text(CONFIG.format(docroot=docroot, modules=modules, compat=compat))
    with beside_lighttpd(conf) as ports:
        yield ports


@pytest.mark.parametrize("url", URLS)
def test_answered_as_lighttpd_answers(servers, url):
    raw = f"GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    theirs, ours = (summary(exchange(port, raw)) for port in servers)
    if url == "/list/" and theirs["status"] == 200:
        for answer in (theirs, ours):      # the listing's markup is each server's own
            answer["body"] = b"b.txt" in answer["body"]
            answer.pop("content-length", None)
    assert ours == theirs
