"""mod_webdav: its pieces (the If header, the XML parser and writer) and a worker
serving a share: every method, locks, the SQLite tables, hostile paths and bodies,
uploads cut off half-way, and the litmus suite (Debian's `litmus`) passing whole."""

from __future__ import annotations

import base64
import errno
import os
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from master.configload import load
from server_util import (WorkerProcess, config_text, detached_request, read_head,
                         read_until_closed)
from worker.module import BACKLOG_HIGH
from worker.modules.mod_webdav import _Dav
from worker.request import Request
from worker.webdav_request import NEED_DRAIN
from worker.webdav_fs import copy_contents
from worker.webdav_if import IfHeaderError, evaluate, parse_if, submitted_tokens
from worker.webdav_store import ancestors
from worker.webdav_xml import (DAV, XMLError, parse, property_xml,
                               response_with_propstats)

MODULES = ("mod_alias", "mod_webdav", "mod_staticfile")
LOCKINFO = ('<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:{scope}/>'
            '</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>tester</D:owner>'
            '</D:lockinfo>')
PROPSET = ('<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
           '{props}</D:prop></D:set></D:propertyupdate>')
TOKEN = re.compile(r"<(urn:uuid:[^>]+)>")


# ------------------------------------------------------------- the If header
def test_if_header_untagged_lists():
    groups = parse_if('(<opaquelocktoken:a> ["etag1"]) (Not <DAV:no-lock>)')
    assert len(groups) == 1 and groups[0].resource is None
    first, second = groups[0].lists
    assert first[0].token == "opaquelocktoken:a" and first[1].etag == '"etag1"'
    assert second[0].negate and second[0].token == "DAV:no-lock"
    assert submitted_tokens(groups) == {"opaquelocktoken:a", "DAV:no-lock"}


def test_if_header_tagged_lists():
    groups = parse_if('<http://h/a> (<t1>) (<t2>) <http://h/b> (Not ["x"])')
    assert [g.resource for g in groups] == ["http://h/a", "http://h/b"]
    assert len(groups[0].lists) == 2 and groups[1].lists[0][0].negate


@pytest.mark.parametrize("header", ["", "garbage", "(", "(<a>", "()", "(<a>) <http://x>",
                                    "(<a>) <http://x> (<b>)", "(Not)", "([x)"])
def test_if_header_malformed(header):
    with pytest.raises(IfHeaderError):
        parse_if(header)


def test_if_header_evaluation():
    def state(tag):
        return ({"tok"}, '"e1"') if tag is None else (set(), "")
    assert evaluate(parse_if("(<tok>)"), state)
    assert evaluate(parse_if('(<tok> ["e1"])'), state)
    assert not evaluate(parse_if('(<tok> ["e2"])'), state)
    assert not evaluate(parse_if("(<other>)"), state)
    assert evaluate(parse_if("(<other>) (Not <DAV:no-lock>)"), state)
    assert not evaluate(parse_if('(<other>) (Not <DAV:no-lock> ["bad"])'), state)
    assert evaluate(parse_if('(["e1"]) (Not [W/"e1"])'), state)
    assert not evaluate(parse_if("<http://h/x> (<tok>)"), state)


def test_ancestors():
    assert ancestors("/a/b/c") == ["/a/b/c", "/a/b/", "/a/", "/"]
    assert ancestors("/a/") == ["/a/", "/"]


def test_copy_contents_across_file_systems(tmp_path, monkeypatch):
    """Where copy_file_range cannot cross (EXDEV), the copy goes on with sendfile."""
    data = os.urandom(3 << 20)
    (tmp_path / "src").write_bytes(data)

    def refuse(*_args):
        raise OSError(errno.EXDEV, "cross-device")
    monkeypatch.setattr(os, "copy_file_range", refuse)
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_WRONLY | os.O_CREAT)
    try:
        steps = list(copy_contents(src, dst))
    finally:
        os.close(src)
        os.close(dst)
    assert len(steps) == 3 and (tmp_path / "dst").read_bytes() == data


# ------------------------------------------------------------------- the XML
def test_xml_parse_namespaces_and_values():
    root = parse(b'<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop>'
                 b'<Z:p>a &amp; <Z:b q="1">x</Z:b></Z:p><n xmlns="">v</n></D:prop></D:set>'
                 b'</D:propertyupdate>')
    assert root.name == (DAV, "propertyupdate")
    prop = root.children[0].child((DAV, "prop"))
    first, second = prop.children
    assert first.name == ("urn:z", "p")
    assert first.inner_xml() == 'a &amp; <b xmlns="urn:z" q="1">x</b>'
    assert second.name == ("", "n")


@pytest.mark.parametrize("body", [
    b"<D:propfind xmlns:D='DAV:'>",                                  # not closed
    b"<D:propfind xmlns:D='DAV:'><x:y xmlns:x=''/></D:propfind>",   # bad namespace
    b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>",                    # entities
    b"<!DOCTYPE x SYSTEM 'file:///etc/passwd'><x/>",                # external DTD
    b"<a>" * 100 + b"</a>" * 100,                                  # too deep
    b"",
])
def test_xml_refused(body):
    with pytest.raises(XMLError):
        parse(body)


