"""URL rules that cannot take a worker down: a pattern that backtracks without end is
stopped (500, logged) and the worker goes on serving; a rewrite loop ends in 500;
substitutions that decode control characters never reach a header or a path.
"""

from __future__ import annotations

import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from server_util import WorkerProcess, config_text, read_until_closed
from shared.config.pattern_shape import (
    PATH_BARE_QUERY_TAIL, PATH_QUERY_TAIL, REST_TAIL, anchored, literal_prefix, may_backtrack,
    tail_shape)
from worker.urlsubst import _tail_groups, compile_pattern

RULES = """
url.rewrite-repeat = ( "^/slow/(a+)+$" => "/never", "^/loop/(.*)" => "/loop/$1" )
url.redirect = ( "^/redirect/(x|xx)+$" => "/never", "^/b64/(.*)" => "/to/${decb64u:1}" )
"""


def ask(port: int, target: str) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.0\r\n\r\n".encode())
        raw = read_until_closed(sock)
    head = raw.partition(b"\r\n\r\n")[0]
    return int(head.split(b" ", 2)[1]), head


def test_rules_that_could_hang_or_split_fail_alone(tmp_path):
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "index.html").write_text("index\n")
    errorlog = tmp_path / "error.log"
    conf = tmp_path / "limits.conf"
    conf.write_text(config_text(docroot, RULES + f'server.errorlog = "{errorlog}"\n',
                                ("mod_rewrite", "mod_redirect", "mod_staticfile")))
    with WorkerProcess(conf) as worker:
        assert ask(worker.port, "/slow/" + "a" * 64 + "b")[0] == 500
        assert ask(worker.port, "/redirect/" + "x" * 64 + "y")[0] == 500
        assert ask(worker.port, "/loop/x")[0] == 500
        status, head = ask(worker.port, "/b64/DQpTZXQtQ29va2llOiB4PTE")   # "\r\nSet-Cookie: x=1"
        assert status == 301 and b"Location: /to/%0D%0ASet-Cookie: x=1\r\n" in head
        assert b"\r\nSet-Cookie" not in head
        assert ask(worker.port, "/index.html")[0] == 200
    log = errorlog.read_text()
    assert "stopped after" in log and "ENDLESS LOOP IN rewrite-rule" in log


def test_only_patterns_that_can_backtrack_long_are_timed():
    timed = [r"^/(a+)+$", r"^/(([^/]+)/)*$", r"^/(?:a|ab)*c", r"(?>(a+))+"]
    plain = [r"^/(.*)$", r"^/([^?]*)(?:\?(.*))?$", r"^/(a|b)*x", r"(?:a{1,3}){1,3}",
             r"^/blog/([0-9]+)$"]
    assert [may_backtrack(compile_pattern(p)) for p in timed] == [True] * len(timed)
    assert [may_backtrack(compile_pattern(p)) for p in plain] == [False] * len(plain)


def test_patterns_anchored_at_the_start_are_matched_there_alone():
    anchored_ones = [r"^/(.*)$", r"^/rw/([^?]*)(\?.*)?$", r"^(?:/a|/b)", r"(?i)^/A"]
    others = [r"/(.*)$", r"^/a|/b", r"(?:^/a)|x", r"(?m)^/a", r"a^", r"\A/a", r"(^/a)"]
    assert [anchored(compile_pattern(p)) for p in anchored_ones] == [True] * 4
    assert [anchored(compile_pattern(p)) for p in others] == [False] * len(others)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([r"^/(.*)$", r"^/rw/([^?]*)(\?.*)?$", r"^(?:/a|/b)(.*)",
                        r"^/x?y*$", r"^/(a+)?b"]),
       st.text(alphabet="/abrwxy?=1", max_size=12))
def test_match_finds_what_search_finds_for_an_anchored_rule(pattern, target):
    compiled = compile_pattern(pattern)
    assert anchored(compiled)
    found, searched = compiled.match(target), compiled.search(target)
    assert (found and (found.span(), found.groups())) == \
        (searched and (searched.span(), searched.groups()))



def test_the_commonest_rules_are_known_by_their_tail():
    known = {r"^/rw/(.*)$": REST_TAIL, r"^/rw/(.*)": REST_TAIL, r"^(.*)$": REST_TAIL,
             r"^/a\.b(.*)$": REST_TAIL, r"(?s)^/a(.*)$": REST_TAIL,
             r"^/rw/([^?]*)(\?.*)?$": PATH_QUERY_TAIL, r"^/([^?]*)(\?.*)?": PATH_QUERY_TAIL,
             r"^/wiki/([^?]*)(?:\?(.*))?$": PATH_BARE_QUERY_TAIL}
    others = [r"^/a(?:.*)$", r"^/a(.*)x$", r"^/a(.*?)$", r"(?i)^/a(.*)$", r"^/a(.+)$",
              r"^/a(.*)$|^/b", r"^/a(.*)(.*)$", r"^/a((.*))$", r"^/a(.)*$", r"/a(.*)$",
              r"(?m)^/a(.*)$", r"^/a(.*)($)", r"^/a(.*)\Z", r"^/x/([^?]*)(\?.*)$",
              r"^/x/([^?]*)(\?.+)?$", r"^/x/([^?]+)(\?.*)?$", r"^/x/([^?]*)(\?.*)?x$"]
    assert {p: tail_shape(compile_pattern(p)) for p in known} == known
    assert [tail_shape(compile_pattern(p)) for p in others] == [0] * len(others)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([r"^/rw/(.*)$", r"^/rw/(.*)", r"^(.*)$", r"^/a\.b(.*)$",
                        r"(?s)^/a(.*)$", r"^/rw/([^?]*)(\?.*)?$", r"^/([^?]*)(\?.*)?",
                        r"^/a([^?]*)(?:\?(.*))?$"]),
       st.text(alphabet="/abrw.?=1", max_size=12))
def test_a_rule_of_known_tail_matches_as_the_engine_does_without_newline(pattern, target):
    compiled = compile_pattern(pattern)
    prefix = literal_prefix(compiled)
    engine = compiled.match(target)
    taken = _tail_groups(tail_shape(compiled), target, len(prefix)) \
        if target.startswith(prefix) else None
    assert taken == (engine and (engine.group(0), *engine.groups()))
