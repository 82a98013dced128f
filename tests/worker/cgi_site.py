"""A site of CGI scripts (tests/cgi/) and the config that serves it, for pylighttpd's
mod_cgi tests and for running lighttpd beside it with the very same config.

Python scripts run under the interpreter of the tests (`cgi.assign` names
sys.executable, and the one that is executed itself gets a `#!` line naming it), never
whatever `python3` a PATH would find.
"""

from __future__ import annotations

import http.client
import io
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "tests" / "cgi"

CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_cgi")
server.tag = "cgitest"
index-file.names = ("index.html")
cgi.assign = (".sh" => "", ".cgi" => "", ".pl" => "/usr/bin/perl", ".py" => "{python}")
cgi.x-sendfile = "enable"
cgi.x-sendfile-docroot = ("{base}/sendable")
cgi.local-redir = "enable"
cgi.limits = ("read-timeout" => 1)
mimetype.assign = (".txt" => "text/plain", ".html" => "text/html",
                   "" => "application/octet-stream")
$HTTP["url"] =^ "/xonly/" {{ cgi.execute-x-only = "enable" }}
$HTTP["url"] =^ "/paced/" {{ server.stream-response-body = 2 }}
$HTTP["url"] =^ "/stream1/" {{
    server.stream-request-body = 1
    cgi.limits = ("read-timeout" => 20)
}}
$HTTP["url"] =^ "/stream2/" {{
    server.stream-request-body = 2
    cgi.limits = ("read-timeout" => 20)
}}
$HTTP["url"] =^ "/duplex/" {{
    server.stream-request-body = 2
    server.stream-response-body = 2
    cgi.limits = ("read-timeout" => 20)
}}
$HTTP["url"] =^ "/eh404/" {{ server.error-handler-404 = "/env.py" }}
$HTTP["url"] =^ "/eh/" {{ server.error-handler = "/env.py" }}
$HTTP["url"] =^ "/ehboth/" {{
    server.error-handler = "/env.py"
    server.error-handler-404 = "/missing-handler.py"
}}
"""
# Directories holding every script again, each with its own way of streaming (above)
STREAMED = ("paced", "stream1", "stream2", "duplex")


def make_cgi_site(base: Path) -> Path:
    """The docroot: every script of tests/cgi/ (executable), again under /paced/ (where
    answers stream, pausing the script while the client lags), /stream1/ and /stream2/
    (where the script starts with the request's head and reads its body as it comes),
    /duplex/ (both at once), a Python script that runs itself, non-executable
    ones (noexec.sh, /xonly/plain.sh), static files, the X-Sendfile directory
    `base/sendable` beside it."""
    docroot = base / "www"
    (docroot / "xonly").mkdir(parents=True)
    for name in STREAMED:
        (docroot / name).mkdir()
    for script in SCRIPTS.iterdir():
        for target in (docroot / script.name, *(docroot / name / script.name
                                               for name in STREAMED)):
            shutil.copyfile(script, target)
            target.chmod(0o755)
    shebang = docroot / "self.cgi"
    shebang.write_text(f"#!{sys.executable}\n" + (SCRIPTS / "hello.py").read_text())
    shebang.chmod(0o755)
    for plain in (docroot / "xonly" / "plain.sh", docroot / "noexec.sh"):
        shutil.copyfile(SCRIPTS / "hello.sh", plain)
        plain.chmod(0o644)
    (docroot / "index.html").write_text("the index\n")
    (docroot / "target.txt").write_text("the target of a local redirect\n")
    sendable = base / "sendable"
    sendable.mkdir()
    (sendable / "file.txt").write_text("a file sent by X-Sendfile\n")
    (sendable / "r\u00e9sum\u00e9.txt").write_text("a file of a non-ASCII name\n")
    (docroot / "r\u00e9sum\u00e9.txt").write_text("a page of a non-ASCII name\n")
    return docroot


def cgi_config(base: Path, docroot: Path, extra: str = "") -> str:
    return CONFIG.format(docroot=docroot, base=base, python=sys.executable) + extra


class _Replay:
    """Bytes read from a socket, handed to http.client as if it were the socket."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, *_args: object, **_kwargs: object) -> io.BytesIO:
        return io.BytesIO(self.data)


def parse_answer(raw: bytes, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """(status, headers by lowercase name, body) of one answer, whatever its framing."""
    response = http.client.HTTPResponse(_Replay(raw), method=method)  # type: ignore[arg-type]
    response.begin()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body
