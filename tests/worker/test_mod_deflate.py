"""mod_deflate: what it chooses (units), and a worker answering real clients.

Every coding is decoded with its own library (gzip, zlib, bz2, brotli, zstandard) and
by curl `--compressed`; the cases lighttpd 1.4.69 settles (which answers are left as
they are, ETags, 304, Range) are checked here once and against lighttpd itself in
test_deflate_differential.py.
"""

from __future__ import annotations

import bz2
import gzip
import os
import shutil
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from master.configload import load
from server_util import REPO, WorkerProcess, config_text
from test_held_requests import Later
from test_held_requests import exchange as held_exchange
from worker.chunked import Dechunker
from worker.server import Server
from worker.compress import ENCODERS, make_encoder, parse_params
from worker.modules.mod_deflate import (CodedOutput, accepted_codings, cache_path,
                                        choose_coding, parse_allowed, parse_mimetypes,
                                        read_parts)

brotli = pytest.importorskip("brotli",
                             reason="Brotli (a dependency of mod_deflate) is not installed")
zstandard = pytest.importorskip("zstandard",
                                reason="zstandard (a dependency of mod_deflate) is not installed")

DECODERS = {
    "gzip": gzip.decompress, "x-gzip": gzip.decompress, "deflate": zlib.decompress,
    "bzip2": bz2.decompress, "x-bzip2": bz2.decompress, "br": brotli.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
}
ALL = parse_allowed(("zstd", "br", "gzip", "deflate", "bzip2"))


# ------------------------------------------------------------------ choices
def test_the_client_s_highest_q_wins_and_the_server_order_breaks_ties():
    assert choose_coding("gzip, br, zstd", ALL) == "zstd"
    assert choose_coding("gzip;q=0.9, br;q=0.5", ALL) == "gzip"
    assert choose_coding("deflate, x-gzip", ALL) == "x-gzip"
    assert choose_coding("gzip, x-gzip", ALL) == "gzip"
    assert choose_coding("br;q=0, gzip", ALL) == "gzip"


def test_q_zero_star_and_unknown_codings_leave_the_identity():
    for header in ("gzip;q=0", "*", "compress, identity", "", " , ;q=1"):
        assert choose_coding(header, ALL) is None, header
    assert accepted_codings("GZip ; Q=0.5 , br;q=x") == {"gzip": 0.5, "br": 1.0}


def test_only_spaces_and_tabs_are_blanks_around_a_coding():
    """0xA0 and 0x85 (a field's octets read as latin-1) are blanks to str.strip(), not
    to lighttpd: "gzip" followed by one is another coding."""
    assert choose_coding("gzip\xa0", ALL) is None
    assert choose_coding("\x85br", ALL) is None
    assert choose_coding(" \tgzip\t ", ALL) == "gzip"


def test_allowed_encodings_are_read_by_substring_in_their_order_as_lighttpd():
    assert parse_allowed(("x-gzip", "brotli")) == (("gzip", "x-gzip"), ("br",))
    assert parse_allowed(("deflate", "zstd")) == (("deflate",), ("zstd",))
    assert parse_allowed(()) == (("zstd",), ("br",), ("gzip", "x-gzip", "deflate"))
    assert parse_allowed(("compress",)) == ()


def test_a_trailing_star_of_a_mimetype_is_dropped():
    assert parse_mimetypes(("text/*", "application/json", "*")) == \
        ("text/", "application/json", "*")


def test_params_out_of_range_or_unknown_are_reported_and_ignored():
    params = parse_params((("BROTLI_PARAM_QUALITY", 3), ("gzip.level", 12),
                           ("foo", 2), ("ZSTD_c_compressionLevel", "-5")))
    assert (params.brotli_quality, params.gzip_level, params.zstd_level) == (3, -1, -5)
    assert params.problems == ("invalid value for gzip.level", "unrecognized param: foo")


def test_the_cache_file_is_named_as_lighttpd_names_it():
    assert cache_path("/var/cache/c/", "/srv/www/a.html", '"123-gzip"') == \
        "/var/cache/c/srv/www/a.html-123-gzip"