def test_xml_writer():
    assert property_xml((DAV, "getetag"), '"1"') == '<D:getetag>"1"</D:getetag>'
    assert property_xml(("urn:z", "p")) == '<p xmlns="urn:z"/>'
    assert property_xml(("", "n"), "v") == '<n xmlns="">v</n>'
    text = response_with_propstats("/a%20b", {200: ["<D:x/>"], 404: ['<y xmlns="u"/>']})
    assert "<D:href>/a%20b</D:href>" in text
    assert "<D:status>HTTP/1.1 200 OK</D:status>" in text
    assert "<D:status>HTTP/1.1 404 Not Found</D:status>" in text
    parse(('<D:multistatus xmlns:D="DAV:">' + text + "</D:multistatus>").encode())


# ------------------------------------------------------------------ a share
SHARE_CONFIG = """
$HTTP["url"] =^ "/dav/" {{
    webdav.activate = "enable"
    webdav.sqlite-db-name = "{base}/webdav.db"
}}
$HTTP["url"] =^ "/deep/" {{
    webdav.activate = "enable"
    webdav.opts = ("propfind-depth-infinity" => "enable")
}}
$HTTP["url"] =^ "/ro/" {{
    webdav.activate = "enable"
    webdav.is-readonly = "enable"
}}
$HTTP["url"] =^ "/nolink/" {{
    webdav.activate = "enable"
    server.follow-symlink = "disable"
}}
$HTTP["url"] =^ "/aliased/" {{ webdav.activate = "enable" }}
$HTTP["url"] =^ "/stream/" {{
    webdav.activate = "enable"
    server.stream-request-body = 2
}}
$HTTP["url"] =^ "/logxml/" {{
    webdav.activate = "enable"
    webdav.log-xml = "enable"
}}
server.errorlog = "{base}/error.log"
$HTTP["url"] =^ "/partial/" {{
    webdav.activate = "enable"
    webdav.opts = ("deprecated-unsafe-partial-put" => "enable")
}}
$HTTP["url"] =^ "/streamout/" {{
    webdav.activate = "enable"
    server.stream-response-body = 2
}}
$HTTP["url"] =^ "/copymodify/" {{
    webdav.activate = "enable"
    webdav.opts = ("partial-put-copy-modify" => "enable")
}}
$HTTP["url"] =^ "/short" {{ webdav.activate = "enable" }}
alias.url = ("/aliased/" => "{base}/aliased/", "/short" => "{base}/short")
"""


@pytest.fixture(scope="module")
def share(tmp_path_factory):
    base = tmp_path_factory.mktemp("webdav")
    docroot = base / "www"
    for name in ("dav", "deep/a/b", "ro", "nolink", "stream", "partial", "logxml",
                 "copymodify", "streamout"):
        (docroot / name).mkdir(parents=True)
    (base / "aliased").mkdir()
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_text("secret")
    (docroot / "ro" / "file.txt").write_text("read only")
    (docroot / "deep" / "a" / "b" / "leaf.txt").write_text("leaf")
    (docroot / "nolink" / "out").symlink_to(base / "outside")
    (docroot / "dav" / "out").symlink_to(base / "outside")
    conf = base / "webdav.conf"
    conf.write_text(config_text(docroot, SHARE_CONFIG.format(base=base), MODULES))
    with WorkerProcess(conf) as worker:
        yield worker, docroot, base


def dav(worker, method, path, body=None, **headers):
    return worker.request(method, path, {k.replace("_", "-"): v for k, v in headers.items()},
                          body.encode() if isinstance(body, str) else body)


def test_options(share):
    worker, _, _ = share
    status, headers, _ = dav(worker, "OPTIONS", "/dav/")
    assert status == 200
    assert headers["DAV"] == "1,2,3" and headers["MS-Author-Via"] == "DAV"
    assert headers["Allow"] == ("PROPFIND, DELETE, MKCOL, PUT, MOVE, COPY, PROPPATCH, LOCK, "
                                "UNLOCK, OPTIONS, GET, HEAD, POST")
    status, headers, _ = dav(worker, "OPTIONS", "/ro/")
    assert headers["Allow"] == "PROPFIND, OPTIONS, GET, HEAD, POST"
    status, headers, _ = dav(worker, "OPTIONS", "/deep/")      # no database: no locks
    assert headers["DAV"] == "1,3"
    assert headers["Allow"] == "PROPFIND, DELETE, MKCOL, PUT, MOVE, COPY, OPTIONS, GET, " \
                               "HEAD, POST"


def test_not_activated_elsewhere(share):
    worker, _, _ = share
    assert dav(worker, "PROPFIND", "/", Depth="0")[0] == 405
    assert dav(worker, "PUT", "/", "x")[0] == 405


def test_readonly(share):
    worker, docroot, _ = share
    assert dav(worker, "PROPFIND", "/ro/", Depth="1")[0] == 207
    for method in ("PUT", "DELETE", "MKCOL", "PROPPATCH", "LOCK", "MOVE"):
        assert dav(worker, method, "/ro/file.txt")[0] == 403, method
    assert (docroot / "ro" / "file.txt").read_text() == "read only"


