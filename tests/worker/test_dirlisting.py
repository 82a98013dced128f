"""mod_dirlisting's kept pages and rows, driven in this process: a worker `Server` on
socket pairs, the loop run by the test, the stat cache's second turned by the test.

A listing is kept while the stat cache's second lasts and made afresh after it (or
every time with the stat cache off); requests whose settings differ never share a
page; a row follows its file's size and mtime.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Iterator

import pytest

from master.configload import load
from server_util import split_responses
from worker.modules import mod_dirlisting
from worker.server import Server
from worker.statcache import CACHE

ATTEMPTS = 5           # a real tick between two requests makes the test try again


def _server(base: Path, extra: str = "") -> Server:
    docroot = base / "www"
    (docroot / "d").mkdir(parents=True)
    (docroot / "d" / "a.txt").write_text("a")
    conf = base / "dl.conf"
    conf.write_text(f'server.document-root = "{docroot}"\n'
                    'server.modules = ("mod_alias", "mod_dirlisting", "mod_staticfile")\n'
                    f'alias.url = ("/other/" => "{docroot}/d/")\n'
                    f'server.errorlog = "{base}/error.log"\n'
                    'dir-listing.activate = "enable"\n'
                    'mimetype.assign = (".txt" => "text/plain")\n' + extra)
    return Server(load(str(conf)), [])


def docroot(server: Server) -> Path:
    return Path(server.config.settings["server.document-root"])


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    worker = _server(tmp_path, '$HTTP["host"] == "utf8.test" '
                               '{ dir-listing.encoding = "utf-8" }\n')
    try:
        yield worker
    finally:
        worker.close_all()
        worker.loop.close()


def listing(server: Server, path: str = "/d/", host: str = "t") -> str:
    """One GET on a connection of its own: the page (the status must be 200)."""
    client, end = socket.socketpair()
    server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
    client.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                   .encode())
    client.setblocking(False)
    received = bytearray()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        server.loop.run_once(0.005)
        try:
            chunk = client.recv(1 << 20)
        except BlockingIOError:
            continue
        if not chunk:
            break
        received += chunk
    client.close()
    [(status, _, body)] = split_responses(bytes(received))
    assert status == 200
    return body.decode()


def kept_pages(server: Server) -> mod_dirlisting.PageCache:
    [module] = [module for module in server.pipeline.modules
                if isinstance(module, mod_dirlisting.Module)]
    return module.pages


def next_second() -> None:
    """What the once-a-second tick does when the second turns."""
    CACHE.tick(CACHE.second + 1)


def test_a_listing_is_kept_within_the_second_and_made_afresh_after_it(server):
    for _ in range(ATTEMPTS):
        next_second()
        second = CACHE.second
        first = listing(server)
        (docroot(server) / "d" / "new.txt").write_text("n")
        again = listing(server)
        if CACHE.second == second:
            break
        (docroot(server) / "d" / "new.txt").unlink()
    assert "a.txt" in first and "new.txt" not in first
    assert again == first
    next_second()
    assert "new.txt" in listing(server)


def test_without_the_stat_cache_every_listing_is_made_afresh(tmp_path):
    server = _server(tmp_path, 'server.stat-cache-engine = "disable"\n')
    try:
        assert "new.txt" not in listing(server)
        (docroot(server) / "d" / "new.txt").write_text("n")
        assert "new.txt" in listing(server)
    finally:
        server.close_all()
        server.loop.close()


def test_requests_with_other_settings_get_their_own_page(server):
    for _ in range(ATTEMPTS):
        next_second()
        second = CACHE.second
        plain, utf8 = listing(server), listing(server, host="utf8.test")
        if CACHE.second == second:
            break
    assert "charset" not in plain
    assert '<meta charset="utf-8">' in utf8
    assert plain.replace("<head>\n", '<head>\n<meta charset="utf-8">\n') == utf8


def test_the_same_directory_under_two_paths_has_each_its_own_title(server):
    """/other/ is an alias of /d/: one directory, two pages."""
    for _ in range(ATTEMPTS):
        next_second()
        second = CACHE.second
        pages = [listing(server, "/d/"), listing(server, "/other/")]
        if CACHE.second == second:
            break
    assert "<title>Index of /d/</title>" in pages[0]
    assert "<title>Index of /other/</title>" in pages[1]
    assert pages[0].replace("/d/", "/other/") == pages[1]


def test_a_row_follows_its_files_size_and_mtime(server):
    path = docroot(server) / "d" / "a.txt"
    os.utime(path, (1_600_000_000, 1_600_000_000))
    next_second()
    before = listing(server)
    path.write_text("a" * 5000)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    next_second()
    after = listing(server)
    assert "0.1K" in before and "0.1K" not in after
    assert "4.9K" in after
    stamp = time.strftime("%Y-%b-%d %H:%M:%S", time.localtime(1_700_000_000))
    assert stamp in after and stamp not in before


def test_kept_pages_stay_within_their_bounds(server):
    kept_pages(server).max_pages = 2
    for number in range(4):
        (docroot(server) / "d" / f"s{number}").mkdir()
        listing(server, f"/d/s{number}/")
    assert 1 <= len(kept_pages(server).pages) <= 2


@pytest.mark.parametrize("name, quoted", [
    ("plain-name_1.~txt", "plain-name_1.~txt"),
    ("a b", "a%20b"),
    ("ü.txt", "%C3%BC.txt"),
    (os.fsdecode(b"\xff.txt"), "%FF.txt"),
    ("q?#&.txt", "q%3F%23%26.txt"),
])
def test_links_are_percent_encoded_only_where_needed(name, quoted):
    assert mod_dirlisting.href(name) == quoted


@pytest.mark.parametrize("text, escaped", [
    ("plain text", "plain text"),
    ("<a href=\"x\">&'", "&#x3C;a href=&#x22;x&#x22;&#x3E;&#x26;&#x27;"),
])
def test_text_is_escaped_only_where_needed(text, escaped):
    assert mod_dirlisting.html_escape(text) == escaped


def test_an_idle_worker_keeps_no_page(server):
    listing(server)
    pages = kept_pages(server)
    assert pages.pages
    server.pipeline.trigger(time.time())       # the once-a-second tick
    assert not pages.pages and pages.size == 0