def test_a_file_is_read_in_steps_and_the_output_spills_to_disk(tmp_path):
    data = os.urandom(300_000)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        chunks = list(read_parts([b"head", (fd, 10, 200_000)], 4096))
    finally:
        os.close(fd)
    assert max(map(len, chunks)) == 4096 and b"".join(chunks) == b"head" + data[10:200_010]
    output = CodedOutput((str(tmp_path),))
    for start in range(0, len(data), 50_000):
        output.add(data[start:start + 50_000])
    parts = output.finish()
    assert all(type(part) is tuple for part in parts)          # a spool file's ranges
    assert b"".join(os.pread(p[0], p[2], p[1]) for p in parts) == data
    for part in parts:
        part[3].release()


@pytest.mark.parametrize("label", sorted(ENCODERS))
def test_each_encoder_codes_a_body_written_in_parts(label):
    data = b"".join(b"line %d of a body written in parts\n" % i for i in range(5000))
    encoder = make_encoder(label, -1, parse_params(()), True)
    coded = b"".join(encoder.encode(data[i:i + 7000]) for i in range(0, len(data), 7000))
    coded += encoder.finish()
    assert len(coded) < len(data) // 5
    assert DECODERS[label](coded) == data


# ------------------------------------------------------------------ a worker
PAGE = b"".join(b"<p>paragraph %d of the page</p>\n" % i for i in range(1700))   # ~50 KiB
SMALL = b"".join(b"small line %d\n" % i for i in range(80))                       # ~1 KiB
BIG = b"".join(b"row %08d of a large text file\n" % i for i in range(110_000))   # ~3.4 MiB
SCRIPT = "#!/bin/sh\nprintf '{head}\\r\\n'\ni=0\nwhile [ $i -lt 150 ]; do " \
         "echo \"cgi line $i\"; i=$((i+1)); done\n{after}"


def _script(path: Path, head: str, after: str = "") -> None:
    path.write_text(SCRIPT.format(head=head, after=after))
    path.chmod(0o755)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("deflate")
    docroot = base / "www"
    for sub in ("cached", "badcache", "limited", "loaded", "steps", "stream", "cgi",
                "varied"):
        (docroot / sub).mkdir(parents=True)
    (docroot / "page.html").write_bytes(PAGE)
    (docroot / "small.txt").write_bytes(SMALL)
    (docroot / "tiny.txt").write_bytes(b"x" * 256)
    (docroot / "photo.png").write_bytes(os.urandom(5000))
    (docroot / "cached" / "page.html").write_bytes(PAGE)
    (docroot / "badcache" / "page.html").write_bytes(PAGE)
    (docroot / "loaded" / "page.html").write_bytes(PAGE)
    (docroot / "varied" / "page.html").write_bytes(PAGE)
    os.utime(docroot / "varied" / "page.html", (time.time() - 60,) * 2)   # settled: kept
    (base / "a-file").write_text("not a directory\n")
    (docroot / "limited" / "page.txt").write_bytes(SMALL * 5)
    (docroot / "steps" / "big.txt").write_bytes(BIG)
    _script(docroot / "cgi" / "notransform.cgi",
            r"Content-Type: text/plain\r\nCache-Control: no-transform\r\n")
    _script(docroot / "cgi" / "encoded.cgi",
            r"Content-Type: text/plain\r\nContent-Encoding: identity\r\n")
    _script(docroot / "cgi" / "vary.cgi", r"Content-Type: text/plain\r\nVary: Cookie\r\n")
    _script(docroot / "stream" / "slow.cgi", r"Content-Type: text/plain\r\n",
            "sleep 0.3\necho the end\n")
    _script(docroot / "stream" / "declared.cgi",
            r"Content-Type: text/plain\r\nContent-Length: 1840\r\n")
    _script(docroot / "stream" / "waits.cgi", r"Content-Type: text/plain\r\n",
            f"n=0\nwhile [ ! -e {base}/go ] && [ $n -lt 100 ]; do sleep 0.1; "
            "n=$((n+1)); done\necho the end\n")
    (base / "spool").mkdir()
    conf = base / "deflate.conf"
    conf.write_text(config_text(docroot, f"""
mimetype.assign += (".png" => "image/png")
cgi.assign = (".cgi" => "")
server.upload-dirs = ("{base}/spool")
server.errorlog = "{base}/error.log"
deflate.mimetypes = ("text/")
deflate.allowed-encodings = ("zstd", "br", "gzip", "deflate", "bzip2")
$HTTP["url"] =^ "/cached/" {{ deflate.cache-dir = "{base}/cache/" }}
$HTTP["url"] =^ "/badcache/" {{ deflate.cache-dir = "{base}/a-file/cache/" }}
$HTTP["url"] =^ "/limited/" {{ deflate.max-compress-size = 4 }}
$HTTP["url"] =^ "/loaded/" {{ deflate.max-loadavg = "0.001" }}
$HTTP["url"] =^ "/steps/" {{ deflate.work-block-size = 64 }}
$HTTP["url"] =^ "/varied/" {{ setenv.add-response-header = ("Vary" => "Cookie") }}
$HTTP["url"] =^ "/stream/" {{
    server.stream-response-body = 2
    deflate.max-compress-size = 1
}}
""", modules=("mod_setenv", "mod_deflate", "mod_cgi", "mod_staticfile")))
    with WorkerProcess(conf) as worker:
        yield worker, docroot, base


