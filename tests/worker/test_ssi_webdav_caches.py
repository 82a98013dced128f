"""What mod_ssi and mod_webdav keep between requests, in one worker run in process:
SSI pages and includes not opened again while their stat is the same, PROPFIND's
listings and rendered responses kept likewise; a change (of a file, a dead property,
a lock) always shows, and a file changed just now is never kept (worker/settled.py)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from master.configload import load
from worker import settled as settled_module
from worker import ssi_expr, webdav_props
from worker.server import Server

NAMED = ('<?xml version="1.0" encoding="utf-8"?>\n<D:propfind xmlns:D="DAV:"><D:prop>'
         '<D:getcontentlength/><D:getetag/><D:displayname/></D:prop></D:propfind>\n')
ALLPROP = ('<?xml version="1.0" encoding="utf-8"?>\n'
           '<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>\n')
PROPPATCH = ('<?xml version="1.0" encoding="utf-8"?>\n<D:propertyupdate xmlns:D="DAV:">'
             '<D:set><D:prop><x:color xmlns:x="urn:test">blue</x:color></D:prop></D:set>'
             '</D:propertyupdate>\n')
LOCK = ('<?xml version="1.0" encoding="utf-8"?>\n<D:lockinfo xmlns:D="DAV:">'
        '<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>'
        '</D:lockinfo>\n')
_next_mtime = [10**18]


def touch(path: Path, data: bytes | None = None) -> None:
    """Write (when `data` is given) and give the file an mtime of its own: two
    changes inside one tick of the kernel's clock would leave the same stat."""
    if data is not None:
        path.write_bytes(data)
    _next_mtime[0] += 10**9
    os.utime(path, ns=(_next_mtime[0], _next_mtime[0]))


class Worker:
    """One worker in this process and a connection to it."""

    def __init__(self, base: Path) -> None:
        self.docroot = base / "www"
        (self.docroot / "dav").mkdir(parents=True)
        config = base / "test.conf"
        config.write_text(
            f'server.document-root = "{self.docroot}"\nserver.port = 8080\n'
            'server.modules = ("mod_ssi", "mod_webdav", "mod_staticfile")\n'
            f'server.errorlog = "{base}/error.log"\nssi.extension = (".shtml")\n'
            '$HTTP["url"] =~ "^/dav/" {\n  webdav.activate = "enable"\n'
            f'  webdav.sqlite-db-name = "{base}/webdav.db"\n}}\n')
        self.server = Server(load(str(config)), [])
        self.client, end = socket.socketpair()
        self.client.setblocking(False)
        self.server.add_connection(end, "127.0.0.1", "127.0.0.1:8080")

    def ask(self, method: str, path: str, body: str = "", *headers: str
            ) -> tuple[int, bytes]:
        """(status, body) of one request; the loop runs until the answer is whole."""
        head = f"{method} {path} HTTP/1.1\r\nHost: t\r\n" + "".join(h + "\r\n" for h in headers)
        if body:
            head += f"Content-Length: {len(body.encode())}\r\n"
        self.client.sendall((head + "\r\n" + body).encode())
        received = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.server.loop.run_once(0.01)
            try:
                received += self.client.recv(1 << 20)
            except BlockingIOError:
                pass
            head_end = received.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            fields = received[:head_end].lower()
            length = int(fields.split(b"content-length: ", 1)[1].split(b"\r\n")[0]) \
                if b"content-length: " in fields else 0
            if len(received) >= head_end + 4 + length:
                return int(received.split(b" ", 2)[1]), received[head_end + 4:]
        raise AssertionError(f"no whole answer to {method} {path}: {received[:200]!r}")

    def close(self) -> None:
        self.client.close()
        self.server.close_all()


@pytest.fixture
def worker(tmp_path: Path):
    started = Worker(tmp_path)
    yield started
    started.close()


@pytest.fixture
def keep_at_once(monkeypatch):
    """Files count as settled at once: what the caches keep is seen here."""
    monkeypatch.setattr(settled_module, "SETTLED", -1.0)


def count_calls(monkeypatch, owner: object, name: str, wanted=lambda *_a: True) -> list:
    """Record the arguments of each call of owner.name that `wanted` picks."""
    calls: list = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        if wanted(*args):
            calls.append(args)
        return original(*args, **kwargs)
    monkeypatch.setattr(owner, name, counted)
    return calls


# ------------------------------------------------------------------ settled
def test_a_file_changed_within_the_settling_time_is_not_settled():
    now = time.time()
    old = now - 60
    def stat_of(mtime: float, ctime: float) -> os.stat_result:
        return os.stat_result((0o100644, 1, 1, 1, 0, 0, 0, old, mtime, ctime))

    assert settled_module.settled(stat_of(old, old))
    assert not settled_module.settled(stat_of(old, now))
    assert not settled_module.settled(stat_of(now, old))


# ---------------------------------------------------------------------- SSI
def _ssi_site(docroot: Path) -> None:
    touch(docroot / "page.shtml", b'A<!--#include file="part.txt" -->'
          b'<!--#include virtual="/other.txt" -->Z')
    touch(docroot / "part.txt", b"part")
    touch(docroot / "other.txt", b"other")


def _opened(monkeypatch, docroot: Path) -> list:
    return count_calls(monkeypatch, os, "open",
                       lambda path, *_: str(path).startswith(str(docroot)))


