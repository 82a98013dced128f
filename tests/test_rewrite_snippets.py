"""conf/conf-available/10-rewrite.conf and 10-no-www.conf enabled as the README says
(tests/test_declarations.py starts and serves every snippet), and Debian's own
versions of both, unchanged, in their place: the www. host is redirected to the bare
one, a rewrite rule added after the snippet works.
"""

from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from procutil import REPO
from serverproc import get, wait_until
from test_declarations import _site_with, _stop

AVAILABLE = REPO / "conf" / "conf-available"
DEBIAN = Path("/etc/lighttpd/conf-available")


def _with_host(port: int, path: str, host: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _serve_both(tmp_path: Path, source: Path) -> dict[str, tuple[int, str | None, bytes]]:
    """Both snippets from `source` enabled, plus one rewrite rule of the site's."""
    conf, port, errorlog = _site_with(tmp_path, AVAILABLE / "10-rewrite.conf")
    available = conf.parent / "conf-available"
    for name in ("10-rewrite.conf", "10-no-www.conf"):
        shutil.copyfile(source / name, available / name)
    (conf.parent / "conf-enabled" / "10-no-www.conf").symlink_to(
        Path("..") / "conf-available" / "10-no-www.conf")
    (conf.parent / "conf-enabled" / "zz-rule.conf").write_text(
        'url.rewrite-once = ( "^/start(\\?.*)?$" => "/index.html$1" )\n')
    process = subprocess.Popen(
        [sys.executable, "-m", "master.cli", "-D", "-f", str(conf)], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: get(port, "/"))
        answers = {}
        for name, path, host in (("www", "/a/b?c=1", "www.example.org"),
                                 ("bare", "/index.html", "example.org"),
                                 ("rewritten", "/start?x=1", "example.org")):
            status, headers, body = _with_host(port, path, host)
            answers[name] = (status, headers.get("Location"), body)
    finally:
        _stop(process)
    assert "WARNING" not in errorlog.read_text()
    return answers


def _check(answers: dict[str, tuple[int, str | None, bytes]]) -> None:
    assert answers["www"][:2] == (301, "http://example.org/a/b?c=1")
    assert answers["bare"][0] == 200
    status, _, body = answers["rewritten"]
    assert status == 200 and b"pylighttpd works" in body


def test_the_snippets_of_conf_redirect_www_and_rewrite(tmp_path):
    _check(_serve_both(tmp_path, AVAILABLE))


@pytest.mark.skipif(not (DEBIAN / "10-no-www.conf").is_file(),
                    reason="Debian's lighttpd snippets are not installed")
def test_debians_snippets_run_unchanged(tmp_path):
    _check(_serve_both(tmp_path, DEBIAN))