def decoded(headers: dict[str, str], body: bytes) -> bytes:
    coding = headers.get("Content-Encoding")
    return DECODERS[coding](body) if coding else body


@pytest.mark.parametrize("label", ["zstd", "br", "gzip", "x-gzip", "deflate", "bzip2",
                                   "x-bzip2"])
def test_each_coding_is_answered_with_its_etag_and_vary(site, label):
    worker, _, _ = site
    status, headers, body = worker.get("/page.html", Accept_Encoding=label)
    assert (status, headers["Content-Encoding"], headers["Vary"]) == \
        (200, label, "Accept-Encoding")
    assert headers["ETag"].endswith(f'-{label}"') and "Accept-Ranges" not in headers
    assert int(headers["Content-Length"]) == len(body) < len(PAGE) // 3
    assert decoded(headers, body) == PAGE


def test_a_static_answer_that_says_vary_loses_its_identity_fields_once(site):
    """Its Vary is extended (the header list made anew): the identity's ETag and
    Accept-Ranges are still dropped, the compressed answer made and then kept."""
    worker, _, _ = site
    for _ in range(2):
        reply = worker.raw(b"GET /varied/page.html HTTP/1.1\r\nHost: x\r\n"
                           b"Accept-Encoding: gzip\r\nConnection: close\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        names = [line.split(b":")[0].lower() for line in head.split(b"\r\n")[1:]]
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        assert (names.count(b"etag"), names.count(b"accept-ranges"),
                names.count(b"content-encoding"), names.count(b"vary")) == (1, 0, 1, 1)
        assert (fields[b"Vary"], fields[b"Content-Encoding"]) == \
            (b"Cookie,Accept-Encoding", b"gzip")
        assert fields[b"ETag"].endswith(b'-gzip"') and gzip.decompress(body) == PAGE


def test_curl_compressed_gets_the_file(site):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    worker, _, _ = site
    for path, content in (("/page.html", PAGE), ("/steps/big.txt", BIG)):
        done = subprocess.run([curl, "-s", "--compressed", "--max-time", "10", "-D", "-",
                               f"http://127.0.0.1:{worker.port}{path}"],
                              capture_output=True, timeout=20, check=True)
        head, _, body = done.stdout.partition(b"\r\n\r\n")
        assert b"\r\nContent-Encoding: " in head and body == content


def test_the_q_values_of_the_client_choose(site):
    worker, _, _ = site
    for header, expected in (("gzip;q=0.5, br", "br"), ("br;q=0, gzip", "gzip"),
                             ("zstd;q=0", None), ("*", None)):
        _, headers, body = worker.get("/page.html", Accept_Encoding=header)
        assert headers.get("Content-Encoding") == expected, header
        assert headers["Vary"] == "Accept-Encoding" and decoded(headers, body) == PAGE


def test_answers_left_as_they_are(site):
    worker, _, _ = site
    for path in ("/tiny.txt", "/photo.png", "/limited/page.txt"):
        _, headers, _ = worker.get(path, Accept_Encoding="gzip")
        assert "Content-Encoding" not in headers and "Vary" not in headers, path
        assert headers["ETag"].count("-") == 0, path


def test_above_max_loadavg_answers_go_out_as_they_are(site):
    if os.getloadavg()[0] <= 0.001:
        pytest.skip("the machine is idle: no load to stay under")
    worker, _, _ = site
    deadline = time.monotonic() + 5        # the load is read once a second
    while True:
        _, headers, body = worker.get("/loaded/page.html?" + os.urandom(4).hex(),
                                      Accept_Encoding="gzip")
        if "Content-Encoding" not in headers or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (headers.get("Content-Encoding"), headers["Vary"], body) == \
        (None, "Accept-Encoding", PAGE)


def test_head_is_not_compressed_but_says_the_answer_varies(site):
    worker, _, _ = site
    status, headers, _ = worker.request("HEAD", "/page.html", {"Accept-Encoding": "gzip"})
    assert (status, headers["Content-Length"], headers["Vary"]) == \
        (200, str(len(PAGE)), "Accept-Encoding")
    assert "Content-Encoding" not in headers


def test_an_identity_answer_says_it_varies_too(site):
    worker, _, _ = site
    _, headers, body = worker.get("/page.html")
    assert (headers["Vary"], body) == ("Accept-Encoding", PAGE)
    assert headers["Accept-Ranges"] == "bytes"


def test_a_range_on_a_compressed_answer_gets_the_whole_body_as_lighttpd(site):
    worker, _, _ = site
    for ranges in ("bytes=0-99", "bytes=0-9,1000-1999"):
        status, headers, body = worker.get("/page.html", Accept_Encoding="gzip",
                                           Range=ranges)
        assert (status, headers["Content-Type"], "Content-Range" in headers) == \
            (200, "text/html", False), ranges
        assert gzip.decompress(body) == PAGE
    status, headers, body = worker.get("/page.html", Range="bytes=0-99")
    assert (status, body, headers["Vary"]) == (206, PAGE[:100], "Accept-Encoding")
    status, headers, body = worker.get("/photo.png", Accept_Encoding="gzip",
                                       Range="bytes=0-99")
    assert (status, len(body), "Vary" in headers) == (206, 100, False)


def test_if_none_match_with_the_coded_etag_is_304(site):
    worker, _, _ = site
    etag = worker.get("/page.html", Accept_Encoding="br")[1]["ETag"]
    status, headers, body = worker.get("/page.html", Accept_Encoding="br",
                                       If_None_Match=etag)
    assert (status, headers["ETag"], headers["Vary"], body) == \
        (304, etag, "Accept-Encoding", b"")
    plain = etag.replace("-br", "")
    status, headers, _ = worker.get("/page.html", Accept_Encoding="br", If_None_Match=plain)
    assert (status, headers["ETag"], headers["Vary"]) == (304, plain, "Accept-Encoding")
    assert worker.get("/page.html", Accept_Encoding="gzip", If_None_Match=etag)[0] == 200


def test_a_large_file_is_compressed_in_steps(site):
    worker, _, _ = site
    status, headers, body = worker.get("/steps/big.txt", Accept_Encoding="gzip")
    assert (status, int(headers["Content-Length"])) == (200, len(body))
    assert gzip.decompress(body) == BIG


def _cache_files(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base / "cache")) for p in (base / "cache").rglob("*")
                  if p.is_file())


