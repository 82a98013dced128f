"""debug.log-condition-handling and debug.log-state-handling beside lighttpd 1.4.69.

Conditions: each conditional block checked for a request, in file order, with the
value compared and the result, in lighttpd's lines.  lighttpd checks a block only when
a module asks for a key set in it, pylighttpd checks every block: what lighttpd writes
comes in pylighttpd's trace in the same order.

States: lighttpd writes every state its machine passes through; pylighttpd writes the
connection's state around each event of the loop (a whole keep-alive request may go
by in one), the shutdown and the close, with lighttpd's lines and state names.
"""

from __future__ import annotations

import re

from test_accesslog import needs_lighttpd
from test_errorlog import normalised, our_errorlog, their_errorlog

CONDITIONS = """debug.log-condition-handling = "enable"
$HTTP["host"] == "a" { server.tag = "x" }
else $HTTP["url"] =~ "^/li(st)" {
  $HTTP["host"] =~ "b" { dir-listing.activate = "enable" }
}
"""
REQUESTS = [b"GET /list/ HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n",
            b"GET /list/ HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"]
COMPARED = re.compile(r"\(configfile-glue\.c\.\d+\) (.* compare to .*|\d+ \(uncached\) .*)")


def _compared(text: str) -> list[str]:
    return [match.group(1) for line in normalised(text)
            if (match := COMPARED.fullmatch(line))]


def _within(lines: list[str], others: list[str]) -> bool:
    """Whether `lines` come in `others` in the same order (others may have more)."""
    remaining = iter(others)
    return all(line in remaining for line in lines)


@needs_lighttpd
def test_conditions_are_traced_as_lighttpd_traces_them(tmp_path):
    ours = _compared(our_errorlog(tmp_path / "ours", CONDITIONS, REQUESTS))
    theirs_lines = _compared(their_errorlog(tmp_path, CONDITIONS, REQUESTS))
    assert len(theirs_lines) >= 4 and _within(theirs_lines, ours)
    url_block = 'global / $HTTP["url"] =~ "^/li(st)"'
    assert ours[:6] == [
        '$HTTP["host"] == "a" compare to c',
        '1 (uncached) result: false (cond: global / $HTTP["host"] == "a")',
        '$HTTP["url"] =~ "^/li(st)" compare to /list/',
        f'2 (uncached) result: true (cond: {url_block})',
        '$HTTP["host"] =~ "b" compare to c',
        f'3 (uncached) result: false (cond: {url_block} / $HTTP["host"] =~ "b")']


def test_a_block_under_a_false_one_is_skipped_and_nothing_is_traced_without_the_flag(tmp_path):
    request = [b"GET /index.html HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"]
    lines = normalised(our_errorlog(tmp_path / "on", CONDITIONS, request))
    assert [line.split(") ", 1)[1] for line in lines if "result:" in line] == [
        '1 (uncached) result: true (cond: global / $HTTP["host"] == "a")',
        '1 (cached) result: true (cond: global / $HTTP["host"] == "a")',
        '2 (uncached) result: skipped (cond: global / $HTTP["url"] =~ "^/li(st)")',
        '2 (cached) result: skipped (cond: global / $HTTP["url"] =~ "^/li(st)")',
        '3 (uncached) result: skipped '
        '(cond: global / $HTTP["url"] =~ "^/li(st)" / $HTTP["host"] =~ "b")']
    quiet = CONDITIONS.replace('"enable"\n$HTTP', '"disable"\n$HTTP', 1)
    assert normalised(our_errorlog(tmp_path / "off", quiet, request)) == []


STATES = 'debug.log-state-handling = "enable"\n'
PAIR = ["(connections.c.170) shutdown for fd #", "(connections.c.106) connection closed for fd #"]
STATE_LINE = re.compile(r"\(connections\.c\.956\) fd:(?:#|-1) id:0 state:([a-z-]+)( at loop exit)?")


@needs_lighttpd
def test_states_are_written_in_lighttpds_lines(tmp_path):
    # a moment for the client's close to reach each server before it stops
    ours = normalised(our_errorlog(tmp_path / "ours", STATES, REQUESTS[:1], settle=0.5))
    theirs = normalised(their_errorlog(tmp_path, STATES, REQUESTS[:1], settle=0.5))
    for written in (ours, theirs):
        lines = [re.sub(r"fd \d+$", "fd #", line) for line in written]
        states = [match.groups() for line in lines if (match := STATE_LINE.fullmatch(line))]
        assert states[0] == ("req-start", None)
        assert ("close", None) in states
        others = [line for line in lines if not STATE_LINE.fullmatch(line)]
        # each connection's shutdown, then its close (lighttpd's start probe is one
        # more connection, and it may stop before writing the last close)
        assert others and all(line == PAIR[index % 2] for index, line in enumerate(others))
        assert lines.index(others[0]) < lines.index("(connections.c.956) fd:# id:0 state:close")
    ours_closing = [re.sub(r"fd \d+$", "fd #", line) for line in ours if "for fd" in line]
    assert ours_closing == PAIR           # one connection, closed before the log is read
    assert "(connections.c.956) fd:# id:0 state:req-start at loop exit" in ours