def test_an_unchanged_page_and_its_includes_are_not_opened_again(worker, keep_at_once,
                                                                  monkeypatch):
    _ssi_site(worker.docroot)
    opened = _opened(monkeypatch, worker.docroot)
    assert worker.ask("GET", "/page.shtml") == (200, b"ApartotherZ")
    assert len(opened) == 3
    assert worker.ask("GET", "/page.shtml") == (200, b"ApartotherZ")
    assert len(opened) == 3                         # all three kept
    touch(worker.docroot / "part.txt", b"PART")     # same size, a new mtime
    assert worker.ask("GET", "/page.shtml") == (200, b"APARTotherZ")
    touch(worker.docroot / "page.shtml", b'B<!--#include file="part.txt" -->Y')
    assert worker.ask("GET", "/page.shtml") == (200, b"BPARTY")
    assert len(opened) == 5                         # the two that changed, once each


def test_pages_changed_just_now_are_read_every_time(worker, monkeypatch):
    _ssi_site(worker.docroot)
    opened = _opened(monkeypatch, worker.docroot)
    for _ in range(2):
        assert worker.ask("GET", "/page.shtml") == (200, b"ApartotherZ")
    assert len(opened) == 6


def test_an_expression_is_tokenized_once_and_its_variables_read_each_time(monkeypatch):
    monkeypatch.setattr(ssi_expr, "_compiled", {})   # the tokens, by expression
    expr = "${V} = 'on' && $W"
    assert ssi_expr.evaluate(expr, {"V": "on", "W": "1"}.get) is True
    tokens = ssi_expr._compiled[expr]
    assert ssi_expr.evaluate(expr, {"V": "off", "W": "1"}.get) is False
    assert ssi_expr._compiled[expr] is tokens          # not tokenized again
    said: list[str] = []
    assert ssi_expr.evaluate("a & b", {}.get, said.append) is False
    assert ssi_expr.evaluate("a & b", {}.get, said.append) is False
    assert said == ["pos: 3 missing second &"] * 2     # the error told every time
    assert list(ssi_expr._compiled) == [expr, "a & b"]


# ------------------------------------------------------------------- WebDAV
def _share(docroot: Path) -> None:
    for number in range(3):
        touch(docroot / "dav" / f"f{number}.txt", b"x" * number)
    touch(docroot / "dav")


def _propfind(worker: Worker, body: str = NAMED) -> bytes:
    status, answer = worker.ask("PROPFIND", "/dav/", body, "Depth: 1")
    assert status == 207
    return answer


def _rendered_since(before: dict) -> dict:
    """The <D:response> texts kept since the snapshot `before` of webdav_props' table:
    new keys, and keys whose text was rendered again (each render keeps a new tuple;
    the table is read, as the worker's compiled methods cannot be wrapped)."""
    return {key: kept for key, kept in webdav_props._rendered.items()
            if before.get(key) is not kept}


def test_propfind_keeps_listings_and_responses_while_nothing_changes(worker, keep_at_once,
                                                                     monkeypatch):
    _share(worker.docroot)
    listed = count_calls(monkeypatch, os, "scandir")
    before = dict(webdav_props._rendered)
    first = _propfind(worker)
    assert len(listed) == 1 and len(_rendered_since(before)) == 4
    after_first = dict(webdav_props._rendered)
    assert _propfind(worker) == first
    assert len(listed) == 1 and _rendered_since(after_first) == {}   # nothing listed or rendered
    touch(worker.docroot / "dav" / "f1.txt", b"yy")       # one member changes
    second = _propfind(worker)
    assert len(listed) == 1
    assert [key[0] for key in _rendered_since(after_first)] == ["/dav/f1.txt"]
    assert b"<D:getcontentlength>2</D:getcontentlength>" in second
    touch(worker.docroot / "dav" / "new.txt", b"n")       # the collection changes
    touch(worker.docroot / "dav")
    assert b"<D:href>/dav/new.txt</D:href>" in _propfind(worker)
    assert len(listed) == 2


def test_kept_responses_never_hide_dead_properties_or_locks(worker, keep_at_once):
    _share(worker.docroot)
    assert b"urn:test" not in _propfind(worker, ALLPROP)
    assert worker.ask("PROPPATCH", "/dav/f1.txt", PROPPATCH)[0] == 207
    assert b'<color xmlns="urn:test">blue</color>' in _propfind(worker, ALLPROP)
    assert worker.ask("PROPPATCH", "/dav/f1.txt", PROPPATCH.replace("blue", "red"))[0] == 207
    assert b'<color xmlns="urn:test">red</color>' in _propfind(worker, ALLPROP)
    status, _ = worker.ask("LOCK", "/dav/f2.txt", LOCK, "Timeout: Second-600")
    assert status == 200
    before = dict(webdav_props._rendered)
    answer = _propfind(worker, ALLPROP)
    assert answer.count(b"<D:activelock>") == 1 and b'<color xmlns="urn:test">red</color>' in answer
    assert _rendered_since(before) == {}          # f2 under its lock: rendered, never kept


def test_listings_changed_just_now_are_read_every_time(worker, monkeypatch):
    (worker.docroot / "dav" / "f.txt").write_bytes(b"f")
    listed = count_calls(monkeypatch, os, "scandir")
    _propfind(worker)
    _propfind(worker)
    assert len(listed) == 2