def test_put_get_and_etag(share):
    worker, docroot, _ = share
    status, headers, _ = dav(worker, "PUT", "/dav/new.txt", "first")
    assert status == 201
    status, headers, _ = dav(worker, "PUT", "/dav/new.txt", "second!")
    assert status == 204
    etag = headers["ETag"]
    status, got, body = worker.get("/dav/new.txt")
    assert (status, body, got["ETag"]) == (200, b"second!", etag)
    spooled = os.urandom(3 << 20)                 # whole in its spool file first
    assert dav(worker, "PUT", "/dav/spooled.bin", spooled)[0] == 201
    assert (docroot / "dav" / "spooled.bin").read_bytes() == spooled
    assert dav(worker, "PUT", "/dav/none/x.txt", "x")[0] == 409
    assert dav(worker, "PUT", "/dav/", "x")[0] == 405
    assert dav(worker, "PUT", "/dav/new.txt", "x", Content_Range="bytes 0-0/*")[0] == 400
    assert dav(worker, "PUT", "/dav/new.txt/", "x")[0] == 400
    assert (docroot / "dav" / "new.txt").read_text() == "second!"
    assert [p.name for p in (docroot / "dav").iterdir() if "webdav-tmp" in p.name] == []


def test_preconditions(share):
    worker, docroot, _ = share
    _, headers, _ = dav(worker, "PUT", "/dav/cond.txt", "one")
    etag = headers["ETag"]
    assert dav(worker, "PUT", "/dav/cond.txt", "two", If_Match='"other"')[0] == 412
    assert dav(worker, "PUT", "/dav/cond.txt", "two", If_None_Match="*")[0] == 412
    assert dav(worker, "PUT", "/dav/cond-new.txt", "x", If_Match="*")[0] == 412
    assert dav(worker, "PUT", "/dav/cond-new.txt", "x", If_None_Match="*")[0] == 201
    assert dav(worker, "DELETE", "/dav/cond.txt",
               If_Unmodified_Since="Thu, 01 Jan 1970 00:00:00 GMT")[0] == 412
    assert dav(worker, "MOVE", "/dav/cond.txt", Destination="/dav/cond2.txt",
               If_Match='"other"')[0] == 412
    assert (docroot / "dav" / "cond.txt").read_text() == "one"
    assert dav(worker, "PUT", "/dav/cond.txt", "two", If_Match=etag)[0] == 204


@pytest.mark.parametrize("share_dir, same_inode", [("partial", True),
                                                   ("copymodify", False)])
def test_partial_put(share, share_dir, same_inode):
    worker, docroot, _ = share
    path = docroot / share_dir / "p.txt"
    path.write_text("abcdef")
    inode = path.stat().st_ino
    status, headers, _ = dav(worker, "PUT", f"/{share_dir}/p.txt", "XY",
                             Content_Range="bytes 2-3/6")
    assert status == 204 and headers["ETag"]
    assert path.read_text() == "abXYef"
    assert (path.stat().st_ino == inode) == same_inode
    assert dav(worker, "PUT", f"/{share_dir}/p.txt", "Z", Content_Range="items 1-1/*")[0] \
        == 501
    assert dav(worker, "PUT", f"/{share_dir}/none.txt", "Z",
               Content_Range="bytes 0-0/*")[0] == 404
    assert temp_files(docroot / share_dir) == []


def test_mkcol(share):
    worker, docroot, _ = share
    assert dav(worker, "MKCOL", "/dav/col/")[0] == 201
    assert (docroot / "dav" / "col").is_dir()
    assert dav(worker, "MKCOL", "/dav/col/")[0] == 405
    assert dav(worker, "MKCOL", "/dav/a/b/c/")[0] == 409
    assert dav(worker, "MKCOL", "/dav/body/", "<x/>")[0] == 415


def propfind(worker, path, depth, body=None):
    return dav(worker, "PROPFIND", path, body, Depth=depth)


def test_propfind_depths(share):
    worker, docroot, _ = share
    (docroot / "dav" / "list").mkdir()
    (docroot / "dav" / "list" / "a b ü.txt").write_text("x")
    (docroot / "dav" / "list" / "sub").mkdir()
    status, headers, body = propfind(worker, "/dav/list/", "1")
    assert status == 207 and headers["Content-Type"].startswith("application/xml")
    text = body.decode()
    assert "<D:href>/dav/list/a%20b%20%C3%BC.txt</D:href>" in text
    assert "<D:href>/dav/list/sub/</D:href>" in text
    assert "<D:collection/>" in text and "<D:getcontentlength>1<" in text
    parse(body)
    status, _, body = propfind(worker, "/dav/list/", "0")
    assert body.count(b"<D:response>") == 1
    assert propfind(worker, "/dav/list/missing", "0")[0] == 404
    assert propfind(worker, "/dav/list/", "2")[0] == 400


def test_propfind_of_a_name_that_is_not_utf8(share):
    worker, docroot, _ = share
    (docroot / "dav" / "latin").mkdir()
    (docroot / "dav" / "latin").joinpath(os.fsdecode(b"caf\xe9.txt")).write_text("x")
    status, _, body = propfind(worker, "/dav/latin/", "1")
    assert status == 207
    assert b"<D:href>/dav/latin/caf%E9.txt</D:href>" in body
    assert "<D:displayname>caf\ufffd.txt</D:displayname>" in body.decode("utf-8")
    assert worker.get("/dav/latin/caf%E9.txt")[2] == b"x"


def test_propfind_infinity_only_where_enabled(share):
    worker, _, _ = share
    status, _, body = propfind(worker, "/dav/", "infinity")
    assert status == 403 and b"propfind-finite-depth" in body
    status, _, body = propfind(worker, "/deep/", "infinity")
    assert status == 207 and b"<D:href>/deep/a/b/leaf.txt</D:href>" in body


