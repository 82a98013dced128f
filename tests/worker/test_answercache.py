"""The answer cache: a repeated request is answered exactly as the pipeline answers it.

Each test sends a request several times on one keep-alive connection (so the later
ones are replayed from the cache) and checks the replays against the first answer, or
checks that what must not be replayed (conditional requests, ranges, other settings,
a changed file, a soft 404) goes through the pipeline again.
"""

from __future__ import annotations

import email.utils
import os
import socket
import time

import pytest

from server_util import detached_request, split_responses
from sites import site, start_worker  # noqa: F401 (fixture)
from test_accesslog import FULL_FORMAT, both_logs, needs_lighttpd, wait_lines
from worker.answercache import (CORE_READS, REST_AFTER, REST_HIT_SHARE, REST_SECONDS, Answer,
                                AnswerCache)
from worker.handler import Pipeline
from worker.module import Module

GET = "GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n"


def exchange(worker, *requests: str) -> list:
    """Send the requests on one connection, each after the answer to the one before
    (so that a repeat finds the answer kept), and read their answers."""
    answers: list = []
    with worker.socket() as sock:
        data = b""
        for request in requests:
            sock.sendall(request.encode("latin-1"))
            deadline = time.monotonic() + 5
            while True:
                assert time.monotonic() < deadline, f"no answer to {request!r}: {data!r}"
                chunk = sock.recv(65536)
                assert chunk, f"closed before answering {request!r}"
                data += chunk
                complete = _complete(data)
                if complete is not None and len(complete) > len(answers):
                    answers = complete
                    break
    return answers


def _complete(data: bytes) -> list | None:
    """The answers in `data` if the last one is whole, else None."""
    if b"\r\n\r\n" not in data:
        return None
    answers = split_responses(data)
    status, headers, body = answers[-1]
    return answers if len(body) == int(headers.get("content-length", "0")) else None


def get(path: str, host: str = "t", extra: str = "") -> str:
    return GET.format(path=path, host=host, extra=extra)


def without_date(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != "date"}


def test_replays_equal_the_first_answer(site):
    answers = exchange(site, *[get("/index.html")] * 4)
    first = answers[0]
    assert first[0] == 200 and first[2] == b"hello from pylighttpd\n"
    for status, headers, body in answers[1:]:
        assert (status, without_date(headers), body) == \
            (first[0], without_date(first[1]), first[2])


def test_replay_says_connection_close_when_the_client_asks(site):
    answers = exchange(site, get("/index.html"), get("/index.html"),
                       get("/index.html", extra="Connection: close\r\n"))
    assert "connection" not in answers[1][1]
    assert answers[2][1]["connection"] == "close"
    assert answers[2][2] == answers[0][2]


def test_a_replay_carries_the_date_of_its_own_second(site):
    """A kept answer's head is made once per second: each repeat, one seconds later
    too, says the Date of its second (the worker's clock ticks once a second, so the
    Date may lag by that tick)."""
    with site.socket() as sock:
        for pause in (0, 0, 2.5, 0):
            time.sleep(pause)
            sent = int(time.time())
            sock.sendall(get("/index.html").encode())
            data = b""
            while not data.endswith(b"hello from pylighttpd\n"):
                data += sock.recv(65536)
            answered = int(time.time())
            date = email.utils.parsedate_to_datetime(split_responses(data)[0][1]["date"])
            assert sent - 1 <= date.timestamp() <= answered


def test_http10_replay_has_its_own_status_line(site):
    request = "GET /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    with site.socket() as sock:
        for _ in range(3):
            sock.sendall(request.encode())
            data = b""
            while b"hello from pylighttpd\n" not in data:
                data += sock.recv(65536)
            assert data.startswith(b"HTTP/1.0 200 OK\r\n")
            assert b"Connection: keep-alive\r\n" in data


def test_conditional_and_range_answers_are_kept_by_their_header_values(site):
    etag = exchange(site, get("/index.html"))[0][1]["etag"]
    match = get("/index.html", extra=f"If-None-Match: {etag}\r\n")
    other = get("/index.html", extra='If-None-Match: "other"\r\n')
    head = get("/index.html", extra="Range: bytes=0-4\r\n")
    tail = get("/index.html", extra="Range: bytes=-3\r\n")
    answers = exchange(site, match, match, other, other, head, head, tail, tail, match)
    assert [a[0] for a in answers] == [304, 304, 200, 200, 206, 206, 206, 206, 304]
    assert [a[2] for a in answers[4:8]] == [b"hello", b"hello", b"pd\n", b"pd\n"]
    assert answers[1][1]["etag"] == etag and answers[1][2] == b""


