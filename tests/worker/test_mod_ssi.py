"""mod_ssi: the expression grammar and the directive parser on their own, then the same
SSI pages served by Debian's lighttpd 1.4.69 and by a pylighttpd worker, whose answers
must agree (status, headers, body), and what lighttpd does not contain (exec holding
the worker, recursion bombs, huge pages) contained here.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from module_diff import compare, get
from server_util import WorkerProcess, read_until_closed
from test_differential import LIGHTTPD, beside_lighttpd, exchange, parse
from worker.modules.mod_ssi import MAX_INCLUDES, join_path, minimal_xml
from worker.ssi_parse import directive_length, parse_directive
from worker.ssi_expr import evaluate

# ------------------------------------------------------------------ the grammar
# expression -> lighttpd 1.4.69's verdict (V is "hello"), each seen from lighttpd itself
EXPRESSIONS = {
    "a=b": False, "a b = 'a b'": True, "a  b = 'a b'": True, "'a'b = ab": False,
    "'a' 'b' = 'a b'": True, "$V": True, "$NOPE": False, "$Vx = hello": False,
    "$V_x": False, "${V}x = hellox": False, "${V}x = 'hello x'": True, "!a": False,
    "!''": True, "! a": False, "a&b": False, "a|b": False, "a < b": True,
    "a <= a": True, "b < a": False, "(a = a) && (b = b)": True,
    "(a = a) = (b = b)": False, "(a = b) = ('' = a)": False, "(a = a) = x": False,
    "a = (a)": True, "a && b = c": False, "a = b || c": True, "!a = b": False,
    "!(a) = b": False, "'' || !''": True, "a)": False, "((a))": True,
    "'unterminated": False, "$V = 'hello'": True, "$V=hello": True, "a'b'": True,
    "a || '' && ''": False, "'' && '' || a": True, "10 > 9": False, "": False,
    "a = b = c": False, "(a": False, "${V": False, "x!=y": True, "x != x": False,
    "$V$V = 'hello hello'": True, "1 < 2": True, "a\tb = 'a b'": True,
    "'a,b' = a,b": True, "(a b) = 'a b'": False, "!!a": True, "!a || a": True,
    "'' && x = y": False, "x = y && ''": False, "${} = ''": True, "a =": False,
}


@pytest.mark.parametrize("expr", list(EXPRESSIONS))
def test_expression_as_lighttpd_evaluates_it(expr):
    assert evaluate(expr, {"V": "hello"}.get) is EXPRESSIONS[expr]


def test_an_expression_error_is_reported_and_false():
    said = []
    assert evaluate("a & b", {}.get, said.append) is False
    assert said == ["pos: 3 missing second &"]


@pytest.mark.parametrize("expr", ["a\nb", "caf\u00e9", "!" * 40 + "a", "(" * 40 + "a"])
def test_what_makes_lighttpd_spin_or_nest_without_end_is_false(expr):
    assert evaluate(expr, {}.get) is False


# ------------------------------------------------------------------ the directives
@pytest.mark.parametrize("text, words", [
    (b'<!--#echo var="X" -->', ["echo", "var", "X"]),
    (b"<!--#echo var='X'-->", ["echo", "var", "X"]),
    (b"<!--#echo var=X encoding=url -->", ["echo", "var", "X", "encoding", "url"]),
    (b"<!--#printenv -->", ["printenv"]),
    (b"<!--#endif-->", ["endif"]),
    (b'<!--#set var="E" value="a\\"b" -->', ["set", "var", "E", "value", 'a\\"b']),
    (b'<!--#echo var="a" var="b" var="c" -->', None),
    (b"<!--# -->", None),
    (b'<!--#echo var= -->', None),
    (b'<!--#echo var="x"y -->', None),
    (b'<!--#echo 1="x" -->', None),
])
def test_directive_words(text, words):
    assert parse_directive(text) == words


@pytest.mark.parametrize("text, length", [
    (b'<!--#echo var="-->" -->tail', 23),
    (b"<!--#echo var='-->' -->", 23),
    (b'<!--#set value="a\\"b" --> <!--#echo -->', 0),   # lighttpd's backslash: never closes
    (b"<!--#echo var=x --", 0),
])
def test_directive_length(text, length):
    assert directive_length(text, 0, len(text)) == length


def test_small_helpers():
    assert join_path("/a/", "/b") == join_path("/a", "b") == join_path("/a/", "b") == "/a/b"
    assert minimal_xml("<a b&\"c>'\t\u00e9") == \
        b"&#x3C;a b&#x26;&#x22;c&#x3E;&#x27;&#x09;\xc3\xa9"


# ------------------------------------------------------------------ beside lighttpd
PAGES = {
    "vars.shtml": (
        'A<!--#echo var="DOCUMENT_NAME" -->|<!--#echo var="DOCUMENT_URI" -->|'
        '<!--#echo var="QUERY_STRING_UNESCAPED" -->|<!--#echo var="SCRIPT_NAME" -->|'
        '<!--#echo var="NOPE" -->|<!--#echo var="REQUEST_URI" encoding="url" -->|'
        '<!--#echo encoding="entity" var="HTTP_X_T" -->|<!--#echo var="HTTP_AUTHORIZATION" -->|'
        '<!--#echo var="QUERY_STRING" -->|<!--#echo var="SCRIPT_URL" -->|'
        '<!--#echo var="SCRIPT_URI" -->|<!--#echo var="USER_NAME" -->|'
        '<!--#config timefmt="%Y-%m-%d %H:%M:%S %Z" --><!--#echo var="LAST_MODIFIED" -->|'
        '<!--#config timefmt="%Y" --><!--#echo var="DATE_GMT" -->|<!--#echo var="DATE_LOCAL" -->|'
        '<!--#config timefmt="" --><!--#echo var="LAST_MODIFIED" -->|'
        '<!--#set var="V" value="hello" --><!--#echo var="V" -->|'
        '<!--#set var="REQUEST_METHOD" value="mine" --><!--#echo var="REQUEST_METHOD" -->\n'),
    "files.shtml": (
        '<!--#config timefmt="%d.%m.%Y %T" --><!--#flastmod file="inc.txt" -->|'
        '<!--#fsize file="inc.txt" -->|<!--#config sizefmt="abbrev" -->'
        '<!--#fsize file="big.bin" -->|<!--#fsize virtual="/sub/x.txt" -->|'
        '<!--#config sizefmt="nonsense" --><!--#fsize file="inc.txt" -->|'
        '<!--#config sizefmt="bytes" --><!--#fsize file="big.bin" -->\n'
        '<!--#include file="inc.txt" -->|<!--#include virtual="sub/x.txt" -->|'
        '<!--#include file="../../etc/passwd" -->|<!--#include file="missing" -->|'
        '<!--#include virtual="/missing" -->|<!--#include file="sub/x.txt" -->|'
        '<!--#include file="/sub/x.txt" -->|<!--#include file="%78.txt" -->|'
        '<!--#include virtual="/sub/x.txt?q=1" -->|<!--#include virtual="../../sub/x.txt" -->|'
        '<!--#include file="sub/../inc.txt" -->|<!--#include virtual="/r.shtml" -->|'
        '<!--#include virtual="/script.sh" -->|<!--#include file="x.txt" virtual="/x.txt" -->|'
        '<!--#include -->|<!--#include virtual="%ff" -->\n'),
    "sub/rel.shtml": ('<!--#include virtual="../x.txt" -->|<!--#include file="x.txt" -->|'
                      '<!--#include virtual="x.txt" -->|<!--#echo var="DOCUMENT_URI" -->\n'),
    "cond.shtml": (
        '<!--#set var="V" value="hello" -->'
        '<!--#if expr="$V = hello" -->yes<!--#else -->no<!--#endif -->\n'
        '<!--#if expr="a = b" -->A<!--#elif expr="b = b" -->B<!--#elif expr="c = c" -->C'
        '<!--#else -->D<!--#endif -->\n'
        '<!--#if expr="a = a" --><!--#if expr="x = y" -->in1<!--#else -->in2<!--#endif -->'
        '<!--#else -->out<!--#endif -->\n'
        '<!--#if expr="a = b" --><!--#if expr="x = x" -->in1<!--#else -->in2<!--#endif -->'
        '<!--#else -->out<!--#endif -->\n'
        '<!--#if expr="a = b" --><!--#set var="W" value="set" --><!--#echo var="V" -->'
        '<!--#include file="inc.txt" --><!--#exec cmd="echo never" --><!--#printenv -->'
        '<!--#config timefmt="%Y" --><!--#endif --><!--#echo var="W" -->\n'
        '<!--#if -->noexpr<!--#endif -->|<!--#if expr="" -->empty<!--#endif -->\n'
        '<!--#endif -->stray<!--#else -->else2<!--#endif -->after\n'
        + "".join(f'{i}:<!--#if expr="{e}" -->T<!--#else -->F<!--#endif -->\n'
                  for i, e in enumerate(EXPRESSIONS) if '"' not in e and "\t" not in e)),
    "errors.shtml": (
        '<!--#bogus -->|<!--#config errmsg="ERR" --><!--#bogus -->|<!--#echo -->|'
        '<!--#ECHO var="V" -->|<!--#echo var="a" var="b" var="c" -->|<!--# -->|<!--#-->|'
        '<!--#exec cgi="/script.sh" -->|<!--#comment hello -->|<!--#comment-->|'
        '<!--#set var="only" -->|<!-- plain comment -->|<!-- -->|<!--#echo var=x\n'),
    "quirk.shtml": 'before<!--#set var="E" value="a\\"b" --><!--#echo var="E" -->after\n',
    "exec.shtml": ('<!--#exec cmd="echo hi; printf \'a\\nb\'" -->|'
                   '<!--#exec cmd="sleep 0.3; echo later" -->|<!--#exec -->|'
                   '<!--#exec cmd="exit 3" -->|<!--#exec cmd="kill -9 $$" -->|'
                   '<!--#exec cmd="echo [$QUERY_STRING]" -->|'
                   '<!--#exec cmd="head -c 1500000 /dev/zero | tr \'\\0\' x" -->end\n'),
    "noexec/page.shtml": '<!--#exec cmd="echo ran" -->|\n',
    "deep/self.shtml": 'S<!--#include virtual="/deep/self.shtml" -->\n',
    "deep/a.shtml": 'A<!--#include virtual="/deep/b.shtml" -->\n',
    "deep/b.shtml": 'B<!--#echo var="DOCUMENT_NAME" --><!--#include virtual="a.shtml" -->\n',
    "deep/t.shtml": ('<!--#include virtual="directives.txt" -->|'
                     '<!--#include file="directives.txt" -->\n'),
    "deep/directives.txt": 'T<!--#echo var="DOCUMENT_URI" -->\n',
    "ct/page.shtml": "ct\n",
    "cached/page.shtml": '<!--#include file="../inc.txt" -->\n',
    "r.shtml": 'R<!--#echo var="DOCUMENT_NAME" -->\n',
}

CONFIG_EXTRA = """
ssi.extension = (".shtml")
cgi.assign = (".sh" => "/bin/sh")
$HTTP["url"] =^ "/noexec/" { ssi.exec = "disable" }
$HTTP["url"] =^ "/deep/" { ssi.recursion-max = 3 }
$HTTP["url"] =^ "/ct/" { ssi.content-type = "text/plain; charset=utf-8" }
$HTTP["url"] =^ "/cached/" { ssi.conditional-requests = "enable" }
"""


def make_ssi_site(base: Path) -> Path:
    docroot = base / "www"
    for name, text in PAGES.items():
        (docroot / name).parent.mkdir(parents=True, exist_ok=True)
        (docroot / name).write_text(text)
    (docroot / "inc.txt").write_text('inc<!--#echo var="V" -->\n')
    (docroot / "x.txt").write_text("x2\n")
    (docroot / "sub" / "x.txt").write_text("x\n")
    (docroot / "big.bin").write_bytes(b"\0" * 3_000_000)
    (docroot / "script.sh").write_text("echo Content-Type: text/plain\necho\necho ran\n")
    (base / "etc").mkdir()
    (base / "etc" / "passwd").write_text("outside the docroot\n")
    past = time.time() - 86400 * 3
    for path in docroot.rglob("*"):
        os.utime(path, (past, past))
    os.utime(docroot / "inc.txt", (past + 3600, past + 3600))   # newer than its page
    return docroot


def site_config(docroot: Path, extra: str) -> str:
    return (f'server.document-root = "{docroot}"\n'
            'server.modules = ("mod_ssi", "mod_cgi", "mod_staticfile")\n'
            'mimetype.assign = (".txt" => "text/plain", "" => "application/octet-stream")\n'
            + extra)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    if not os.access(LIGHTTPD, os.X_OK):
        pytest.skip("Debian's lighttpd is not installed")
    base = tmp_path_factory.mktemp("ssidiff")
    docroot = make_ssi_site(base)
    conf = base / "common.conf"
    conf.write_text(site_config(docroot, CONFIG_EXTRA))
    with beside_lighttpd(conf) as ports:
        yield ports, docroot


REQUESTS = [
    ("vars", get("/vars.shtml?x=A%20b&y", "X-T: <a b&\"c>", "Authorization: Basic eDp5")),
    ("files", get("/files.shtml")),
    ("relative", get("/sub/rel.shtml")),
    ("conditions", get("/cond.shtml")),
    ("errors", get("/errors.shtml")),
    ("backslash-quirk", get("/quirk.shtml")),
    ("exec", get("/exec.shtml?q=1")),
    ("exec-disabled", get("/noexec/page.shtml")),
    ("include-itself", get("/deep/self.shtml")),
    ("ping-pong", get("/deep/a.shtml")),
    ("virtual-txt-processed", get("/deep/t.shtml")),
    ("content-type", get("/ct/page.shtml")),
    ("conditional", get("/cached/page.shtml")),
    ("head", get("/r.shtml", method="HEAD")),
    ("post", get("/r.shtml", "Content-Length: 3", method="POST") + b"abc"),
    ("missing", get("/nothing.shtml")),
    ("http10", b"GET /r.shtml HTTP/1.0\r\n\r\n"),
]


@pytest.mark.parametrize("name, raw", REQUESTS, ids=[name for name, _ in REQUESTS])
def test_same_answer_as_lighttpd(servers, name, raw):
    ports, _ = servers
    assert compare(ports, [(name, raw)]) == {}


def test_conditional_request_answered_304_by_both(servers):
    (theirs, ours), _ = servers
    _, headers, _ = parse(exchange(theirs, get("/cached/page.shtml")))
    etag, modified = headers["etag"], headers["last-modified"]
    for port in (theirs, ours):
        assert parse(exchange(port, get("/cached/page.shtml", f"If-None-Match: {etag}")))[0] \
            == 304
        assert parse(exchange(port, get("/cached/page.shtml",
                                        f"If-Modified-Since: {modified}")))[0] == 304


def test_printenv_as_lighttpd(servers):
    """printenv: variables set first, then the CGI environment, each sorted as lighttpd
    sorts (by length, then bytes), values in minimal XML; the ports differ by nature."""
    (theirs, ours), docroot = servers
    (docroot / "env.shtml").write_text('<!--#set var="Z" value="<z>" -->'
                                       '<!--#set var="AA" value="a" --><!--#printenv -->')
    raw = get("/env.shtml?q=1", "X-T: a'b\tc\u00e9", "Authorization: Basic eDp5")
    bodies = []
    for port in (theirs, ours):
        body = parse(exchange(port, raw))[2]
        bodies.append([line for line in body.split(b"\n") if not line.startswith(
            (b"REMOTE_PORT=", b"SERVER_PORT=", b"SERVER_SOFTWARE="))])
    assert bodies[0] == bodies[1]
    assert bodies[1][:2] == [b"Z=&#x3C;z&#x3E;", b"AA=a"]


HOSTILE_BYTES = (
    b'<!--#include file="x.txt\0/etc/passwd" -->|<!--#exec cmd="echo a\0rm -rf /" -->|'
    b'<!--#include file="%00" -->|<!--#include virtual="\xff" -->|'
    b'<!--#config timefmt="\xff%Y" --><!--#echo var="DATE_GMT" -->|'
    b'<!--#if expr="\xff = \xff" -->T<!--#else -->F<!--#endif -->|'
    b'<!--#echo var="\xff" -->\n')


def test_bytes_as_lighttpd_reads_them(servers):
    """NUL bytes end a value, bytes that are not UTF-8 pass through a time format.
    (An expression with such a byte makes lighttpd spin for ever: left out here.)"""
    ports, docroot = servers
    (docroot / "bytes.shtml").write_bytes(HOSTILE_BYTES.replace(b"\xff = \xff", b"a"))
    assert compare(ports, [("bytes", get("/bytes.shtml"))]) == {}


def test_long_directive_and_pieces_as_lighttpd(servers):
    """A directive longer than lighttpd's 8 KiB buffer, one across a buffer's end, and
    a page of many buffers."""
    ports, docroot = servers
    filler = "f" * 8180
    (docroot / "long.shtml").write_text(
        '<!--#echo var="' + "v" * 9000 + '" -->|' + filler + '<!--#echo var="DOCUMENT_NAME" -->'
        + "<!" + "x" * 8190 + "<!--#echo var='QUERY_STRING' -->--" + "y" * 8185 + "<!--")
    (docroot / "pages.shtml").write_text(
        "".join(f'line {i} <!--#echo var="DOCUMENT_URI" --> {"z" * (i % 97)}\n'
                for i in range(60_000)))
    assert compare(ports, [("long", get("/long.shtml?q")),
                           ("pages", get("/pages.shtml"))]) == {}


# ------------------------------------------------------------------ beyond lighttpd
@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    base = tmp_path_factory.mktemp("ssiworker")
    docroot = make_ssi_site(base)
    (docroot / "slow.shtml").write_text('a<!--#exec cmd="sleep 2; echo slow" -->b\n')
    (docroot / "plain.txt").write_text("plain\n")
    for name, other in (("ping", "pong"), ("pong", "ping")):
        (docroot / "deep" / f"{name}.shtml").write_text(
            name + f'<!--#include virtual="{other}.shtml" -->' * 4)
    conf = base / "worker.conf"
    conf.write_text(site_config(docroot, CONFIG_EXTRA.replace(
        "ssi.recursion-max = 3", "ssi.recursion-max = 65535")))
    with WorkerProcess(conf) as process:
        yield process.port, docroot


def _fetch(port: int, target: str) -> tuple[int, dict, bytes]:
    return parse(exchange(port, get(target)))


def test_exec_holds_only_its_request(worker):
    """While a command runs, the worker answers other requests."""
    port, _ = worker
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(_fetch, port, "/slow.shtml")
        time.sleep(0.3)
        assert _fetch(port, "/plain.txt")[2] == b"plain\n"
        assert not slow.done()            # answered while the command still runs
        assert slow.result(timeout=10)[2] == b"aslow\nb\n"


def test_client_gone_stops_the_command(worker, tmp_path):
    port, docroot = worker
    marker = tmp_path / "survived"
    (docroot / "gone.shtml").write_text(
        f'<!--#exec cmd="sleep 1.5; touch {marker}" -->')
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(get("/gone.shtml"))
        time.sleep(0.3)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(2.5)
    assert not marker.exists()
    assert _fetch(port, "/r.shtml")[2] == b"Rr.shtml\n"


def test_recursion_bomb_is_contained(worker):
    """A page including itself through another, four times at each level, with
    ssi.recursion-max at its highest: bounded in depth and count (the exchange's own
    timeout bounds the wait)."""
    port, _ = worker
    status, _, body = _fetch(port, "/deep/ping.shtml")
    assert status == 200
    assert b"recurse deeper" in body
    assert body.count(b"ping") + body.count(b"pong") <= MAX_INCLUDES + 1


def test_huge_page_goes_out_whole(worker):
    """A page far beyond the spool threshold comes whole, its directives done."""
    port, docroot = worker
    line = '<!--#echo var="DOCUMENT_NAME" -->' + "p" * 200 + "\n"
    (docroot / "huge.shtml").write_text(line * 10_000 + '<!--#include file="big.bin" -->'
                                         + line * 10_000)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(get("/huge.shtml"))
        raw = read_until_closed(sock)
    status, headers, body = parse(raw)
    assert status == 200
    line = b"huge.shtml" + b"p" * 200 + b"\n"
    assert body == line * 10_000 + b"\0" * 3_000_000 + line * 10_000
    assert int(headers["content-length"]) == len(body)


def test_hostile_bytes_in_directives(worker):
    """NUL bytes, bytes that are not UTF-8 and a %00 in directives: each read as
    lighttpd reads it (a value ends at a NUL), never a failed answer."""
    port, docroot = worker
    (docroot / "bytes.shtml").write_bytes(HOSTILE_BYTES)
    status, _, body = _fetch(port, "/bytes.shtml")
    assert status == 200
    assert body.startswith(b"x2\n|a\n|||")
    assert body.endswith(b"|\xff%d|F|(none)\n" % time.gmtime().tm_year)


def test_a_directory_is_not_included(worker):
    """lighttpd 1.4.69 cuts its answer on an include of a directory; here the include
    gives nothing, the rest of the page stands."""
    port, docroot = worker
    (docroot / "deep" / "dirs.shtml").write_text(
        'a<!--#include virtual="/sub" -->b<!--#include virtual="/sub/" -->c'
        '<!--#fsize virtual="/sub" -->\n')
    status, _, body = _fetch(port, "/deep/dirs.shtml")
    assert (status, body) == (200, b"abc%d\n" % (docroot / "sub").stat().st_size)


def test_a_changed_page_is_read_again(worker):
    """Small pages are kept parsed: a new version of the same size is seen at once."""
    port, docroot = worker
    page = docroot / "changing.shtml"
    page.write_text('one<!--#echo var="DOCUMENT_NAME" -->')
    assert _fetch(port, "/changing.shtml")[2] == b"onechanging.shtml"
    page.write_text('two<!--#echo var="DOCUMENT_URI" -->')
    assert _fetch(port, "/changing.shtml")[2] == b"two/changing.shtml"


def test_answers_are_never_replayed(worker):
    """DATE_GMT with seconds changes: the answer cache must not keep the page."""
    port, docroot = worker
    (docroot / "clock.shtml").write_text('<!--#config timefmt="%s" -->'
                                         '<!--#echo var="DATE_GMT" -->')
    first = _fetch(port, "/clock.shtml")[2]
    time.sleep(1.1)
    second = _fetch(port, "/clock.shtml")[2]
    assert first != second