def test_propfind_streams_a_big_answer(share):
    """A listing goes out as it is made (server.stream-response-body = 2: chunked),
    whole and well-formed."""
    worker, docroot, _ = share
    for index in range(1500):
        (docroot / "streamout" / f"file-{index:04}.txt").write_text("x")
    with worker.socket(timeout=30) as sock:
        sock.sendall(b"PROPFIND /streamout/ HTTP/1.1\r\nHost: x\r\nDepth: 1\r\n"
                     b"Connection: close\r\n\r\n")
        raw = read_until_closed(sock)
    head, _, chunked = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 207") and b"Transfer-Encoding: chunked" in head
    body = dechunk(chunked)
    assert len(parse(body).children) == 1501
    assert b"<D:href>/streamout/file-1499.txt</D:href>" in body


def held_request(values: dict, docroot: Path, path: str) -> Request:
    """A PROPFIND of `path` with no connection: a client that takes nothing, its
    backlog whatever was written."""
    request = detached_request(values)
    request.method, request.headers = "PROPFIND", {"depth": "1"}
    request.uri_path = request.physical_rel = path
    request.physical_basedir = str(docroot)
    request.physical_path = f"{docroot}{path}"
    return request


def test_propfind_pauses_while_the_client_does_not_read(tmp_path):
    """Past BACKLOG_HIGH unread, a PROPFIND stops (NEED_DRAIN, wants_drain) until
    the core wakes it; then it goes on where it was."""
    (tmp_path / "big").mkdir()
    for index in range(600):
        (tmp_path / "big" / f"{index:03}-{'n' * 200}").touch()
    conf = tmp_path / "held.conf"
    conf.write_text(config_text(tmp_path, "server.stream-response-body = 2\n", ("mod_webdav",)))
    request = held_request(load(str(conf)).compiled.globals, tmp_path, "/big/")
    steps = _Dav(request, None, lambda *_: None).propfind()
    pauses = 0
    for reason in steps:
        if reason == NEED_DRAIN:
            assert request.response.wants_drain and request.backlog() >= BACKLOG_HIGH
            pauses += 1
            request.response.body.clear()      # the client took it
            request.response.wants_drain = False
    assert pauses >= 1 and request.response.streaming


def dechunk(data: bytes) -> bytes:
    parts = []
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return b"".join(parts)
        parts.append(data[:size])
        data = data[size + 2:]


def test_propfind_named_and_propname(share):
    worker, docroot, _ = share
    (docroot / "dav" / "named.txt").write_text("12345")
    ask = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/>'
           '<D:displayname/><Z:missing xmlns:Z="urn:z"/></D:prop></D:propfind>')
    status, _, body = propfind(worker, "/dav/named.txt", "0", ask)
    text = body.decode()
    assert status == 207
    assert "<D:getcontentlength>5</D:getcontentlength>" in text
    assert "<D:displayname>named.txt</D:displayname>" in text
    assert re.search(r'<missing xmlns="urn:z"/></D:prop><D:status>HTTP/1.1 404', text)
    status, _, body = propfind(worker, "/dav/named.txt", "0",
                               '<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>')
    assert b"<D:getetag/>" in body and b"<D:creationdate/>" in body


@pytest.mark.parametrize("body", [
    "<D:propfind xmlns:D='DAV:'><D:prop>",
    "<D:propfind xmlns:D='DAV:'><D:prop><b:x xmlns:b=''/></D:prop></D:propfind>",
    "<!DOCTYPE d [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><D:propfind xmlns:D='DAV:'>"
    "<D:prop>&e;</D:prop></D:propfind>",
    "<D:notpropfind xmlns:D='DAV:'/>",
    "<a>" * 200 + "</a>" * 200,
])
def test_propfind_bad_xml_is_400(share, body):
    worker, _, _ = share
    assert propfind(worker, "/dav/", "0", body)[0] == 400


def test_xml_body_size_bounded(share):
    worker, _, _ = share
    huge = "<D:propfind xmlns:D='DAV:'>" + " " * (1 << 20) + "<D:allprop/></D:propfind>"
    assert propfind(worker, "/dav/", "0", huge)[0] == 413


def test_proppatch_atomic_and_stored_as_lighttpd(share):
    worker, docroot, base = share
    (docroot / "dav" / "props.txt").write_text("p")
    status, _, body = dav(worker, "PROPPATCH", "/dav/props.txt", PROPSET.format(
        props='<Z:color xmlns:Z="urn:z">blue <Z:em>very</Z:em></Z:color>'))
    assert status == 207 and b"HTTP/1.1 200 OK" in body
    status, _, body = dav(worker, "PROPPATCH", "/dav/props.txt", PROPSET.format(
        props='<Z:size xmlns:Z="urn:z">9</Z:size><D:getetag>"x"</D:getetag>'))
    assert b"HTTP/1.1 403 Forbidden" in body and b"HTTP/1.1 424 Failed Dependency" in body
    ask = ('<D:propfind xmlns:D="DAV:"><D:prop><Z:color xmlns:Z="urn:z"/>'
           '<Z:size xmlns:Z="urn:z"/></D:prop></D:propfind>')
    _, _, body = propfind(worker, "/dav/props.txt", "0", ask)
    text = body.decode()
    assert '<color xmlns="urn:z">blue <em xmlns="urn:z">very</em></color>' in text
    assert re.search(r'<size xmlns="urn:z"/></D:prop><D:status>HTTP/1.1 404', text)
    with sqlite3.connect(base / "webdav.db") as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(properties)")]
        assert columns == ["resource", "prop", "ns", "value"]
        rows = list(db.execute("SELECT resource, prop, ns FROM properties "
                               "WHERE resource = '/dav/props.txt'"))
    assert rows == [("/dav/props.txt", "color", "urn:z")]
    assert dav(worker, "PROPPATCH", "/dav/props.txt", "<bad")[0] == 400