def _within_seconds(worker: WorkerProcess, target: str, changed) -> tuple[dict, bytes]:
    """The gzip answer to `target` once `changed(headers, body)` holds, asked every
    0.2 s for at most 5 s: what the worker keeps (the stat cache, the compressed
    variants held in memory) is kept for a second."""
    deadline = time.monotonic() + 5
    while True:
        _, headers, body = worker.get(target, Accept_Encoding="gzip")
        if changed(headers, body) or time.monotonic() > deadline:
            return headers, body
        time.sleep(0.2)


def test_cache_dir_keeps_the_compressed_file_by_etag(site):
    worker, docroot, base = site
    _, headers, body = worker.get("/cached/page.html", Accept_Encoding="gzip")
    etag = headers["ETag"]
    name = cache_path(str(base / "cache"), str(docroot / "cached" / "page.html"), etag)
    assert _cache_files(base) == [os.path.relpath(name, base / "cache")]
    assert Path(name).read_bytes() == body and gzip.decompress(body) == PAGE
    Path(name).write_bytes(gzip.compress(b"served from the cache file\n" * 40))
    headers, body = _within_seconds(worker, "/cached/page.html?another-key",
                                    lambda _, body: gzip.decompress(body) != PAGE)
    assert gzip.decompress(body) == b"served from the cache file\n" * 40
    changed = PAGE.replace(b"paragraph", b"section")
    (docroot / "cached" / "page.html").write_bytes(changed)
    headers, body = _within_seconds(worker, "/cached/page.html",
                                    lambda headers, _: headers["ETag"] != etag)
    assert gzip.decompress(body) == changed
    assert len(_cache_files(base)) == 2          # no temp file left beside them


