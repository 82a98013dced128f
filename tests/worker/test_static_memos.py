"""What the static path keeps per file: the header fields and the small files' bytes."""

from __future__ import annotations

import os
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


def test_small_files_drop_the_oldest_over_their_budget(tmp_path: Path, monkeypatch):
    cache = static.SmallFiles()
    monkeypatch.setattr(cache, "MAX_BYTES", 250)
    st = os.stat(tmp_path)
    for name in "abc":
        cache.put(name, st, name.encode() * 100)
    assert list(cache.entries) == ["b", "c"] and cache.size == 200
    cache.put("b", st, b"B" * 100)                   # read again: now the newest
    cache.put("d", st, b"d" * 100)
    assert list(cache.entries) == ["b", "d"] and cache.size == 200
    cache.put("huge", st, b"h" * 300)                # more than the whole budget
    assert list(cache.entries) == ["b", "d"] and cache.size == 200
