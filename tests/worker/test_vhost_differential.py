"""Differential test of mod_simple_vhost, mod_evhost and mod_userdir: Debian's lighttpd
1.4.69 and a pylighttpd worker serve the same trees with the same config (which module
and which settings apply is chosen by the Host of each request), and must agree on the
status, every header line and the body of each answer (module_diff.py).  CGI scripts
in the virtual hosts print the paths and names the backends see.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from module_diff import compare, get, summary
from test_differential import LIGHTTPD, beside_lighttpd, exchange

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

CONFIG = """
server.document-root = "{base}/www"
server.modules = ("mod_simple_vhost", "mod_evhost", "mod_userdir", "mod_indexfile",
                  "mod_cgi", "mod_staticfile")
server.tag = "difftest"
index-file.names = ("index.html")
cgi.assign = (".sh" => "")
mimetype.assign = (".html" => "text/html", ".txt" => "text/plain")

simple-vhost.server-root = "{base}/vh"
simple-vhost.document-root = "htdocs"
simple-vhost.default-host = "default.test"
$HTTP["host"] == "nodefault.test" {{ simple-vhost.default-host = "" }}
$HTTP["host"] == "slashes.test" {{
  simple-vhost.server-root = "{base}/vh/"
  simple-vhost.document-root = "/htdocs/"
}}
$HTTP["host"] == "nodocroot.test" {{ simple-vhost.document-root = "" }}

$HTTP["host"] =~ "\\.ev(:|$)" {{
  simple-vhost.server-root = ""
  evhost.path-pattern = "{base}/ev/%0/%3"
}}
$HTTP["host"] =~ "\\.evchar(:|$)" {{
  simple-vhost.server-root = ""
  evhost.path-pattern = "{base}/ev/%{{2.1}}/%{{2.2}}/%{{2.0}}%%%{{9}}%{{2.9}}"
}}
$HTTP["host"] =~ "\\.evfull(:|$)" {{
  simple-vhost.server-root = ""
  evhost.path-pattern = "{base}/ev/%_/%1-%{{1}}"
}}

userdir.path = "pub"
userdir.basepath = "{base}/home/"
userdir.exclude-user = ("bob")
$HTTP["host"] == "letter.test" {{ userdir.letterhomes = "enable" }}
$HTTP["host"] == "include.test" {{ userdir.include-user = ("bob") userdir.exclude-user = () }}
$HTTP["host"] == "includenone.test" {{ userdir.include-user = () }}
$HTTP["host"] == "off.test" {{ userdir.active = "disable" }}
$HTTP["host"] == "lower.test" {{ server.force-lowercase-filenames = "enable" }}
$HTTP["host"] == "passwd.test" {{ userdir.basepath = "" userdir.path = "" }}
$HTTP["host"] == "nopath.test" {{ userdir.path = "no-such-dir" userdir.basepath = "" }}
"""

ENV_SCRIPT = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
env | grep -E '^(SERVER_NAME|DOCUMENT_ROOT|SCRIPT_FILENAME|SCRIPT_NAME|PATH_INFO)=' | sort
"""
HOMES = ("alice", "bob", "a/alice", "carol.x")


