"""server.breakagelog beside Debian's lighttpd 1.4.69: what CGI scripts, SSI exec
commands and spawned FastCGI backends write on stderr goes to the breakage log as they
wrote it (a block's own breakagelog for the requests under it, the top-level one for
the rest and for the backends), not to the error log.  The same site runs under
lighttpd and under the pylighttpd master, each with its own log folder, and the logs
must hold the same lines.  A breakage log that cannot be opened refuses the config."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from procutil import REPO
from serverproc import Server, free_port, get, wait_until

sys.path.insert(0, str(Path(__file__).parent / "worker"))
from test_differential import LIGHTTPD, Lighttpd  # noqa: E402

PHP_CGI = shutil.which("php-cgi")
SCRIPT = """#!/bin/sh
echo "{name} wrote this on stderr" >&2
printf 'Content-Type: text/plain\\r\\n\\r\\n{name} answered\\n'
"""
PAGE = '<!--#exec cmd="echo ssi wrote this on stderr >&2; echo ssi out" -->\n'
BACKEND = """#!/bin/sh
echo "the backend started" >&2
exec {php} "$@"
"""
SITE = """
server.modules = ("mod_cgi", "mod_ssi", "mod_fastcgi", "mod_staticfile")
cgi.assign = (".cgi" => "")
ssi.extension = (".shtml")
server.breakagelog = "{logs}/breakage.log"
$HTTP["url"] =^ "/b/" {{ server.breakagelog = "{logs}/b.log" }}
"""
FASTCGI = """
fastcgi.server = (".php" => (("socket" => "{logs}/php.socket", "bin-path" => "{backend}",
                              "max-procs" => 1)))
"""
URLS = ["/a.cgi", "/b/c.cgi", "/page.shtml", "/b/page.shtml"]


def _make_site(base: Path) -> Path:
    docroot = base / "www"
    (docroot / "b").mkdir(parents=True)
    for path in ("a.cgi", "b/c.cgi"):
        (docroot / path).write_text(SCRIPT.format(name=path))
        (docroot / path).chmod(0o755)
    for path in ("page.shtml", "b/page.shtml"):
        (docroot / path).write_text(PAGE)
    (docroot / "index.html").write_text("index\n")
    (docroot / "info.php").write_text("<?php echo 'php answered';\n")
    if PHP_CGI:
        (base / "backend.sh").write_text(BACKEND.format(php=PHP_CGI))
        (base / "backend.sh").chmod(0o755)
    return docroot


def _site_config(base: Path, logs: Path) -> str:
    logs.mkdir()
    text = SITE.format(logs=logs)
    if PHP_CGI:
        text += FASTCGI.format(logs=logs, backend=base / "backend.sh")
    return text


def _fetch_all(port: int) -> list[tuple[int, bytes]]:
    urls = URLS + (["/info.php"] if PHP_CGI else [])
    return [(status, body) for status, _, body in (get(port, url) for url in urls)]


def _logged(logs: Path) -> dict[str, list[str]]:
    return {name: sorted((logs / name).read_text().splitlines())
            for name in ("breakage.log", "b.log")}


EXPECTED = {"breakage.log": ["a.cgi wrote this on stderr", "ssi wrote this on stderr"],
            "b.log": ["b/c.cgi wrote this on stderr", "ssi wrote this on stderr"]}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("breakage")
    return base, _make_site(base)


def test_children_write_their_stderr_to_the_breakage_log(site, tmp_path):
    base, docroot = site
    logs = tmp_path / "ours"
    running = Server(tmp_path, _site_config(base, logs), document_root=str(docroot))
    try:
        running.wait_serving()
        answers = _fetch_all(running.port)
        expected = {name: list(lines) for name, lines in EXPECTED.items()}
        if PHP_CGI:
            expected["breakage.log"] = sorted([*expected["breakage.log"],
                                               "the backend started"])
        wait_until(lambda: _logged(logs) == expected)
        error_log = running.errorlog.read_text()
    finally:
        running.stop()
    assert [status for status, _ in answers] == [200] * len(answers)
    assert b"ssi out" in answers[2][1] and answers[0][1] == b"a.cgi answered\n"
    assert "wrote this on stderr" not in error_log and "backend started" not in error_log


@pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK), reason="Debian's lighttpd is not installed")
def test_the_logs_hold_what_lighttpds_hold(site, tmp_path):
    base, docroot = site
    logs = {who: tmp_path / who for who in ("lighttpd", "ours")}
    conf = tmp_path / "l" / "site.conf"
    conf.parent.mkdir()
    conf.write_text(f'server.document-root = "{docroot}"\n'
                    f'server.errorlog = "{tmp_path / "l" / "error.log"}"\n'
                    + _site_config(base, logs["lighttpd"]))
    theirs = Lighttpd(conf)
    (tmp_path / "p").mkdir()
    ours = Server(tmp_path / "p", _site_config(base, logs["ours"]), document_root=str(docroot))
    try:
        ours.wait_serving()
        assert _fetch_all(theirs.port) == _fetch_all(ours.port)
        wait_until(lambda: _logged(logs["lighttpd"])["b.log"] and _logged(logs["ours"])["b.log"])
        assert _logged(logs["ours"]) == _logged(logs["lighttpd"])
    finally:
        theirs.stop()
        ours.stop()


def test_a_breakage_log_that_cannot_be_opened_refuses_the_config(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.bind = "127.0.0.1"\n'
                    f'server.port = {free_port()}\n'
                    f'$HTTP["url"] =^ "/x/" {{ server.breakagelog = "{tmp_path}/no/such.log" }}\n')
    started = subprocess.run([sys.executable, "-m", "master.cli", "-D", "-f", str(conf)],
                             cwd=REPO, capture_output=True, text=True, timeout=20,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert started.returncode != 0
    assert f"{conf}:4:" in started.stderr
    assert f"opening errorlog '{tmp_path}/no/such.log' failed: No such file" in started.stderr


def _held_by(pid: int) -> set[str]:
    """The names of the files a process has open."""
    return {Path(opened.path).name for opened in psutil.Process(pid).open_files()}


def test_a_reload_moves_the_breakage_log_and_lets_the_old_one_go(site, tmp_path):
    base, docroot = site
    logs = tmp_path / "logs"
    logs.mkdir()
    config = 'server.modules = ("mod_cgi")\ncgi.assign = (".cgi" => "")\n' \
             'server.breakagelog = "{path}"\n'
    running = Server(tmp_path, config.format(path=logs / "first.log"), document_root=str(docroot))
    try:
        running.wait_serving()
        assert get(running.port, "/a.cgi")[0] == 200
        wait_until(lambda: (logs / "first.log").read_text())
        workers = set(running.children())
        running.write_config(config.format(path=logs / "second.log"))
        running.process.send_signal(signal.SIGHUP)
        wait_until(lambda: not workers & set(running.children()))
        assert get(running.port, "/a.cgi")[0] == 200
        wait_until(lambda: (logs / "second.log").exists() and (logs / "second.log").read_text())
        wait_until(lambda: "first.log" not in _held_by(running.process.pid))
        assert "second.log" in _held_by(running.process.pid)
    finally:
        running.stop()
    assert (logs / "first.log").read_text() == "a.cgi wrote this on stderr\n"
    assert (logs / "second.log").read_text() == "a.cgi wrote this on stderr\n"
