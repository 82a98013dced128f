"""Differential test of mod_setenv, mod_expire and mod_access (url.access-allow beside
url.access-deny): Debian's lighttpd 1.4.69 and a pylighttpd worker serve the same
docroot (files and /bin/sh CGI scripts that print their environment) with the same
config, and must agree on the status, every header line and the body of each answer
(module_diff.py; expiry times within a second).
"""

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
server.modules = ("mod_access", "mod_redirect", "mod_setenv", "mod_expire", "mod_indexfile",
                  "mod_cgi", "mod_staticfile")
server.tag = "difftest-é"
index-file.names = ("index.html")
cgi.assign = (".sh" => "")
mimetype.assign = (".html" => "text/html", ".txt" => "text/plain; charset=utf-8",
                   ".css" => "text/css", "" => "application/octet-stream")
url.access-deny = ("~", ".inc")

$HTTP["url"] =^ "/env/" {{
  setenv.add-request-header = ("X-Req" => "added", "User-Agent" => "ua-added",
                               "X-Empty" => "", "Cookie" => "b=2")
  setenv.set-request-header = ("X-Set" => "set", "Accept" => "")
  setenv.add-response-header = ("X-Resp" => "r-added", "X-Other" => "o1", "X-E" => "")
  setenv.set-response-header = ("X-Gone" => "", "X-Powered" => "setenv")
  setenv.add-environment = ("FOO" => "foo1", "BAR" => "bar1", "EMPTYADD" => "",
                            "lower-case.var" => "low")
  setenv.set-environment = ("FOO" => "foo-set", "EMPTY" => "", "REMOTE_ADDR" => "9.9.9.9")
  server.error-handler-404 = "/other/env.sh"
}}
$HTTP["url"] =^ "/other/" {{ setenv.add-environment = ("BAR" => "other") }}
$HTTP["useragent"] =~ "^café (.*)$" {{ setenv.add-response-header = ("X-Café" => "yes") }}
$HTTP["url"] =~ "^/u/(.*)$" {{
  setenv.add-response-header = ("X-U" => "zoë €")
  setenv.add-request-header = ("X-U-Req" => "naïve")
  setenv.add-environment = ("U_ENV" => "ünï")
  url.redirect = ("^/u/go/" => "/landing?from=%1")
}}
$HTTP["url"] =^ "/ct/" {{
  setenv.set-response-header = ("Content-Type" => "text/x-set", "Cache-Control" => "private")
}}

expire.url = ("/img/" => "access plus 1 years",
              "/mod/" => "modification plus 1 years 2 days",
              "/week/" => "access 2 weeks 1 day 3 hours 4 minutes 5 seconds",
              "/past/" => "modification plus 1 seconds")
expire.mimetypes = ("text/css" => "access plus 1 hours", "text/*" => "access 30 minutes",
                    "" => "now plus 5 seconds")
$HTTP["url"] =^ "/nomime/" {{ expire.mimetypes = ("image/" => "access 1 day") }}

