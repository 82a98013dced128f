"""File-system side of static serving through a real worker: the stat cache,
follow-symlink, force-lowercase-filenames, error documents and handlers, xattr types,
and files that change under a response."""

from __future__ import annotations

import errno
import os
import socket
import time

import pytest

from server_util import read_until_closed
from sites import start_worker
from worker.static import assigned_type, mime_type
from worker.statcache import StatCache

PATH_EXTRA = """
index-file.names = ("index.html")
$HTTP["url"] =^ "/sub/" {{ server.follow-symlink = "disable" }}
$HTTP["url"] =^ "/listed/" {{ server.errorfile-prefix = "{docroot}/errors/status-" }}
$HTTP["url"] =^ "/soft/" {{ server.error-handler-404 = "/handler.html" }}
$HTTP["url"] =^ "/hard/" {{ server.error-handler = "/handler.html" }}
{more}
"""


@pytest.fixture(scope="module")
def paths_site(tmp_path_factory):
    base = tmp_path_factory.mktemp("paths")
    docroot = base / "www"
    extra = PATH_EXTRA.format(docroot=docroot, more="")
    worker = start_worker(base, extra)
    (docroot / "errors").mkdir()
    (docroot / "errors" / "status-404.html").write_text("<p>our own 404</p>\n")
    (docroot / "handler.html").write_text("handled\n")
    (docroot / "sub" / "plain.txt").write_text("plain\n")
    (docroot / "sub" / "link.txt").symlink_to("plain.txt")
    (docroot / "sub" / "dirlink").symlink_to("../listed")
    (docroot / "outlink").symlink_to(base / "outside")
    with worker:
        yield worker


def test_symlinks_refused_when_follow_symlink_is_off(paths_site):
    assert paths_site.get("/sub/plain.txt")[0] == 200
    assert paths_site.get("/sub/link.txt")[0] == 403
    assert paths_site.get("/sub/dirlink/a&b\".txt")[0] == 403


def test_symlink_out_of_the_docroot_is_followed_by_default(paths_site):
    status, _, body = paths_site.get("/outlink/passwd")
    assert status == 200 and body == b"root:x:0:0\n"     # as lighttpd: it is config


def test_errorfile_prefix_gives_the_page_with_the_status(paths_site):
    status, headers, body = paths_site.get("/listed/missing")
    assert status == 404 and body == b"<p>our own 404</p>\n"
    assert headers["Content-Type"] == "text/html"
    status, _, body = paths_site.get("/index.html/../missing")
    assert status == 404 and b"<title>404 Not Found</title>" in body


def test_error_handler_404_is_a_soft_404_like_lighttpd(paths_site):
    status, _, body = paths_site.get("/soft/missing")
    assert status == 200 and body == b"handled\n"
    status, _, body = paths_site.request("HEAD", "/soft/missing")
    assert status == 200 and body == b""


def test_error_handler_keeps_the_error_status(paths_site):
    status, headers, body = paths_site.get("/hard/missing", Range="bytes=0-1")
    assert status == 404 and body == b"handled\n"
    assert "Accept-Ranges" not in headers
    # a HEAD gets the handler's page too (its length), not the core's error page
    status, headers, body = paths_site.request("HEAD", "/hard/missing")
    assert (status, headers["Content-Length"], body) == (404, "8", b"")


def test_force_lowercase_filenames(tmp_path):
    with start_worker(tmp_path, "server.force-lowercase-filenames = \"enable\"") as worker:
        status, _, body = worker.get("/INDEX.Html")
        assert status == 200 and body == b"hello from pylighttpd\n"


def test_mimetype_from_xattr(tmp_path):
    extra = 'mimetype.use-xattr = "enable"'
    with start_worker(tmp_path, extra) as worker:
        path = worker.docroot / "index.html"
        try:
            os.setxattr(path, "user.Content-Type", b"text/x-from-xattr")
        except OSError:
            pytest.skip("no user xattrs on this file system")
        assert worker.get("/index.html")[1]["Content-Type"] == "text/x-from-xattr"
        assert worker.get("/sub/index.html")[1]["Content-Type"] == "text/html"


# ------------------------------------------------------------- stat cache
@pytest.mark.parametrize("assign, name, expected", [
    # under 16 keys: the first, in config order, that ends the name (any case)
    ((("", "application/octet-stream"), (".txt", "text/plain")), "/d/a.txt",
     "application/octet-stream"),
    (((".gz", "application/gzip"), (".tar.gz", "application/x-tgz")), "/x.tar.gz",
     "application/gzip"),
    (((".txt", "text/plain"),), "/d/B.TXT", "text/plain"),
    ((("noext", "text/x-noext"),), "/d/also-noext", "text/x-noext"),
    ((), "/d/a.html", "application/octet-stream"),   # nothing assigned
    (((".txt", "text/plain"),), "/d/a.html", "application/octet-stream"),
    # 16 and more: the whole name, then the longest extension, then ""
    (((".gz", "application/gzip"), (".tar.gz", "application/x-tgz"),
      *((f".e{i}", "x/y") for i in range(14)), ("", "text/default")), "/x.tar.gz",
     "application/x-tgz"),
    ((("", "text/default"), *((f".e{i}", "x/y") for i in range(15)),
      (".txt", "text/plain")), "/a.TXT", "text/plain"),
])
def test_mimetype_assign_is_read_as_lighttpd_reads_it(assign, name, expected):
    assert mime_type(assign, name) == expected


