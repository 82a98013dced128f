"""Differential test: Debian's lighttpd 1.4.69 and a pylighttpd worker, side by side.

Both serve the same docroot with the same config on two free loopback ports; the same
raw requests go to each over plain sockets and the answers must agree on the status,
the headers that matter (KEY_HEADERS) and the body.  Where pylighttpd follows an RFC
that lighttpd does not, the request is listed in KNOWN_DIFFERENCES with the reason;
the test checks that those still differ, so the table cannot go stale.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pytest

from server_util import WorkerProcess, read_until_closed
from worker.http import http_date
from worker.static import etag_for

LIGHTTPD = shutil.which("lighttpd") or "/usr/sbin/lighttpd"
pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

KEY_HEADERS = ("content-type", "content-length", "content-range", "etag", "last-modified",
               "location", "allow", "accept-ranges", "server")

CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_access", "mod_indexfile", "mod_staticfile")
index-file.names = ("index.html")
url.access-deny = ("~", ".inc")
server.tag = "difftest"
mimetype.assign = (".html" => "text/html", ".txt" => "text/plain; charset=utf-8",
                   ".bin" => "application/octet-stream", "" => "application/octet-stream")
$HTTP["url"] =^ "/nolink/" {{ server.follow-symlink = "disable" }}
$HTTP["url"] =^ "/errdoc/" {{ server.errorfile-prefix = "{docroot}/errors/status-" }}
$HTTP["url"] =^ "/eh404/" {{ server.error-handler-404 = "/handler.html" }}
$HTTP["url"] =^ "/eh/" {{ server.error-handler = "/handler.html" }}
$HTTP["host"] == "denied.example" {{ url.access-deny = ("") }}
$HTTP["url"] =^ "/sub/" {{ server.tag = " \t " }}
"""

# request name -> why pylighttpd answers differently (RFC 9110 sections)
KNOWN_DIFFERENCES = {
    "range-416": "§15.5.17: a 416 SHOULD carry `Content-Range: bytes */len`; "
                 "lighttpd 1.4.69 drops it",
    "range-416-many": "§15.5.17, as range-416",
    "range-invalid": "§15.5.17, as range-416 (both reject `bytes=abc`, §14.2 allows it)",
    "delete-file": "§15.5.6: a method the resource does not support is 405 with Allow; "
                   "lighttpd 1.4.69 says 501 Not Implemented",
    "put-file": "§15.5.6, as delete-file",
    "upgrade-http10": "§7.8: a server MUST ignore an Upgrade header field received in an "
                      "HTTP/1.0 request; lighttpd 1.4.69 refuses the request (400)",
    "connect-address": "§15.5.6: a 405 MUST carry Allow; lighttpd 1.4.69 sends none for "
                       "a CONNECT no module takes",
    "trace-file": "§9.3.8 / §15.5.6: TRACE is off, a known method: 405 with Allow "
                  "rather than lighttpd's 501",
    "if-match-other": "§13.1.1 / §13.2.2: If-Match that does not match is 412; "
                      "lighttpd 1.4.69 ignores If-Match",
    "if-unmodified-since-old": "§13.1.4 / §13.2.2: modified since the date is 412; "
                               "lighttpd 1.4.69 ignores If-Unmodified-Since",
    "http09-simple-request": "RFC 1945 4.1: a request line without a version is an "
                             "HTTP/0.9 request, a version not served (RFC 9110 15.6.6: "
                             "505); lighttpd 1.4.69 calls it malformed (400)",
    "inm-two-fields": "RFC 9110 5.3: the lines of a list field (If-None-Match) are one "
                      "list, so the second's match is a 304; lighttpd 1.4.69 keeps the "
                      "first line only",
    "leading-empty-line": "RFC 9112 2.2: a server SHOULD ignore at least one empty line "
                          "before a request line; lighttpd 1.4.69 answers 400 to one on "
                          "a new connection (it ignores them between requests)",
    "two-spaces-after-method": "RFC 9112 3: a recipient MAY split the request line on "
                               "runs of whitespace; lighttpd 1.4.69 answers 400",
    "head-redirect-to-directory": "RFC 9110 8.6: a HEAD answer says the Content-Length "
                                  "a GET would get (0 for a redirect); lighttpd 1.4.69 "
                                  "leaves it out when the body is empty",
    "folded-field": "RFC 9112 5.2: a field folded over two lines (obs-fold) is refused "
                    "with 400 or unfolded; pylighttpd refuses it, lighttpd 1.4.69 "
                    "unfolds it",
}


