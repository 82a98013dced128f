"""What the static path keeps per file: the header fields and the small files' bytes."""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from pathlib import Path

from worker import static


def values(**changes: object) -> dict:
    base = {"static-file.etags": True, "etag.use-inode": True, "etag.use-size": True,
            "etag.use-mtime": True, "mimetype.use-xattr": False,
            "mimetype.assign": ((".png", "image/png"), (".txt", "text/plain"))}
    base.update(changes)
    return base


def test_file_fields_follow_the_file_and_the_settings(tmp_path: Path):
    path = tmp_path / "a.png"
    path.write_bytes(b"x" * 100)
    settings = values()
    etag, content_type, fields = static.file_fields(str(path), os.stat(path), settings, None)
    assert content_type == "image/png"
    assert fields == (("Content-Type", "image/png"), ("ETag", etag),
                      ("Last-Modified", static.last_modified(os.stat(path).st_mtime)))
    os.utime(path, ns=(0, 10**18))                    # the file changes: so does its ETag
    changed, _, _ = static.file_fields(str(path), os.stat(path), settings, None)
    assert changed != etag
    other = values(**{"mimetype.assign": ((".png", "image/x-png"),)})
    assert static.file_fields(str(path), os.stat(path), other, None)[1] == "image/x-png"
    no_etags = values(**{"static-file.etags": False})
    assert [name for name, _ in static.file_fields(str(path), os.stat(path), no_etags,
                                                   None)[2]] == ["Content-Type",
                                                                 "Last-Modified"]


def test_a_type_chosen_by_the_caller_is_never_kept(tmp_path: Path):
    path = tmp_path / "b.txt"
    path.write_bytes(b"text")
    settings = values()
    chosen = static.file_fields(str(path), os.stat(path), settings, "text/x-chosen")
    assert chosen[1] == "text/x-chosen"
    assert static.file_fields(str(path), os.stat(path), settings, None)[1] == "text/plain"


def test_a_kept_small_file_carries_its_fields_and_a_new_version_starts_without(
        tmp_path: Path):
    path = tmp_path / "k.png"
    path.write_bytes(b"x" * 10)
    cache, settings = static.SmallFiles(), values()
    kept = cache.put(str(path), os.stat(path), b"x" * 10)
    assert kept is not None and kept.fields is None
    etag, _, fields = static.file_fields(str(path), kept.st, settings, None, kept)
    assert kept.fields == (settings, etag, "image/png", fields)
    assert static.file_fields(str(path), kept.st, settings, None, kept)[2] is fields
    assert static.file_fields(str(path), kept.st, values(), None, kept)[2] is not fields
    path.write_bytes(b"y" * 20)                      # a new version: a new record
    newer = cache.put(str(path), os.stat(path), b"y" * 20)
    assert newer is not None and newer.fields is None
    assert cache.get(str(path), kept.st) is None     # the old stat names no kept bytes
    assert static.file_fields(str(path), newer.st, settings, None, newer)[0] != etag


def test_small_files_drop_the_oldest_over_their_budget(tmp_path: Path):
    cache = static.SmallFiles(max_bytes=250)
    st = os.stat(tmp_path)
    for name in "abc":
        cache.put(name, st, name.encode() * 100)
    assert list(cache.entries) == ["b", "c"] and cache.size == 200
    cache.put("b", st, b"B" * 100)                   # read again: now the newest
    cache.put("d", st, b"d" * 100)
    assert list(cache.entries) == ["b", "d"] and cache.size == 200
    cache.put("huge", st, b"h" * 300)                # more than the whole budget
    assert list(cache.entries) == ["b", "d"] and cache.size == 200


