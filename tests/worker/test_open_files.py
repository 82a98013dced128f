"""A large static file's fd is kept open until the stat cache's next tick (static
OpenFiles): asked for again within the second, it costs no open; the answers share it;
it closes once the tick dropped it and its last answer is out.  Only a settled file
is kept (worker/settled.py), and only with the stat cache on.

The worker runs in this process (a socketpair per exchange), so that its opens and
fds can be counted; its files count as settled where a test says so.
"""

from __future__ import annotations

import math
import os

import pytest

from master.configload import load
from server_util import config_text, open_fds, split_responses
from test_held_requests import exchange
from worker import settled as settled_module
from worker.server import Server
from worker.static import OPEN_FILES, SMALL_FILE

LARGE = bytes(range(256)) * 256          # 64 KiB: more than a small file
SETTLED_ANSWERS = 4


def _server(tmp_path, engine: str = "simple") -> Server:
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "large.bin").write_bytes(LARGE)
    conf = tmp_path / "open.conf"
    conf.write_text(config_text(docroot, f'server.stat-cache-engine = "{engine}"',
                                modules=("mod_staticfile",)))
    return Server(load(str(conf)), [])


@pytest.fixture()
def opens(monkeypatch):
    """The paths os.open is asked for, as they are asked (the fd table calls no
    other open)."""
    asked: list[str] = []
    open_file = os.open

    def counted_open(path, flags, *args, **kwargs):
        asked.append(os.path.basename(str(path)))
        return open_file(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", counted_open)
    return asked


@pytest.fixture()
def settled_files(monkeypatch):
    monkeypatch.setattr(settled_module, "SETTLED", -math.inf)


def _bodies(server: Server, requests: list[str]) -> list[bytes]:
    """The body of each answer, the requests pipelined on one connection (each a
    request line); all of them 200."""
    data = "".join(f"{line}\r\nHost: t\r\n{'Connection: close' if n == len(requests) - 1 else ''}"
                   f"\r\n\r\n" for n, line in enumerate(requests)).encode()
    answers = split_responses(exchange(server, data))
    assert [status for status, _, _ in answers] == [200] * len(requests)
    return [body for _, _, body in answers]


def _close(server: Server) -> None:
    server.pipeline.trigger(server.loop.now)
    server.close_all()
    server.loop.close()


def test_a_settled_large_file_is_opened_once_for_its_answers(tmp_path, opens, settled_files):
    server = _server(tmp_path)
    try:
        assert _bodies(server, [f"GET /large.bin?{n} HTTP/1.1"
                                for n in range(SETTLED_ANSWERS)]) == [LARGE] * SETTLED_ANSWERS
        assert opens.count("large.bin") == 1
    finally:
        _close(server)


def test_ranges_head_and_304_share_the_kept_file(tmp_path, opens, settled_files):
    server = _server(tmp_path)
    try:
        data = (b"GET /large.bin HTTP/1.1\r\nHost: t\r\n\r\n"
                b"HEAD /large.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        full, head = split_responses(exchange(server, data))
        assert full[2] == LARGE and head[1]["content-length"] == str(len(LARGE))
        data = (f"GET /large.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=10-19\r\n\r\n"
                f"GET /large.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0,-1\r\n\r\n"
                f"GET /large.bin HTTP/1.1\r\nHost: t\r\nIf-None-Match: {full[1]['etag']}"
                f"\r\nConnection: close\r\n\r\n").encode()
        one, two, unchanged = split_responses(exchange(server, data))
        assert (one[0], one[2]) == (206, LARGE[10:20])
        assert two[0] == 206 and b"\r\n\r\n\x00\r\n--" in two[2] and \
            b"\r\n\r\n\xff\r\n--" in two[2]          # the first byte and the last
        assert unchanged[0] == 304
        assert opens.count("large.bin") == 1
    finally:
        _close(server)


def test_the_kept_file_closes_after_the_tick_and_its_last_answer(tmp_path, settled_files):
    server = _server(tmp_path)
    try:
        before = open_fds()
        _bodies(server, ["GET /large.bin HTTP/1.1"] * 2)
        kept = open_fds() - before
        assert len(kept) == 1
        assert os.readlink(f"/proc/self/fd/{kept.pop()}").endswith("/large.bin")
        server.pipeline.trigger(server.loop.now)
        assert open_fds() - before == set()
        assert not OPEN_FILES.entries
    finally:
        _close(server)


def test_a_file_replaced_is_served_anew_after_the_tick(tmp_path, opens, settled_files):
    server = _server(tmp_path)
    try:
        assert _bodies(server, ["GET /large.bin HTTP/1.1"]) == [LARGE]
        replacement = tmp_path / "www" / "new.bin"
        replacement.write_bytes(LARGE[::-1] + b"more")
        replacement.rename(tmp_path / "www" / "large.bin")
        server.pipeline.trigger(server.loop.now)
        assert _bodies(server, ["GET /large.bin HTTP/1.1"]) == [LARGE[::-1] + b"more"]
        assert opens.count("large.bin") == 2
    finally:
        _close(server)


@pytest.mark.parametrize("engine, settled", [("simple", False), ("disable", True)])
def test_nothing_is_kept_open_for_a_file_not_settled_or_without_the_stat_cache(
        tmp_path, monkeypatch, opens, engine, settled):
    if settled:
        monkeypatch.setattr(settled_module, "SETTLED", -math.inf)
    server = _server(tmp_path, engine)
    try:
        before = open_fds()
        assert _bodies(server, ["GET /large.bin HTTP/1.1"] * 3) == [LARGE] * 3
        assert opens.count("large.bin") == 3
        assert open_fds() - before == set() and not OPEN_FILES.entries
    finally:
        _close(server)


def test_the_table_holds_at_most_its_limit_of_files(tmp_path, settled_files):
    server = _server(tmp_path)
    docroot = tmp_path / "www"
    count = OPEN_FILES.MAX_FILES + 3
    for n in range(count):
        (docroot / f"f{n}.bin").write_bytes(LARGE[:SMALL_FILE + 1 + n])
    try:
        bodies = _bodies(server, [f"GET /f{n}.bin HTTP/1.1" for n in range(count)])
        assert [len(body) for body in bodies] == [SMALL_FILE + 1 + n for n in range(count)]
        assert 0 < len(OPEN_FILES.entries) <= OPEN_FILES.MAX_FILES
    finally:
        _close(server)
