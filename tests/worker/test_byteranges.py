"""Range requests on answers that are not a file's (worker/byteranges.py), against the
real server: a directory listing, an SSI page and CGI answers get Accept-Ranges and
206 / 416 as lighttpd 1.4.69 gives them (test_cgi_differential.py compares the CGI
cases with lighttpd itself); an answer with a coding, or one that says
`Accept-Ranges: none`, or a request over HTTP/1.0, or a POST, is left whole.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/: serverproc
from serverproc import Server  # noqa: E402

SCRIPTS = {
    "plain.cgi": 'printf "Content-Type: text/plain\\r\\n\\r\\n0123456789abcdefghij"',
    "tagged.cgi": 'printf "Content-Type: text/plain\\r\\nETag: \\"v1\\"\\r\\n'
                  'Last-Modified: Tue, 01 Dec 2026 10:00:00 GMT\\r\\n\\r\\n0123456789"',
    "none.cgi": 'printf "Content-Type: text/plain\\r\\nAccept-Ranges: none\\r\\n\\r\\n'
                '0123456789"',
    "coded.cgi": 'printf "Content-Type: text/plain\\r\\nContent-Encoding: x-own\\r\\n\\r\\n'
                 '0123456789"',
    "big.cgi": 'printf "Content-Type: application/octet-stream\\r\\n\\r\\n"; '
               'head -c 300000 /dev/zero | tr "\\\\0" "z"; printf END',
}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("byteranges")
    running = Server(base, 'server.modules = ("mod_dirlisting", "mod_ssi", "mod_cgi", '
                           '"mod_staticfile")\n'
                           'dir-listing.activate = "enable"\n'
                           'cgi.assign = (".cgi" => "/bin/sh")\n'
                           'ssi.extension = (".shtml")\n'
                           'mimetype.assign = (".shtml" => "text/html", '
                           '".txt" => "text/plain")\n')
    docroot = running.docroot
    (docroot / "dir").mkdir()
    for name in ("a.txt", "b.txt"):
        (docroot / "dir" / name).write_text(name)
    (docroot / "page.shtml").write_text('<p><!--#echo var="DOCUMENT_NAME" --></p>\n')
    for name, body in SCRIPTS.items():
        (docroot / name).write_text(body + "\n")
    try:
        running.wait_serving()
        yield running
    finally:
        running.stop()


def fetch(server: Server, path: str, *headers: tuple[str, str], method: str = "GET",
          version: int = 11) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    if version == 10:
        connection._http_vsn, connection._http_vsn_str = 10, "HTTP/1.0"
    try:
        connection.request(method, path, headers=dict(headers))
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def test_a_script_s_answer_is_ranged_and_says_so(server):
    status, headers, body = fetch(server, "/plain.cgi")
    assert (status, headers["accept-ranges"], body) == (200, "bytes", b"0123456789abcdefghij")
    status, headers, body = fetch(server, "/plain.cgi", ("Range", "bytes=2-5"))
    assert (status, body) == (206, b"2345")
    assert headers["content-range"] == "bytes 2-5/20" and headers["content-length"] == "4"
    status, headers, body = fetch(server, "/plain.cgi", ("Range", "bytes=-3"))
    assert (status, body, headers["content-range"]) == (206, b"hij", "bytes 17-19/20")


def test_far_apart_ranges_of_a_spooled_answer_come_as_multipart(server):
    status, headers, body = fetch(server, "/big.cgi", ("Range", "bytes=0-3,299999-300002"))
    assert status == 206
    assert headers["content-type"] == "multipart/byteranges; boundary=fkj49sn38dcn3"
    assert body == (b"--fkj49sn38dcn3\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Range: bytes 0-3/300003\r\n\r\nzzzz\r\n"
                    b"--fkj49sn38dcn3\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Range: bytes 299999-300002/300003\r\n\r\nzEND\r\n"
                    b"--fkj49sn38dcn3--\r\n")
    assert int(headers["content-length"]) == len(body)


def test_a_range_past_the_end_is_416_with_the_length(server):
    status, headers, body = fetch(server, "/plain.cgi", ("Range", "bytes=50-"))
    assert (status, headers["content-range"]) == (416, "bytes */20")
    assert b"416 Range Not Satisfiable" in body and headers["content-type"] == "text/html"


def test_if_range_compares_the_answer_s_own_validators(server):
    assert fetch(server, "/tagged.cgi", ("Range", "bytes=0-1"),
                 ("If-Range", '"v1"'))[2] == b"01"
    assert fetch(server, "/tagged.cgi", ("Range", "bytes=0-1"),
                 ("If-Range", "Tue, 01 Dec 2026 10:00:00 GMT"))[2] == b"01"
    for other in ('"v2"', 'W/"v1"', "Wed, 02 Dec 2026 10:00:00 GMT"):
        status, _, body = fetch(server, "/tagged.cgi", ("Range", "bytes=0-1"),
                                ("If-Range", other))
        assert (status, body) == (200, b"0123456789"), other


@pytest.mark.parametrize("path", ["/none.cgi", "/coded.cgi"])
def test_an_answer_that_refuses_ranges_or_has_a_coding_stays_whole(server, path):
    status, headers, body = fetch(server, path, ("Range", "bytes=2-5"))
    assert (status, body) == (200, b"0123456789")
    assert "content-range" not in headers
    assert headers.get("accept-ranges") == ("none" if path == "/none.cgi" else None)


def test_http10_post_and_head_get_no_part(server):
    status, headers, body = fetch(server, "/plain.cgi", ("Range", "bytes=2-5"), version=10)
    assert (status, len(body), headers.get("accept-ranges")) == (200, 20, None)
    status, headers, body = fetch(server, "/plain.cgi", ("Range", "bytes=2-5"),
                                  method="POST")
    assert (status, len(body), headers.get("accept-ranges")) == (200, 20, None)
    status, headers, _ = fetch(server, "/plain.cgi", ("Range", "bytes=2-5"), method="HEAD")
    assert (status, headers["accept-ranges"]) == (200, "bytes")
    assert "content-range" not in headers


@pytest.mark.parametrize("path", ["/dir/", "/page.shtml"])
def test_a_listing_and_an_ssi_page_are_ranged(server, path):
    status, headers, whole = fetch(server, path)
    assert (status, headers["accept-ranges"]) == (200, "bytes")
    status, headers, part = fetch(server, path, ("Range", "bytes=1-4"))
    assert (status, part) == (206, whole[1:5])
    assert headers["content-range"] == f"bytes 1-4/{len(whole)}"


def test_a_range_over_http2_is_ranged_too(server):
    out = subprocess.run(["curl", "-s", "--http2-prior-knowledge", "-r", "2-5", "-D", "-",
                          f"http://127.0.0.1:{server.port}/plain.cgi"],
                         capture_output=True, timeout=20, check=True).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 206") and body == b"2345"
    assert b"content-range: bytes 2-5/20" in head
