"""Differential test of request framing: Debian's lighttpd 1.4.69 and a pylighttpd
worker read the same request bodies (Content-Length, Transfer-Encoding, chunks,
trailers, Expect) into a CGI script that reports what it read, and must answer each
byte stream alike: the same statuses, in the same number of answers, the script
having read the same bytes.  A stream of two requests shows where each server thinks
the first one ended, which is what request smuggling plays on.

Where pylighttpd answers otherwise on purpose, the stream is in KNOWN_DIFFERENCES with
the reason, and the test checks that it still differs.
"""

from __future__ import annotations

import http.client
import io
import socket
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from test_cgi_differential import IGNORED_HEADERS, servers  # noqa: F401 (a fixture)
from test_differential import LIGHTTPD, beside_lighttpd, exchange

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

POST = "POST /sum.py HTTP/1.1\r\nHost: test.example\r\n"
FOLLOW_UP = "GET /hello.sh HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n"
CLOSE = "Connection: close\r\n"
CHUNKED = "Transfer-Encoding: chunked\r\n"
ABC_CHUNKED = "3\r\nabc\r\n0\r\n\r\n"

STREAMS = {
    # Content-Length
    "length": POST + "Content-Length: 3\r\n" + CLOSE + "\r\nabc",
    "length-zero": POST + "Content-Length: 0\r\n" + CLOSE + "\r\n",
    "length-missing": POST + CLOSE + "\r\n",
    "length-padded": POST + "Content-Length:  3 \r\n" + CLOSE + "\r\nabc",
    "length-twice-same": POST + "Content-Length: 3\r\nContent-Length: 3\r\n" + CLOSE
                         + "\r\nabc",
    "length-twice-other": POST + "Content-Length: 3\r\nContent-Length: 4\r\n" + CLOSE
                          + "\r\nabcd",
    "length-list": POST + "Content-Length: 3, 3\r\n" + CLOSE + "\r\nabc",
    "length-plus": POST + "Content-Length: +3\r\n" + CLOSE + "\r\nabc",
    "length-negative": POST + "Content-Length: -1\r\n" + CLOSE + "\r\n",
    "length-hex": POST + "Content-Length: 0x3\r\n" + CLOSE + "\r\nabc",
    "length-huge": POST + "Content-Length: 99999999999999999999999\r\n" + CLOSE + "\r\n",
    # a body nobody reads, whole in the first read: the connection closes after it
    "body-to-a-static-file": "POST /index.html HTTP/1.1\r\nHost: test.example\r\n"
                             "Content-Length: 3\r\n\r\nabc" + FOLLOW_UP,
    "body-to-a-missing-file": "POST /nope.txt HTTP/1.1\r\nHost: test.example\r\n"
                              + CHUNKED + "\r\n" + ABC_CHUNKED + FOLLOW_UP,
    # Transfer-Encoding
    "chunked": POST + CHUNKED + CLOSE + "\r\n" + ABC_CHUNKED,
    "chunked-capitalised": POST + "Transfer-Encoding: Chunked\r\n" + CLOSE + "\r\n"
                           + ABC_CHUNKED,
    "chunked-and-length": POST + "Content-Length: 3\r\n" + CHUNKED + "\r\n" + ABC_CHUNKED,
    "length-and-chunked": POST + CHUNKED + "Content-Length: 3\r\n\r\n" + ABC_CHUNKED,
    "gzip-then-chunked": POST + "Transfer-Encoding: gzip, chunked\r\n" + CLOSE + "\r\n"
                         + ABC_CHUNKED,
    "chunked-then-gzip": POST + "Transfer-Encoding: chunked, gzip\r\n" + CLOSE + "\r\n"
                         + ABC_CHUNKED,
    "identity": POST + "Transfer-Encoding: identity\r\nContent-Length: 3\r\n" + CLOSE
                + "\r\nabc",
    "chunked-twice": POST + CHUNKED + CHUNKED + CLOSE + "\r\n" + ABC_CHUNKED,
    "space-before-colon": POST + "Transfer-Encoding : chunked\r\n" + CLOSE + "\r\n"
                          + ABC_CHUNKED,
    "chunked-http10": "POST /sum.py HTTP/1.0\r\n" + CHUNKED + "\r\n" + ABC_CHUNKED,
    # chunks
    "chunk-extension": POST + CHUNKED + CLOSE + "\r\n3;name=value\r\nabc\r\n0\r\n\r\n",
    "chunk-trailer": POST + CHUNKED + CLOSE + "\r\n3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "chunk-size-upper-hex": POST + CHUNKED + CLOSE + "\r\nA\r\n0123456789\r\n0\r\n\r\n",
    "chunk-size-not-hex": POST + CHUNKED + CLOSE + "\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk-size-space": POST + CHUNKED + CLOSE + "\r\n 3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-huge": POST + CHUNKED + CLOSE + "\r\nFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n",
    "chunk-bare-newlines": POST + CHUNKED + CLOSE + "\r\n3\nabc\n0\n\n",
    "chunk-longer-than-said": POST + CHUNKED + CLOSE + "\r\n3\r\nabcX\r\n0\r\n\r\n",
    # Expect
    "expect-continue": POST + "Content-Length: 3\r\nExpect: 100-continue\r\n" + CLOSE
                       + "\r\nabc",
    "expect-continue-http10": "POST /sum.py HTTP/1.0\r\nContent-Length: 3\r\n"
                              "Expect: 100-continue\r\n\r\nabc",
    "expect-other": POST + "Content-Length: 3\r\nExpect: something\r\n" + CLOSE
                    + "\r\nabc",
    # two requests on one connection: where did the first end?
    "pipelined-after-length": POST + "Content-Length: 3\r\n\r\nabc" + FOLLOW_UP,
    "pipelined-after-chunks": POST + CHUNKED + "\r\n" + ABC_CHUNKED + FOLLOW_UP,
    "smuggled-after-chunked-and-length": POST + "Content-Length: 4\r\n" + CHUNKED
                                         + "\r\n0\r\n\r\n" + FOLLOW_UP,
    "smuggled-after-length-twice": POST + "Content-Length: 0\r\nContent-Length: 44\r\n\r\n"
                                   + FOLLOW_UP,
    "pipelined-body-on-get": "GET /sum.py HTTP/1.1\r\nHost: test.example\r\n"
                             "Content-Length: 3\r\n\r\nabc" + FOLLOW_UP,
}
# stream name -> why pylighttpd answers otherwise
KNOWN_DIFFERENCES = {
    "chunked-then-gzip": "RFC 9112 6.3: a request whose final transfer coding is not "
                         "chunked has no reliable length, the server MUST answer 400 "
                         "and close; lighttpd 1.4.69 answers 501",
    "identity": "RFC 9112 6.3, as chunked-then-gzip (identity is no coding since RFC "
                "7230); lighttpd 1.4.69 answers 501",
    "chunked-twice": "RFC 9112 6.1: chunked MUST NOT be applied more than once, so the "
                     "body's end is not known: 400; lighttpd 1.4.69 decodes it once",
    "expect-other": "RFC 9110 10.1.1: an expectation other than 100-continue MAY be "
                    "answered 417; lighttpd 1.4.69 ignores it",
}
# seconds of silence a client waits: a body announced and never sent waits for the
# servers' read timeouts, which no stream here relies on
ANSWER_WAIT = 5