$HTTP["host"] == "allow.example" {{ url.access-allow = (".html", ".TXT") }}
$HTTP["host"] == "allowall.example" {{ url.access-allow = ("") }}
$HTTP["host"] == "denyall.example" {{ url.access-deny = ("") }}
$HTTP["host"] == "both.example" {{ url.access-allow = (".txt") url.access-deny = (".txt") }}
$HTTP["host"] == "lower.example" {{
  url.access-allow = (".HTML")
  server.force-lowercase-filenames = "enable"
}}
"""

ENV_SCRIPT = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\nX-Resp: from-script\\r\\nX-Gone: here\\r\\n\\r\\n'
env | grep -E '^(HTTP_|FOO=|BAR=|EMPTY|REMOTE_ADDR=|U_ENV=|LOWER_CASE_VAR=)' | sort
"""
CACHING_SCRIPT = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\nCache-Control: no-store\\r\\n\\r\\nown\\n'
"""


def _make_site(base: Path) -> Path:
    docroot = base / "www"
    for sub in ("env", "other", "ct", "img", "mod", "week", "past", "nomime", "dir", "u"):
        (docroot / sub).mkdir(parents=True)
    (docroot / "index.html").write_text("index\n")
    for sub in ("env", "other", "u"):
        script = docroot / sub / "env.sh"
        script.write_text(ENV_SCRIPT)
        script.chmod(0o755)
    (docroot / "cc.sh").write_text(CACHING_SCRIPT)
    (docroot / "cc.sh").chmod(0o755)
    for name in ("a.txt", "env/a.txt", "ct/a.txt", "img/a.txt", "week/a.txt",
                 "nomime/a.txt", "dir/index.html", "Mixed.html"):
        (docroot / name).write_text(f"{name}\n")
    (docroot / "style.css").write_text("p {}\n")
    (docroot / "a.bin").write_bytes(b"\x00\x01")
    (docroot / "secret.inc").write_text("secret\n")
    (docroot / "mod" / "b.html").write_text("modified long ago\n")
    os.utime(docroot / "mod" / "b.html", (1767225600, 1767225600))    # 2026-01-01
    (docroot / "past" / "old.txt").write_text("older than its expiry\n")
    os.utime(docroot / "past" / "old.txt", (1000000000, 1000000000))
    return docroot


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("headerdiff")
    conf = base / "common.conf"
    conf.write_text(CONFIG.format(docroot=_make_site(base)))
    with beside_lighttpd(conf) as ports:
        yield ports


SETENV = [
    ("setenv-cgi", get("/env/env.sh", "User-Agent: client", "X-Req: orig", "Accept: a/b",
                       "X-Set: old", "Cookie: a=1")),
    ("setenv-cgi-head", get("/env/env.sh", method="HEAD")),
    ("setenv-conditional-environment", get("/other/env.sh")),
    ("setenv-static-file", get("/env/a.txt")),
    ("setenv-error-page", get("/ct/missing")),
    ("setenv-set-content-type", get("/ct/a.txt")),
    ("setenv-not-after-access-deny", get("/ct/x.inc")),
    ("setenv-taken-once-before-error-handler", get("/env/missing")),
    ("setenv-http10", get("/env/a.txt", host="", version="1.0")),
    # octets beyond ASCII: the config's (UTF-8), the client's, a path's in a redirect
    ("setenv-non-ascii", get("/u/env.sh", "X-Client: résumé", "Cookie: c=ü")),
    ("redirect-non-ascii-capture", get("/u/go/%C3%BC%E2%82%AC")),
    ("condition-on-a-non-ascii-header", get("/a.txt", "User-Agent: café au lait")),
]
EXPIRE = [
    ("expire-url-access", get("/img/a.txt")),
    ("expire-url-access-http10", get("/img/a.txt", version="1.0")),
    ("expire-url-modification", get("/mod/b.html")),
    ("expire-url-modification-http10", get("/mod/b.html", version="1.0")),
    ("expire-url-modification-in-the-past", get("/past/old.txt")),
    ("expire-url-several-units", get("/week/a.txt")),
    ("expire-mimetype-exact", get("/style.css")),
    ("expire-mimetype-star", get("/a.txt")),
    ("expire-mimetype-catch-all", get("/a.bin")),
    ("expire-mimetype-none", get("/nomime/a.txt")),
    ("expire-head", get("/img/a.txt", method="HEAD")),
    ("expire-range", get("/img/a.txt", "Range: bytes=0-1")),
    ("expire-not-modified", get("/img/a.txt", "If-Modified-Since: Fri, 01 Jan 2100 "
                                              "00:00:00 GMT")),
    ("expire-not-on-404", get("/img/missing")),
    ("expire-not-on-post", get("/img/a.txt", "Content-Length: 0", method="POST")),
    ("expire-cgi", get("/env/env.sh")),
    ("expire-cgi-own-cache-control", get("/cc.sh")),
    ("expire-after-setenv-cache-control", get("/ct/a.txt")),
    ("expire-directory-index", get("/dir/")),
]
ACCESS = [(f"access-{host.split('.')[0]}-{path.strip('/').replace('/', '-') or 'root'}",
           get(path, host=host))
          for host in ("allow.example", "allowall.example", "denyall.example",
                       "both.example", "lower.example", "test.example")
          for path in ("/", "/index.html", "/a.txt", "/style.css", "/secret.inc",
                       "/Mixed.html", "/MIXED.HTML", "/dir/")]


@pytest.mark.parametrize("requests", [SETENV, EXPIRE, ACCESS], ids=["setenv", "expire", "access"])
def test_same_answers_as_lighttpd(servers, requests):
    differences = compare(servers, requests)
    assert not differences, "\n".join(f"{name}: {diff}" for name, diff in differences.items())


def test_the_answers_compared_carry_what_the_modules_do(servers):
    """The comparison above is not of two answers that both lack the headers."""
    _, ours = servers
    answers = {name: summary(exchange(ours, raw)) for name, raw in SETENV + EXPIRE + ACCESS}
    cgi = answers["setenv-cgi"]
    assert b"HTTP_USER_AGENT=client, ua-added\n" in cgi["body"]
    assert b"HTTP_COOKIE=a=1; b=2\n" in cgi["body"]
    assert b"FOO=foo-set\n" in cgi["body"] and b"REMOTE_ADDR=9.9.9.9\n" in cgi["body"]
    assert b"HTTP_ACCEPT" not in cgi["body"] and b"EMPTYADD=\n" in cgi["body"]
    assert b"LOWER_CASE_VAR=low\n" in cgi["body"]      # named as for any backend
    assert (cgi["x-resp"], cgi["x-powered"], "x-gone" in cgi) == \
        (["from-script", "r-added"], ["setenv"], False)
    assert answers["setenv-not-after-access-deny"]["content-type"] == ["text/html"]
    assert answers["expire-url-access"]["cache-control"] == ["max-age"]
    assert "expires" in answers["expire-url-access-http10"]
    assert "cache-control" not in answers["expire-mimetype-none"]
    assert answers["access-allow-style.css"]["status"] == 403
    assert answers["access-allow-index.html"]["status"] == 200