def test_a_kept_304_ends_when_the_file_changes(tmp_path):
    with start_worker(tmp_path) as worker:
        etag = exchange(worker, get("/index.html"))[0][1]["etag"]
        match = get("/index.html", extra=f"If-None-Match: {etag}\r\n")
        assert [a[0] for a in exchange(worker, match, match)] == [304, 304]
        page = worker.docroot / "index.html"
        page.write_text("changed\n")
        os.utime(page, (time.time() + 5, time.time() + 5))
        deadline = time.monotonic() + 2.5
        while exchange(worker, match)[0][0] != 200:
            assert time.monotonic() < deadline, "still 304 for a changed file after 2.5 s"
            time.sleep(0.1)


def test_other_settings_are_not_served_a_kept_answer(tmp_path):
    extra = ('$HTTP["useragent"] =~ "bad" { url.access-deny = (".html") }\n'
             '$HTTP["useragent"] =~ "^tag$" { server.tag = "other-tag" }\n'
             'server.tag = "base-tag"\n')
    with start_worker(tmp_path, extra) as worker:
        answers = exchange(worker, get("/index.html"), get("/index.html"),
                           get("/index.html", extra="User-Agent: bad\r\n"),
                           get("/index.html", extra="User-Agent: tag\r\n"),
                           get("/index.html", extra="User-Agent: tag\r\n"),
                           get("/index.html"))
    assert [a[0] for a in answers] == [200, 200, 403, 200, 200, 200]
    assert [a[1]["server"] for a in answers] == ["base-tag"] * 3 + ["other-tag"] * 2 + \
        ["base-tag"]


def test_hosts_are_kept_apart(tmp_path):
    extra = ('$HTTP["host"] == "b.example" { server.document-root = "%s" }\n')
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.html").write_text("the other site\n")
    with start_worker(tmp_path, extra % other) as worker:
        answers = exchange(worker, get("/index.html", "a.example"),
                           get("/index.html", "a.example"), get("/index.html", "b.example"),
                           get("/index.html", "b.example"), get("/index.html", "a.example"))
    assert [a[2] for a in answers] == [b"hello from pylighttpd\n"] * 2 + \
        [b"the other site\n"] * 2 + [b"hello from pylighttpd\n"]


def test_a_changed_file_is_served_within_two_seconds(tmp_path):
    with start_worker(tmp_path) as worker:
        path = worker.docroot / "index.html"
        assert exchange(worker, get("/index.html"), get("/index.html"))[1][2] == \
            b"hello from pylighttpd\n"
        path.write_text("changed\n")
        os.utime(path, (time.time() + 5, time.time() + 5))
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            if exchange(worker, get("/index.html"))[0][2] == b"changed\n":
                return
            time.sleep(0.1)
    pytest.fail("the old contents were still served after 2.5 s")


def test_soft_404_is_not_kept(tmp_path):
    extra = 'server.error-handler-404 = "/index.html"\n'
    with start_worker(tmp_path, extra) as worker:
        answers = exchange(worker, get("/later.html"), get("/later.html"))
        assert [a[2] for a in answers] == [b"hello from pylighttpd\n"] * 2
        (worker.docroot / "later.html").write_text("now it exists\n")
        assert exchange(worker, get("/later.html"))[0][2] == b"now it exists\n"


@needs_lighttpd
def test_replayed_requests_log_as_lighttpd_logs_them(tmp_path):
    request = b"GET /index.html?q=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: UA\r\n\r\n"
    last = b"GET /index.html?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    got, expected = both_logs(tmp_path, FULL_FORMAT.replace("|%P", ""),
                              [request * 3 + last, request + last])
    assert len(got) == len(expected) == 6
    for ours, theirs in zip(got, expected):
        assert ours == theirs


class _Unsafe(Module):
    def handle_uri_clean(self, request):
        return None


class _Safe(Module):
    replay_safe = True
    reads_headers = frozenset({"authorization"})

    def handle_uri_clean(self, request):
        return None


