"""Hostile requests from hypothesis against a real worker (bounded: ~300 examples).

Whatever arrives, the worker must stay up, answer with well-formed HTTP (a sane status,
a Content-Length that matches the body) or close, and never hand out a byte of the
secret planted next to the document root.
"""

from __future__ import annotations

import re
import secrets
import socket

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from server_util import WorkerProcess, config_text, read_until_closed
from sites import ALL_MODULES, STANDARD_EXTRA, make_docroot

STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) [^\r\n]*")


@pytest.fixture(scope="module")
def fuzz_site(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    docroot = make_docroot(base)
    secret = secrets.token_hex(16).encode()
    (base / "secret.txt").write_bytes(secret)
    (base / "outside" / "passwd").write_bytes(secret)
    conf = base / "worker.conf"
    conf.write_text(config_text(docroot, STANDARD_EXTRA.format(base=base), ALL_MODULES))
    with WorkerProcess(conf) as worker:
        worker.secret = secret   # type: ignore[attr-defined]
        yield worker


_SEGMENTS = st.sampled_from([
    "..", ".", "%2e%2e", "%2E%2e", "%252e%252e", "..%5c", "..\\", "%2f", "%00", "%",
    "%zz", "%c0%ae%c0%ae", "outside", "passwd", "secret.txt", "index.html", "sub",
    "big.bin", "secret.inc", "listed", "al", "~", "%7e", "\u00fc", ";", "?", "#",
    "//", "%u002e", "\x7f", "\t", "A" * 300])
_PATHS = st.lists(_SEGMENTS, min_size=0, max_size=8).map(lambda s: "/" + "/".join(s))
_METHODS = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE",
                            "CONNECT", "PATCH", "get", "G\x00T", "", "BREW"])
_VERSIONS = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.1x",
                             "http/1.1", "", "HTTP/1.01"])
_HEADER_NAMES = st.sampled_from([
    "Host", "Range", "If-Range", "If-None-Match", "If-Match", "If-Modified-Since",
    "If-Unmodified-Since", "Content-Length", "Transfer-Encoding", "Expect", "Connection",
    "X-\x00", "Bad Name", ""])
_HEADER_VALUES = st.one_of(
    st.sampled_from(["bytes=0-1,5-", "bytes=-0", "bytes=" + "0-0," * 300, "*", "\"x\"",
                     "chunked", "100-continue", "-1", "99999999999999999999", "close",
                     "Mon, 01 Jan 2001 00:00:00 GMT", "bytes=5-2", "bad/host", "[::1]:80"]),
    st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=40))
_HEADERS = st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=5)


@st.composite
def requests(draw) -> tuple[str, bytes]:
    method = draw(_METHODS)
    path = draw(st.one_of(_PATHS, st.sampled_from(["*", "http://a/../secret.txt",
                                                   "index.html", ""])))
    lines = [f"{method} {path} {draw(_VERSIONS)}".rstrip(), "Host: fuzz"]
    lines += [f"{name}: {value}" for name, value in draw(_HEADERS)]
    terminator = draw(st.sampled_from(["\r\n\r\n", "\n\n", "\r\n", ""]))
    data = ("\r\n".join(lines) + terminator).encode("utf-8", "surrogateescape")
    if draw(st.booleans()):
        data += draw(st.binary(max_size=64))
    return method, data


def check_answer(method: str, data: bytes, secret: bytes) -> None:
    assert secret not in data
    if not data:
        return                     # closed without an answer (an incomplete request)
    match = STATUS_LINE.match(data)
    assert match, data[:200]
    status = int(match.group(1))
    assert 200 <= status <= 505 or status == 100, status
    head, separator, rest = data.partition(b"\r\n\r\n")
    assert separator, data[:200]
    length = re.search(rb"\r\nContent-Length: (\d+)", head)
    if status in (204, 304):
        return
    assert length, head
    size = int(length.group(1))
    if method == "HEAD" and not rest:
        return                     # HEAD: the length of a body that is not sent
    # the body is there in full (an answer after it, if pipelined, is extra)
    assert len(rest) >= size and (len(rest) == size or rest[size:].startswith(b"HTTP/1."))


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(request=requests())
def test_hostile_requests(fuzz_site, request):
    method, data = request
    with socket.create_connection(("127.0.0.1", fuzz_site.port), timeout=5) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)      # no more: the worker answers, then closes
        except OSError:
            pass
        answer = read_until_closed(sock)
    assert fuzz_site.process.poll() is None, "the worker died"
    check_answer(method, answer, fuzz_site.secret)


def test_worker_still_serves_after_the_fuzz(fuzz_site):
    assert fuzz_site.get("/index.html")[0] == 200
    assert fuzz_site.process.poll() is None