def test_copy_move_delete_collections(share):
    worker, docroot, _ = share
    tree = docroot / "dav" / "tree"
    for index in range(60):
        sub = tree / f"d{index % 6}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{index}.txt").write_text(str(index))
    dav(worker, "PROPPATCH", "/dav/tree/d1/f1.txt",
        PROPSET.format(props='<Z:tag xmlns:Z="urn:z">one</Z:tag>'))
    assert dav(worker, "COPY", "/dav/tree/", Destination="/dav/copy/")[0] == 201
    assert sorted(p.name for p in (docroot / "dav" / "copy").rglob("*.txt")) == \
        sorted(f"f{i}.txt" for i in range(60))
    ask = '<D:propfind xmlns:D="DAV:"><D:prop><Z:tag xmlns:Z="urn:z"/></D:prop></D:propfind>'
    assert b">one</tag>" in propfind(worker, "/dav/copy/d1/f1.txt", "0", ask)[2]
    assert dav(worker, "COPY", "/dav/tree/", Destination="/dav/copy/",
               Overwrite="F")[0] == 412
    assert dav(worker, "COPY", "/dav/tree/", Destination="/dav/shallow/",
               Depth="0")[0] == 201
    assert list((docroot / "dav" / "shallow").iterdir()) == []
    assert dav(worker, "MOVE", "/dav/copy/", Destination="/dav/moved/")[0] == 201
    assert not (docroot / "dav" / "copy").exists()
    assert b">one</tag>" in propfind(worker, "/dav/moved/d1/f1.txt", "0", ask)[2]
    assert dav(worker, "MOVE", "/dav/tree/", Destination="/dav/moved/")[0] == 204
    assert dav(worker, "COPY", "/dav/moved/", Destination="/dav/moved/d1/")[0] == 403
    assert dav(worker, "COPY", "/dav/moved/", Destination="/dav/moved/")[0] == 403
    assert dav(worker, "COPY", "/dav/moved/", Destination="/dav/no/where/")[0] == 409
    assert dav(worker, "DELETE", "/dav/moved/")[0] == 204
    assert not (docroot / "dav" / "moved").exists()
    assert dav(worker, "DELETE", "/dav/moved/")[0] == 404


def test_the_share_root_is_never_deleted_or_replaced(share):
    worker, docroot, base = share
    (base / "aliased" / "keep.txt").write_text("k")
    assert dav(worker, "DELETE", "/aliased/")[0] == 403
    # a file copied onto a collection goes into it (as lighttpd): here onto itself
    assert dav(worker, "COPY", "/aliased/keep.txt", Destination="/aliased/")[0] == 204
    assert (base / "aliased" / "keep.txt").read_text() == "k"
    assert dav(worker, "MOVE", "/aliased/keep.txt", Destination="/aliased")[0] == 204
    assert (base / "aliased" / "keep.txt").read_text() == "k"


def test_long_names(share):
    worker, docroot, _ = share
    name = "n" * 250 + ".txt"
    assert dav(worker, "PUT", f"/dav/{name}", "long")[0] == 201
    assert (docroot / "dav" / name).read_text() == "long"


def test_hostile_destinations(share):
    worker, docroot, base = share
    (docroot / "dav" / "src.txt").write_text("s")
    (docroot / "outside").mkdir()
    assert dav(worker, "COPY", "/dav/src.txt")[0] == 400
    assert dav(worker, "COPY", "/dav/src.txt",
               Destination="http://elsewhere.example/dav/x.txt")[0] == 502
    status, _, _ = dav(worker, "COPY", "/dav/src.txt",
                       Destination="/dav/../../../outside/evil.txt")
    assert status == 201
    assert (docroot / "outside" / "evil.txt").exists()      # cleaned: inside the root
    assert not (base / "outside" / "evil.txt").exists()
    (base / "aliased" / "a.txt").write_text("a")
    assert dav(worker, "COPY", "/aliased/a.txt", Destination="/dav/a.txt")[0] == 502
    assert dav(worker, "COPY", "/aliased/a.txt", Destination="/aliased/b.txt")[0] == 201
    assert (base / "aliased" / "b.txt").read_text() == "a"
    assert dav(worker, "COPY", "/dav/src.txt", Destination="/dav/%C0%AFx")[0] == 400
    # as in lighttpd, a decoded control character is "_" (no NUL reaches a file name)
    assert dav(worker, "COPY", "/dav/src.txt", Destination="/dav/%00x")[0] == 201
    assert (docroot / "dav" / "_x").read_text() == "s"
    (base / "short").mkdir()
    (base / "shortcut").mkdir()
    (base / "short" / "s.txt").write_text("s")
    assert dav(worker, "COPY", "/short/s.txt", Destination="/shortcut/s.txt")[0] == 502
    assert not (base / "shortcut" / "s.txt").exists()      # beside the alias: refused
    assert dav(worker, "COPY", "/short/s.txt", Destination="/short/t.txt")[0] == 201


