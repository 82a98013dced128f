"""worker/gateway.py without a backend: the CGI environment from the request's own
fields, the reading of CGI-style heads, chunked bodies from backends, answers (their
Content-Length, a failure once they started), the local-redirect rule and X-Sendfile2
(which CGI leaves to FastCGI, so no CGI test reaches it)."""

from __future__ import annotations

import os
import random
import re
from types import SimpleNamespace

import pytest

from server_util import detached_request
from worker.body import RequestBody
from worker.gateway import (MAX_HEAD, XSENDFILE_CGI, XSENDFILE_FASTCGI, AnswerBody,
                            Dechunker, HeadReader, ResponseHead, abandon_answer,
                            cgi_environment, head_end, local_redirect_target, parse_head,
                            request_body_length, sendfile_header, status_code, x_sendfile)
from worker.module import ERROR
from worker.request import Request


def read(*pieces: bytes, cgi: bool = True) -> ResponseHead | None:
    reader = HeadReader(cgi)
    head = None
    for piece in pieces:
        head = reader.feed(piece)
    return head


def test_a_head_in_pieces_with_its_body_after_it():
    head = read(b"Content-Type: text/pl", b"ain\r\nX-A: 1\r", b"\n\r\nbody")
    assert head is not None and head.status == 0
    assert head.headers == [("Content-Type", "text/plain"), ("X-A", "1")]
    assert head.rest == b"body"


def test_an_incomplete_head_waits():
    assert read(b"Content-Type: text/plain\r\n") is None


@pytest.mark.parametrize("data, status, headers", [
    (b"Status: 404 Not Found\n\n", 404, []),
    (b"Location: /x\n\n", 302, [("Location", "/x")]),
    (b"Status: 301\nLocation: /x\n\n", 301, [("Location", "/x")]),
    (b"HTTP/1.1 203 Whatever\r\nX-A: 1\r\n\r\n", 203, [("X-A", "1")]),
    (b"X-Empty:\nX-Blank :x\nX-A:\t v\n\n", 0, [("X-A", "v")]),
    (b"X-A: a\rInjected: b\r\nX-B: b\0c\n\n", 0, []),      # a CR or NUL inside
    (b"Date: x\nServer: y\nConnection: close\nContent-Length: 3\n\n", 0, []),
])
def test_fields_read_as_lighttpd_reads_them(data, status, headers):
    head = read(data)
    assert (head.status, head.headers, head.error) == (status, headers, 0)


def test_what_the_head_says_about_framing():
    head = read(b"Content-Length: +12 \nConnection: keep-alive, Close\n\n")
    assert (head.content_length, head.close, head.fields) == (12, True, 2)
    head = read(b"Content-Length: 5\nTransfer-Encoding: chunked\n\n")
    assert (head.content_length, head.chunked) == (-1, True)


@pytest.mark.parametrize("data", [b"Status: abc\n\n", b"Status: 20\n\n",
                                  b"HTTP/1.1 2000 x\r\n\r\n", b"HTTP/1.1 ok  x\n\n"])
def test_a_bad_status_is_502(data):
    assert read(data).error == 502


def test_interim_heads_are_dropped():
    head = read(b"Status: 103\nLink: </a>\n\nStatus: 200\nX-B: 2\n\nbody")
    assert (head.status, head.headers, head.rest) == (200, [("X-B", "2")], b"body")


def test_no_head_at_all():
    assert read(b"\r\nbody").rest == b"body"
    head = read(b"just text\nmore\n")
    assert (head.status, head.rest) == (200, b"just text\nmore\n")
    assert read(b"just text\n", cgi=False).error == 502
    reader = HeadReader()
    assert reader.feed(b"no newline yet") is None
    assert reader.at_eof().rest == b"no newline yet"


def test_a_head_too_large_is_502():
    assert read(b"X-A: " + b"a" * 70_000).error == 502
    assert read(b"X-A: b\n" * 10_000).error == 502


@pytest.mark.parametrize("extra, error", [(0, 0), (1, 502)])
def test_a_head_of_max_head_bytes_is_read_and_one_more_is_not(extra, error):
    value = b"a" * (MAX_HEAD - len(b"X-A: \r\n\r\n") + extra)
    for _ in range(2):                   # parsed, then (within MAX_KNOWN_HEAD) as known
        head = read(b"X-A: " + value + b"\r\n\r\nbody" + b"x" * 100_000)
        assert head is not None and head.error == error
        assert error or (head.headers == [("X-A", value.decode())] and
                         head.rest == b"body" + b"x" * 100_000)
    short = read(b"X-B: 1\r\n\r\nrest")
    again = read(b"X-B: 1\r\n\r\nmore")
    assert short.headers == again.headers == [("X-B", "1")]
    assert (short.rest, again.rest) == (b"rest", b"more")


