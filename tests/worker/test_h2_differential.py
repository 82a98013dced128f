"""Differential test of HTTP/2: Debian's lighttpd 1.4.69 and a pylighttpd worker on
the same config (the CGI site of cgi_site.py, static files beside its scripts) are
asked the same requests by curl over h2c (prior knowledge); status, fields (but Date
and Server) and body must agree.  Where pylighttpd answers otherwise on purpose, the
request is in KNOWN_DIFFERENCES with the reason, and the test checks that it still
differs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from test_cgi_differential import IGNORED_HEADERS, servers  # noqa: F401 (a fixture)
from test_differential import LIGHTTPD

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK) or not shutil.which("curl"),
                                reason="needs Debian's lighttpd and curl")

# name -> (target, curl's other arguments)
REQUESTS = {
    "file": ("/index.html", ()),
    "head": ("/index.html", ("-X", "HEAD")),        # over h2 the stream's end ends it
    "missing": ("/missing.txt", ()),
    "directory-without-slash": ("/paced", ()),
    "directory-without-slash-query": ("/paced?a=1", ()),
    "range": ("/target.txt", ("-H", "Range: bytes=4-9")),
    "ranges": ("/target.txt", ("-H", "Range: bytes=0-2,6-8")),
    "range-unsatisfiable": ("/target.txt", ("-H", "Range: bytes=900-")),
    "not-modified": ("/index.html", ("-H", "If-None-Match: {etag}")),
    "modified-since": ("/index.html", ("-H", "If-Modified-Since: {last_modified}")),
    "options": ("/index.html", ("-X", "OPTIONS")),
    "unknown-method": ("/index.html", ("-X", "FOO")),
    "dot-segments": ("/paced/../index.html", ("--path-as-is",)),
    "encoded-dot-segments": ("/%2e%2e/index.html", ("--path-as-is",)),
    "script": ("/hello.sh", ()),
    "script-status": ("/status.pl", ()),
    "script-post": ("/sum.py", ("--data-binary", "abc")),
    "script-post-large": ("/sum.py", ("--data-binary", "@{large}")),
    "script-post-continue": ("/sum.py", ("--data-binary", "abc",
                                         "-H", "Expect: 100-continue")),
    "script-post-streamed": ("/stream2/sum.py", ("--data-binary", "@{large}")),
    "script-range": ("/hello.sh", ("-H", "Range: bytes=0-4")),
    "script-chunked-answer": ("/chunked.pl", ()),
    "local-redirect": ("/location.sh?/target.txt", ()),
    "x-sendfile": ("/sendfile.sh?{base}/sendable/file.txt", ()),
    "delete": ("/index.html", ("-X", "DELETE")),
    "post-without-body": ("/sum.py", ("-X", "POST")),
    "script-body-after-304": ("/bodiless.sh?304", ()),
    "script-body-after-204-streamed": ("/paced/bodiless.sh?204", ()),
}
# request name -> why pylighttpd answers otherwise
KNOWN_DIFFERENCES = {
    "delete": "RFC 9110 15.5.6: a method the resource does not support is 405 with "
              "Allow; lighttpd 1.4.69 says 501 (as over HTTP/1.1)",
    "post-without-body": "RFC 9113 8.1: a HEADERS frame that ends the stream is a "
                         "request with no content, whose length is known; lighttpd "
                         "1.4.69 answers 411 Length Required, pylighttpd runs it",
    "range-unsatisfiable": "RFC 9110 15.5.17: a 416 keeps `Content-Range: bytes */N`, "
                           "which lighttpd 1.4.69 drops (as over HTTP/1.1)",
}


def _fetch(port: int, target: str, arguments: tuple[str, ...], out: Path) -> dict:
    """curl over h2c: status, fields but those that differ by nature, body."""
    head, body = out.with_suffix(".head"), out.with_suffix(".body")
    subprocess.run(["curl", "-s", "--http2-prior-knowledge", "--max-time", "10",
                    "-D", str(head), "-o", str(body), *arguments,
                    f"http://127.0.0.1:{port}{target}"], check=False, timeout=30)
    lines = head.read_bytes().decode("latin-1").split("\r\n")
    found: dict = {"status": lines[0], "body": body.read_bytes() if body.exists() else b""}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name and name not in IGNORED_HEADERS:
            found[name] = value.strip()
    return found


@pytest.fixture(scope="module")
def answers(servers, tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    their_port, our_port, base = servers
    scratch = tmp_path_factory.mktemp("h2diff")
    large = scratch / "large.bin"
    large.write_bytes(os.urandom(200_000))
    validators = _fetch(our_port, "/index.html", (), scratch / "validators")
    values = {"etag": validators["etag"], "last_modified": validators["last-modified"],
              "large": large, "base": base}
    found = {}
    with ThreadPoolExecutor(2) as pool:
        for name, (target, arguments) in REQUESTS.items():
            target = target.format(**values)
            arguments = tuple(argument.format(**values) for argument in arguments)
            theirs, ours = pool.map(
                lambda side: _fetch(side[0], target, arguments, scratch / f"{name}-{side[1]}"),
                ((their_port, "lighttpd"), (our_port, "pylighttpd")))
            found[name] = (theirs, ours)
    return found


def test_same_answers_over_h2_as_lighttpd(answers):
    differences = {name: {key: (theirs.get(key), ours.get(key))
                          for key in theirs.keys() | ours.keys()
                          if theirs.get(key) != ours.get(key)}
                   for name, (theirs, ours) in answers.items()
                   if name not in KNOWN_DIFFERENCES}
    differences = {name: diff for name, diff in differences.items() if diff}
    assert not differences, "\n".join(f"{name}: {diff}" for name, diff in differences.items())


def test_known_differences_still_differ(answers):
    stale = [name for name in KNOWN_DIFFERENCES if answers[name][0] == answers[name][1]]
    assert not stale, f"listed in KNOWN_DIFFERENCES but now the same: {stale}"


def test_the_answers_compared_are_http2_and_varied(answers):
    statuses = {name: theirs["status"] for name, (theirs, _) in answers.items()}
    assert all(status.startswith("HTTP/2 ") for status in statuses.values())
    assert {statuses[name].split()[1] for name in (
        "file", "missing", "directory-without-slash", "range", "not-modified",
        "script-status", "range-unsatisfiable")} == {"200", "404", "301", "206", "304",
                                                     "418", "416"}
    assert b"read=200000" in answers["script-post-large"][0]["body"]

