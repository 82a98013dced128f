"""mod_deflate's work saved on repeated static files: a file is compressed (or read
from deflate.cache-dir) once a second per worker, the answer cache replays a
compressed answer from memory or, from the cache dir, by sendfile, and gzip bodies
of a known size are coded with the smallest window that gives the same bytes.

The worker runs in this process (a socketpair per exchange), so that what mod_deflate
does can be counted; the clock is the worker's own once-a-second tick.
"""

from __future__ import annotations

import gzip
import math
import os
import random
import zlib

import pytest

from master.configload import load
from server_util import config_text, open_fds
from test_held_requests import exchange
from worker import compress
from worker.compress import gzip_window, make_encoder, parse_params
from worker.modules import mod_deflate
from worker.server import Server
from worker import settled as settled_module
from worker.settled import SETTLED
from worker.spool import SPILL_AT
from worker.statcache import CACHE
from worker.static import SMALL_FILE

WORDS = "the of and to in is that it for on was with as by at from this be".split() + \
    [f"w{n}" for n in range(400)]
# prose-like html that compresses about 3:1: 100 KiB give ~35 KiB, more than a small
# file (static.SMALL_FILE) and less than SPILL_AT
PAGE = " ".join(random.Random(1).choices(WORDS, k=30000)).encode()[:100 * 1024]
# hex compresses about 2:1: ~100 KiB coded, more than SPILL_AT (a file range is sent)
BIG = os.urandom(100_000).hex().encode()


@pytest.fixture()
def worker(tmp_path, monkeypatch):
    """A worker with mod_deflate (gzip; /cached/ with a cache dir), and the counts of
    the compressions it made, of the cache files it opened and of the ticks it had.
    Its files count as settled (worker/settled.py), as if written long ago.

    mod_deflate may be compiled (shared/hotpath.py), and a compiled module calls its
    own functions directly: what is counted are the calls it makes into code that is
    not compiled, looked up as they are made (an encoder for each compression, os.open
    of a cache file, the load average read on each tick)."""
    counts = {"compressed": 0, "opened": 0, "ticks": 0}
    make_encoder = mod_deflate.make_encoder
    open_file = os.open
    getloadavg = os.getloadavg
    cache_dir = str(tmp_path / "cache")

    def counted_encoder(*args, **kwargs):
        counts["compressed"] += 1
        return make_encoder(*args, **kwargs)

    def counted_open(path, flags, *args, **kwargs):
        if str(path).startswith(cache_dir) and not flags & os.O_CREAT:  # not a temp file
            counts["opened"] += 1
        return open_file(path, flags, *args, **kwargs)

    def counted_loadavg():
        counts["ticks"] += 1
        return getloadavg()

    monkeypatch.setattr(mod_deflate, "make_encoder", counted_encoder)
    monkeypatch.setattr(os, "open", counted_open)
    monkeypatch.setattr(os, "getloadavg", counted_loadavg)
    monkeypatch.setattr(settled_module, "SETTLED", -math.inf)
    docroot = tmp_path / "www"
    (docroot / "cached").mkdir(parents=True)
    (docroot / "page.html").write_bytes(PAGE)
    (docroot / "cached" / "page.html").write_bytes(PAGE)
    (docroot / "big.txt").write_bytes(BIG)
    (docroot / "cached" / "big.txt").write_bytes(BIG)
    conf = tmp_path / "kept.conf"
    conf.write_text(config_text(docroot, f"""
deflate.mimetypes = ("text/")
deflate.allowed-encodings = ("gzip")
$HTTP["url"] =^ "/cached/" {{ deflate.cache-dir = "{tmp_path}/cache/" }}
$HTTP["querystring"] =~ "^level" {{ deflate.compression-level = 1 }}
$HTTP["querystring"] =~ "^other" {{ server.tag = "other" }}
""", modules=("mod_deflate", "mod_staticfile")))
    server = Server(load(str(conf)), [])
    try:
        yield server, counts, tmp_path
    finally:
        server.close_all()
        server.loop.close()


def _answers(server: Server, targets: list[str]) -> list[tuple[bytes, bytes]]:
    """(head, body) of each gzip answer, the requests pipelined on one connection."""
    data = "".join(f"GET {target} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n"
                   f"{'Connection: close' if n == len(targets) - 1 else ''}\r\n\r\n"
                   for n, target in enumerate(targets)).encode()
    received = exchange(server, data)
    answers = []
    while received:
        head, _, rest = received.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        answers.append((head, rest[:length]))
        received = rest[length:]
    return answers


