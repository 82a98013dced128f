"""What a mod_magnet script's answer becomes, beside Debian's lighttpd 1.4.69: the
framing fields a script may not set, statuses outside the error pages' range, the
older `lighty.content`, a Content-Type kept by the static file behind it, the request
fields and target as scripts read them, `lighty.c.stat`'s object and the file it
sends, `lighty.status` counters, the body at
response start, a 1xx status sent as an interim answer (103 Early Hints), and the
request body collected (`req_body.collect`), read and replaced.  A
generated probe (random scripts through both servers) found each of these; where
lighttpd's own answer is broken (a Content-Length it computed before a script added
to the body, a body after a 304 or 204) pylighttpd frames the answer right instead,
and those cases are checked on pylighttpd alone."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from server_util import read_until_closed
from test_differential import LIGHTTPD, beside_lighttpd, exchange, get10, get11, parse

pytest.importorskip("lupa")
pytestmark = pytest.mark.skipif(
    not os.access(LIGHTTPD, os.X_OK) or not Path("/usr/lib/lighttpd/mod_magnet.so").exists(),
    reason="Debian's lighttpd with mod_magnet (lighttpd-modules-lua) is not installed")

SCRIPTS = {
    # the framing is the server's: a script's Content-Length, Transfer-Encoding and
    # Connection are ignored
    "framing": """
        local h = lighty.r.resp_header
        h["Content-Length"] = "3"
        h["Transfer-Encoding"] = "chunked"
        h["Connection"] = "close"
        h["X-Ok"] = "1"
        lighty.r.resp_body.set({"hello"})
        return 200""",
    # no error page outside 4xx and 5xx
    "status-600": "return 600",
    # lighty.content replaces the body; a file part's `length` is where it ends
    "legacy": """
        lighty.r.resp_body.add("dropped")
        lighty.content = {"legacy:", {filename = DOCROOT .. "/index.html", offset = 1,
                                      length = 4}, 7}
        return 200""",
    # the static file behind keeps a script's Content-Type
    "content-type": 'lighty.r.resp_header["Content-Type"] = "text/x-probe"',
    # each request field under the name the client first wrote
    "field-names": """
        local names = {}
        for name, value in pairs(lighty.r.req_header) do
          names[#names + 1] = name .. "=" .. value
        end
        table.sort(names)
        lighty.r.resp_body.set({table.concat(names, "\\n"), "\\n"})
        return 200""",
    # the target as normalised
    "target": """
        local a = lighty.r.req_attr
        lighty.r.resp_body.set({a["request.uri"], " ", a["uri.path-raw"], " ",
                                a["request.orig-uri"], "\\n"})
        return 200""",
    # what a script writes: an address must be numeric; request.uri as it is written
    "attr-writes": """
        local a = lighty.r.req_attr
        local bad = pcall(function() a["request.remote-addr"] = "not-an-ip" end)
        local short = pcall(function() a["request.remote-addr"] = "200" end)
        a["uri.path-raw"] = "/written"
        a["request.orig-uri"] = "/orig"
        lighty.r.resp_body.set({tostring(bad), " ", tostring(short), " ",
                                a["request.remote-addr"], " ", a["request.uri"], " ",
                                a["uri.path-raw"], " ", a["request.orig-uri"], "\\n"})
        return 200""",
    # the request body: waited for, the script runs again, then read and replaced
    "collect": """
        local b = lighty.r.req_body
        if not b.collect then return end
        local first = b.get
        if lighty.r.req_attr["uri.query"] == "set" then
          b.set({"x", "yz"})
          b.add("!")
        end
        lighty.r.resp_body.set({"got ", first, " now ", b.get, " ", tostring(b.len), "\\n"})
        return 200""",
    # request fields a script may not set, keep_alive, digests by lower-case name
    "header-writes": """
        local r, out = lighty.r, {}
        r.req_header["Host"] = "Other.Example"
        r.req_header["Host"] = ""
        r.req_header["Content-Length"] = "9"
        r.req_header["Set-Cookie"] = "a=1"
        r.req_header["X-Gone"] = ""
        out[#out + 1] = table.concat({r.req_header["Host"],
          tostring(r.req_header["Content-Length"]), tostring(r.req_header["Set-Cookie"]),
          tostring(r.req_header["X-Gone"])}, " ")
        out[#out + 1] = tostring(pcall(function() r.req_item["keep_alive"] = 1 end))
        out[#out + 1] = tostring(lighty.c.md("SHA256", "x")) .. " " ..
                        tostring(lighty.c.hmac("sha1", "k", ""))
        out[#out + 1] = select(2, pcall(lighty.c.md, "md5"))
        out[#out + 1] = select(2, pcall(lighty.c.secret_eq, "a"))
        r.resp_body.set({table.concat(out, "\\n"), "\\n"})
        return 200""",
    # the request's stage, with and without a body
    "stage": """
        lighty.r.resp_body.set({lighty.r.req_attr["request.stage"], "\\n"})
        return 200""",
    # the connection's count of requests
    "count": """
        lighty.r.resp_header["X-Count"] = tostring(lighty.r.req_item.req_count)
        lighty.r.resp_header["X-Stream"] = tostring(lighty.r.req_item.stream_id)""",
    # lighty.c.stat's object: the fields lighttpd has, errors for others, read-only
    "stat-object": """
        local out = {}
        for _, name in ipairs({"index.html", "link.html", "fifo", "."}) do
          local st = lighty.c.stat(DOCROOT .. "/stat-object/" .. name)
          local seconds, nanoseconds = st.st_mtim()
          local count = 0
          for _ in pairs(st) do count = count + 1 end
          out[#out + 1] = table.concat({name, tostring(st.is_link), tostring(st.is_fifo),
            tostring(st.st_mode), tostring(st.etag ~= nil), tostring(st["content-type"]),
            tostring(seconds == st.st_mtime), math.type(nanoseconds),
            tostring(pcall(function() return st.nope end)),
            tostring(pcall(function() st.st_size = 1 end)), tostring(count)}, " ")
        end
        lighty.r.resp_body.set({table.concat(out, "\\n"), "\\n"})
        return 200""",
    # ... and the file it names as the answer
    "send-file": """
        return lighty.c.stat(DOCROOT .. "/index.html")["http-response-send-file"]""",
    # plugin_stats: counted, read, made as they are read
    "counters": """
        local s = lighty.status
        s["probe.count"] = s["probe.count"] + 2
        lighty.server.plugin_stats["probe.set"] = 7
        lighty.r.resp_body.set({tostring(s["probe.count"] % 2), " ",
                                tostring(lighty.server.plugin_stats["probe.set"]), " ",
                                tostring(lighty.status["probe.never"]), " ",
                                (lighty.server.stats["version"]:find("lighttpd/%d") and "named" or "?"),
                                "\\n"})
        return 200""",
    # 103 Early Hints with the fields set so far; the request goes on to its file
    "early-hints": """
        lighty.r.resp_header["Link"] = "</style.css>; rel=preload; as=style"
        return 103""",
}
RESPONSE_START = """
local q = lighty.r.req_attr["uri.query"]
if q == "len" then
  lighty.r.resp_header["X-Len"] = tostring(lighty.r.resp_body.len)
  lighty.r.resp_header["X-Got"] = tostring(#lighty.r.resp_body.get)
elseif q == "304" then
  lighty.content = {"a body a 304 cannot carry"}
  return 304
end
"""
CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_magnet", "mod_staticfile")
server.tag = "probe/1"
mimetype.assign = (".html" => "text/html")
{conditions}
$HTTP["url"] == "/rs/index.html" {{
    magnet.attract-response-start-to = ("{scripts}/response-start.lua")
}}
"""
COMPARED = ("content-type", "content-length", "transfer-encoding", "x-ok", "x-len", "x-got",
            "link", "etag", "content-range")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("magnet-answers")
    docroot = base / "www"
    (docroot / "rs").mkdir(parents=True)
    for page in (docroot / "index.html", docroot / "rs" / "index.html"):
        page.write_text("<p>index</p>\n")
    scripts = base / "scripts"
    scripts.mkdir()
    conditions = []
    for name, source in SCRIPTS.items():
        (scripts / f"{name}.lua").write_text(f'local DOCROOT = "{docroot}"\n{source}\n')
        conditions.append(f'$HTTP["url"] =^ "/{name}" {{ magnet.attract-physical-path-to = '
                          f'("{scripts}/{name}.lua") }}')
    (scripts / "response-start.lua").write_text(RESPONSE_START)
    conf = base / "magnet.conf"
    conf.write_text(CONFIG.format(docroot=docroot, scripts=scripts,
                                  conditions="\n".join(conditions)))
    for name in SCRIPTS:
        (docroot / name).mkdir()
        (docroot / name / "index.html").write_text(f"<p>{name}</p>\n")
    (docroot / "stat-object" / "link.html").symlink_to("index.html")
    os.mkfifo(docroot / "stat-object" / "fifo")
    with beside_lighttpd(conf) as ports:
        yield ports


REQUESTS = {
    "framing": get11("/framing/index.html"),
    "status-600": get11("/status-600/index.html"),
    "legacy": get11("/legacy/index.html"),
    "content-type": get11("/content-type/index.html"),
    "field-names": get11("/field-names/index.html", "x-lower: 1", "X-UPPER: 2",
                         "X-Mixed: 3", "x-mixed: 4", "USER-agent: probe"),
    "target": get11("/target/%7e%41/../index.html?q=%20&r=%7e"),
    "counters": get11("/counters/index.html"),
    "attr-writes": get11("/attr-writes/%7e/../index.html?q=%20"),
    "stat-object": get11("/stat-object/index.html"),
    "header-writes": get11("/header-writes/index.html", "X-Gone: 1"),
    "stage": get11("/stage/index.html"),
    "stage-body": get11("/stage/index.html", "Content-Length: 3", method="POST") + b"abc",
    "stage-empty-body": get11("/stage/index.html", "Content-Length: 0", method="POST"),
    "send-file": get11("/send-file/index.html"),
    "send-file-304": get11("/send-file/index.html", "If-None-Match: {etag}"),
    "send-file-range": get11("/send-file/index.html", "Range: bytes=1-3"),
    "response-start-len": get11("/rs/index.html?len"),
    "collect-chunked": get11("/collect/index.html", "Transfer-Encoding: chunked",
                             method="POST") + b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
    "collect-none": get11("/collect/index.html"),
}


def _summary(raw: bytes) -> dict:
    status, headers, body = parse(raw)
    return {"status": status, "body": body, **{name: headers.get(name) for name in COMPARED}}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_same_answer_as_lighttpd(servers, name: str) -> None:
    theirs, ours = servers
    request = REQUESTS[name]
    if b"{etag}" in request:      # the ETag lighttpd gives the file
        etag = parse(exchange(theirs, REQUESTS["send-file"]))[1]["etag"]
        request = request.replace(b"{etag}", etag.encode())
    assert _summary(exchange(ours, request)) == _summary(exchange(theirs, request))


def _heads(raw: bytes) -> list[list[bytes]]:
    """The heads of an exchange's answers: an interim one, then the final one."""
    heads = []
    while raw.startswith(b"HTTP/1.1 1"):
        head, _, raw = raw.partition(b"\r\n\r\n")
        heads.append(head.split(b"\r\n"))
    heads.append(raw.partition(b"\r\n\r\n")[0].split(b"\r\n"))
    return heads


def _no_date(head: list[bytes]) -> list[bytes]:
    return [line for line in head if not line.lower().startswith((b"date:", b"server:"))]


def test_early_hints_go_out_ahead_of_the_answer_as_lighttpd_sends_them(servers) -> None:
    theirs, ours = servers
    request = get11("/early-hints/index.html")
    heads = _heads(exchange(ours, request))
    assert len(heads) == 2 and heads[0][0] == b"HTTP/1.1 103 Early Hints"
    assert b"Link: </style.css>; rel=preload; as=style" in heads[0]
    assert not any(line.startswith(b"Link:") for line in heads[1])      # not in the answer
    assert [_no_date(head)[:1] for head in heads] == \
        [_no_date(head)[:1] for head in _heads(exchange(theirs, request))]


def test_no_interim_answer_to_an_http10_client(servers) -> None:
    _, ours = servers
    status, headers, body = parse(exchange(ours, get10("/early-hints/index.html")))
    assert (status, "link" in headers, body) == (200, False, b"<p>early-hints</p>\n")


def test_a_304_set_at_response_start_carries_no_body(servers) -> None:
    """lighttpd 1.4.69 sends lighty.content after its 304 head (a client reads it as
    the next answer); pylighttpd drops it: the pipelined request behind is answered."""
    _, ours = servers
    one = b"GET /rs/index.html?304 HTTP/1.1\r\nHost: test.example\r\n\r\n"
    with socket.create_connection(("127.0.0.1", ours), timeout=5) as sock:
        sock.sendall(one + get11("/rs/index.html?304"))
        raw = read_until_closed(sock)
    assert raw.count(b"HTTP/1.1 304 Not Modified\r\n") == 2
    assert b"cannot carry" not in raw


def test_a_body_that_comes_later_is_collected_as_lighttpd_collects_it(servers) -> None:
    """The head first, the body a moment later in two pieces: the request waits for it
    and the script, run again, reads it whole."""
    head = get11("/collect/index.html", "Content-Length: 6", method="POST")
    answers = []
    for port in servers:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(head)
            time.sleep(0.2)
            sock.sendall(b"abc")
            time.sleep(0.2)
            sock.sendall(b"def")
            status, _, body = parse(read_until_closed(sock))
            answers.append((status, body))
    assert answers == [(200, b"got abcdef now abcdef 6\n")] * 2


@pytest.mark.parametrize("query, expected", [("", b"got abc now abc 3\n"),
                                             ("?set", b"got abc now xyz! 4\n")])
def test_a_body_that_came_with_the_head_is_collected(servers, query: str,
                                                     expected: bytes) -> None:
    """lighttpd 1.4.69 gives the script the whole request, head and body, for a body
    read with its head (its request-body queue then holds the head too);
    pylighttpd gives the body, as it does for one that comes later."""
    _, ours = servers
    request = get11(f"/collect/index.html{query}", "Content-Length: 3", method="POST")
    assert parse(exchange(ours, request + b"abc"))[::2] == (200, expected)


def test_the_sent_file_answers_its_conditional_and_range_requests(servers) -> None:
    """The comparison above is of real 304 and 206 answers, not of two 200s."""
    theirs, ours = servers
    etag = parse(exchange(theirs, REQUESTS["send-file"]))[1]["etag"]
    conditional = REQUESTS["send-file-304"].replace(b"{etag}", etag.encode())
    assert parse(exchange(ours, conditional))[0] == 304
    assert parse(exchange(ours, REQUESTS["send-file-range"]))[::2] == (206, b"p>i")


def test_req_count_counts_the_requests_of_a_connection(servers) -> None:
    kept = b"GET /count/index.html HTTP/1.1\r\nHost: test.example\r\n\r\n"
    counts = []
    for port in servers:
        raw = exchange(port, kept * 2 + get11("/count/index.html"))
        counts.append([line for line in raw.split(b"\r\n") if line.startswith(b"X-")])
    assert counts[0] == counts[1] == [b"X-Count: 1", b"X-Stream: 0", b"X-Count: 2",
                                      b"X-Stream: 0", b"X-Count: 3", b"X-Stream: 0"]


def test_early_hints_over_http2(servers) -> None:
    """The 103 goes out as a HEADERS frame of its own before the answer's (lighttpd
    1.4.69 breaks the stream there: curl and nghttp see a PROTOCOL_ERROR)."""
    _, ours = servers
    shown = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", "--max-time", "10", "-D", "-", "-o",
         os.devnull, f"http://127.0.0.1:{ours}/early-hints/index.html"],
        capture_output=True, timeout=30, check=False).stdout.decode("latin-1")
    assert [line for line in shown.split("\r\n") if line.startswith(("HTTP/", "link:"))] == \
        ["HTTP/2 103 ", "link: </style.css>; rel=preload; as=style", "HTTP/2 200 "]


def test_the_stages_compared_differ(servers) -> None:
    """The comparison above is of both stages, not of one."""
    _, ours = servers
    assert [parse(exchange(ours, REQUESTS[name]))[2]
            for name in ("stage", "stage-body")] == [b"handle-req\n", b"readpost\n"]