def make_site(base: Path) -> Path:
    docroot = base / "www"
    for sub in ("sub", "noindex", "nolink", "errdoc", "eh404", "eh", "errors"):
        (docroot / sub).mkdir(parents=True)
    (docroot / "index.html").write_text("hello from the differential test\n")
    (docroot / "handler.html").write_text("the error handler\n")
    (docroot / "errors" / "status-404.html").write_text("<p>custom 404</p>\n")
    (docroot / "sub" / "index.html").write_text("sub index\n")
    (docroot / "sub" / "x.txt").write_text("x file\n")
    (docroot / "noindex" / "a.txt").write_text("a\n")
    (docroot / "nolink" / "plain.txt").write_text("plain\n")
    (docroot / "eh" / "e.txt").write_text("e\n")
    (docroot / "secret.inc").write_text("<?php secret ?>\n")
    (docroot / "empty.txt").write_text("")
    (docroot / "ünï.txt").write_text("unicode name\n")
    (docroot / "space name.txt").write_text("space\n")
    (docroot / "pct%41.txt").write_text("literal percent\n")
    (docroot / "back\\slash.txt").write_text("backslash\n")
    (docroot / "big.bin").write_bytes(bytes(range(256)) * 4096)   # 1 MiB: sendfile path
    outside = base / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0 outside the docroot\n")
    (docroot / "link.html").symlink_to("index.html")
    (docroot / "outlink").symlink_to(outside)
    (docroot / "nolink" / "l.html").symlink_to("../index.html")
    (docroot / "nolink" / "dirlink").symlink_to("../sub")
    return docroot


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Lighttpd:
    def __init__(self, conf: Path) -> None:
        self.port = free_port()
        full = conf.with_name("lighttpd.conf")
        full.write_text(conf.read_text() + f'server.bind = "127.0.0.1"\n'
                        f"server.port = {self.port}\n")
        self.process = subprocess.Popen([LIGHTTPD, "-D", "-f", str(full)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        self.stop()
        pytest.skip("lighttpd did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()


@contextlib.contextmanager
def beside_lighttpd(conf: Path) -> Iterator[tuple[int, int]]:
    """lighttpd 1.4.69 and a pylighttpd worker on one config: (their port, ours)."""
    lighttpd = Lighttpd(conf)
    try:
        with WorkerProcess(conf) as ours:
            yield lighttpd.port, ours.port
    finally:
        lighttpd.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("diff")
    docroot = make_site(base)
    conf = base / "common.conf"
    conf.write_text(CONFIG.format(docroot=docroot))
    with beside_lighttpd(conf) as (theirs, ours):
        yield theirs, ours, docroot


def exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def summary(raw: bytes) -> dict:
    status, headers, body = parse(raw)
    found = {"status": status, "body": body}
    found.update({name: headers.get(name) for name in KEY_HEADERS})
    return found


def get11(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test.example", "Connection: close",
             *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def answers_to_path(servers: tuple[int, int], path: str) -> tuple[tuple, tuple]:
    """lighttpd's answer and ours (parsed) to a GET of `path`, its characters escaped."""
    request = get11(quote(path, safe="/"))
    theirs, ours = (parse(exchange(port, request)) for port in servers)
    return theirs, ours


def with_host(host: str, path: str = "/index.html") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def get10(path: str, *headers: str, method: str = "GET") -> bytes:
    return ("\r\n".join([f"{method} {path} HTTP/1.0", *headers]) + "\r\n\r\n").encode()


def corpus(docroot: Path) -> list[tuple[str, bytes]]:
    st = os.stat(docroot / "index.html")
    etag = etag_for(st.st_ino, st.st_size, st.st_mtime_ns, True, True, True)
    modified = http_date(int(st.st_mtime))
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    big = os.stat(docroot / "big.bin")
    big_etag = etag_for(big.st_ino, big.st_size, big.st_mtime_ns, True, True, True)
    return [
        # plain files and directories
        ("root-10", get10("/")),
        ("index", get11("/index.html")),
        ("head-index", get11("/index.html", method="HEAD")),
        ("dir-no-slash", get11("/sub")),
        ("dir-no-slash-query", get11("/sub?a=b")),
        ("dir-index", get11("/sub/")),
        ("subfile", get11("/sub/x.txt")),   # a blank server.tag: no Server field
        ("subfile-missing", get11("/sub/none.txt")),
        ("noindex-dir", get11("/noindex/")),
        ("missing", get11("/missing.html")),
        ("empty-file", get11("/empty.txt")),
        ("big-file", get11("/big.bin")),
        ("pathinfo", get11("/index.html/extra/path")),
        ("query", get11("/index.html?x=1&y=%20")),
        ("fragment", get11("/index.html#part")),
        ("name-too-long", get11("/" + "a" * 300)),
        ("path-too-long", get11("/" + "b/" * 2100)),
        ("fragment-dir", get11("/sub#part")),
        ("fragment-bad-escapes", get11("/index.html#%00%zz%")),
        # encodings
        ("encoded-letters", get11("/%73ub/%78.txt")),
        ("encoded-slash", get11("/sub%2fx.txt")),
        ("unicode-encoded", get11("/%C3%BCn%C3%AF.txt")),
        ("unicode-raw", get11("/ünï.txt")),
        # octets lighttpd takes where llhttp would not: beyond ASCII in the path and
        # the query (escaped by the normalisation), anything but a space in a fragment;
        # an octet never found in UTF-8 refused (400)
        ("unicode-raw-query", get11("/ünï.txt?q=ünï&r=%C3%BC")),
        # an octet str.strip() takes for a blank (0xA0, 0x85) is none to lighttpd
        ("inm-star-nbsp", get11("/index.html", "If-None-Match: *\udca0")),
        ("inm-star-nel", get11("/index.html", "If-None-Match: \udc85*")),
        ("unicode-raw-missing", get11("/nö.txt")),
        ("unicode-raw-invalid", get11("/ünï.txt?\udcff")),
        ("unicode-raw-overlong", get11("/\udcc0\udcaf")),
        ("unicode-raw-fragment", get11("/index.html#\x01é\x7f\udcff")),
        ("unicode-raw-control", get11("/index.html?\x01é")),
        ("space-encoded", get11("/space%20name.txt")),
        ("literal-percent", get11("/pct%2541.txt")),
        ("bad-percent", get11("/index.html%zz")),
        ("encoded-nul", get11("/index.html%00")),
        ("double-slash", get11("//index.html")),
        ("dot-segment", get11("/./index.html")),
        ("dotdot-inside", get11("/sub/../index.html")),
        ("backslash-name", get11("/back%5Cslash.txt")),
        # traversal attempts
        ("traversal", get11("/../../outside/passwd")),
        ("traversal-deep", get11("/sub/../../../../outside/passwd")),
        ("traversal-encoded", get11("/%2e%2e/%2e%2e/outside/passwd")),
        ("traversal-double-encoded", get11("/%252e%252e/outside/passwd")),
        ("traversal-backslash", get11("/..\\..\\outside\\passwd")),
        ("traversal-backslash-encoded", get11("/..%5c..%5coutside%5cpasswd")),
        ("traversal-dotdot-encoded-slash", get11("/..%2f..%2foutside%2fpasswd")),
        ("symlink-out-of-root", get11("/outlink/passwd")),
        ("symlink-file", get11("/link.html")),
        ("nolink-plain", get11("/nolink/plain.txt")),
        ("nolink-symlink", get11("/nolink/l.html")),
        ("nolink-dirlink", get11("/nolink/dirlink/x.txt")),
        ("access-deny", get11("/secret.inc")),
        ("access-deny-encoded", get11("/secret%2einc")),
        ("access-deny-pathinfo", get11("/secret.inc/x")),
        ("access-deny-upper", get11("/SECRET.INC")),
        # error documents and handlers
        ("errorfile-prefix", get11("/errdoc/missing")),
        ("error-handler-404", get11("/eh404/missing")),
        ("error-handler-404-head", get11("/eh404/missing", method="HEAD")),
        ("error-handler-404-on-403", get11("/eh404/secret.inc")),
        ("error-handler", get11("/eh/missing")),
        # absolute form, asterisk
        ("absolute-form", get11("http://test.example/index.html")),
        ("options-star", get11("*", method="OPTIONS")),
        ("options-file", get11("/index.html", method="OPTIONS")),
        # ranges
        ("range-first", get11("/index.html", "Range: bytes=0-4")),
        ("range-suffix", get11("/index.html", "Range: bytes=-4")),
        ("range-open", get11("/index.html", "Range: bytes=5-")),
        ("range-416", get11("/index.html", "Range: bytes=100-200")),
        ("range-416-many", get11("/index.html", "Range: bytes=100-200,300-")),
        ("range-invalid", get11("/index.html", "Range: bytes=abc")),
        ("range-other-unit", get11("/index.html", "Range: items=0-1")),
        ("range-coalesced", get11("/index.html", "Range: bytes=0-1,5-6")),
        ("range-multi-big", get11("/big.bin", "Range: bytes=0-1,1000-1001,-2")),
        ("range-multi-unsorted", get11("/big.bin", "Range: bytes=5000-5001,0-1")),
        ("range-overlap-all", get11("/big.bin", "Range: bytes=5-,0-1")),
        ("range-multi-small", get11("/index.html", "Range: bytes=0-0,-1")),
        ("range-http10", get10("/index.html", "Range: bytes=0-4")),
        ("range-head", get11("/index.html", "Range: bytes=0-4", method="HEAD")),
        ("if-range-etag", get11("/index.html", "Range: bytes=0-4", f"If-Range: {etag}")),
        ("if-range-other", get11("/index.html", "Range: bytes=0-4", 'If-Range: "x"')),
        ("if-range-date", get11("/index.html", "Range: bytes=0-4", f"If-Range: {modified}")),
        ("if-range-weak", get11("/index.html", "Range: bytes=0-4", f"If-Range: W/{etag}")),
        ("range-big-etag", get11("/big.bin", "Range: bytes=1048570-", f"If-Range: {big_etag}")),
        # conditionals
        ("inm-match", get11("/index.html", f"If-None-Match: {etag}")),
        ("inm-other", get11("/index.html", 'If-None-Match: "nope"')),
        ("inm-star", get11("/index.html", "If-None-Match: *")),
        ("inm-list", get11("/index.html", f'If-None-Match: "a", {etag}')),
        ("inm-star-in-list", get11("/index.html", 'If-None-Match: "a", *')),
        ("inm-two-fields", get11("/index.html", 'If-None-Match: "a"', f"If-None-Match: {etag}")),
        # fields that may come once: an equal repeat is ignored, another value is a 400
        ("content-type-twice-equal", get11("/index.html", "Content-Type: text/plain",
                                           "Content-Type: TEXT/plain")),
        ("content-type-twice", get11("/index.html", "Content-Type: text/plain",
                                     "Content-Type: text/html")),
        ("ims-twice", get11("/index.html", f"If-Modified-Since: {modified}",
                            f"If-Modified-Since: {old}")),
        ("ims-twice-equal", get11("/index.html", f"If-Modified-Since: {modified}",
                                  f"If-Modified-Since: {modified}")),
        ("inm-weak-star", get11("/index.html", "If-None-Match: W/*")),
        ("inm-weak", get11("/index.html", f"If-None-Match: W/{etag}")),
        # a member is the ETag when it starts with it and a blank, a comma or the end
        # follows (lighttpd's http_etag_matches): junk after a blank still matches
        ("inm-junk-after-blank", get11("/index.html", f"If-None-Match: {etag} junk")),
        ("inm-junk-glued", get11("/index.html", f"If-None-Match: {etag}junk")),
        ("inm-blank-commas", get11("/index.html", f"If-None-Match: ,, ,{etag}")),
        ("ims-equal", get11("/index.html", f"If-Modified-Since: {modified}")),
        ("ims-old", get11("/index.html", f"If-Modified-Since: {old}")),
        ("ims-garbage", get11("/index.html", "If-Modified-Since: yesterday")),
        # RFC 9110 5.6.7: an HTTP-date in one of three forms, case-sensitive, GMT only
        ("ims-with-length", get11("/index.html", f"If-Modified-Since: {modified}; length=5")),
        ("ims-lower-case", get11("/index.html", f"If-Modified-Since: {modified.lower()}")),
        ("ims-numeric-zone", get11("/index.html",
                                   f"If-Modified-Since: {modified[:-3]}+0000")),
        ("ims-rfc850", get11("/index.html", "If-Modified-Since: " + time.strftime(
            "%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(st.st_mtime + 60)))),
        ("ims-asctime", get11("/index.html", "If-Modified-Since: " + time.strftime(
            "%a %b %e %H:%M:%S %Y", time.gmtime(st.st_mtime + 60)))),
        ("inm-beats-ims", get11("/index.html", 'If-None-Match: "nope"',
                                f"If-Modified-Since: {modified}")),
        ("if-match-etag", get11("/index.html", f"If-Match: {etag}")),
        ("if-match-other", get11("/index.html", 'If-Match: "nope"')),
        ("if-unmodified-since-old", get11("/index.html", f"If-Unmodified-Since: {old}")),
        ("post-inm", get11("/index.html", f"If-None-Match: {etag}", "Content-Length: 0",
                           method="POST")),
        # methods
        ("post-file", get11("/index.html", "Content-Length: 0", method="POST")),
        ("delete-file", get11("/index.html", method="DELETE")),
        ("put-file", get11("/index.html", "Content-Length: 0", method="PUT")),
        ("trace-file", get11("/index.html", method="TRACE")),
        ("unknown-method", get11("/index.html", method="FOO")),
        ("upgrade-http10", get10("/index.html", "Upgrade: websocket")),
        ("connect-address", b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n"
                            b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n"),
        ("connect-name", b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n"
                         b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n"),
        ("delete-missing", get11("/missing", method="DELETE")),
        ("head-redirect-to-directory", get11("/sub", method="HEAD")),
        ("head-empty-file", get11("/empty.txt", method="HEAD")),
        ("head-error-page", get11("/missing", method="HEAD")),
        ("post-no-length", get11("/index.html", method="POST")),
        ("post-no-length-http10", b"POST /index.html HTTP/1.0\r\n\r\n"),
        ("post-no-length-denied", b"POST /secret.inc HTTP/1.0\r\n\r\n"),
        ("put-no-length-missing", get11("/missing", method="PUT")),
        # bad requests
        ("http11-no-host", b"GET /index.html HTTP/1.1\r\n\r\n"),
        ("http2-version", b"GET /index.html HTTP/2.0\r\nHost: a\r\n\r\n"),
        ("garbage", b"HELLO\r\n\r\n"),
        ("no-leading-slash", get11("index.html")),
        ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("bad-host", get10("/", "Host: bad/host")),
        ("ctl-in-path", b"GET /ind\x01ex.html HTTP/1.0\r\n\r\n"),
        ("http10-chunked", b"POST /index.html HTTP/1.0\r\nTransfer-Encoding: chunked\r\n"
                           b"\r\n0\r\n\r\n"),
        ("http-version-3", b"GET /index.html HTTP/3.1\r\nHost: a\r\n\r\n"),
        ("http09-simple-request", b"GET /index.html\r\n\r\n"),
        ("leading-empty-line", b"\r\n" + get11("/index.html")),
        ("two-spaces-after-method", b"GET  /index.html HTTP/1.1\r\nHost: a\r\n\r\n"),
        ("folded-field", get11("/index.html", "X-Folded: a", " b")),
        ("http-version-1.2", b"GET /index.html HTTP/1.2\r\nHost: a\r\n\r\n"),
        ("overlong-dot-dot", get11("/%c0%ae%c0%ae/index.html")),
        ("encoded-ff", get11("/%ff")),
        ("encoded-ff-query", get11("/index.html?q=%ff")),
        ("encoded-del", get11("/%7f")),
        ("raw-ff", get11("/\udcff")),
        ("body-to-static-file", get11("/index.html", "Content-Length: 5", method="POST")
         + b"hello"),
        ("get-with-body", get11("/index.html", "Content-Length: 5") + b"hello"),
        ("get-with-empty-body", get11("/index.html", "Content-Length: 0")),
        ("head-with-chunked-body", get11("/index.html", "Transfer-Encoding: chunked",
                                         method="HEAD") + b"0\r\n\r\n"),
        # the Host, normalised before conditions see it
        ("host-denied", with_host("denied.example")),
        ("host-trailing-dot", with_host("denied.example.")),
        ("host-trailing-dot-port", with_host("denied.example.:80")),
        ("host-upper-case", with_host("DENIED.Example:80")),
        ("host-port-leading-zeros", with_host("denied.example:0080")),
        ("host-empty", with_host("")),
        ("host-empty-http10", get10("/", "Host: ")),
        ("host-empty-then-named", b"GET /index.html HTTP/1.1\r\nHost:\r\n"
                                  b"Host: denied.example\r\nConnection: close\r\n\r\n"),
        ("empty-fields", get11("/index.html", "Range:", "If-None-Match:  ",
                               "If-Modified-Since:")),
        ("host-dot-port", with_host("X.:0080")),
        ("host-port-too-big", with_host("x:65536")),
        ("host-port-empty", with_host("x:")),
        ("host-short-ipv4", with_host("1.2.3")),
        ("host-ipv4", with_host("127.0.0.1:80")),
        ("host-leading-dash", with_host("-a")),
        ("host-dash-label-end", with_host("a-.b")),
        ("host-ipv6", with_host("[::1]:8080")),
        ("host-ipv6-port-zero", with_host("[::1]:0")),
        ("host-backtracking", with_host("g" * 30 + "!")),
        ("host-absolute-form", get11("http://denied.example./index.html")),
    ]


def _responses(servers):
    lighttpd_port, our_port, docroot = servers
    for name, raw in corpus(docroot):
        yield name, summary(exchange(lighttpd_port, raw)), summary(exchange(our_port, raw))


def test_same_answers_as_lighttpd(servers):
    differences = {}
    known = {}
    count = 0
    for name, theirs, ours in _responses(servers):
        count += 1
        diff = {k: (theirs[k], ours[k]) for k in theirs if theirs[k] != ours[k]}
        if name in KNOWN_DIFFERENCES:
            known[name] = diff
        elif diff:
            differences[name] = {k: (v[0][:120], v[1][:120]) if isinstance(v[0], bytes)
                                 else v for k, v in diff.items()}
    assert count >= 60
    assert not differences, "\n".join(f"{name}: {diff}" for name, diff in differences.items())
    stale = [name for name, diff in known.items() if not diff]
    assert not stale, f"listed in KNOWN_DIFFERENCES but now the same: {stale}"


def test_known_differences_are_the_rfc_answers(servers):
    """What pylighttpd sends where it parts from lighttpd."""
    lighttpd_port, our_port, docroot = servers
    requests = dict(corpus(docroot))
    answers = {name: parse(exchange(our_port, requests[name])) for name in KNOWN_DIFFERENCES}
    size = (docroot / "index.html").stat().st_size
    assert answers["range-416"][0] == 416
    assert answers["range-416"][1]["content-range"] == f"bytes */{size}"
    for name in ("delete-file", "put-file", "trace-file", "connect-address"):
        assert answers[name][0] == 405
        assert answers[name][1]["allow"] == "OPTIONS, GET, HEAD, POST"
    assert answers["if-match-other"][0] == 412
    assert answers["upgrade-http10"][0] == 200
    assert answers["if-unmodified-since-old"][0] == 412
    assert answers["http09-simple-request"][0] == 505
    assert answers["leading-empty-line"][0] == 200
    assert answers["two-spaces-after-method"][0] == 200
    assert answers["folded-field"][0] == 400


def test_raw_octets_in_pipelined_requests_are_taken_as_lighttpd_takes_them(servers):
    """A request line with octets beyond ASCII after others in the same read is parsed
    again from its own start, escaped; the ones before it are answered once."""
    lighttpd_port, our_port, _docroot = servers
    keep = b"Connection: close\r\n"
    stream = get11("/index.html").replace(keep, b"") + get11("/ünï.txt").replace(keep, b"") \
        + get11("/nö.txt").replace(keep, b"") + get11("/ünï.txt?\udcff")
    statuses = [re.findall(rb"HTTP/1\.1 (\d+)", exchange(port, stream))
                for port in (lighttpd_port, our_port)]
    assert statuses[0] == statuses[1] == [b"200", b"200", b"404", b"400"]


def answer_lines(raw: bytes) -> list[tuple[str, str | None]]:
    """Each answer of a stream as (status line, Connection field), walked by
    Content-Length."""
    answers = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = dict((name.strip().lower(), value.strip()) for name, _, value in
                      (line.partition(":") for line in lines[1:]))
        answers.append((lines[0], fields.get("connection")))
        raw = rest[int(fields.get("content-length", "0")):]
    return answers


KEPT = b"GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n"
PIPELINED_REFUSALS = [
    b"GET /index.html HTTP/2.0\r\nHost: t\r\n\r\n",
    b"BREW /index.html HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /ind\x01ex.html HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /index.html HTTP/1.1 x\r\nHost: t\r\n\r\n",
    b"GET /index.html HTTP/1.0\r\nBad field\r\n\r\n",
    b"GET /index.html HTTP/1.1\r\n\r\n",
    b"HELLO\r\n\r\n",
]


@pytest.mark.parametrize("refused", PIPELINED_REFUSALS)
@pytest.mark.parametrize("before", [0, 2])
def test_a_refused_request_is_answered_as_lighttpd_answers_it(servers, refused, before):
    """Alone or pipelined behind requests that are answered (kept alive), a refused
    request gets lighttpd's status line, version included, and the connection closes
    after it."""
    lighttpd_port, our_port, _docroot = servers
    raw = KEPT * before + refused
    theirs = answer_lines(exchange(lighttpd_port, raw))
    assert len(theirs) == before + 1 and theirs[-1][1] == "close"
    assert answer_lines(exchange(our_port, raw)) == theirs


@pytest.mark.parametrize("name", ["connect-address", "connect-name"])
def test_a_connect_nobody_takes_closes_as_in_lighttpd(servers, name):
    """What follows a CONNECT may be its tunnel's bytes: the answer says close, and
    the GET after it is not read."""
    lighttpd_port, our_port, docroot = servers
    raw = dict(corpus(docroot))[name]
    theirs = answer_lines(exchange(lighttpd_port, raw))
    assert len(theirs) == 1 and theirs[0][1] == "close"
    assert answer_lines(exchange(our_port, raw)) == theirs


@pytest.mark.parametrize("fields", [
    b"Connection: keep-alive\r\n",
    b"Connection: Keep-Alive, close\r\n",
    b"Connection: close, keep-alive\r\n",
    b"Connection: keep-alive\r\nConnection: close\r\n",
    b"Connection: keep-alive, TE\r\n",
])
def test_http10_keeps_alive_as_lighttpd_reads_its_connection_field(servers, fields):
    """`close` among the tokens wins over `keep-alive`: the answer says close and the
    request after it is not read."""
    lighttpd_port, our_port, _docroot = servers
    raw = b"GET /index.html HTTP/1.0\r\n" + fields + b"\r\n" + \
        b"GET /index.html HTTP/1.0\r\n\r\n"
    assert answer_lines(exchange(our_port, raw)) == answer_lines(exchange(lighttpd_port, raw))


def test_a_file_of_no_known_type_keeps_its_validators(tmp_path):
    """A known difference: where no mimetype.assign entry names a file's type,
    lighttpd 1.4.69 sends it as application/octet-stream without ETag and
    Last-Modified, and so never answers 304 for it; pylighttpd sends both validators
    (RFC 9110 8.8.3: an origin server SHOULD send an ETag it can make) and answers
    conditional requests with them, as nginx does."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "data.unknown").write_text("of no known type\n")
    conf = tmp_path / "common.conf"
    conf.write_text(f'server.document-root = "{tmp_path}/www"\n'
                    'mimetype.assign = (".html" => "text/html")\n')
    request = get11("/data.unknown")
    with beside_lighttpd(conf) as (theirs, ours):
        _, their_fields, _ = parse(exchange(theirs, request))
        status, our_fields, _ = parse(exchange(ours, request))
        revalidated = parse(exchange(ours, get11(
            "/data.unknown", f"If-None-Match: {our_fields['etag']}")))[0]
    assert their_fields["content-type"] == our_fields["content-type"] == \
        "application/octet-stream"
    assert "etag" not in their_fields and "last-modified" not in their_fields
    assert (status, revalidated) == (200, 304)
    assert "last-modified" in our_fields