@pytest.mark.parametrize("path, content", [("/page.html", PAGE), ("/cached/page.html", PAGE),
                                           ("/big.txt", BIG), ("/cached/big.txt", BIG)])
def test_a_file_is_compressed_once_a_second_whatever_the_query(worker, path, content):
    server, counts, _ = worker
    answers = _answers(server, [f"{path}?{n}" for n in range(8)])
    assert [gzip.decompress(body) for _, body in answers] == [content] * 8
    assert all(b"\r\nContent-Encoding: gzip\r\n" in head for head, _ in answers)
    assert len({body for _, body in answers}) == 1
    assert counts["compressed"] <= 1 + counts["ticks"]
    assert counts["opened"] <= (1 + counts["ticks"] if path.startswith("/cached/") else 0)


def test_a_file_changed_in_the_last_seconds_is_not_kept(worker, monkeypatch):
    """Two changes within one tick of the kernel's clock leave one ETag: a variant of
    a file that has not settled is made again for each request."""
    server, counts, _ = worker
    monkeypatch.setattr(settled_module, "SETTLED", SETTLED)
    answers = _answers(server, [f"/page.html?{n}" for n in range(4)])
    assert [gzip.decompress(body) for _, body in answers] == [PAGE] * 4
    assert counts["compressed"] == 4


def test_each_block_keeps_its_own_variant_of_a_file(worker):
    """Blocks with other settings (another level), or only another dict of them, keep
    a variant each: requests alternating between them compress nothing again."""
    server, counts, _ = worker
    answers = _answers(server, [f"/page.html?{query}{n}" for n in range(3)
                                for query in ("a", "level", "other")])
    assert [gzip.decompress(body) for _, body in answers] == [PAGE] * 9
    assert answers[0][1] != answers[1][1] == answers[4][1]     # level 1: other bytes
    assert counts["compressed"] <= 3 * (1 + counts["ticks"])


def test_a_variant_of_a_changed_file_replaces_the_older_one(worker, tmp_path):
    """The file changed within the second (its ETag other, a fresh stat shows it): the
    new variant is kept in place of the older one, whose spool file closes at once."""
    server, counts, _ = worker
    before = open_fds()
    first = _answers(server, ["/big.txt?a"])[0][1]
    changed = BIG.replace(b"a", b"b")
    (tmp_path / "www" / "big.txt").write_bytes(changed)
    os.utime(tmp_path / "www" / "big.txt", (1, 1))      # another ETag for sure
    CACHE.clear()                                       # as if the second were over
    second = _answers(server, ["/big.txt?b"])[0][1]
    assert (gzip.decompress(first), gzip.decompress(second)) == (BIG, changed)
    assert counts["compressed"] == 2
    assert len(open_fds() - before) == 2 or counts["ticks"]    # the file and its spool
    server.pipeline.trigger(server.loop.now)
    assert open_fds() - before == set()


def test_a_kept_file_is_closed_after_the_tick_and_its_last_answer(worker):
    """The cache file and the spool of a large variant stay open while kept (one fd
    each), as do the two static files they were made of (static.OpenFiles), and close
    once the tick dropped them and no answer sends them any more."""
    server, counts, _ = worker
    before = open_fds()
    _answers(server, ["/cached/big.txt?a", "/big.txt?a", "/cached/big.txt?b", "/big.txt?b"])
    assert len(open_fds() - before) == 4 or counts["ticks"]    # a tick may have come
    server.pipeline.trigger(server.loop.now)
    assert open_fds() - before == set()


def test_the_kept_variants_are_dropped_with_each_tick(worker):
    server, counts, _ = worker
    _answers(server, ["/page.html?a"])
    server.pipeline.trigger(server.loop.now)
    _answers(server, ["/page.html?b"])
    assert counts["compressed"] == 2


def _kept_three_times(server: Server, counts: dict, target: str) -> list:
    """Three identical requests on a connection, again if a tick emptied the answer
    cache meanwhile: their answers."""
    for _ in range(3):
        ticks = counts["ticks"]
        answers = _answers(server, [target] * 3)
        if counts["ticks"] == ticks:
            return answers
    raise AssertionError("a tick each time")