class _LogsOnly(Module):
    def handle_request_done(self, request):
        return None


def test_a_module_that_is_not_replay_safe_turns_the_cache_off():
    assert Pipeline([_Safe(None), _LogsOnly(None)]).answers.reads == \
        CORE_READS | {"authorization"}
    assert Pipeline([_Safe(None), _Unsafe(None)]).answers.reads is None
    assert Pipeline([_Safe(None)], replay=False).answers.reads is None


def test_remote_address_conditions_key_the_answers(tmp_path):
    extra = '$HTTP["remoteip"] == "127.0.0.2" { url.access-deny = (".html") }\n'
    request = get("/index.html").encode()
    with start_worker(tmp_path, extra) as worker:
        assert [a[0] for a in exchange(worker, get("/index.html"), get("/index.html"))] \
            == [200, 200]
        with socket.socket() as sock:
            sock.settimeout(5)
            sock.bind(("127.0.0.2", 0))
            sock.connect(("127.0.0.1", worker.port))
            data = b""
            for count in (1, 2):                 # the same bytes, one after the other
                sock.sendall(request)
                while data.count(b"HTTP/1.1 ") < count or not data.endswith(b"</html>\n"):
                    data += sock.recv(65536)
        assert [a[0] for a in split_responses(data)] == [403, 403]


def test_max_keep_alive_requests_holds_for_repeats(tmp_path):
    with start_worker(tmp_path, "server.max-keep-alive-requests = 2\n") as worker:
        answers = exchange(worker, *[get("/index.html")] * 3)
    assert ["connection" in a[1] for a in answers] == [False, False, True]
    assert answers[2][1]["connection"] == "close"


def test_pipelined_repeats_are_answered_in_order(site):
    page = get("/index.html")
    with site.socket() as sock:
        sock.sendall((page + get("/sub/") + page + page).encode())
        data = b""
        while data.count(b"HTTP/1.1 200") < 4:
            data += sock.recv(65536)
    bodies = [a[2] for a in split_responses(data)]
    assert bodies == [b"hello from pylighttpd\n", b"sub index\n"] + \
        [b"hello from pylighttpd\n"] * 2


def test_keys_hold_what_conditions_read():
    cache = AnswerCache(frozenset(), ("header:user-agent", "remoteip", "scheme", "url"))
    assert cache.fields == ("header:user-agent", "remoteip")   # the rest is in every key
    assert cache.connection_fields == ("remoteip", "scheme")    # not in a request's bytes


def _lookups(cache: AnswerCache, targets) -> list:
    """Key and look up a GET of each target: the keys (None: not keyed)."""
    request = detached_request()
    keys = [cache.key_for(request, target) for target in targets]
    for key in keys:
        if key is not None:
            cache.find(key)
    return keys


def _hits(cache: AnswerCache, target: bytes, count: int) -> None:
    """`count` lookups of `target` that find an answer kept for it."""
    request = detached_request()
    key = cache.key_for(request, target)
    cache.entries[key] = Answer(request, (b"", b""), b"", cache.generation)
    for _ in range(count):
        assert cache.find(key) is not None


def _rest(cache: AnswerCache) -> int:
    """Seconds the table rests from now: ticks during which it keys no request."""
    seconds = 0
    while True:
        if None not in _lookups(cache, [b"/kept"]):
            return seconds
        assert cache.seen == set()           # nothing keyed, nothing noted
        cache.tick(0.0)
        seconds += 1


def _seldom_hit_second(cache: AnswerCache) -> None:
    _lookups(cache, [b"/x?%d" % n for n in range(REST_AFTER)])
    cache.tick(0.0)


def test_a_table_whose_lookups_seldom_hit_rests_longer_each_time():
    """Rests of 1, 2, 4 ... seconds up to REST_SECONDS while each measured second
    hits seldom; a second that hits enough brings the next rest back to one second."""
    cache = AnswerCache(frozenset())
    _lookups(cache, [b"/x?%d" % n for n in range(REST_AFTER - 1)])
    cache.tick(0.0)
    assert cache.rest_left == 0          # too few lookups to tell
    rests = []
    for _measured in range(6):
        _seldom_hit_second(cache)
        rests.append(_rest(cache))
        cache.hits = cache.misses = 0    # what _rest looked up is no second's traffic
    assert rests == [1, 2, 4, REST_SECONDS, REST_SECONDS, REST_SECONDS]
    _hits(cache, b"/hot", REST_AFTER)    # a measured second that hits
    cache.tick(0.0)
    _seldom_hit_second(cache)
    assert _rest(cache) == 1