def test_a_name_no_key_ends_is_assigned_nothing():
    assert assigned_type(((".txt", "text/plain"),), "/d/a.html") is None
    assert assigned_type((("", "text/x-default"),), "/d/a.html") == "text/x-default"


def test_an_errorfile_of_no_assigned_type_has_no_content_type(tmp_path):
    (tmp_path / "404.html").write_text("<p>gone</p>\n")
    extra = f'server.errorfile-prefix = "{tmp_path}/"\nmimetype.assign := (".txt" => "text/plain")'
    with start_worker(tmp_path, extra) as worker:
        status, headers, body = worker.get("/missing")
    assert (status, body, headers.get("Content-Type")) == (404, b"<p>gone</p>\n", None)


def test_stat_cache_entries_live_until_the_tick(tmp_path):
    cache = StatCache()
    path = tmp_path / "f"
    path.write_text("one")
    assert cache.stat(str(path)).st_size == 3
    path.write_text("three")
    assert cache.stat(str(path)).st_size == 3          # cached
    cache.tick(time.time() + 5)
    assert cache.stat(str(path)).st_size == 5
    cache.configure("disable")
    path.write_text("x")
    assert cache.stat(str(path)).st_size == 1 and not cache.entries


@pytest.mark.parametrize("engine", ["simple", "disable"])
def test_a_path_found_missing_is_asked_again_and_found_once_created(tmp_path, engine):
    cache = StatCache()
    cache.configure(engine)
    path = str(tmp_path / "later")
    assert cache.lookup(path) == errno.ENOENT
    assert cache.lookup(path) == errno.ENOENT            # asked again, still absent
    assert cache.missing == ({path} if engine == "simple" else set())
    (tmp_path / "later").write_text("here")
    assert cache.lookup(path).st_size == 4               # within the same second
    assert cache.lookup(str(tmp_path / "later" / "x")) == errno.ENOTDIR
    cache.tick(time.time() + 5)
    assert not cache.missing


def test_a_tree_is_forgotten_whole_and_nothing_beside_it(tmp_path):
    cache = StatCache()
    for name in ("d", "d/sub", "dx"):
        (tmp_path / name).mkdir()
    for name in ("d/a", "d/sub/b", "dx/c"):
        (tmp_path / name).write_text("x")
    kept = [str(tmp_path / name) for name in ("d", "d/a", "d/sub", "d/sub/b", "dx", "dx/c")]
    for path in kept:
        cache.stat(path)
    assert cache.contains_symlink(str(tmp_path / "d" / "a")) is False
    cache.invalidate_tree(str(tmp_path / "d") + "/")
    assert sorted(cache.entries) == [str(tmp_path / "dx"), str(tmp_path / "dx" / "c")]
    assert not any(name.startswith(str(tmp_path / "d") + "/") for name in cache.links)


def test_stat_cache_symlink_walk(tmp_path):
    cache = StatCache()
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to(tmp_path / "d")
    assert not cache.contains_symlink(str(tmp_path / "d" / "x"))
    assert cache.contains_symlink(str(tmp_path / "l" / "x"))


@pytest.mark.parametrize("engine", ["simple", "disable"])
def test_changed_file_is_served_consistently(tmp_path, engine):
    with start_worker(tmp_path, f'server.stat-cache-engine = "{engine}"') as worker:
        path = worker.docroot / "index.html"
        assert worker.get("/index.html")[2] == b"hello from pylighttpd\n"
        old = path.read_bytes()
        path.write_text("a longer body than before, within the cache second\n")
        status, headers, body = worker.get("/index.html")
        assert status == 200 and int(headers["Content-Length"]) == len(body)
        if engine == "disable":
            assert body == path.read_bytes()
        else:   # "simple" may answer from the snapshot of this second, whole and coherent
            assert body in (old, path.read_bytes())
            time.sleep(2.1)     # the once-a-second tick has dropped the cached stat
            assert worker.get("/index.html")[2] == path.read_bytes()
        path.unlink()
        time.sleep(0 if engine == "disable" else 2.1)
        assert worker.get("/index.html")[0] == 404


def test_file_shrinking_mid_response_closes_the_connection(tmp_path):
    with start_worker(tmp_path) as worker:
        path = worker.docroot / "huge.bin"
        size = 16 << 20
        with open(path, "wb") as handle:
            handle.truncate(size)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", worker.port))
        with sock:
            sock.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: t\r\n\r\n")
            data = sock.recv(8192)
            time.sleep(0.2)
            os.truncate(path, 1000)
            data += read_until_closed(sock)      # must end: the worker closes
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"Content-Length: %d" % size in head
        assert len(body) < size
        assert worker.get("/index.html")[0] == 200     # and the worker is fine
