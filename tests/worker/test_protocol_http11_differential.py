"""server.protocol-http11 = "disable" beside Debian's lighttpd 1.4.69: an HTTP/1.1
request under such a block is answered as HTTP/1.0 (its status line, no chunked
framing, the connection closed after it, even when pipelined), its body read as the
client sent it; elsewhere nothing changes.  The raw answers must agree, status line
and Connection field included."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from module_diff import summary
from test_differential import LIGHTTPD, beside_lighttpd, exchange

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_cgi", "mod_staticfile")
server.tag = "difftest"
cgi.assign = (".cgi" => "")
mimetype.assign = (".txt" => "text/plain")
$HTTP["url"] =^ "/old/" {{ server.protocol-http11 = "disable" }}
"""
STREAM = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
echo one; echo two
"""
ECHO = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
printf 'length %s: ' "$CONTENT_LENGTH"; cat
"""


def _head(host: str = "x") -> str:
    return f"Host: {host}\r\n"


REQUESTS = {
    "old-file": f"GET /old/a.txt HTTP/1.1\r\n{_head()}\r\n",
    "new-file": f"GET /new/a.txt HTTP/1.1\r\n{_head()}Connection: close\r\n\r\n",
    "old-stream": f"GET /old/stream.cgi HTTP/1.1\r\n{_head()}\r\n",
    "new-stream": f"GET /new/stream.cgi HTTP/1.1\r\n{_head()}Connection: close\r\n\r\n",
    "old-chunked-upload": f"POST /old/echo.cgi HTTP/1.1\r\n{_head()}"
                          "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "old-pipelined": f"GET /old/a.txt HTTP/1.1\r\n{_head()}\r\n"
                     f"GET /new/a.txt HTTP/1.1\r\n{_head()}\r\n",
}


def _make_site(base: Path) -> Path:
    docroot = base / "www"
    for folder in ("old", "new"):
        (docroot / folder).mkdir(parents=True)
        (docroot / folder / "a.txt").write_text(f"{folder}\n")
        for name, text in (("stream.cgi", STREAM), ("echo.cgi", ECHO)):
            (docroot / folder / name).write_text(text)
            (docroot / folder / name).chmod(0o755)
    return docroot


def _answers(raw: bytes) -> list[tuple[str, dict]]:
    """Each answer's status line and summary (two pipelined answers split apart)."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        fields = summary(head + b"\r\n\r\n")
        length = int(fields.get("content-length", ["-1"])[0])
        body, raw = (rest[:length], rest[length:]) if length >= 0 else (rest, b"")
        fields["body"] = body
        found.append((head.split(b"\r\n", 1)[0].decode(), fields))
    return found


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("http10")
    conf = base / "common.conf"
    conf.write_text(CONFIG.format(docroot=_make_site(base)))
    with beside_lighttpd(conf) as ports:
        yield ports


@pytest.mark.parametrize("name", list(REQUESTS))
def test_answered_as_lighttpd_answers(servers, name):
    theirs, ours = (_answers(exchange(port, REQUESTS[name].encode())) for port in servers)
    assert ours == theirs
    if name.startswith("old-"):
        assert theirs[0][0].startswith("HTTP/1.0 ") and len(theirs) == 1