class _Stream(io.BytesIO):
    """The bytes a server sent, read answer after answer: http.client closes what it
    reads an answer from, and the next answer is still in it."""

    def close(self) -> None:
        pass


class _Replay:
    def __init__(self, stream: _Stream) -> None:
        self.stream = stream

    def makefile(self, *_args: object, **_kwargs: object) -> _Stream:
        return self.stream


def answers_in(raw: bytes, method: str) -> list[dict]:
    """Every answer in a byte stream, in order: status, compared headers, body (a
    100 Continue among them counts as one)."""
    stream, found = _Stream(raw), []
    while stream.tell() < len(raw):
        if raw.startswith(b"HTTP/1.1 100 ", stream.tell()):
            stream.seek(raw.index(b"\r\n\r\n", stream.tell()) + 4)
            found.append({"status": 100})
            continue
        response = http.client.HTTPResponse(_Replay(stream), method=method)  # type: ignore[arg-type]
        try:
            response.begin()
            body = response.read()
        except http.client.HTTPException as error:
            found.append({"unreadable": repr(error), "rest": raw[stream.tell():][:200]})
            break
        answer = {"status": response.status, "body": body}
        answer.update({k.lower(): v for k, v in response.getheaders()
                       if k.lower() not in IGNORED_HEADERS})
        found.append(answer)
        method = "GET"
    return found