def test_a_cache_dir_answer_is_replayed_by_sendfile_from_the_answer_cache(worker,
                                                                          monkeypatch):
    """The compressed file (~35 KiB: more than a small file's 16) is kept as a file
    range, and the third identical request is answered from the answer cache: the
    cache file's bytes, sent by sendfile."""
    server, counts, base = worker
    sent_files = []
    sendfile = os.sendfile

    def counted_sendfile(out_fd, in_fd, offset, count):
        sent_files.append(os.readlink(f"/proc/self/fd/{in_fd}"))
        return sendfile(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", counted_sendfile)
    answers = _kept_three_times(server, counts, "/cached/page.html")
    kept = list(server.pipeline.answers.entries.values())
    assert len(kept) == 1 and kept[0].body == b"" and kept[0].file is not None
    cached = [path for path in (base / "cache").rglob("*") if path.is_file()]
    assert len(cached) == 1 and SMALL_FILE < cached[0].stat().st_size <= SPILL_AT
    assert {body for _, body in answers} == {cached[0].read_bytes()}
    assert sent_files[-3:] == [str(cached[0])] * 3


def test_a_replayed_cache_file_is_closed_after_the_tick(worker):
    """The kept variant and the answer cache each hold the cache file's fd until the
    tick (and static.OpenFiles the page's own): then they close (no answer sends them
    any more)."""
    server, counts, _ = worker
    before = open_fds()
    _kept_three_times(server, counts, "/cached/page.html")
    assert len(open_fds() - before) == 2
    server.pipeline.trigger(server.loop.now)
    assert open_fds() - before == set()


def test_a_file_changed_after_a_tick_is_compressed_anew(worker):
    server, _, tmp_path = worker
    changed = PAGE.replace(b" the ", b" THE ")
    first = _answers(server, ["/page.html?a"])[0][1]
    (tmp_path / "www" / "page.html").write_bytes(changed)
    os.utime(tmp_path / "www" / "page.html", (1, 1))     # another ETag for sure
    server.pipeline.trigger(server.loop.now)
    second = _answers(server, ["/page.html?b"])[0][1]
    assert (gzip.decompress(first), gzip.decompress(second)) == (PAGE, changed)


def test_many_accept_encoding_values_are_remembered_within_a_bound(worker):
    server, _, _ = worker
    module = next(m for m in server.pipeline.modules if isinstance(m, mod_deflate.Module))
    allowed = mod_deflate.parse_allowed(("gzip",))
    for n in range(mod_deflate.MAX_CODINGS * 2 + 1):
        assert module._chosen_coding(f"gzip;q=0.{n % 9 + 1}, br{n}", allowed) == "gzip"
    assert 0 < len(module.codings) <= mod_deflate.MAX_CODINGS


# ------------------------------------------------------------ the gzip window
def test_the_gzip_window_is_the_smallest_that_reaches_the_whole_body():
    assert [gzip_window(15, size) for size in (0, 250, 1024, 1786, 1787, 32506)] == \
        [9, 9, 11, 11, 12, 15]
    assert (gzip_window(15, None), gzip_window(15, 10 ** 6), gzip_window(10, 5000)) == \
        (15, 15, 10)


@pytest.mark.skipif("zlib-ng" in zlib.ZLIB_RUNTIME_VERSION,
                    reason="zlib-ng keeps the configured window")
def test_a_gzip_body_of_known_size_gets_the_same_bytes_with_its_smaller_window():
    rng = random.Random(5)
    text = " ".join(rng.choices(WORDS, k=8000)).encode()
    bodies = [text[:size] for size in (0, 1, 249, 250, 1024, 1786, 1787, 4000, 30000)]
    bodies += [os.urandom(3000), b"abcabcabd" * 400]
    for level in (-1, 1, 4, 9):
        params = parse_params(())
        for body in bodies:
            fitted = make_encoder("gzip", level, params, True, size=len(body))
            full = make_encoder("gzip", level, params, True)
            assert fitted.encode(body) + fitted.finish() == \
                full.encode(body) + full.finish(), (level, len(body))
    assert compress.gzip_window(15, 1024) < 15


def test_the_deflate_coding_keeps_its_window_which_its_header_names():
    body = PAGE[:1000]
    coder = make_encoder("deflate", -1, parse_params(()), True, size=len(body))
    coded = coder.encode(body) + coder.finish()
    assert coded[0] >> 4 == 7 and zlib.decompress(coded) == body       # 32 KiB window


def test_one_accept_encoding_value_chooses_from_each_block_s_list(worker):
    """A value remembered for one list of allowed codings is chosen again for
    another (a block that allows other codings), then for the first again."""
    server, _, _ = worker
    module = next(m for m in server.pipeline.modules if isinstance(m, mod_deflate.Module))
    gzip_only = mod_deflate.parse_allowed(("gzip",))
    br_first = mod_deflate.parse_allowed(("br", "gzip"))
    for _ in range(2):
        assert module._chosen_coding("gzip, br", gzip_only) == "gzip"
        assert module._chosen_coding("gzip, br", br_first) == "br"
