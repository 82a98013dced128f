"""Static serving through a real worker: status codes and headers as lighttpd sends them."""

from __future__ import annotations

import re

from server_util import split_responses
from sites import site  # noqa: F401 (fixture)

HTML_DATE = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")


def test_get_file_has_lighttpd_headers(site):
    status, headers, body = site.get("/index.html")
    assert status == 200
    assert body == b"hello from pylighttpd\n"
    assert headers["Content-Type"] == "text/html"
    assert headers["Content-Length"] == str(len(body))
    assert re.fullmatch(r'"\d+"', headers["ETag"])
    assert HTML_DATE.fullmatch(headers["Last-Modified"])
    assert HTML_DATE.fullmatch(headers["Date"])
    assert headers["Server"] == "pylighttpd-test"
    assert headers["Accept-Ranges"] == "bytes"


def test_head_has_headers_but_no_body(site):
    with site.socket() as sock:
        sock.sendall(b"HEAD /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Length: 22" in head
    assert body == b""


def test_etag_gives_304(site):
    _, headers, _ = site.get("/index.html")
    status, headers2, body = site.get("/index.html", If_None_Match=headers["ETag"])
    assert status == 304 and body == b""
    assert headers2["ETag"] == headers["ETag"]
    status, _, _ = site.get("/index.html", If_None_Match='"other"')
    assert status == 200


def test_if_modified_since_gives_304(site):
    _, headers, _ = site.get("/index.html")
    status, _, body = site.get("/index.html", If_Modified_Since=headers["Last-Modified"])
    assert status == 304 and body == b""
    status, _, _ = site.get("/index.html",
                            If_Modified_Since="Mon, 01 Jan 2001 00:00:00 GMT")
    assert status == 200


def test_missing_file_is_404_with_html_page(site):
    status, headers, body = site.get("/no-such-file")
    assert status == 404
    assert headers["Content-Type"] == "text/html"
    assert b"<title>404 Not Found</title>" in body
    assert len(body) == 341   # lighttpd's page, byte for byte


def test_directory_without_slash_redirects(site):
    status, headers, body = site.get("/sub?a=1")
    assert status == 301
    assert headers["Location"] == "/sub/?a=1"
    assert body == b""


def test_index_file_is_served_for_directory(site):
    status, _, body = site.get("/sub/")
    assert status == 200 and body == b"sub index\n"
    status, _, body = site.get("/")
    assert status == 200 and body == b"hello from pylighttpd\n"


def test_range_requests(site):
    status, headers, body = site.get("/index.html", Range="bytes=0-4")
    assert status == 206 and body == b"hello"
    assert headers["Content-Range"] == "bytes 0-4/22"
    status, headers, body = site.get("/index.html", Range="bytes=-4")
    assert status == 206 and body == b"tpd\n"
    status, headers, _ = site.get("/index.html", Range="bytes=100-200")
    assert status == 416
    assert headers["Content-Range"] == "bytes */22"


def test_large_file_goes_out_whole(site):
    status, headers, body = site.get("/big.bin")
    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    assert body == bytes(range(256)) * 4096


def test_other_methods_on_a_static_file(site):
    status, headers, _ = site.request("DELETE", "/index.html")
    assert status == 405                       # RFC 9110 (lighttpd 1.4.69 says 501)
    assert headers["Allow"] == "OPTIONS, GET, HEAD, POST"
    status, headers, _ = site.request("OPTIONS", "/index.html")
    assert status == 200 and headers["Allow"] == "OPTIONS, GET, HEAD, POST"


def test_pathinfo_after_a_file_serves_the_file(site):
    status, _, body = site.get("/index.html/extra")
    assert status == 200 and body == b"hello from pylighttpd\n"


def test_two_responses_split_cleanly(site):
    """The helper used by the pipelining tests parses back-to-back responses."""
    raw = site.raw(b"GET /index.html HTTP/1.0\r\n\r\n")
    [(status, headers, body)] = split_responses(raw)
    assert status == 200 and headers["connection"] == "close"
    assert body == b"hello from pylighttpd\n"