def test_a_table_with_enough_hits_goes_on():
    cache = AnswerCache(frozenset())
    lookups = REST_AFTER * REST_HIT_SHARE
    _hits(cache, b"/hot", REST_AFTER)
    _lookups(cache, [b"/x?%d" % n for n in range(lookups - REST_AFTER)])
    cache.tick(0.0)
    assert cache.rest_left == 0          # one hit in REST_HIT_SHARE lookups
    _hits(cache, b"/hot", REST_AFTER - 1)
    _lookups(cache, [b"/x?%d" % n for n in range(lookups - REST_AFTER + 1)])
    cache.tick(0.0)
    assert cache.rest_left == 1


def test_a_file_created_after_a_kept_404_is_served_at_once(tmp_path):
    with start_worker(tmp_path) as worker:
        answers = exchange(worker, *[get("/later.html")] * 3)
        assert [a[0] for a in answers] == [404] * 3
        assert answers[1][2] == answers[0][2] and b"404 Not Found" in answers[0][2]
        (worker.docroot / "later.html").write_text("here now\n")
        assert exchange(worker, get("/later.html"))[0][2] == b"here now\n"
        (worker.docroot / "later.html").unlink()     # the stat cache may hold it for 1 s
        deadline = time.monotonic() + 2.5
        while exchange(worker, get("/later.html"))[0][0] != 404:
            assert time.monotonic() < deadline, "a deleted file was still served after 2.5 s"
            time.sleep(0.1)


def test_a_404_below_a_missing_directory_is_never_replayed_stale(tmp_path):
    with start_worker(tmp_path) as worker:
        assert [a[0] for a in exchange(worker, *[get("/new/page.html")] * 2)] == [404] * 2
        (worker.docroot / "new").mkdir()
        (worker.docroot / "new" / "page.html").write_text("new page\n")
        assert exchange(worker, get("/new/page.html"))[0][2] == b"new page\n"


def test_a_file_becoming_a_path_prefix_ends_a_kept_404(tmp_path):
    with start_worker(tmp_path) as worker:
        assert [a[0] for a in exchange(worker, *[get("/doc/extra")] * 2)] == [404] * 2
        (worker.docroot / "doc").write_text("doc with path info\n")
        assert exchange(worker, get("/doc/extra"))[0][2] == b"doc with path info\n"


def test_a_404_whose_error_handler_is_missing_is_not_kept(tmp_path):
    extra = 'server.error-handler-404 = "/handler.html"\n'
    with start_worker(tmp_path, extra) as worker:
        assert [a[0] for a in exchange(worker, *[get("/gone.html")] * 2)] == [404] * 2
        (worker.docroot / "gone.html").write_text("back again\n")
        assert exchange(worker, get("/gone.html"))[0][2] == b"back again\n"


def test_byte_identical_repeats_are_logged_like_the_first(tmp_path):
    logfile = tmp_path / "access.log"
    extra = (f'accesslog.filename = "{logfile}"\n'
             'accesslog.format = "%h|%r|%s|%b|%O|%I|%{User-Agent}i|%U|%f|%k|%X"\n')
    with start_worker(tmp_path, extra,
                      modules=("mod_indexfile", "mod_staticfile", "mod_accesslog")) as worker:
        request = get("/index.html?x=1", extra="User-Agent: UA/1\r\n")
        answers = exchange(worker, request, request, request)
        lines = wait_lines(logfile, 3)
    assert [a[0] for a in answers] == [200] * 3
    size, total = len(answers[0][2]), len(request)
    fields = [line.split("|") for line in lines]
    for number, line in enumerate(fields):
        assert line[:9] == ["127.0.0.1", "GET /index.html?x=1 HTTP/1.1", "200", str(size),
                            line[4], str(total), "UA/1", "/index.html",
                            str(worker.docroot / "index.html")]
        assert line[9:] == [str(number), "+"]
    assert fields[1][4] == fields[2][4]              # same answer size on the wire
