"""What server.compat-module-load adds beside Debian's lighttpd 1.4.69 when a config
names a backend or keys without the module that reads them:

- an auth backend module (`mod_authn_file`) listed without, or before, `mod_auth`:
  lighttpd puts mod_auth first, so auth.require protects its URLs (pylighttpd ignored
  auth.require and served them);
- `ssl.*` keys with no TLS module listed: lighttpd loads mod_openssl, says so, and
  serves TLS (pylighttpd called the keys unknown and served the socket in the clear);
- a `mod_vhostdb_*` without `mod_vhostdb`: lighttpd puts mod_vhostdb first, so the
  vhostdb.* keys are known;
- `mod_compress` (replaced by mod_deflate in lighttpd 1.4.6x): mod_deflate in its place
  when compress.* keys are set, which are read as the deflate.* keys that replaced
  them, with lighttpd's DEPRECATED warnings (pylighttpd refused the module), and
  `application/javascript` is `text/javascript` in the mimetypes to compress;
- mod_auth listed after a module that passes requests on: lighttpd's warning.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from held_backend import answers_at
from test_authn_pam import basic
from test_differential import LIGHTTPD, beside_lighttpd
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/: procutil, test_tls
from procutil import run_cli, run_lighttpd  # noqa: E402
from test_tls import make_certificate  # noqa: E402

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")
AUTH = """server.document-root = "{docroot}"
server.modules = ({modules})
auth.backend = "plain"
auth.backend.plain.userfile = "{users}"
auth.require = ("/p/" => ("method" => "basic", "realm" => "r", "require" => "valid-user"))
"""
OPENSSL_WARNING = ('Warning: please add "mod_openssl" to server.modules list in lighttpd.conf.'
                   "  A future release of lighttpd 1.4.x *will not* automatically load "
                   "mod_openssl and lighttpd *will not* use SSL/TLS where your lighttpd.conf "
                   "contains ssl.* directives")


INDEX_KEY = 'index-file.names = ("index.html")\n'
LISTING_KEYS = INDEX_KEY + '$HTTP["url"] =^ "/l/" { dir-listing.activate = "enable" }\n'


def _checked_by_both(conf: Path) -> tuple[str, str]:
    """What `-tt` says on `conf`, pylighttpd's and lighttpd's: both take it."""
    ours, theirs = run_cli("-tt", "-f", str(conf)), run_lighttpd("-tt", "-f", str(conf))
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    return ours.stderr, theirs.stderr


def _site(base: Path) -> Path:
    docroot = base / "www"
    (docroot / "p").mkdir(parents=True)
    (docroot / "p" / "f.txt").write_text("protected\n")
    (docroot / "index.html").write_text("open\n")
    (base / "users").write_text("user:pw\n")
    return docroot


@pytest.mark.parametrize("modules", ['"mod_authn_file", "mod_staticfile"',
                                     '"mod_authn_file", "mod_auth", "mod_staticfile"'])
def test_an_auth_backend_brings_mod_auth_first(tmp_path, modules):
    conf = tmp_path / "auth.conf"
    conf.write_text(AUTH.format(docroot=_site(tmp_path), modules=modules,
                                users=tmp_path / "users"))
    exchanged = [("/p/f.txt", {}), ("/p/f.txt", basic("user", "pw")), ("/index.html", {})]
    with beside_lighttpd(conf) as (theirs, ours):
        answers = answers_at(ours, exchanged)
        assert answers == answers_at(theirs, exchanged)
    assert [status for status, _, _ in answers] == [401, 200, 200]


def test_ssl_keys_bring_mod_openssl_and_tls(tmp_path):
    crt, key = make_certificate(tmp_path, "localhost")
    conf = tmp_path / "tls.conf"
    conf.write_text(f'server.document-root = "{_site(tmp_path)}"\n'
                    'server.modules = ("mod_staticfile")\n'
                    f'ssl.engine = "enable"\nssl.pemfile = "{crt}"\nssl.privkey = "{key}"\n')
    checked = run_cli("-tt", "-f", str(conf))
    assert (checked.returncode, checked.stderr) == (0, OPENSSL_WARNING + "\n")
    assert OPENSSL_WARNING in run_lighttpd("-tt", "-f", str(conf)).stderr
    with beside_lighttpd(conf) as ports:
        for port in ports:
            fetched = subprocess.run(["curl", "-sk", "-w", " %{http_code}",
                                      f"https://127.0.0.1:{port}/index.html"],
                                     capture_output=True, text=True, timeout=20)
            assert fetched.stdout == "open\n 200", port


def test_a_vhostdb_backend_brings_mod_vhostdb(tmp_path):
    conf = tmp_path / "vhostdb.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\n'
                    'server.modules = ("mod_vhostdb_dbi")\nvhostdb.backend = "dbi"\n')
    assert "unknown config-key" not in "".join(_checked_by_both(conf))


COMPRESS = """server.document-root = "{docroot}"
server.modules = ({modules})
mimetype.assign = (".txt" => "text/plain", ".js" => "text/javascript")
compress.filetype = ("text/plain", "application/javascript")
compress.allowed-encodings = ("gzip")
compress.cache-dir = "{cache}"
"""
COMPRESS_WARNINGS = [
    '"mod_compress" is DEPRECATED and has been replaced with "mod_deflate".  A future '
    "release of lighttpd 1.4.x will not contain mod_compress and lighttpd may fail to "
    "start up",
    "DEPRECATED: compress.filetype replaced with deflate.mimetypes",
    "DEPRECATED: compress.allowed-encodings replaced with deflate.allowed-encodings",
    "DEPRECATED: compress.cache-dir replaced with deflate.cache-dir"]


def _encoding(port: int, path: str) -> str:
    fetched = subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", "Accept-Encoding: gzip",
                              "-w", "%{http_code} %header{content-encoding}",
                              f"http://127.0.0.1:{port}{path}"],
                             capture_output=True, text=True, timeout=20)
    return fetched.stdout


@pytest.mark.parametrize("modules", ['"mod_compress"', '"mod_compress", "mod_deflate"'])
def test_mod_compress_and_its_keys_are_mod_deflate_s(tmp_path, modules):
    docroot = _site(tmp_path)
    (docroot / "a.txt").write_text("compress me " * 200)
    (docroot / "a.js").write_text("var compress_me = 1;\n" * 100)
    conf = tmp_path / "compress.conf"
    conf.write_text(COMPRESS.format(docroot=docroot, modules=modules, cache=tmp_path / "c"))
    ours, theirs = _checked_by_both(conf)
    for warning in COMPRESS_WARNINGS:
        assert warning in ours and warning in theirs, warning
    with beside_lighttpd(conf) as ports:
        for path in ("/a.txt", "/a.js"):
            assert [_encoding(port, path) for port in ports] == ["200 gzip"] * 2, path


def test_mod_compress_without_its_keys_is_dropped_and_mod_auth_order_is_said(tmp_path):
    conf = tmp_path / "order.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\n'
                    'server.modules = ("mod_compress", "mod_proxy", "mod_auth")\n')
    ours, theirs = _checked_by_both(conf)
    warning = ("Warning: mod_auth should be listed in server.modules before dynamic "
               "backends such as mod_proxy")
    assert warning in ours and warning in theirs
    assert "mod_compress" not in ours + theirs


@pytest.mark.parametrize("modules, keys, warned", [
    ('"mod_dirlisting", "mod_indexfile", "mod_staticfile"', LISTING_KEYS, "mod_dirlisting"),
    ('"mod_access", "mod_ssi", "mod_cgi", "mod_indexfile"', INDEX_KEY, "mod_ssi"),
    ('"mod_dirlisting", "mod_ssi", "mod_indexfile"', INDEX_KEY, "mod_ssi"),
    ('"mod_indexfile", "mod_dirlisting", "mod_fastcgi"', LISTING_KEYS, None),
    # compat loading unloads a module nothing turns on, and it is not said
    ('"mod_dirlisting", "mod_indexfile"', INDEX_KEY, None),
    ('"mod_cgi", "mod_indexfile"', 'dir-listing.activate = "enable"\n', None),
    ('"mod_cgi", "mod_indexfile"', 'index-file.names = ()\n', None),
    ('"mod_cgi", "mod_indexfile"', 'server.compat-module-load = "disable"\n', "mod_cgi"),
])
def test_mod_indexfile_after_a_module_answering_itself_is_said(tmp_path, modules, keys,
                                                                 warned):
    conf = tmp_path / "indexfile.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\n'
                    f"server.modules = ({modules})\n{keys}")
    ours, theirs = _checked_by_both(conf)
    said = "Warning: mod_indexfile should be listed in server.modules prior to "
    for output in (ours, theirs):
        if warned is None:
            assert said not in output
        else:
            assert said + warned in output