def test_symlinks_refused_with_follow_symlink_off(share):
    worker, docroot, base = share
    assert dav(worker, "PUT", "/nolink/out/new.txt", "x")[0] == 403
    assert dav(worker, "DELETE", "/nolink/out/secret.txt")[0] == 403
    assert propfind(worker, "/nolink/out/", "1")[0] == 403
    (docroot / "nolink" / "f.txt").write_text("f")
    assert dav(worker, "COPY", "/nolink/f.txt", Destination="/nolink/out/f.txt")[0] == 403
    assert not (base / "outside" / "new.txt").exists()
    assert not (base / "outside" / "f.txt").exists()
    status, _, body = propfind(worker, "/nolink/", "1")
    assert status == 207 and b"/nolink/out" not in body


def test_walks_never_follow_symlinks(share):
    worker, docroot, base = share
    _, _, body = propfind(worker, "/dav/", "1")
    assert b"<D:href>/dav/out" not in body          # no unsafe-propfind-follow-symlink
    col = docroot / "dav" / "withlink"
    col.mkdir()
    (col / "link").symlink_to(base / "outside")
    assert dav(worker, "COPY", "/dav/withlink/", Destination="/dav/linkcopy/")[0] == 201
    assert (docroot / "dav" / "linkcopy" / "link").is_symlink()
    assert dav(worker, "DELETE", "/dav/withlink/")[0] == 204
    assert dav(worker, "DELETE", "/dav/linkcopy/")[0] == 204
    assert (base / "outside" / "secret.txt").read_text() == "secret"


def lock(worker, path, scope="exclusive", **headers):
    status, got, body = dav(worker, "LOCK", path, LOCKINFO.format(scope=scope), **headers)
    match = TOKEN.search(got.get("Lock-Token", ""))
    return status, match.group(1) if match else "", body


def test_locks(share):
    worker, docroot, _ = share
    (docroot / "dav" / "locked.txt").write_text("v1")
    status, token, body = lock(worker, "/dav/locked.txt", Timeout="Second-100")
    assert status == 200 and token and b"<D:owner>tester</D:owner>" in body
    assert re.search(rb"<D:timeout>Second-(100|99)</D:timeout>", body)
    assert dav(worker, "PUT", "/dav/locked.txt", "v2")[0] == 423
    assert dav(worker, "DELETE", "/dav/locked.txt")[0] == 423
    assert dav(worker, "MOVE", "/dav/locked.txt", Destination="/dav/m.txt")[0] == 423
    assert lock(worker, "/dav/locked.txt", "shared")[0] == 423
    assert dav(worker, "PUT", "/dav/locked.txt", "v2", If=f"(<{token}>)")[0] == 204
    assert dav(worker, "PUT", "/dav/locked.txt", "v3", If="(<opaquelocktoken:nope>)")[0] \
        == 412
    assert dav(worker, "PUT", "/dav/locked.txt", "v3",
               If=f"<http://x/dav/%00> (<{token}>)")[0] == 412      # names no resource
    _, _, body = propfind(worker, "/dav/locked.txt", "0")
    assert token.encode() in body and b"<D:lockdiscovery><D:activelock>" in body
    status, _, body = dav(worker, "LOCK", "/dav/locked.txt", If=f"(<{token}>)",
                          Timeout="Second-500")
    assert status == 200 and re.search(rb"Second-(500|499)", body)
    assert dav(worker, "LOCK", "/dav/locked.txt")[0] == 400
    assert dav(worker, "UNLOCK", "/dav/locked.txt")[0] == 400
    assert dav(worker, "UNLOCK", "/dav/locked.txt",
               Lock_Token="<opaquelocktoken:nope>")[0] == 409
    assert dav(worker, "UNLOCK", "/dav/locked.txt", Lock_Token=f"<{token}>")[0] == 204
    assert dav(worker, "PUT", "/dav/locked.txt", "v4")[0] == 204


def test_move_takes_the_lock_away(share):
    worker, docroot, _ = share
    (docroot / "dav" / "mover.txt").write_text("m")
    _, token, _ = lock(worker, "/dav/mover.txt")
    assert dav(worker, "MOVE", "/dav/mover.txt", Destination="/dav/moved.txt",
               If=f"(<{token}>)")[0] == 201
    _, _, body = propfind(worker, "/dav/moved.txt", "0")
    assert token.encode() not in body
    (docroot / "dav" / "mover.txt").write_text("again")
    assert lock(worker, "/dav/mover.txt")[0] == 200      # the old lock went with it


def test_lock_expires(share):
    worker, docroot, _ = share
    (docroot / "dav" / "brief.txt").write_text("b")
    assert lock(worker, "/dav/brief.txt", Timeout="Second-1")[0] == 200
    assert dav(worker, "PUT", "/dav/brief.txt", "x")[0] == 423
    deadline = time.monotonic() + 5
    while dav(worker, "PUT", "/dav/brief.txt", "x")[0] == 423 and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert dav(worker, "PUT", "/dav/brief.txt", "y")[0] == 204


