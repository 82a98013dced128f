"""server.force-lowercase-filenames beside Debian's lighttpd 1.4.69: lighttpd lowers
A-Z alone (buffer_to_lower), in the physical path, alias prefixes and url.access-deny
suffixes; str.lower() also lowered É, so /Éa.txt missed the file Éa.txt that lighttpd
serves, and /ÉB.txt found éb.txt, which lighttpd does not."""

from __future__ import annotations

import os

import pytest

from test_differential import LIGHTTPD, answers_to_path, beside_lighttpd

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_access", "mod_alias", "mod_staticfile")
server.force-lowercase-filenames = "enable"
alias.url = ("/ÄL/" => "{docroot}/sub/")
url.access-deny = (".Ë")
"""
FILES = ["Éa.txt", "éb.txt", "abc.txt", "sub/x.txt", "n.Ë", "m.ë"]
PATHS = ["/Éa.txt", "/éa.txt", "/ÉA.TXT", "/ÉB.txt", "/éb.txt", "/ABC.txt", "/ÄL/x.txt",
         "/äl/x.txt", "/ÄL/X.TXT", "/n.Ë", "/N.Ë", "/m.ë", "/m.Ë"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("lowercase")
    docroot = base / "www"
    for name in FILES:
        (docroot / name).parent.mkdir(parents=True, exist_ok=True)
        (docroot / name).write_text(name)
    conf = base / "lowercase.conf"
    conf.write_text(CONFIG.format(docroot=docroot))
    with beside_lighttpd(conf) as ports:
        yield ports


@pytest.mark.parametrize("path", PATHS)
def test_names_are_lowered_as_lighttpd_lowers_them(servers, path):
    theirs, ours = answers_to_path(servers, path)
    assert (ours[0], ours[2]) == (theirs[0], theirs[2])
