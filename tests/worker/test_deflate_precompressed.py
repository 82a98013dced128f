"""mod_deflate's `deflate.precompressed`: file.br, file.zst and file.gz beside a static
file answer in its place when the client accepts the coding and the sibling is not
older than the file (nginx's gzip_static / brotli_static, off by default)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from server_util import WorkerProcess, config_text

brotli = pytest.importorskip("brotli",
                             reason="Brotli (a dependency of mod_deflate) is not installed")
zstandard = pytest.importorskip("zstandard",
                                reason="zstandard (a dependency of mod_deflate) is not installed")

PAGE = b"<html><body>" + b"precompressed siblings are served as they are\n" * 400 + \
    b"</body></html>\n"
# what the siblings hold differs from what the module would make of PAGE: an answer
# carrying these bytes was not compressed on the fly
SIBLINGS = {"br": (".br", brotli.compress(PAGE, quality=11)),
            "zstd": (".zst", zstandard.ZstdCompressor(level=19).compress(PAGE)),
            "gzip": (".gz", gzip.compress(PAGE, compresslevel=9, mtime=1))}
OLD = 1_000_000_000
DECODERS = {"br": brotli.decompress, "gzip": gzip.decompress,
            "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data)}


def sent_sibling(worker, path: str, accept: str, label: str) -> bool:
    """True when `label`'s sibling was sent, False when the page was compressed with
    `label` on the fly (anything else fails)."""
    _, headers, body = worker.get(path, Accept_Encoding=accept)
    assert headers["Content-Encoding"] == label, (path, accept)
    if body == SIBLINGS[label][1]:
        return True
    assert DECODERS[label](body) == PAGE
    return False


def _page_with_siblings(directory: Path, name: str, codings: tuple[str, ...]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    page = directory / name
    page.write_bytes(PAGE)
    for label in codings:
        suffix, data = SIBLINGS[label]
        (directory / (name + suffix)).write_bytes(data)
    return page


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("precompressed")
    docroot = base / "www"
    _page_with_siblings(docroot, "all.html", ("br", "zstd", "gzip"))
    _page_with_siblings(docroot, "gz-only.html", ("gzip",))
    _page_with_siblings(docroot, "etag.html", ("br",))
    _page_with_siblings(docroot, "head.html", ("gzip",))
    _page_with_siblings(docroot / "off", "all.html", ("br", "zstd", "gzip"))
    stale = _page_with_siblings(docroot, "stale.html", ("gzip", "br"))
    os.utime(str(stale) + ".gz", (OLD, OLD))
    (docroot / "data.bin").write_bytes(PAGE)           # outside deflate.mimetypes
    (docroot / "data.bin.gz").write_bytes(SIBLINGS["gzip"][1])
    conf = base / "deflate.conf"
    conf.write_text(config_text(docroot, f"""
mimetype.assign += (".bin" => "application/octet-stream")
server.errorlog = "{base}/error.log"
deflate.mimetypes = ("text/")
deflate.allowed-encodings = ("zstd", "br", "gzip", "deflate")
deflate.precompressed = "enable"
$HTTP["url"] =^ "/off/" {{ deflate.precompressed = "disable" }}
""", modules=("mod_deflate", "mod_staticfile")))
    with WorkerProcess(conf) as worker:
        yield worker, docroot


@pytest.mark.parametrize("label", ["br", "zstd", "gzip"])
def test_each_sibling_is_sent_as_it_is_with_its_headers(site, label):
    worker, docroot = site
    status, headers, body = worker.get("/all.html", Accept_Encoding=label)
    suffix, data = SIBLINGS[label]
    assert (status, body, headers["Content-Encoding"]) == (200, data, label)
    assert int(headers["Content-Length"]) == len(data)
    assert (headers["Vary"], headers["Content-Type"]) == ("Accept-Encoding", "text/html")
    assert headers["ETag"].endswith(f'-{label}"') and "Accept-Ranges" not in headers
    plain = worker.get("/all.html")[1]["ETag"]
    assert headers["ETag"] != plain.replace('"', f'-{label}"')   # the sibling's own ETag


def test_the_client_s_q_values_then_the_server_order_choose_among_siblings(site):
    worker, _ = site
    for header, expected in (("gzip, br, zstd", "zstd"), ("gzip;q=0.5, br", "br"),
                             ("br;q=0, gzip", "gzip")):
        _, headers, body = worker.get("/all.html", Accept_Encoding=header)
        assert (headers["Content-Encoding"], body) == (expected, SIBLINGS[expected][1])


def test_a_coding_without_a_sibling_is_compressed_on_the_fly(site):
    worker, _ = site
    assert sent_sibling(worker, "/gz-only.html", "gzip, br", "gzip")
    assert not sent_sibling(worker, "/gz-only.html", "br", "br")


def test_a_sibling_older_than_its_file_is_ignored(site):
    worker, _ = site
    assert not sent_sibling(worker, "/stale.html", "gzip", "gzip")
    assert sent_sibling(worker, "/stale.html", "br, gzip", "br")


def test_the_identity_answer_and_a_head_say_the_answer_varies(site):
    worker, _ = site
    _, headers, body = worker.get("/all.html")
    assert (body, headers["Vary"], headers["Accept-Ranges"]) == \
        (PAGE, "Accept-Encoding", "bytes")
    status, headers, _ = worker.request("HEAD", "/head.html", {"Accept-Encoding": "gzip"})
    assert (status, headers["Content-Length"], headers["Vary"]) == \
        (200, str(len(PAGE)), "Accept-Encoding")


def test_a_range_gets_the_whole_sibling_as_a_compressed_variant_does(site):
    worker, _ = site
    status, headers, body = worker.get("/all.html", Accept_Encoding="gzip",
                                       Range="bytes=0-99")
    assert (status, body, "Content-Range" in headers) == (200, SIBLINGS["gzip"][1], False)
    status, _, body = worker.get("/all.html", Range="bytes=0-99")
    assert (status, body) == (206, PAGE[:100])


def test_if_none_match_with_the_sibling_s_etag_is_304(site):
    worker, _ = site
    etag = worker.get("/etag.html", Accept_Encoding="br")[1]["ETag"]
    status, headers, body = worker.get("/etag.html", Accept_Encoding="br",
                                       If_None_Match=etag)
    # the ETag names the variant; a 304 carries no Content-Encoding (as lighttpd writes it)
    assert (status, headers["ETag"], headers.get("Content-Encoding"), body) == \
        (304, etag, None, b"")


def test_siblings_serve_outside_the_mimetypes_and_not_when_disabled(site):
    worker, _ = site
    assert sent_sibling(worker, "/data.bin", "gzip", "gzip")
    assert not sent_sibling(worker, "/off/all.html", "gzip", "gzip")
