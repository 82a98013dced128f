"""What the virtual-host modules write to the error log, as lighttpd 1.4.69 writes it:
mod_simple_vhost each directory it did not find (with simple-vhost.debug), mod_evhost
every pattern that names no directory (always)."""

from __future__ import annotations

from pathlib import Path

from test_accesslog import Lighttpd, common_config, make_docroot, needs_lighttpd, send
from test_errorlog import normalised, our_errorlog

EXTRA = """server.modules += ("mod_simple_vhost", "mod_evhost")
simple-vhost.server-root = "{base}/vh"
simple-vhost.document-root = "htdocs"
simple-vhost.default-host = "default.test"
simple-vhost.debug = 1
$HTTP["host"] =~ "\\.ev$" {{
  simple-vhost.server-root = ""
  evhost.path-pattern = "{base}/ev/%2/%3"
}}
"""
REQUESTS = [b"GET / HTTP/1.1\r\nHost: unknown.test\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: www.site.ev\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: nope.site.ev\r\nConnection: close\r\n\r\n"]


def _trees(base: Path) -> None:
    (base / "vh" / "default.test" / "htdocs").mkdir(parents=True)
    (base / "ev" / "site" / "www").mkdir(parents=True)


def _module_lines(text: str, base: Path) -> list[str]:
    return [line.replace(str(base), "BASE") for line in normalised(text)
            if line.startswith(("(mod_simple_vhost", "(mod_evhost"))]


@needs_lighttpd
def test_missing_directories_are_logged_as_lighttpd_logs_them(tmp_path):
    theirs_base, ours_base = tmp_path / "theirs", tmp_path / "ours"
    for base in (theirs_base, ours_base):
        _trees(base)
    errorlog = tmp_path / "theirs-error.log"
    theirs = Lighttpd(tmp_path, common_config(
        make_docroot(theirs_base),
        f'server.errorlog = "{errorlog}"\n' + EXTRA.format(base=theirs_base)))
    try:
        for data in REQUESTS:
            send(theirs.port, data)
    finally:
        theirs.stop()
    ours = _module_lines(our_errorlog(ours_base, EXTRA.format(base=ours_base), REQUESTS),
                         ours_base)
    assert ours == _module_lines(errorlog.read_text(), theirs_base)
    assert ours == [
        "(mod_simple_vhost.c.164) BASE/vh/unknown.test/htdocs/: No such file or directory",
        "(mod_evhost.c.340) BASE/ev/site/nope/: No such file or directory"]