def test_a_cache_dir_that_refuses_files_is_logged_once_and_compression_goes_on(site):
    worker, _, base = site
    for _ in range(3):
        _, headers, body = worker.get("/badcache/page.html?" + os.urandom(4).hex(),
                                      Accept_Encoding="gzip")
        assert gzip.decompress(body) == PAGE
    log = (base / "error.log").read_text()
    assert log.count("deflate.cache-dir") == 1 and "Not a directory" in log


def _read_answer(sock: socket.socket, pending: bytes) -> tuple[dict[str, str], bytes, bytes]:
    """One Content-Length framed answer from a keep-alive socket: headers, body and
    what was read past it."""
    while b"\r\n\r\n" not in pending:
        pending += sock.recv(65536)
    head, _, rest = pending.partition(b"\r\n\r\n")
    headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
    length = int(headers["Content-Length"])
    while len(rest) < length:
        rest += sock.recv(65536)
    return headers, rest[:length], rest[length:]


def test_the_answer_cache_keeps_each_coding_apart(site):
    worker, _, _ = site
    order = ["gzip", None, "br", "gzip", None, "br", "zstd", "zstd"]
    with worker.socket() as sock:
        pending = b""
        for path, content in (("/small.txt", SMALL), ("/page.html", PAGE)):
            for coding in order:
                accept = f"Accept-Encoding: {coding}\r\n" if coding else ""
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n{accept}\r\n".encode())
                headers, body, pending = _read_answer(sock, pending)
                assert headers.get("Content-Encoding") == coding
                assert decoded(headers, body) == content


def test_cgi_answers_with_no_transform_or_a_coding_are_left_alone(site):
    worker, _, _ = site
    for path in ("/cgi/notransform.cgi", "/cgi/encoded.cgi"):
        _, headers, body = worker.get(path, Accept_Encoding="gzip")
        assert headers.get("Content-Encoding") in (None, "identity") and \
            "Vary" not in headers, path
        assert body.startswith(b"cgi line 0\n")
    _, headers, body = worker.get("/cgi/vary.cgi", Accept_Encoding="gzip")
    assert (headers["Vary"], headers["Content-Encoding"]) == ("Cookie,Accept-Encoding",
                                                              "gzip")
    assert gzip.decompress(body).endswith(b"cgi line 149\n")


def test_a_streamed_answer_is_compressed_as_it_streams(site):
    worker, _, _ = site
    _, headers, body = worker.get("/stream/slow.cgi", Accept_Encoding="br")
    assert (headers["Content-Encoding"], headers["Transfer-Encoding"]) == ("br", "chunked")
    text = brotli.decompress(body)
    assert text.startswith(b"cgi line 0\n") and text.endswith(b"cgi line 149\nthe end\n")


def test_a_stream_announcing_a_length_above_the_limit_is_left_alone(site):
    worker, _, _ = site
    _, headers, body = worker.get("/stream/declared.cgi", Accept_Encoding="gzip")
    assert ("Content-Encoding" in headers, "Vary" in headers, len(body)) == \
        (False, False, 1840)


