"""Differential test of server.http-parseopts: Debian's lighttpd 1.4.69 and a pylighttpd
worker run the same config under each of several option lists (Debian's own, the URL
left as it came, rejecting in place of removing, the lenient switches) and must agree
on every answer to the same raw requests (module_diff.py): the status, the headers
and the body, where a CGI script prints QUERY_STRING, REQUEST_URI, SCRIPT_NAME and
PATH_INFO, a redirect shows the target as its rule matched it and a rewrite passes
it on to the script.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from module_diff import compare, get
from test_differential import LIGHTTPD, beside_lighttpd

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_redirect", "mod_rewrite", "mod_cgi", "mod_staticfile")
server.tag = "difftest"
cgi.assign = (".cgi" => "")
mimetype.assign = (".txt" => "text/plain", "" => "application/octet-stream")
url.redirect = ("^/r/(.*)$" => "/to/$1")
url.rewrite-once = ("^/rw/([^?]*)(?:\\?(.*))?$" => "/env.cgi/$1?was=$2")
{options}
"""

OPTION_LISTS = {
    "default": "",
    "debian": """server.http-parseopts = (
  "header-strict" => "enable", "host-strict" => "enable", "host-normalize" => "enable",
  "url-normalize-unreserved" => "enable", "url-normalize-required" => "enable",
  "url-ctrls-reject" => "enable", "url-path-2f-decode" => "enable",
  "url-path-dotseg-remove" => "enable")""",
    "as-it-came": 'server.http-parseopts = ("url-normalize" => "disable")',
    "rejecting": """server.http-parseopts = (
  "url-path-2f-decode" => "disable", "url-path-2f-reject" => "enable",
  "url-path-dotseg-remove" => "disable", "url-path-dotseg-reject" => "enable",
  "url-query-20-plus" => "enable")""",
    "lenient": """server.http-parseopts = (
  "url-ctrls-reject" => "disable", "url-invalid-utf8-reject" => "disable",
  "url-path-2f-decode" => "disable", "url-path-dotseg-remove" => "disable",
  "method-get-body" => "enable")""",
}

ENV_SCRIPT = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
printf 'QUERY_STRING=%s\\nREQUEST_URI=%s\\nSCRIPT_NAME=%s\\nPATH_INFO=%s\\n' \\
  "$QUERY_STRING" "$REQUEST_URI" "$SCRIPT_NAME" "$PATH_INFO"
"""

REQUESTS = [
    ("query-escapes", get("/env.cgi?a=%7e&b=%2f%20c+d%3b%3D")),
    ("query-question-marks", get("/env.cgi?a?b%3fc")),
    ("path-info", get("/env.cgi/x%2Fy/%7e/./z?q")),
    ("fragment", get("/env.cgi?x#frag?y")),
    ("redirect-normalised", get("/r/%41%2f%7e%20%3d/./x/../y?q=%2f%41%20")),
    ("redirect-slash", get("/r/a%2fb")),
    ("redirect-dots", get("/r/a/%2e%2e/b//c")),
    ("redirect-decoded-slashes", get("/r/x%2F%2Fy/%2F/z?a=%2F%2F")),
    ("redirect-decoded-slash-dots", get("/r/a%2F..%2Fb")),
    ("redirect-leading-decoded-slash", get("/%2F/r/x")),
    ("rewrite", get("/rw/a%2Fb/%2e%2e/c?x=%20y%3f")),
    ("file-escaped-slash", get("/a%2fb.txt")),
    ("file-dot-segment", get("/a/./b.txt")),
    ("file-empty-segment", get("/a//b.txt")),
    ("file-encoded-dots", get("/a/%2e%2e/a/b.txt")),
    ("file-dots-in-a-name", get("/a/..b.txt")),
    ("control-escaped", get("/a%01b.txt")),
    ("nul-escaped", get("/a%00b.txt")),
    ("overlong-utf8", get("/caf%C0%AFe")),
    ("octet-ff", get("/x%FF")),
    ("utf8", get("/caf%C3%A9?%c3%a9")),
    ("get-with-body", get("/a/b.txt", "Content-Length: 3") + b"abc"),
    ("head-with-body", get("/a/b.txt", "Content-Length: 3", method="HEAD") + b"abc"),
]


def _make_site(base: Path) -> Path:
    docroot = base / "www"
    (docroot / "a").mkdir(parents=True)
    (docroot / "a" / "b.txt").write_text("a/b\n")
    (docroot / "a" / "..b.txt").write_text("a/..b\n")
    (docroot / "a_b.txt").write_text("a_b\n")
    script = docroot / "env.cgi"
    script.write_text(ENV_SCRIPT)
    script.chmod(0o755)
    return docroot


@pytest.mark.parametrize("name", list(OPTION_LISTS))
def test_the_same_answers_as_lighttpd_under_each_option_list(tmp_path, name):
    conf = tmp_path / "common.conf"
    conf.write_text(CONFIG.format(docroot=_make_site(tmp_path), options=OPTION_LISTS[name]))
    with beside_lighttpd(conf) as ports:
        assert compare(ports, REQUESTS) == {}