def test_a_head_ends_where_its_first_blank_line_ends():
    """head_end walks from line end to line end; it answers what a search for the
    first `\\n\\r?\\n` within MAX_HEAD answers, over short mixes of the octets that
    matter and at the MAX_HEAD edge."""
    import random
    import re

    from worker.gateway import MAX_HEAD, head_end
    blank_line = re.compile(rb"\n\r?\n")
    chooser = random.Random(7)
    samples = [bytes(chooser.choice(b"\r\na:") for _ in range(chooser.randint(0, 10)))
               for _ in range(5000)]
    edge = b"x" * (MAX_HEAD - 3) + b"\n\r\n"
    samples += [edge, b"x" + edge, edge[1:], b"a" * 70_000 + b"\n\n", b"a\n" * 40_000]
    for data in samples:
        found = blank_line.search(data, 0, MAX_HEAD)
        assert head_end(data) == (found.end() if found else -1), data[:40]


def test_status_code():
    assert [status_code(t) for t in ("200", "404 Not Found", "2000", "20", "099", "٣٠٠")] \
        == [200, 404, 0, 0, 0, 0]


def test_dechunker_across_pieces():
    dechunker = Dechunker()
    wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    out = b"".join(dechunker.feed(wire[i:i + 3]) for i in range(0, len(wire), 3))
    assert out == b"hello world" and dechunker.done and not dechunker.failed


@pytest.mark.parametrize("wire", [b"x\r\n", b"-5\r\nhello\r\n", b"3\r\nabcXY"])
def test_dechunker_refuses_bad_chunks(wire):
    dechunker = Dechunker()
    dechunker.feed(wire)
    assert dechunker.failed and not dechunker.done


def _request(path: str = "/script.cgi", local_address: str = "192.0.2.1",
             **fields: object) -> Request:
    """A request as the gateway functions read one, `fields` replacing any of it."""
    values = {"server.force-lowercase-filenames": False, "server.follow-symlink": True,
              "server.tag": "tag", "server.name": ""}
    transport = SimpleNamespace(peer_port=lambda: 40123, local_address=lambda: local_address)
    request = detached_request(values, transport=transport, remote_ip="192.0.2.7",
                               socket_spec="0.0.0.0:8080")
    request.uri_path = request.target = request.target_orig = path
    request.physical_basedir, request.physical_path = "/srv", "/srv" + path
    request.host = "example.com"
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def _body(data: bytes, complete: bool) -> RequestBody:
    body = RequestBody()
    body.append(data)
    body.complete = complete
    return body


def test_the_environment_comes_from_the_request_fields():
    """REQUEST_URI is the target the client sent (an error handler's or a local
    redirect's URL is REDIRECT_URI); the local address and the client's port are the
    Request's; variables other modules set (request.env) are added, over any other."""
    env = cgi_environment(_request("/handler.cgi", target_orig="/missing?q=1",
                                   error_origin=(404, False, False),
                                   env={"REMOTE_USER": "ann", "SERVER_NAME": "set"}))
    assert {name: env[name] for name in (
        "REQUEST_URI", "REDIRECT_URI", "REDIRECT_STATUS", "SERVER_ADDR", "SERVER_PORT",
        "REMOTE_ADDR", "REMOTE_PORT", "REMOTE_USER", "SERVER_NAME")} == {
        "REQUEST_URI": "/missing?q=1", "REDIRECT_URI": "/handler.cgi",
        "REDIRECT_STATUS": "404", "SERVER_ADDR": "192.0.2.1", "SERVER_PORT": "8080",
        "REMOTE_ADDR": "192.0.2.7", "REMOTE_PORT": "40123", "REMOTE_USER": "ann",
        "SERVER_NAME": "set"}


@pytest.mark.parametrize("fields, length", [
    ({}, 0),                                                      # no body
    ({"content_length": 10, "body": _body(b"abc", False)}, 10),   # streamed, announced
    ({"body": _body(b"abcdef", True)}, 6),                        # chunked, complete
    ({"body": _body(b"abc", False)}, -1),                         # chunked, arriving
])
def test_the_body_length_is_the_announced_one(fields, length):
    request = _request(**fields)
    assert request_body_length(request) == length
    assert cgi_environment(request)["CONTENT_LENGTH"] == str(max(length, 0))


@pytest.mark.parametrize("head, length", [
    (b"Content-Length: +12 \r\nX-A: 1\r\n\r\n", "12"),      # passed on, normalised
    (b"Content-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\n", None),
    (b"Content-Length: twelve\r\n\r\n", None),
])
def test_an_answer_passes_its_backends_length_on(head, length):
    request = _request()
    AnswerBody(request, read(head))
    assert request.response.get_header("Content-Length") == length


def test_a_failure_before_the_answer_started_is_its_status_after_it_is_error():
    request = _request()
    AnswerBody(request, read(b"X-A: 1\r\n\r\nsome"))
    assert abandon_answer(request, 504) == 504
    assert request.response.headers == [] and request.response.body == []
    request.response.started = True
    assert abandon_answer(request, 502) == ERROR


