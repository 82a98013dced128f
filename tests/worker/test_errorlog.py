"""The error log of a worker and the debug.* flags, compared with lighttpd 1.4.69.

Lines are compared without their timestamps and fd numbers; response headers are
compared as a set per response (the two servers order a few headers differently, and
ETag / Last-Modified / Date values differ by nature).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from test_accesslog import (Lighttpd, common_config, make_docroot, needs_lighttpd,
                            send, start_worker)

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: \(([\w.-]+)\) (.*)$")
FLAGS = ('debug.log-request-header = "enable"\n'
         'debug.log-response-header = "enable"\n'
         'debug.log-request-handling = "enable"\n'
         'debug.log-file-not-found = "enable"\n'
         'debug.log-request-header-on-error = "enable"\n'
         'server.tag = "t"\n')
REQUESTS = [
    b"GET /index.html?a=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /nope HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nConnection: close\r\n\r\n",
    b"GET /sub HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /index.html/pi HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
]
_MASKED = re.compile(r"^(fd:# resp: (?:ETag|Last-Modified|Date): ).*$")


def normalised(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        match = LINE.match(line)
        assert match, f"not in lighttpd's error log format: {line!r}"
        source, message = match.groups()
        if source.startswith("server.c"):
            continue                     # start / stop lines name the server
        message = re.sub(r"^fd:\d+ ", "fd:# ", message)
        out.append(f"({source}) " + _MASKED.sub(r"\1*", message))
    return out


def blocks(lines: list[str]) -> list[object]:
    """Runs of response-header lines become sets; everything else stays in order."""
    result: list[object] = []
    for line in lines:
        if line.startswith("(response.c.179)"):
            if result and isinstance(result[-1], set):
                result[-1].add(line)
                continue
            result.append({line})
        else:
            result.append(line)
    return result


def our_errorlog(tmp_path: Path, extra: str, requests: list[bytes],
                 settle: float = 0.0) -> str:
    docroot = make_docroot(tmp_path)
    errorlog = tmp_path / "ours-error.log"
    with start_worker(tmp_path, docroot, f'server.errorlog = "{errorlog}"\n{extra}') as worker:
        for data in requests:
            send(worker.port, data)
        time.sleep(settle)
    return errorlog.read_text() if errorlog.exists() else ""


def their_errorlog(tmp_path: Path, extra: str, requests: list[bytes],
                   settle: float = 0.0) -> str:
    """lighttpd's error log after `requests` (and `settle` seconds more), its document
    root written DOCROOT."""
    docroot = make_docroot(tmp_path / "theirs")
    errorlog = tmp_path / "theirs-error.log"
    theirs = Lighttpd(tmp_path, common_config(docroot, f'server.errorlog = "{errorlog}"\n'
                                              + extra))
    try:
        for data in requests:
            send(theirs.port, data)
        time.sleep(settle)
    finally:
        theirs.stop()
    return errorlog.read_text().replace(str(docroot), "DOCROOT")


@needs_lighttpd
def test_debug_flags_write_what_lighttpd_writes(tmp_path):
    expected = normalised(their_errorlog(tmp_path, FLAGS, REQUESTS))
    ours = our_errorlog(tmp_path / "ours", FLAGS, REQUESTS)
    got = normalised(ours.replace(str(tmp_path / "ours" / "www"), "DOCROOT"))
    assert blocks(got) == blocks(expected)


def test_no_flags_no_lines(tmp_path):
    text = our_errorlog(tmp_path, "", REQUESTS)
    assert normalised(text) == []


def test_flags_in_a_condition_apply_there_only(tmp_path):
    text = our_errorlog(tmp_path, '$HTTP["url"] =^ "/sub" {\n'
                        'debug.log-request-handling = "enable" }', REQUESTS)
    lines = normalised(text)
    assert "(response.c.422) Request-URI     : /sub" in lines
    assert not any("/nope" in line for line in lines)


def test_keep_alive_timeout_is_logged(tmp_path):
    text = our_errorlog(tmp_path, 'debug.log-request-handling = "enable"\n'
                        "server.max-keep-alive-idle = 1",
                        [b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"], settle=0.0)
    lines = normalised(text)
    assert any(re.fullmatch(r"\(connections\.c\.1456\) connection closed - keep-alive "
                            r"timeout: \d+", line) for line in lines), lines


def test_errorlog_lines_have_lighttpd_format(tmp_path):
    text = our_errorlog(tmp_path, 'debug.log-file-not-found = "enable"',
                        [b"GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"])
    assert text.splitlines(), "nothing logged"
    for line in text.splitlines():
        assert LINE.match(line), line
    assert "(response.c.206) Path         : " in text


@pytest.mark.skipif(not os.path.exists("/dev/log"), reason="no syslog socket (/dev/log)")
def test_errorlog_to_syslog(tmp_path):
    text = our_errorlog(tmp_path, 'server.errorlog-use-syslog = "enable"\n'
                        'debug.log-file-not-found = "enable"',
                        [b"GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"])
    assert text == ""

