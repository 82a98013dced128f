"""Condition patterns beside Debian's lighttpd 1.4.69: PCRE2 syntax that Python's `re`
reads otherwise (\\Q...\\E, POSIX classes, a flag group in mid-pattern, named groups,
\\z) and the ASCII-only \\w, \\d, \\s and \\b of PCRE2 without UCP, on paths of UTF-8
characters.  Each answer (a redirect that shows what matched, or the 404 of no match)
must be lighttpd's."""

from __future__ import annotations

import os

import pytest

from test_differential import LIGHTTPD, answers_to_path, beside_lighttpd

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

PATTERNS = [r"^/w/\w+$", r"^/W/\W", r"^/d/\d", r"^/s/a\sb", r"^/b/.*\bx", r"^/p/[[:alpha:]]+$",
            r"^/c/[\w.]+$", r"^/q/\Qa.b\E$", r"^/i/x(?i)ab$", r"^/n/(?<id>\d+)$", r"^/z/a\z",
            r"^/u/(?i)ü+$", r"^/o/.$"]
CONFIG = 'server.document-root = "{docroot}"\nserver.modules = ("mod_redirect")\n' + \
    "\nelse ".join('$HTTP["url"] =~ "%s" { url.redirect = ("^/(.*)$" => "/m?%%0|%%1") }' % p
                   for p in PATTERNS) + "\n"
PATHS = ["/w/café", "/w/cafe_1", "/W/é", "/W/a", "/d/\u0663", "/d/7", "/s/a\u00a0b", "/s/a b",
         "/b/éx", "/b/ax", "/p/abc", "/p/é", "/c/a.b", "/c/ü", "/q/a.b", "/q/axb", "/i/xAB",
         "/I/xab", "/n/42", "/z/a", "/u/ÜüÜ", "/o/日", "/o/ab"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("condregex")
    conf = base / "regex.conf"
    conf.write_text(CONFIG.replace("{docroot}", str(base)))
    with beside_lighttpd(conf) as ports:
        yield ports


@pytest.mark.parametrize("path", PATHS)
def test_conditions_match_as_lighttpd_s(servers, path):
    theirs, ours = answers_to_path(servers, path)
    assert ours[0] == theirs[0]
    assert ours[1].get("location") == theirs[1].get("location")


def test_the_paths_reach_both_outcomes(servers):
    statuses = {answers_to_path(servers, path)[1][0] for path in PATHS}
    assert statuses == {301, 404}
