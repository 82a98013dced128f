"""Differential test of mod_dirlisting: Debian's lighttpd 1.4.69 and a pylighttpd worker
list the same directories under the same options; the status, the fields (but Date and
Server) and the listing's rows (`<tr>` lines: names, escaping, dates, sizes, types,
order, what is hidden) must agree, and so must the footer.  The page around the rows,
its style sheet and its sorting script, are pylighttpd's own, so they are not compared.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from module_diff import IGNORED
from test_differential import LIGHTTPD, beside_lighttpd, exchange, get11, parse

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_dirlisting", "mod_staticfile")
server.tag = "difftest"
mimetype.assign = (".txt" => "text/plain", ".html" => "text/html", ".png" => "image/png")
dir-listing.activate = "enable"
$HTTP["url"] =^ "/options/" {{
    dir-listing.hide-dotfiles = "disable"
    dir-listing.exclude = ("\\.tmp$", "^secret")
    dir-listing.show-readme = "enable"
    dir-listing.hide-readme-file = "enable"
    dir-listing.show-header = "enable"
    dir-listing.hide-header-file = "enable"
    dir-listing.set-footer = "a footer <with> markup & more"
    dir-listing.encoding = "utf-8"
}}
$HTTP["url"] =^ "/off/" {{ dir-listing.activate = "disable" }}
$HTTP["url"] =^ "/dirsfirst/" {{ dir-listing.sort = "disable" }}
"""
WHEN = 1767323045          # 2026-01-02 03:04:05 UTC: every entry's time, for the dates


def _site(base: Path) -> Path:
    docroot = base / "www"
    files = {
        "plain/a.txt": "a", "plain/b.html": "<b>", "plain/c.png": "png" * 400,
        "plain/unknown.bin": "", "plain/x&y <z>.txt": "escaped", "plain/ünï.txt": "utf-8",
        "plain/space name.txt": "s", "plain/100%.txt": "percent", "plain/.dotfile": "d",
        "plain/big.txt": "x" * 3_000_000, "plain/sub/inner.txt": "i",
        "options/README.txt": "readme", "options/HEADER.txt": "header",
        "options/keep.txt": "k", "options/drop.tmp": "t", "options/secret.txt": "s",
        "options/.dotfile": "d", "off/a.txt": "a",
        "dirsfirst/b.txt": "b", "dirsfirst/a/x.txt": "x", "dirsfirst/C.txt": "c",
        "empty/.gitkeep": "",
        # lighttpd's encodings: a control, DEL and ` as character references in text,
        # ! ( ) * left as they are in links; a name of no UTF-8 under exclude patterns
        "plain/ctl\x01del\x7ftick`.txt": "c", "plain/bang!(x)*.txt": "b",
        "options/not\udcffutf8.txt": "hidden: PCRE2 cannot read it",
        "plain/not\udcffutf8.txt": "shown: no patterns here",
    }
    for name, text in files.items():
        path = docroot / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for path in sorted(docroot.rglob("*"), reverse=True):
        os.utime(path, (WHEN, WHEN), follow_symlinks=False)
    return docroot


TARGETS = {
    "plain": "/plain/",
    "plain-query": "/plain/?C=M;O=D",
    "plain-head": "/plain/",
    "options": "/options/",
    "off": "/off/",
    "dirs-first": "/dirsfirst/",
    "empty": "/empty/",
    "no-slash": "/plain",
    "missing": "/nothing/",
}


@pytest.fixture(scope="module")
def answers(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    base = tmp_path_factory.mktemp("dirlisting-diff")
    conf = base / "common.conf"
    conf.write_text(CONFIG.format(docroot=_site(base)))
    found = {}
    with beside_lighttpd(conf) as ports:
        for name, target in TARGETS.items():
            method = "HEAD" if name.endswith("-head") else "GET"
            found[name] = tuple(_summary(exchange(port, get11(target, method=method)))
                                for port in ports)
    return found


def _summary(raw: bytes) -> dict:
    status, headers, body = parse(raw)
    page = body.decode("utf-8", "replace")
    found: dict = {"status": status, "rows": re.findall(r"<tr.*</tr>", page),
                   "footer": re.findall(r'<div class="foot">(.*?)</div>', page)}
    found.update({name: value for name, value in headers.items()
                  if name not in IGNORED and name != "content-length"})
    return found


@pytest.mark.parametrize("name", TARGETS)
def test_same_listing_as_lighttpd(answers, name):
    theirs, ours = answers[name]
    assert ours == theirs


def test_the_listings_compared_hold_rows(answers):
    """Not two empty pages: the rows are there, hidden entries are not."""
    rows = "\n".join(answers["plain"][0]["rows"])
    assert "x&#x26;y &#x3C;z&#x3E;.txt" in rows and "big.txt" in rows and ".dotfile" not in rows
    assert 'href="bang!(x)*.txt"' in rows and "ctl&#x01;del&#x7F;tick&#x60;.txt" in rows
    assert "utf8.txt" in rows and "utf8.txt" not in "\n".join(answers["options"][0]["rows"])
    options = "\n".join(answers["options"][0]["rows"])
    assert "keep.txt" in options and ".dotfile" in options
    assert "drop.tmp" not in options and "secret.txt" not in options
    assert "README.txt" not in options
    assert answers["off"][0]["status"] == 403 and answers["no-slash"][0]["status"] == 301