def _page(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _script(path: Path) -> None:
    _page(path, ENV_SCRIPT)
    path.chmod(0o755)


def _make_trees(base: Path) -> None:
    _page(base / "www" / "index.html", "the server's own docroot\n")
    for host in ("www.example.com", "other.test", "default.test", "127.0.0.1",
                 "slashes.test"):
        _page(base / "vh" / host / "htdocs" / "index.html", f"site {host}\n")
        _page(base / "vh" / host / "htdocs" / "sub" / "index.html", f"sub of {host}\n")
    _script(base / "vh" / "other.test" / "htdocs" / "env.sh")
    _script(base / "vh" / "default.test" / "htdocs" / "env.sh")
    _page(base / "vh" / "htdocs" / "index.html", "server-root + document-root\n")
    _page(base / "vh" / "nodocroot.test" / "index.html", "no document-root\n")
    (base / "vh" / "nodoc.test").mkdir()
    (base / "vh" / "file.test").write_text("a file, not a directory\n")
    for host in ("site.ev/www", "site.ev", "s/i/site%", "a.b.evfull/evfull-evfull"):
        _page(base / "ev" / host / "index.html", f"evhost {host}\n")
    _script(base / "ev" / "site.ev" / "www" / "env.sh")
    for home in HOMES:
        _page(base / "home" / home / "pub" / "index.html", f"home of {home}\n")
        _page(base / "home" / home / "pub" / "Dir" / "f.txt", f"file of {home}\n")
    _script(base / "home" / "alice" / "pub" / "env.sh")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("vhostdiff")
    _make_trees(base)
    conf = base / "common.conf"
    conf.write_text(CONFIG.format(base=base))
    with beside_lighttpd(conf) as ports:
        yield ports


SIMPLE_VHOST = [
    ("simple-host", get("/", host="www.example.com")),
    ("simple-host-case-and-port", get("/", host="OTHER.test:8080")),
    ("simple-host-sub-redirect", get("/sub?x=1", host="other.test")),
    ("simple-host-sub", get("/sub/", host="other.test")),
    ("simple-host-missing-file", get("/missing.html", host="other.test")),
    ("simple-unknown-host-default", get("/", host="unknown.test")),
    ("simple-no-htdocs-default", get("/", host="nodoc.test")),
    ("simple-host-is-a-file", get("/", host="file.test")),
    ("simple-no-default-host", get("/", host="nodefault.test")),
    ("simple-no-host-http10", get("/", host="", version="1.0")),
    ("simple-ipv6", get("/", host="[::1]:8080")),
    ("simple-ipv4", get("/", host="127.0.0.1")),
    ("simple-slashes", get("/", host="slashes.test")),
    ("simple-no-document-root", get("/", host="nodocroot.test")),
    ("simple-absolute-form", get("http://WWW.example.com/sub/", host="www.example.com")),
    ("simple-traversal", get("/../other.test/htdocs/index.html", host="www.example.com")),
    ("simple-cgi", get("/env.sh/more", host="other.test:8080")),
    ("simple-cgi-default-host", get("/env.sh", host="unknown.test")),
    ("simple-bad-host", get("/", host="../x")),
]
EVHOST = [
    ("ev-subdomain", get("/", host="www.site.ev")),
    ("ev-no-subdomain", get("/", host="site.ev:8080")),
    ("ev-missing", get("/", host="nope.site.ev")),
    ("ev-characters", get("/", host="x.site.evchar")),
    ("ev-characters-short", get("/", host="x.s.evchar")),
    ("ev-full-host", get("/", host="a.b.evfull:8080")),
    ("ev-cgi", get("/env.sh", host="www.site.ev")),
    ("ev-no-host-http10", get("/", host="", version="1.0")),
]
USERDIR = [
    ("user-index", get("/~alice/")),
    ("user-file", get("/~alice/Dir/f.txt")),
    ("user-redirect", get("/~alice?q=1")),
    ("user-redirect-excluded", get("/~bob")),
    ("user-excluded", get("/~bob/")),
    ("user-dotted", get("/~carol.x/")),
    ("user-unknown", get("/~nobody-here/")),
    ("user-empty", get("/~/")),
    ("user-tilde-alone", get("/~")),
    ("user-dotdot", get("/~../")),
    ("user-bad-character", get("/~al%20ice/")),
    ("user-traversal", get("/~alice/../../x")),
    ("user-cgi", get("/~alice/env.sh/extra")),
    ("user-letterhomes", get("/~alice/", host="letter.test")),
    ("user-include-listed", get("/~bob/", host="include.test")),
    ("user-include-unlisted", get("/~alice/", host="include.test")),
    ("user-include-empty", get("/~alice/", host="includenone.test")),
    ("user-inactive", get("/~alice/", host="off.test")),
    ("user-lowercase", get("/~ALICE/INDEX.HTML", host="lower.test")),
    ("user-lowercase-excluded", get("/~BOB/", host="lower.test")),
    ("user-passwd-unknown", get("/~nobody-here-either/", host="passwd.test")),
    ("user-passwd-no-directory", get("/~root/", host="nopath.test")),
]


def _passwd_requests() -> list[tuple[str, bytes]]:
    """The home directory of the user running the tests, from the password database
    (its contents are not ours to choose: a missing file and the directory itself)."""
    name = pwd.getpwuid(os.getuid()).pw_name
    return [("user-passwd-home", get(f"/~{name}/", host="passwd.test")),
            ("user-passwd-missing", get(f"/~{name}/no-such-file.txt", host="passwd.test")),
            ("user-passwd-redirect", get(f"/~{name}", host="passwd.test"))]


@pytest.mark.parametrize("requests", [SIMPLE_VHOST, EVHOST, USERDIR, _passwd_requests()],
                         ids=["simple-vhost", "evhost", "userdir", "userdir-passwd"])
def test_same_answers_as_lighttpd(servers, requests):
    differences = compare(servers, requests)
    assert not differences, "\n".join(f"{name}: {diff}" for name, diff in differences.items())


def test_the_answers_compared_come_from_the_virtual_hosts(servers):
    """The comparison above is not of two answers that both missed the modules."""
    _, ours = servers
    answers = {name: summary(exchange(ours, raw))
               for name, raw in SIMPLE_VHOST + EVHOST + USERDIR}
    assert answers["simple-host-case-and-port"]["body"] == b"site other.test\n"
    assert answers["simple-unknown-host-default"]["body"] == b"site default.test\n"
    assert answers["simple-no-default-host"]["body"] == b"server-root + document-root\n"
    assert b"SERVER_NAME=default.test\n" in answers["simple-cgi-default-host"]["body"]
    assert answers["ev-subdomain"]["body"] == b"evhost site.ev/www\n"
    assert answers["ev-characters"]["body"] == b"evhost s/i/site%\n"
    assert answers["user-letterhomes"]["body"] == b"home of a/alice\n"
    assert answers["user-inactive"]["status"] == 404
    assert answers["user-lowercase"]["body"] == b"home of alice\n"
    assert answers["simple-slashes"]["body"] == b"site slashes.test\n"
    assert answers["user-redirect"]["location"] == ["/~alice/?q=1"]