@pytest.fixture(scope="module")
def answers(servers) -> dict[str, tuple[list[dict], list[dict]]]:
    """Each stream to both servers at once; their answers, lighttpd's first."""
    found = {}
    with ThreadPoolExecutor(2) as pool:
        for name, text in STREAMS.items():
            raw = text.encode("latin-1")
            method = text.split(" ", 1)[0]
            theirs, ours = pool.map(lambda port: exchange(port, raw, ANSWER_WAIT), servers[:2])
            found[name] = (answers_in(theirs, method), answers_in(ours, method))
    return found


def test_same_framing_as_lighttpd(answers):
    differences = {name: pair for name, pair in answers.items()
                   if name not in KNOWN_DIFFERENCES and pair[0] != pair[1]}
    assert not differences, "\n".join(f"{name}:\n  lighttpd   {theirs}\n  pylighttpd {ours}"
                                      for name, (theirs, ours) in differences.items())


def test_known_differences_still_differ(answers):
    stale = [name for name in KNOWN_DIFFERENCES if answers[name][0] == answers[name][1]]
    assert not stale, f"listed in KNOWN_DIFFERENCES but now the same: {stale}"


def test_the_streams_exercise_both_outcomes(answers):
    """Not a comparison of two servers refusing everything: bodies are read, smuggled
    requests refused, pipelined ones answered."""
    statuses = {name: [answer.get("status") for answer in theirs]
                for name, (theirs, _) in answers.items()}
    assert statuses["length"] == [200] and b"read=3" in answers["length"][0][0]["body"]
    assert statuses["chunk-trailer"] == [200]
    assert statuses["pipelined-after-chunks"] == [200, 200]
    assert statuses["smuggled-after-chunked-and-length"] == [400]
    assert statuses["length-missing"] == [411]


def _first_answer_head(port: int, raw: bytes, seconds: float) -> bytes:
    """The head of the first answer to `raw` (the start of a request whose body the
    client has not sent yet), or b"" when none came within `seconds`."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as sock:
        sock.sendall(raw)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                piece = sock.recv(4096)
                if not piece:
                    break
                data += piece
        except socket.timeout:
            return b""
        return data.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("target, expect", [
    ("/index.html", ""), ("/missing.txt", ""), ("/index.html", "Expect: 100-continue\r\n"),
    ("/sum.py", ""), ("/sum.py", "Expect: 100-continue\r\n")])
def test_a_body_nobody_reads_does_not_hold_up_the_answer(servers, target, expect):
    """A POST that announces 100 MB and sends 1 KB of it (none when it expects
    100-continue): a static file or a 404 is answered at once, without 100 Continue,
    and the connection closes after it (the body is never read); a script waits for
    its whole body (server.stream-request-body 0), a client that expects 100-continue
    being asked for it."""
    raw = (f"POST {target} HTTP/1.1\r\nHost: test.example\r\nContent-Length: 100000000\r\n"
           f"{expect}\r\n").encode() + (b"" if expect else b"x" * 1024)
    theirs, ours = (_first_answer_head(port, raw, 2.0) for port in servers[:2])
    assert ours.split(b"\r\n", 1)[0] == theirs.split(b"\r\n", 1)[0], (theirs, ours)
    if target == "/sum.py":
        assert ours == (b"HTTP/1.1 100 Continue" if expect else b"")
    else:
        assert ours.startswith(b"HTTP/1.1 200 " if target == "/index.html"
                               else b"HTTP/1.1 404 ")
        assert b"\r\nConnection: close" in ours and b"\r\nConnection: close" in theirs
