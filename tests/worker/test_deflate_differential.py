"""Differential test of mod_deflate: Debian's lighttpd 1.4.69 (with its mod_deflate,
package lighttpd-mod-deflate) and a pylighttpd worker on one config and one docroot.

Each request goes to both; the answers must agree on the status, the headers that
compression decides (Content-Encoding, Vary, ETag, Content-Type, Content-Range,
Accept-Ranges) and the decoded body; on Content-Length too where the compressed bytes
are the same by construction: zlib's codings over a file of a few pages (lighttpd
codes a large file whole with libdeflate, a script's output as it reaches it, and
feeds brotli in blocks of its own, each giving other, equally valid bytes).  Where
pylighttpd answers otherwise on purpose, the request is in KNOWN_DIFFERENCES with the
reason, and the test checks that it still differs.  Both servers share one
deflate.cache-dir: the files they leave there must have the same names.
"""

from __future__ import annotations

import gzip
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from test_differential import LIGHTTPD, beside_lighttpd, exchange, parse

brotli = pytest.importorskip("brotli",
                             reason="Brotli (a dependency of mod_deflate) is not installed")
zstandard = pytest.importorskip("zstandard",
                                reason="zstandard (a dependency of mod_deflate) is not installed")
MOD_DEFLATE = Path("/usr/lib/lighttpd/mod_deflate.so")
pytestmark = pytest.mark.skipif(
    not os.access(LIGHTTPD, os.X_OK) or not MOD_DEFLATE.exists(),
    reason="Debian's lighttpd with lighttpd-mod-deflate is not installed")

DECODERS = {
    "gzip": gzip.decompress, "x-gzip": gzip.decompress, "deflate": zlib.decompress,
    "br": brotli.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data),
}
COMPARED = ("content-encoding", "vary", "etag", "content-type", "content-range",
            "accept-ranges")
KNOWN_DIFFERENCES = {
    "identity-page": "Vary: Accept-Encoding on the identity variant too (RFC 9110 "
                     "12.5.5: the answer depends on the field); lighttpd only sends it "
                     "with a compressed one, so a shared cache may serve either to anyone",
    "star": "as identity-page: `*` is not read, by either server",
    "head-gzip": "as identity-page: a HEAD is not compressed but says it varies",
    "inm-plain-gzip": "as identity-page, on the 304 for the identity variant's ETag",
    "range-identity": "as identity-page, on a 206 (a gzip client gets the whole file "
                      "compressed)",
    "q0-gzip": "RFC 9110 12.5.3: q=0 means not acceptable; lighttpd 1.4.69 reads the "
               "name and compresses",
    "cgi-no-transform": "RFC 9110 7.7 / RFC 9111 5.2.2.6: no-transform; lighttpd 1.4.69 "
                        "compresses all the same",
}

CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_deflate", "mod_cgi", "mod_staticfile")
server.tag = "difftest"
mimetype.assign = (".html" => "text/html", ".txt" => "text/plain; charset=utf-8",
                   ".css" => "text/css", ".json" => "application/json",
                   ".png" => "image/png")
