"""Byte ranges and preconditions (RFC 9110 §13, §14) through a real worker."""

from __future__ import annotations

import re

import pytest

from server_util import read_until_closed
from sites import site  # noqa: F401 (fixture)
from worker.static import parse_ranges

BIG = bytes(range(256)) * 4096          # sites.make_docroot's big.bin
SMALL = b"hello from pylighttpd\n"      # its index.html


def multipart(headers: dict[str, str], body: bytes, data: bytes) -> list[tuple[int, int]]:
    """Check a multipart/byteranges body part by part; returns the ranges it holds."""
    boundary = re.fullmatch(r"multipart/byteranges; boundary=(\S+)",
                            headers["Content-Type"]).group(1).encode()
    assert body.startswith(b"--" + boundary + b"\r\n")
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    found = []
    for part in body[: -len(boundary) - 8].split(b"--" + boundary + b"\r\n")[1:]:
        head, _, payload = part.partition(b"\r\n\r\n")
        match = re.search(rb"Content-Range: bytes (\d+)-(\d+)/(\d+)", head)
        first, last, total = (int(x) for x in match.groups())
        assert total == len(data)
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        assert payload == data[first:last + 1]
        found.append((first, last))
    return found


def test_multiple_ranges_of_a_large_file(site):
    status, headers, body = site.get("/big.bin", Range="bytes=0-1,1000-1999,-2")
    assert status == 206
    assert int(headers["Content-Length"]) == len(body)
    assert multipart(headers, body, BIG) == [(0, 1), (1000, 1999), (len(BIG) - 2,
                                                                    len(BIG) - 1)]


def test_multiple_ranges_of_a_small_file(site):
    data = bytes(range(256)) * 16                      # read once, not sendfile
    (site.docroot / "mid.bin").write_bytes(data)
    status, headers, body = site.get("/mid.bin", Range="bytes=0-0,-1")
    assert status == 206
    assert multipart(headers, body, data) == [(0, 0), (4095, 4095)]
    status, headers, body = site.get("/index.html", Range="bytes=0-0,-1")
    assert status == 206 and body == SMALL             # 80 bytes apart or less: one


def test_overlapping_and_close_ranges_coalesce(site):
    status, headers, body = site.get("/big.bin", Range="bytes=0-10,5-20,50-60")
    assert status == 206 and headers["Content-Range"] == "bytes 0-60/1048576"
    assert body == BIG[:61]


def test_many_ranges_are_bounded():
    size = 1 << 30
    sorted_many = "bytes=" + ",".join(f"{i * 1000}-{i * 1000}" for i in range(1000))
    assert len(parse_ranges(sorted_many, size)) == 128
    unsorted = "bytes=" + ",".join(f"{i * 1000}-{i * 1000}" for i in range(50, 0, -1))
    assert len(parse_ranges(unsorted, size)) <= 10
    overlapping = "bytes=" + ",".join("0-100" for _ in range(500))
    assert parse_ranges(overlapping, size) == [(0, 100)]


def test_abusive_range_header_is_answered_quickly(site):
    header = ",".join(f"{i}-{i}" for i in range(0, 4000, 2))[:7000]
    status, headers, body = site.get("/big.bin", Range="bytes=" + header)
    assert status == 206 and int(headers["Content-Length"]) == len(body)


def test_unsatisfiable_is_416_with_the_length(site):
    for value in ("bytes=100-200", "bytes=22-", "bytes=-0", "bytes=5-2"):
        status, headers, _ = site.get("/index.html", Range=value)
        assert status == 416, value
        assert headers["Content-Range"] == "bytes */22"


def test_other_units_and_versions_ignore_range(site):
    assert site.get("/index.html", Range="items=0-1")[0] == 200
    raw = site.raw(b"GET /index.html HTTP/1.0\r\nRange: bytes=0-1\r\n\r\n")
    assert raw.startswith(b"HTTP/1.0 200 ") and b"Accept-Ranges" not in raw
    status, headers, body = site.request("HEAD", "/index.html", {"Range": "bytes=0-1"})
    assert status == 200 and headers["Content-Length"] == "22"


def test_if_range(site):
    _, headers, _ = site.get("/index.html")
    etag, modified = headers["ETag"], headers["Last-Modified"]
    assert site.get("/index.html", Range="bytes=0-4", If_Range=etag)[0] == 206
    assert site.get("/index.html", Range="bytes=0-4", If_Range=modified)[0] == 206
    assert site.get("/index.html", Range="bytes=0-4", If_Range='"other"')[0] == 200
    assert site.get("/index.html", Range="bytes=0-4", If_Range="W/" + etag)[0] == 200
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert site.get("/index.html", Range="bytes=0-4", If_Range=old)[0] == 200


@pytest.mark.parametrize("conditions,method,expected", [
    ({"If-Match": "{etag}"}, "GET", 200),
    ({"If-Match": '"nope"'}, "GET", 412),
    ({"If-Match": "*"}, "GET", 200),
    ({"If-Match": "W/{etag}"}, "GET", 412),                 # strong comparison
    ({"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}, "GET", 412),
    ({"If-Unmodified-Since": "{modified}"}, "GET", 200),
    ({"If-Unmodified-Since": "garbage"}, "GET", 200),       # invalid date: ignored
    ({"If-Match": "{etag}", "If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
     "GET", 200),                                           # If-Match wins
    ({"If-Match": '"nope"', "If-None-Match": "{etag}"}, "GET", 412),   # step 1 first
    ({"If-None-Match": "{etag}"}, "GET", 304),
    ({"If-None-Match": "W/{etag}"}, "GET", 304),            # weak comparison
    ({"If-None-Match": "{etag}"}, "POST", 412),
    ({"If-None-Match": '"nope"', "If-Modified-Since": "{modified}"}, "GET", 200),
    ({"If-Modified-Since": "{modified}"}, "GET", 304),
    ({"If-Modified-Since": "{modified}"}, "POST", 200),     # only GET / HEAD
    ({"If-None-Match": "{etag}", "Range": "bytes=0-1"}, "GET", 304),
])
def test_precondition_matrix(site, conditions, method, expected):
    _, headers, _ = site.get("/index.html")
    values = {"etag": headers["ETag"], "modified": headers["Last-Modified"]}
    sent = {name: value.format(**values) for name, value in conditions.items()}
    if method == "POST":
        sent["Content-Length"] = "0"
    status, answer, body = site.request(method, "/index.html", sent)
    assert status == expected
    if status == 304:
        assert body == b"" and answer["ETag"] == headers["ETag"]


def test_keep_alive_after_a_multipart_answer(site):
    with site.socket() as sock:
        request = (b"GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0,5000-5000\r\n\r\n"
                   b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        sock.sendall(request)
        data = read_until_closed(sock)
    assert data.count(b"HTTP/1.1 ") == 2 and data.endswith(SMALL)
