"""Requests whose framing cannot be trusted: the right status, then the connection closes."""

from __future__ import annotations

import pytest

from server_util import split_responses
from sites import site  # noqa: F401 (fixture)


def _answer(site, data: bytes) -> tuple[int, dict[str, str], bytes, bytes]:
    """The first response, and whatever the server sent after it (must be nothing)."""
    raw = site.raw(data)
    responses = split_responses(raw)
    status, headers, body = responses[0]
    return status, headers, body, raw


@pytest.mark.parametrize("request_bytes, status", [
    # both Content-Length and Transfer-Encoding: request smuggling if trusted
    (b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /secret HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    # two different Content-Length values
    (b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n"
     b"\r\nabcd", 400),
    # a transfer coding the server does not know
    (b"POST /index.html HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
     b"0\r\n\r\n", 501),
    # a request line longer than the limit
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    # identical duplicates too: lighttpd refuses them, RFC 9112 6.3 allows refusing
    (b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
     b"Content-Length: 2\r\n\r\nab", 400),
], ids=["cl-and-te", "cl-differing", "te-unknown", "uri-too-long", "cl-duplicate"])
def test_untrustworthy_framing_gets_its_status_and_closes(site, request_bytes, status):
    code, headers, _body, raw = _answer(site, request_bytes)
    assert code == status
    assert headers.get("connection") == "close"
    assert raw.count(b"HTTP/1.") == 1        # nothing smuggled after it


def test_unknown_method_is_501(site):
    code, _headers, _body, _raw = _answer(site, b"FOO /index.html HTTP/1.1\r\nHost: t\r\n"
                                                b"Connection: close\r\n\r\n")
    assert code == 501


def test_options_star_and_options_path(site):
    code, headers, _body, _raw = _answer(site, b"OPTIONS * HTTP/1.1\r\nHost: t\r\n"
                                               b"Connection: close\r\n\r\n")
    assert code == 200 and "GET" in headers["allow"]
    code, headers, _body, _raw = _answer(site, b"OPTIONS /index.html HTTP/1.1\r\nHost: t\r\n"
                                               b"Connection: close\r\n\r\n")
    assert code == 200 and "HEAD" in headers["allow"]
