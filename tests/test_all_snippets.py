"""Every snippet of conf/conf-available/ enabled at once, as Debian's lighty-enable-mod
would link them into conf-enabled/ of a copy of conf/: `-tt` says nothing, the server
starts and serves its page over HTTP and over the TLS socket 10-ssl.conf adds, and its
error log holds no warning.  (tests/test_declarations.py runs each one alone.)

Debian's own set (/etc/lighttpd/conf-available/) cannot all be enabled together, by
lighttpd 1.4.69 either: 15-fastcgi-php.conf and 15-fastcgi-php-fpm.conf are
alternatives, both adding ".php" to fastcgi.server ("duplicate array-key").  Without
one of them lighttpd's `-tt` accepts the rest together, and so does pylighttpd's,
without a word (Debian's lighttpd.conf sets server.http-parseopts, which it acts on);
with both, each refuses the config.
"""

from __future__ import annotations

import http.client
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from procutil import LIGHTTPD, REPO, run_cli, run_lighttpd
from serverproc import get, wait_until
from test_declarations import _site_with, _start, _stop

SNIPPETS = sorted((REPO / "conf" / "conf-available").glob("*.conf"))
TLS_PORT = 8443            # 10-ssl.conf's socket, as it ships
DEBIAN = Path("/etc/lighttpd")
DEBIAN_SNIPPETS = sorted((DEBIAN / "conf-available").glob("*.conf"))
ALTERNATIVE = "15-fastcgi-php-fpm.conf"      # or 15-fastcgi-php.conf, not both


def _enable(snippets: list[Path], enabled: Path) -> None:
    """Links in `enabled` to each snippet, as lighty-enable-mod makes them."""
    enabled.mkdir(exist_ok=True)
    for snippet in snippets:
        (enabled / snippet.name).symlink_to(snippet)


def _tls_get(port: int, path: str) -> tuple[int, bytes]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_every_snippet_enabled_together_checks_clean_starts_and_serves(tmp_path):
    conf, port, errorlog = _site_with(tmp_path, SNIPPETS[0])
    _enable([Path("..") / "conf-available" / snippet.name for snippet in SNIPPETS[1:]],
            conf.parent / "conf-enabled")
    checked = run_cli("-tt", "-f", str(conf), cwd=tmp_path)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")
    process = _start(conf, tmp_path)
    try:
        status, _, body = wait_until(lambda: get(port, "/"))
        assert (status, b"pylighttpd works" in body) == (200, True)
        status, body = _tls_get(TLS_PORT, "/")
        assert (status, b"pylighttpd works" in body) == (200, True)
        status, _, body = get(port, "/server-status?auto")
        assert (status, b"Uptime:" in body) == (200, True)
    finally:
        _stop(process)
    log = errorlog.read_text()
    assert "server started" in log and "WARNING" not in log


def _debian_site(tmp_path: Path, snippets: list[Path]) -> Path:
    """Debian's lighttpd.conf with its include pointed at a conf-enabled/ holding
    `snippets`, and a certificate where 10-ssl.conf wants one (as a site puts one)."""
    if not DEBIAN_SNIPPETS or LIGHTTPD is None:
        pytest.skip("Debian's lighttpd (its /etc/lighttpd/conf-available/) is not installed")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    pem = tmp_path / "server.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                    "2", "-subj", "/CN=localhost", "-keyout", str(pem), "-out",
                    str(tmp_path / "cert.pem")], check=True, capture_output=True, timeout=60)
    pem.write_text(pem.read_text() + (tmp_path / "cert.pem").read_text())
    _enable(snippets, tmp_path / "conf-enabled")
    main = (DEBIAN / "lighttpd.conf").read_text().replace(
        '"/etc/lighttpd/conf-enabled/*.conf"', f'"{tmp_path}/conf-enabled/*.conf"')
    conf = tmp_path / "lighttpd.conf"
    conf.write_text(main + f'ssl.pemfile := "{pem}"\n')
    return conf


def test_debian_snippets_together_as_lighttpd_takes_them(tmp_path):
    conf = _debian_site(tmp_path, [snippet for snippet in DEBIAN_SNIPPETS
                                   if snippet.name != ALTERNATIVE])
    theirs = run_lighttpd("-tt", "-f", str(conf), cwd=tmp_path)
    ours = run_cli("-tt", "-f", str(conf), cwd=tmp_path)
    assert (theirs.returncode, theirs.stderr) == (0, "")
    assert (ours.returncode, ours.stderr) == (0, "")


def test_debian_s_two_php_alternatives_are_refused_together_by_both(tmp_path):
    conf = _debian_site(tmp_path, DEBIAN_SNIPPETS)
    theirs = run_lighttpd("-tt", "-f", str(conf), cwd=tmp_path)
    ours = run_cli("-tt", "-f", str(conf), cwd=tmp_path)
    assert theirs.returncode != 0 and "Duplicate array-key '.php'" in theirs.stderr
    assert ours.returncode != 0 and 'duplicate array key ".php"' in ours.stderr