def test_a_lock_lasts_as_long_as_asked(share):
    """Taken late in a second, a one-second lock still holds after that second ends."""
    worker, docroot, _ = share
    (docroot / "dav" / "late.txt").write_text("l")
    while time.time() % 1 < 0.8:
        time.sleep(0.02)
    assert lock(worker, "/dav/late.txt", Timeout="Second-1")[0] == 200
    time.sleep(0.4)                                      # into the next second
    assert dav(worker, "PUT", "/dav/late.txt", "x")[0] == 423


def test_shared_and_collection_locks(share):
    worker, docroot, _ = share
    (docroot / "dav" / "lockcol").mkdir()
    (docroot / "dav" / "lockcol" / "m.txt").write_text("m")
    status, first, _ = lock(worker, "/dav/lockcol/", "shared")
    status2, second, _ = lock(worker, "/dav/lockcol/", "shared")
    assert (status, status2) == (200, 200) and first != second
    assert lock(worker, "/dav/lockcol/m.txt")[0] == 423       # under a depth-infinity lock
    assert dav(worker, "PUT", "/dav/lockcol/m.txt", "x")[0] == 423
    assert dav(worker, "PUT", "/dav/lockcol/m.txt", "x", If=f"(<{second}>)")[0] == 204
    assert dav(worker, "PUT", "/dav/lockcol/n.txt", "x")[0] == 423     # membership
    # a lock-null resource: LOCK of an unmapped URL makes an empty file
    for token in (first, second):
        dav(worker, "UNLOCK", "/dav/lockcol/", Lock_Token=f"<{token}>")
    status, token, _ = lock(worker, "/dav/lockcol/null.txt")
    assert status == 201 and (docroot / "dav" / "lockcol" / "null.txt").read_bytes() == b""
    assert lock(worker, "/dav/lockcol/none/null.txt")[0] == 409
    assert dav(worker, "DELETE", "/dav/lockcol/")[0] == 423     # a member is locked
    assert dav(worker, "DELETE", "/dav/lockcol/", If=f"(<{token}>)")[0] == 412   # not here
    tagged = f"<http://127.0.0.1/dav/lockcol/null.txt> (<{token}>)"
    assert dav(worker, "DELETE", "/dav/lockcol/", If=tagged)[0] == 204


AUTH_CONFIG = """
auth.backend = "plain"
auth.backend.plain.userfile = "{users}"
auth.require = ("/" => ("method" => "basic", "realm" => "dav", "require" => "valid-user"))
webdav.activate = "enable"
webdav.sqlite-db-name = "{db}"
"""


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:secret".encode()).decode()


def test_locks_belong_to_the_user_who_took_them(tmp_path):
    """Behind mod_auth a lock is its user's: another user who knows its token can
    neither write through it nor unlock it."""
    (tmp_path / "users").write_text("alice:secret\nbob:secret\n")
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "shared.txt").write_text("s")
    conf = tmp_path / "auth.conf"
    conf.write_text(config_text(tmp_path / "www", AUTH_CONFIG.format(
        users=tmp_path / "users", db=tmp_path / "auth.db"),
        ("mod_auth", "mod_authn_file", "mod_webdav", "mod_staticfile")))
    with WorkerProcess(conf) as worker:
        status, token, _ = lock(worker, "/shared.txt", Authorization=basic("alice"))
        assert status == 200 and token
        as_bob = {"Authorization": basic("bob"), "If": f"(<{token}>)"}
        assert dav(worker, "PUT", "/shared.txt", "bob", **as_bob)[0] == 423
        assert dav(worker, "UNLOCK", "/shared.txt", Authorization=basic("bob"),
                   Lock_Token=f"<{token}>")[0] == 403
        assert dav(worker, "PUT", "/shared.txt", "alice", Authorization=basic("alice"),
                   If=f"(<{token}>)")[0] == 204
        assert dav(worker, "UNLOCK", "/shared.txt", Authorization=basic("alice"),
                   Lock_Token=f"<{token}>")[0] == 204
    with sqlite3.connect(tmp_path / "auth.db") as db:
        assert list(db.execute("SELECT count(*) FROM locks")) == [(0,)]


def test_streamed_put_and_aborted_put(share):
    worker, docroot, _ = share
    payload = os.urandom(3 << 20)
    status, _, _ = dav(worker, "PUT", "/stream/big.bin", payload)
    assert status == 201
    assert (docroot / "stream" / "big.bin").read_bytes() == payload
    (docroot / "stream" / "keep.txt").write_text("old contents")
    with worker.socket() as sock:
        sock.sendall(b"PUT /stream/keep.txt HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 4000000\r\n\r\n" + b"n" * 300_000)
        deadline = time.monotonic() + 5
        while not temp_files(docroot / "stream") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert temp_files(docroot / "stream"), "the upload never reached its temp file"
    deadline = time.monotonic() + 5
    while temp_files(docroot / "stream") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert temp_files(docroot / "stream") == []
    assert (docroot / "stream" / "keep.txt").read_text() == "old contents"
    assert worker.get("/stream/keep.txt")[2] == b"old contents"


def temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".webdav-tmp")]