cgi.assign = (".cgi" => "")
deflate.mimetypes = ("text/", "application/json")
deflate.allowed-encodings = ("br", "zstd", "gzip", "deflate")
$HTTP["url"] =^ "/cached/" {{ deflate.cache-dir = "{base}/cache/" }}
$HTTP["url"] =^ "/tuned/" {{
    deflate.params = ("gzip.level" => 9, "BROTLI_PARAM_QUALITY" => 9,
                      "ZSTD_c_compressionLevel" => 12)
}}
"""
PAGE = b"".join(b"<p>paragraph %d of the page</p>\n" % i for i in range(1700))
CSS = b"".join(b".c%d { margin: %dpx; }\n" % (i, i % 40) for i in range(1000))
JSON = b"[" + b",".join(b'{"id": %d, "name": "item %d"}' % (i, i) for i in range(900)) + b"]"
BIG = b"".join(b"row %08d of a larger text file\n" % i for i in range(33_000))
SCRIPT = "#!/bin/sh\nprintf '{head}\\r\\n'\ni=0\nwhile [ $i -lt 150 ]; do " \
         "echo \"cgi line $i\"; i=$((i+1)); done\n"


def _site(base: Path) -> Path:
    docroot = base / "www"
    (docroot / "cached").mkdir(parents=True)
    (docroot / "tuned").mkdir()
    for name, data in (("page.html", PAGE), ("style.css", CSS), ("data.json", JSON),
                       ("big.txt", BIG), ("cached/page.html", PAGE), ("tuned/page.html", PAGE),
                       ("small.txt", PAGE[:1000]), ("tiny.txt", PAGE[:200]),
                       ("photo.png", os.urandom(5000))):
        (docroot / name).write_bytes(data)
    for name, head in (("hello.cgi", r"Content-Type: text/plain\r\n"),
                       ("notransform.cgi",
                        r"Content-Type: text/plain\r\nCache-Control: no-transform\r\n")):
        (docroot / name).write_text(SCRIPT.format(head=head))
        (docroot / name).chmod(0o755)
    return docroot


def _get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: deflate.test", "Connection: close",
             *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _requests(etags: dict[str, str]) -> list[tuple[str, bytes, bool]]:
    """(name, request, whether the compressed Content-Length must agree)."""
    gz, br = "Accept-Encoding: gzip", "Accept-Encoding: br"
    return [
        ("gzip-page", _get("/page.html", gz), True),
        ("br-page", _get("/page.html", br), True),
        ("zstd-page", _get("/page.html", "Accept-Encoding: zstd"), False),
        ("deflate-page", _get("/page.html", "Accept-Encoding: deflate"), True),
        ("x-gzip-page", _get("/page.html", "Accept-Encoding: x-gzip"), True),
        ("browser-page", _get("/page.html", "Accept-Encoding: gzip, deflate, br, zstd"),
         True),
        ("gzip-small", _get("/small.txt", gz), True),
        ("gzip-tiny", _get("/tiny.txt", gz), True),
        ("gzip-png", _get("/photo.png", gz), True),
        ("gzip-css", _get("/style.css", gz), True),
        ("gzip-json", _get("/data.json", gz), True),
        ("gzip-big", _get("/big.txt", gz), False),
        ("br-big", _get("/big.txt", br), False),
        ("star", _get("/page.html", "Accept-Encoding: *"), True),
        ("identity-page", _get("/page.html"), True),
        ("head-gzip", _get("/page.html", gz, method="HEAD"), True),
        ("range-gzip", _get("/page.html", gz, "Range: bytes=0-99"), True),
        ("multirange-gzip", _get("/big.txt", gz, "Range: bytes=0-9,5000-5999"), False),
        ("range-identity", _get("/page.html", "Range: bytes=0-99"), True),
        ("range-png", _get("/photo.png", gz, "Range: bytes=10-19"), True),
        ("inm-coded", _get("/page.html", gz, f"If-None-Match: {etags['gzip']}"), True),
        ("inm-coded-other", _get("/page.html", br, f"If-None-Match: {etags['gzip']}"),
         True),
        ("inm-plain-gzip", _get("/page.html", gz, f"If-None-Match: {etags['plain']}"),
         True),
        ("http10-gzip", _get("/page.html", gz, version="1.0"), True),
        ("q0-gzip", _get("/page.html", "Accept-Encoding: gzip;q=0"), True),
        ("cgi-gzip", _get("/hello.cgi", gz), False),
        ("cgi-br", _get("/hello.cgi", br), False),
        ("cgi-no-transform", _get("/notransform.cgi", gz), False),
        ("missing-gzip", _get("/nothing.html", gz), False),
        ("tuned-gzip", _get("/tuned/page.html", gz), True),
        ("tuned-br", _get("/tuned/page.html", br), True),
        ("tuned-zstd", _get("/tuned/page.html", "Accept-Encoding: zstd"), True),
        ("cached-gzip", _get("/cached/page.html", gz), True),
        ("cached-br", _get("/cached/page.html", br), True),
        ("cached-again", _get("/cached/page.html", gz), True),
    ]


def summary(raw: bytes, with_length: bool) -> dict:
    status, headers, body = parse(raw)
    coding = headers.get("content-encoding")
    found = {"status": status, "body": DECODERS[coding](body) if coding and body else body}
    found.update({name: headers.get(name) for name in COMPARED})
    if with_length:
        found["content-length"] = headers.get("content-length")
    return found


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("deflate-diff")
    docroot = _site(base)
    conf = base / "deflate.conf"
    conf.write_text(CONFIG.format(docroot=docroot, base=base))
    with beside_lighttpd(conf) as ports:
        yield ports, base, docroot


def _etags(port: int) -> dict[str, str]:
    plain = parse(exchange(port, _get("/page.html")))[1]["etag"]
    coded = parse(exchange(port, _get("/page.html", "Accept-Encoding: gzip")))[1]["etag"]
    return {"plain": plain, "gzip": coded}


def test_answers_agree_with_lighttpd(servers):
    ports, _, _ = servers
    requests = _requests(_etags(ports[0]))
    differing = {}
    with ThreadPoolExecutor(2) as pool:
        for name, raw, with_length in requests:
            theirs, ours = pool.map(lambda port: summary(exchange(port, raw), with_length),
                                    ports)
            diff = {key: (theirs[key], ours.get(key)) for key in theirs
                    if theirs[key] != ours.get(key)}
            if diff:
                differing[name] = {k: v if k != "body" else "differs"
                                   for k, v in diff.items()}
    unexpected = {name: d for name, d in differing.items() if name not in KNOWN_DIFFERENCES}
    assert unexpected == {}
    assert set(KNOWN_DIFFERENCES) <= set(differing), "a known difference is gone"


def test_both_name_the_cache_files_alike(servers):
    ports, base, docroot = servers
    for port in ports:
        for coding in ("gzip", "br"):
            exchange(port, _get("/cached/page.html", f"Accept-Encoding: {coding}"))
    etag = parse(exchange(ports[0], _get("/cached/page.html")))[1]["etag"].strip('"')
    cached = docroot / "cached" / "page.html"
    expected = {f"{str(cached).lstrip('/')}-{etag}-{coding}" for coding in ("gzip", "br")}
    found = {str(p.relative_to(base / "cache")) for p in (base / "cache").rglob("*")
             if p.is_file()}
    assert found == expected
    assert gzip.decompress((base / "cache" / f"{str(cached).lstrip('/')}-{etag}-gzip")
                           .read_bytes()) == PAGE


VARY_CONFIG = """
server.document-root = "{docroot}"
server.modules = ({modules}, "mod_staticfile")
mimetype.assign = (".html" => "text/html")
deflate.mimetypes = ("text/")
deflate.allowed-encodings = ("gzip")
setenv.add-response-header = ("Vary" => "Cookie")
"""


@pytest.mark.parametrize("modules", ['"mod_deflate", "mod_setenv"',
                                     '"mod_setenv", "mod_deflate"'])
def test_a_vary_of_mod_setenv_meets_the_coding_s_as_in_lighttpd(tmp_path, modules):
    """The response hooks run in server.modules order: mod_deflate first says Vary
    before mod_setenv adds a field of its own (two Vary lines); mod_setenv first has
    its Vary extended (one line).  The same lines from both servers."""
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "page.html").write_bytes(PAGE)
    conf = tmp_path / "vary.conf"
    conf.write_text(VARY_CONFIG.format(docroot=docroot, modules=modules))
    with beside_lighttpd(conf) as ports:
        heads = [exchange(port, _get("/page.html", "Accept-Encoding: gzip"))
                 .partition(b"\r\n\r\n")[0].split(b"\r\n") for port in ports]
    varies = [[line for line in head if line.lower().startswith(b"vary:")]
              for head in heads]
    assert varies[0] == varies[1]
    assert len(varies[0]) == (2 if modules.startswith('"mod_deflate"') else 1)
