"""Test sites: a docroot with known files and configs that exercise every module."""

from __future__ import annotations

from pathlib import Path

import pytest

from server_util import WorkerProcess, config_text

ALL_MODULES = ("mod_access", "mod_alias", "mod_redirect", "mod_indexfile", "mod_dirlisting",
               "mod_staticfile")


def make_docroot(base: Path) -> Path:
    docroot = base / "www"
    (docroot / "sub").mkdir(parents=True)
    (docroot / "listed").mkdir()
    (docroot / "index.html").write_text("hello from pylighttpd\n")
    (docroot / "sub" / "index.html").write_text("sub index\n")
    (docroot / "listed" / "<script>alert(1).txt").write_text("x")
    (docroot / "listed" / "a&b\".txt").write_text("x")
    (docroot / "listed" / ".hidden").write_text("x")
    (docroot / "listed" / "inner").mkdir()
    (docroot / "secret.inc").write_text("secret")
    (docroot / "big.bin").write_bytes(bytes(range(256)) * 4096)   # 1 MiB
    outside = base / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    aliased = base / "aliased"
    aliased.mkdir()
    (aliased / "a.txt").write_text("from the alias\n")
    return docroot


STANDARD_EXTRA = """
index-file.names = ("index.html")
url.access-deny = ("~", ".inc")
alias.url = ("/al/" => "{base}/aliased/")
url.redirect = ("^/old/(.*)$" => "/new/$1")
$HTTP["host"] =~ "^(red)\\.example$" {{
  url.redirect = ("^/x/(.*)$" => "http://%1.example.org/$1")
}}
$HTTP["url"] =^ "/listed/" {{ dir-listing.activate = "enable" }}
server.max-request-size = 1
server.tag = "pylighttpd-test"
"""


def start_worker(tmp_path: Path, extra: str = "", modules: tuple[str, ...] = ALL_MODULES,
                 idle_exit: float | None = None) -> WorkerProcess:
    """A worker of its own for a test that needs special settings."""
    docroot = make_docroot(tmp_path)
    conf = tmp_path / "worker.conf"
    conf.write_text(config_text(docroot, extra, modules))
    worker = WorkerProcess(conf, idle_exit=idle_exit)
    worker.docroot = docroot   # type: ignore[attr-defined]
    return worker


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A worker with every module and the standard test config, one per test file.

    Test files import this fixture by name (no conftest.py here: the suite's
    directories share the module name "conftest", and a second one shadows the first).
    """
    base = tmp_path_factory.mktemp("site")
    docroot = make_docroot(base)
    conf = base / "worker.conf"
    conf.write_text(config_text(docroot, STANDARD_EXTRA.format(base=base), ALL_MODULES))
    with WorkerProcess(conf) as worker:
        worker.docroot = docroot   # type: ignore[attr-defined]
        worker.base = base         # type: ignore[attr-defined]
        yield worker