def test_big_delete_leaves_the_loop_free(share):
    """A DELETE of 20,000 files runs in slices: a GET on another connection is
    answered while it is still going."""
    worker, docroot, _ = share
    tree = docroot / "dav" / "many"
    tree.mkdir()
    for index in range(20_000):
        (tree / f"{index}").touch()
    with worker.socket(timeout=30) as deleting:
        deleting.sendall(b"DELETE /dav/many/ HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 10
        while len(os.listdir(tree)) == 20_000 and time.monotonic() < deadline:
            time.sleep(0.001)
        status, _, body = worker.get("/ro/file.txt")
        deleting.setblocking(False)
        try:
            early = deleting.recv(100)
        except BlockingIOError:
            early = b""
        deleting.settimeout(30)
        assert (status, body, early) == (200, b"read only", b"")
        assert read_head(deleting).startswith(b"HTTP/1.1 204")
    assert not tree.exists()


def test_log_xml(share):
    worker, _, base = share
    ask = '<D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>'
    assert propfind(worker, "/logxml/", "0", ask)[0] == 207
    deadline = time.monotonic() + 5
    while "XML-response-body" not in (base / "error.log").read_text() and \
            time.monotonic() < deadline:
        time.sleep(0.02)
    log = (base / "error.log").read_text()
    assert f"XML-request-body: {ask}" in log
    assert "XML-response-body: <?xml" in log and "<D:href>/logxml/</D:href>" in log
    before = log.count("XML-")
    propfind(worker, "/dav/", "0", ask)
    worker.get("/logxml/")
    assert (base / "error.log").read_text().count("XML-") == before


def test_get_after_put_is_fresh(share):
    worker, _, _ = share
    for index in range(5):
        dav(worker, "PUT", "/dav/fresh.txt", f"version {index}")
        assert worker.get("/dav/fresh.txt")[2] == f"version {index}".encode()


def peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))


def test_large_streamed_put_keeps_memory_flat(share):
    worker, docroot, _ = share
    size, piece = 96 << 20, b"\x5a" * (1 << 20)
    with worker.socket(timeout=30) as sock:
        sock.sendall(b"PUT /stream/large.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(piece)):
            sock.sendall(piece)
        assert read_head(sock).startswith(b"HTTP/1.1 201")
    assert (docroot / "stream" / "large.bin").stat().st_size == size
    assert peak_rss_kib(worker.process.pid) < 64 * 1024


SNIPPET = Path(__file__).resolve().parents[2] / "conf" / "conf-available" / "30-webdav.conf"


def test_conf_available_snippet_serves_a_share(tmp_path):
    """30-webdav.conf as shipped, its database moved to a writable place."""
    text = SNIPPET.read_text()
    assert '"/var/cache/lighttpd/lighttpd.webdav.db"' in text
    (tmp_path / "dav").mkdir()
    conf = tmp_path / "snippet.conf"
    conf.write_text(config_text(tmp_path, text.replace(
        "/var/cache/lighttpd/lighttpd.webdav.db", str(tmp_path / "snippet.db")),
        ("mod_staticfile",)))
    with WorkerProcess(conf) as worker:
        status, headers, _ = dav(worker, "OPTIONS", "/dav/")
        assert (status, headers["DAV"]) == (200, "1,2,3")
        assert dav(worker, "PUT", "/dav/a.txt", "a")[0] == 201
        status, token, _ = lock(worker, "/dav/a.txt")
        assert status == 200 and token
        assert propfind(worker, "/dav/", "1")[0] == 207
        assert propfind(worker, "/", "0")[0] == 405          # only /dav/ is a share


# ------------------------------------------------------------- real clients
LITMUS = shutil.which("litmus")
CADAVER = shutil.which("cadaver")


@pytest.mark.skipif(CADAVER is None, reason="Debian's cadaver is not installed")
def test_cadaver_session(share, tmp_path):
    worker, docroot, _ = share
    (tmp_path / "up.txt").write_text("uploaded by cadaver\n")
    (docroot / "dav" / "cad").mkdir()
    commands = ("put up.txt\nmove up.txt moved.txt\nlock moved.txt\ndiscover moved.txt\n"
                "unlock moved.txt\nmkcol sub\ncopy moved.txt sub/\nls sub\n"
                "delete moved.txt\nls\nquit\n")
    done = subprocess.run([CADAVER, f"http://127.0.0.1:{worker.port}/dav/cad/"],
                          input=commands, capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)
    out = done.stdout
    assert out.count("succeeded") == 9 and "failed" not in out, out
    assert re.search(r"Lock token <urn:uuid:[-0-9a-f]+>", out), out
    assert "Scope: exclusive" in out
    assert sorted(p.name for p in (docroot / "dav" / "cad").rglob("*")) == ["moved.txt", "sub"]
    assert (docroot / "dav" / "cad" / "sub" / "moved.txt").read_text() == \
        "uploaded by cadaver\n"


@pytest.mark.skipif(LITMUS is None, reason="Debian's litmus is not installed")
def test_litmus_passes_every_test(share):
    worker, docroot, _ = share
    (docroot / "dav" / "litmus-run").mkdir()
    result = subprocess.run([LITMUS, f"http://127.0.0.1:{worker.port}/dav/litmus-run/"],
                            capture_output=True, text=True, timeout=120,
                            cwd=docroot.parent)
    summaries = re.findall(r"summary for `(\w+)': of (\d+) tests run: (\d+) passed, "
                           r"(\d+) failed", result.stdout)
    assert [name for name, *_ in summaries] == ["basic", "copymove", "props", "locks",
                                                "http"], result.stdout
    assert sum(int(run) for _, run, _, _ in summaries) == 104, result.stdout
    assert all(failed == "0" for *_, failed in summaries), result.stdout
    assert "WARNING" not in result.stdout and "SKIPPED" not in result.stdout, result.stdout