def test_a_streamed_answer_s_coded_parts_go_out_as_they_come(site):
    """The script waits (at most 10 s) for the client to have decoded its first lines
    before it ends: the coder must have sent them without waiting for more."""
    worker, _, base = site
    connection = worker.connection(timeout=5)
    try:
        connection.request("GET", "/stream/waits.cgi", headers={"Accept-Encoding": "gzip"})
        answer = connection.getresponse()
        decoder, text = zlib.decompressobj(31), b""
        while b"cgi line 149\n" not in text:
            part = answer.read1(65536)
            assert part, text[-100:]
            text += decoder.decompress(part)
        (base / "go").touch()
        text += decoder.decompress(answer.read()) + decoder.flush()
    finally:
        connection.close()
    assert text.endswith(b"cgi line 149\nthe end\n") and decoder.eof


def test_the_conf_snippet_compresses_and_keeps_static_files(tmp_path):
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "index.html").write_bytes(PAGE)
    conf = tmp_path / "snippet.conf"
    conf.write_text(config_text(docroot, f"""
include "{REPO}/conf/conf-available/10-deflate.conf"
deflate.cache-dir := "{tmp_path}/cache/"
""", modules=("mod_staticfile",)))
    with WorkerProcess(conf) as worker:
        _, headers, body = worker.get("/index.html",
                                      Accept_Encoding="gzip, deflate, br, zstd")
    assert headers["Content-Encoding"] == "zstd" and decoded(headers, body) == PAGE
    assert [p.name.endswith("-zstd") for p in (tmp_path / "cache").rglob("*.html-*")] == \
        [True]


def _in_process(tmp_path: Path, data: bytes) -> bytes:
    """The answer to `data` from a worker driven in this process with the held-request
    test's module (tests/worker/test_held_requests.py) before mod_deflate."""
    docroot = tmp_path / "www"
    docroot.mkdir()
    conf = tmp_path / "held.conf"
    conf.write_text(config_text(docroot, 'deflate.mimetypes = ("")\n'
                                'server.stream-response-body = 1\n',
                                modules=("mod_deflate", "mod_staticfile")))
    config = load(str(conf))
    config.modules = [Later, *config.modules]
    worker = Server(config, [])
    try:
        return held_exchange(worker, data)
    finally:
        worker.close_all()
        worker.loop.close()


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_a_stream_started_before_its_module_set_a_status_is_compressed(tmp_path, version):
    """/stream/N: N parts of 1 KiB, the status left to the core; chunked for HTTP/1.1,
    ended by the close for HTTP/1.0."""
    data = _in_process(tmp_path, f"GET /stream/3 HTTP/{version}\r\nHost: t\r\n"
                                 "Accept-Encoding: gzip\r\nConnection: close\r\n\r\n".encode())
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\nContent-Encoding: gzip\r\n" in head
    assert (b"chunked" in head) == (version == "1.1")
    if version == "1.1":
        body = Dechunker().feed(body)
    assert gzip.decompress(body) == b"".join(bytes([c]) + b"." * 1023 for c in b"321")


def test_a_stream_complete_before_its_head_is_coded_whole(tmp_path):
    """/backend/200/2000: streams, writes its 2000 bytes and ends in one call."""
    data = _in_process(tmp_path, b"GET /backend/200/2000 HTTP/1.1\r\nHost: t\r\n"
                                 b"Accept-Encoding: gzip\r\nConnection: close\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\nContent-Encoding: gzip\r\n" in head
    assert gzip.decompress(body) == b"b" * 2000


def test_ignored_params_are_reported_when_the_config_loads(tmp_path):
    conf = tmp_path / "params.conf"
    conf.write_text(config_text(tmp_path, 'deflate.params = ("foo" => 1, "gzip.level" => 12,'
                                          ' "BROTLI_PARAM_QUALITY" => 9)',
                                modules=("mod_deflate",)))
    checked = subprocess.run([sys.executable, "-m", "master.cli", "-tt", "-f", str(conf)],
                             capture_output=True, text=True, timeout=60, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    assert checked.returncode == 0
    assert checked.stderr.splitlines() == [
        f"{conf}:5:1: mod_deflate: unrecognized param: foo",
        f"{conf}:5:1: mod_deflate: invalid value for gzip.level"]