@pytest.mark.parametrize("data, target", [
    (b"Location: /other?x=1\n\n", "/other?x=1"),
    (b"Location: /script.cgi2\n\n", "/script.cgi2"),
    (b"Location: /script.cgi?x\n\n", None),          # back to the script itself
    (b"Location: /script.cgi/more\n\n", None),
    (b"Location: http://h/x\n\n", None),
    (b"Status: 302\nLocation: /other\n\n", None),     # a status of its own
    (b"Location: /other\nX-A: 1\n\n", None),          # more than a Location
    (b"Location: /other\n\nbody", None),              # a body
])
def test_local_redirect_rule(data, target):
    assert local_redirect_target(_request(), read(data)) == target


def test_no_local_redirect_while_the_body_still_arrives():
    head = read(b"Location: /other\n\n")
    assert local_redirect_target(_request(body=_body(b"ab", True)), head) == "/other"
    assert local_redirect_target(_request(body=_body(b"ab", False)), head) is None


def test_x_sendfile_names_per_backend():
    head = parse_head(b"X-Sendfile2: a 0-1\nX-LIGHTTPD-send-file: b\n\n")
    assert sendfile_header(head, XSENDFILE_CGI) is None
    assert sendfile_header(head, XSENDFILE_FASTCGI) == ("x-sendfile2", "a 0-1")


def test_x_sendfile2_sends_the_ranges_it_names(tmp_path):
    first, second = tmp_path / "a.bin", tmp_path / "b%20c.bin"
    first.write_bytes(b"0123456789")
    second.write_bytes(b"abcdefghij")
    head = parse_head(f"X-Sendfile2: {first} 2-4, {tmp_path}/b%2520c.bin 7-\n"
                      "Content-Length: 99\nX-A: 1\n\n".encode())
    request = _request()
    status = x_sendfile(request, head, sendfile_header(head, XSENDFILE_FASTCGI),
                        (f"{tmp_path}/",))
    body = request.response.body
    assert status == 200 and request.response.headers == [("X-A", "1")]
    assert [os.pread(fd, length, offset) for fd, offset, length in body] == [b"234", b"hij"]
    request.response.reset_body()


@pytest.mark.parametrize("value, status", [
    ("{d}/a.bin", 502),                 # no range
    ("{d}/a.bin 5-2x", 502),
    ("{d}/a.bin 0-100", 502),           # past the end of the file
    ("{d}/missing 0-1", 404),
    ("/etc/passwd 0-1", 403),           # outside the docroot
    ("{d}/%00 0-1", 404),               # "_" as lighttpd decodes it: not there
    ("{d}/%C0%AF 0-1", 502),            # invalid UTF-8 after decoding
])
def test_x_sendfile2_refusals(tmp_path, value, status):
    (tmp_path / "a.bin").write_bytes(b"0123456789")
    head = parse_head(f"X-Sendfile2: {value.format(d=tmp_path)}\n\n".encode())
    request = _request()
    assert x_sendfile(request, head, sendfile_header(head, XSENDFILE_FASTCGI),
                      (f"{tmp_path}/",)) == status
    request.response.reset_body()


@pytest.mark.parametrize("fields", [
    {},
    {"headers": {"content-type": "text/plain", "proxy": "evil", "x-a": "1", "x_a": "2",
                 "empty": ""}},
    {"env": {"REMOTE_USER": "ann", "SERVER_NAME": "set", "HTTP_X_A": "over"},
     "headers": {"x-a": "1"}},
    {"scheme": "https", "socket_spec": "/run/web.sock", "target_orig": "/a?b"},
    {"remote_port": 40124, "local_address": "192.0.2.2"},
    {"socket_spec": "192.0.2.9:81", "host": "[::1]:8080"},
])
def test_the_encoded_environment_is_the_dictionarys(fields):
    """PairEncoder.environment builds the block in parts, the connection's kept: the
    same bytes as the dictionary's, whatever the request (variables a module set
    replace others in place; two headers of one variable give one, the later value)."""
    from worker.fastcgi import PAIRS
    from worker.modules.mod_scgi import _SCGI_PAIRS, _UWSGI_PAIRS
    request = _request(**fields)
    for encoder in (PAIRS, _SCGI_PAIRS, _UWSGI_PAIRS):
        for _ in range(2):                   # made, then remembered
            assert encoder.environment(request, None, False) == \
                encoder.block(cgi_environment(request))
    env = cgi_environment(request)
    assert env["REMOTE_PORT"] == str(request.remote_port)
    assert env["SERVER_ADDR"] == {"/run/web.sock": "", "192.0.2.9:81": "192.0.2.9"}.get(
        request.socket_spec, request.local_address)


def test_a_remembered_head_is_the_readers_own():
    """Heads are parsed once and remembered: what one reader changes in its head (a
    header removed, a tunnel's framing) is not in the next reader's."""
    data = b"Status: 200\r\nX-Sendfile: /a\r\nContent-Length: 5\r\n\r\n"
    first = read(data + b"body1")
    first.remove("x-sendfile")
    first.content_length = -1
    second = read(data + b"body2")
    assert second.headers == [("X-Sendfile", "/a")] and second.content_length == 5
    assert (first.rest, second.rest) == (b"body1", b"body2")