def test_a_full_answer_table_keeps_what_it_holds_until_the_tick(tmp_path: Path,
                                                                 monkeypatch):
    """Requests spread over more files than the table holds: the first answers kept
    stay (replayed), later ones are not kept; emptying and refilling would keep
    answers that are dropped before they repeat."""
    from loadtests.bench import lighttpd_style_config, make_docroot
    from master.configload import load
    from worker import answercache
    from worker.server import Server

    monkeypatch.setattr(answercache, "MAX_ENTRIES", 4)
    docroot = make_docroot(tmp_path)
    for number in range(8):
        (docroot / f"f{number}.txt").write_bytes(b"%d" % number)
    server = Server(load(str(lighttpd_style_config(docroot, 8080, tmp_path, False, "m"))), [])
    client, end = socket.socketpair()
    server.add_connection(end, "127.0.0.1", "127.0.0.1:8080")
    try:
        for _ in range(2):
            for number in range(8):
                client.sendall(b"GET /f%d.txt HTTP/1.1\r\nHost: t\r\n\r\n" % number)
                deadline = time.monotonic() + 5
                data = b""
                while not data.endswith(b"%d" % number):
                    assert time.monotonic() < deadline
                    server.loop.run_once(0.01)
                    try:
                        data += client.recv(65536, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        pass
        kept = sorted(key[0] for key in server.pipeline.answers.entries)
        assert kept == [b"/f0.txt", b"/f1.txt", b"/f2.txt", b"/f3.txt"]
    finally:
        client.close()
        server.close_all()


def test_a_small_file_changed_just_now_is_read_again(tmp_path: Path):
    """Two writes within a tick of the kernel's clock leave one stat: a file changed
    that recently is not kept, so the second write is served."""
    path = tmp_path / "c.txt"
    path.write_bytes(b"one")
    first = os.stat(path)
    assert static._open_body(str(path), first)[1] == b"one"
    path.write_bytes(b"two")
    os.utime(path, ns=(first.st_atime_ns, first.st_mtime_ns))
    second = os.stat(path)
    assert (second.st_ino, second.st_size, second.st_mtime_ns) == \
        (first.st_ino, first.st_size, first.st_mtime_ns)
    assert static._open_body(str(path), second)[1] == b"two"


def test_only_file_answers_have_their_fields_remembered():
    """A backend's fields (a cookie per answer) are rendered and forgotten; a file's
    are remembered, since its next answers carry the same."""
    from server_util import detached_request
    from worker import http

    def render(fields, replayable):
        request = detached_request()
        response = request.response
        response.status, response.headers, response.length = 200, fields, 1
        response.replayable = replayable
        return http.render_start(request)

    before = len(http._rendered_fields)
    assert render([("Set-Cookie", "id=unique-1")], False).endswith(
        b"Set-Cookie: id=unique-1\r\nContent-Length: 1\r\n")
    assert len(http._rendered_fields) == before
    render([("Content-Type", "image/x-remembered")], True)
    assert (("Content-Type", "image/x-remembered"),) in http._rendered_fields


def test_the_etag_hashes_the_values_bytes_as_laid_out_in_memory():
    """The dekhash over the packed 64-bit values (what lighttpd hashes), for values
    small, large (an inode beyond 2**62) and before 1970 (a negative mtime)."""
    def reference(*values: int) -> str:
        data = struct.pack(f"={len(values)}q", *[v - (1 << 64) if v >= 1 << 63 else v
                                                 for v in values])
        h = len(data)
        for byte in data:
            h = ((h << 5) ^ (h >> 27) ^ byte) & 0xFFFFFFFF
        return f'"{h}"'

    chooser = random.Random(7)
    for ino, size, mtime_ns in [(1, 0, 0), (2**64 - 1, 2**40, -1), (2**62 + 3, 5, -10**18)] + \
            [(chooser.getrandbits(64), chooser.getrandbits(40), chooser.getrandbits(62))
             for _ in range(200)]:
        seconds, nanos = divmod(mtime_ns, 10**9)
        assert static.etag_for(ino, size, mtime_ns, True, True, True) == \
            reference(ino, size, seconds % 2**64, nanos)
        assert static.etag_for(ino, size, mtime_ns, False, True, False) == reference(size)
    assert static.etag_for(1, 2, 3, False, False, False) == ""


def test_status_lines_are_made_once_for_each_version_and_past_999_each_time():
    from server_util import detached_request
    from worker import http

    def head(status, version):
        request = detached_request()
        request.version = version
        response = request.response
        response.status, response.headers, response.length = status, [], 0
        return http.render_start(request)

    assert head(404, "1.1").startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert head(404, "1.0").startswith(b"HTTP/1.0 404 Not Found\r\n")
    assert http._STATUS_LINES_11[404] == b"HTTP/1.1 404 Not Found\r\n"       # kept
    assert http._STATUS_LINES_10[404] == b"HTTP/1.0 404 Not Found\r\n"
    assert head(204, "1.1") == b"HTTP/1.1 204 No Content\r\n"        # no Content-Length
    assert head(304, "1.1") == b"HTTP/1.1 304 Not Modified\r\n"
    assert head(1000, "1.1").startswith(b"HTTP/1.1 1000 ")
    assert len(http._STATUS_LINES_11) == 1000
