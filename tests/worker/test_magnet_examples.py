"""The Lua scripts in contrib/lua/ (our versions of the examples lighttpd's
documentation gives for mod_magnet) run unchanged through a pylighttpd worker and
do what their header says; each also runs under Debian's lighttpd 1.4.69 on the same
config, and the two must answer alike (status, body, the headers the script deals
in): no difference was found."""

from __future__ import annotations

import base64
import hashlib
import os
import time
from pathlib import Path

import pytest

from test_differential import LIGHTTPD, beside_lighttpd, exchange, parse

pytest.importorskip("lupa")
EXAMPLES = Path(__file__).resolve().parents[2] / "contrib" / "lua"
LIGHTTPD_MAGNET = Path("/usr/lib/lighttpd/mod_magnet.so")
HAVE_LIGHTTPD = os.access(LIGHTTPD, os.X_OK) and LIGHTTPD_MAGNET.exists()

CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_magnet")
mimetype.assign = (".html" => "text/html", ".txt" => "text/plain", ".php" => "text/plain",
                   ".jpg" => "image/jpeg", ".webp" => "image/webp")
$HTTP["host"] == "maintenance.example" {{
    server.document-root = "{maintenance_root}"
    magnet.attract-physical-path-to = ("{lua}/maintenance.lua")
}}
$HTTP["url"] =~ "^/deny/" {{ magnet.attract-physical-path-to = ("{lua}/deny-backup-files.lua") }}
$HTTP["url"] =~ "^/old/" {{ magnet.attract-raw-url-to = ("{lua}/redirect-moved.lua") }}
$HTTP["url"] =~ "^/app/" {{ magnet.attract-physical-path-to = ("{lua}/cleanurl.lua") }}
$HTTP["url"] =~ "^/private/" {{ magnet.attract-physical-path-to = ("{lua}/auth-basic.lua") }}
$HTTP["url"] =~ "^/dl/" {{ magnet.attract-physical-path-to = ("{lua}/secdownload.lua") }}
$HTTP["url"] =~ "^/img/" {{ magnet.attract-physical-path-to = ("{lua}/webp-negotiation.lua") }}
$HTTP["url"] =~ "^/(static|headers)/" {{
    magnet.attract-response-start-to = ("{lua}/response-headers.lua")
}}
$HTTP["url"] =~ "^/track/" {{ magnet.attract-response-start-to = ("{lua}/usertrack.lua") }}
$HTTP["url"] =~ "^/limited/" {{ magnet.attract-raw-url-to = ("{lua}/ratelimit.lua") }}
$HTTP["url"] =~ "^/bundle\\.(css|js)$" {{ magnet.attract-physical-path-to = ("{lua}/bundle.lua") }}
"""
COMPARED_HEADERS = ("content-type", "location", "www-authenticate", "retry-after", "vary",
                    "cache-control", "x-frame-options", "x-content-type-options",
                    "referrer-policy")
SECRET = "change-me"                   # secdownload.lua as shipped


def make_site(base: Path) -> tuple[Path, Path]:
    docroot = base / "www"
    for directory in ("deny", "app", "private", "img", "static", "headers", "track",
                      "new", "secret", "limited", "assets"):
        (docroot / directory).mkdir(parents=True)
    files = {
        "index.php": "front controller\n", "deny/notes.txt": "notes\n",
        "deny/notes.txt~": "backup\n", "deny/db.inc": "<?php $password ?>\n",
        "app/style.txt": "body {}\n", "private/data.txt": "private data\n",
        "img/photo.jpg": "jpeg bytes", "img/photo.jpg.webp": "webp bytes",
        "img/plain.jpg": "plain jpeg", "static/site.txt": "static\n",
        "headers/page.html": "<p>page</p>\n", "track/page.html": "<p>tracked</p>\n",
        "secret/report.txt": "the report\n", "limited/page.txt": "limited\n",
        "assets/a.css": "a {}", "assets/b.css": "b {}", "assets/c.js": "c();",
    }
    for name, text in files.items():
        (docroot / name).write_text(text)
    maintenance_root = base / "maintenance"
    maintenance_root.mkdir()
    (maintenance_root / "index.html").write_text("<p>up</p>\n")
    return docroot, maintenance_root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("examples")
    docroot, maintenance_root = make_site(base)
    conf = base / "examples.conf"
    conf.write_text(CONFIG.format(docroot=docroot, maintenance_root=maintenance_root,
                                  lua=EXAMPLES))
    return conf


@pytest.fixture(scope="module")
def servers(site: Path):
    if not HAVE_LIGHTTPD:
        pytest.skip("Debian's lighttpd with mod_magnet (lighttpd-modules-lua) is absent")
    with beside_lighttpd(site) as ports:
        yield ports


def request(path: str, *headers: str, host: str = "test.example") -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(servers: tuple[int, int], name: str, data: bytes
           ) -> tuple[int, dict[str, str], bytes]:
    """pylighttpd's answer to `data`, checked against lighttpd's (status, body and
    COMPARED_HEADERS alike).  Ours is asked three times, alike each time: the third
    may come from the answer cache."""
    theirs, ours = servers
    asked = [parse(exchange(ours, data)) for _ in range(3)]
    ours_parsed = asked[-1]
    assert all(_summary(each) == _summary(ours_parsed) for each in asked), name
    theirs_parsed = parse(exchange(theirs, data))
    assert _summary(ours_parsed) == _summary(theirs_parsed), name
    return ours_parsed


def _summary(parsed: tuple[int, dict[str, str], bytes]) -> dict:
    status, headers, body = parsed
    return {"status": status, "body": body,
            **{name: headers.get(name) for name in COMPARED_HEADERS}}


def test_deny_backup_files(servers) -> None:
    assert answer(servers, "deny-backup", request("/deny/notes.txt~"))[0] == 403
    assert answer(servers, "deny-inc", request("/deny/db.inc"))[0] == 403
    assert answer(servers, "deny-other", request("/deny/notes.txt"))[2] == b"notes\n"


def test_redirect_moved_keeps_host_path_and_query(servers) -> None:
    status, headers, _ = answer(servers, "redirect", request("/old/a%20b/c.html?x=1&y"))
    assert (status, headers["location"]) == (301, "http://test.example/new/a%20b/c.html?x=1&y")
    status, headers, _ = answer(servers, "redirect-no-query", request("/old/"))
    assert (status, headers["location"]) == (301, "http://test.example/new/")


def test_cleanurl_sends_what_is_no_file_to_the_front_controller(servers) -> None:
    assert answer(servers, "cleanurl-file", request("/app/style.txt"))[2] == b"body {}\n"
    status, _, body = answer(servers, "cleanurl-missing", request("/app/node/12?page=2"))
    assert (status, body) == (200, b"front controller\n")


def test_response_headers_on_answers_and_error_pages(servers) -> None:
    _, headers, _ = answer(servers, "headers-static", request("/static/site.txt"))
    assert headers["cache-control"] == "public, max-age=86400"
    assert headers["x-frame-options"] == "SAMEORIGIN"
    status, headers, _ = answer(servers, "headers-page", request("/headers/page.html"))
    assert (status, headers["x-content-type-options"]) == (200, "nosniff")
    assert "cache-control" not in headers
    status, headers, _ = answer(servers, "headers-404", request("/headers/missing.html"))
    assert (status, headers["referrer-policy"]) == (404, "strict-origin-when-cross-origin")


def test_maintenance_page_while_the_flag_file_exists(servers, site: Path) -> None:
    flag = site.parent / "maintenance" / ".maintenance"
    up = request("/index.html", host="maintenance.example")
    assert answer(servers, "maintenance-off", up)[2] == b"<p>up</p>\n"
    flag.write_text("")
    try:
        status, headers, body = _when(servers, up, lambda got: got[0] == 503)
        assert headers["retry-after"] == "600"
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert b"Down for maintenance" in body
        answer(servers, "maintenance-on", up)
    finally:
        flag.unlink()
    assert _when(servers, up, lambda got: got[0] == 200)[2] == b"<p>up</p>\n"


def _when(servers, data: bytes, ready) -> tuple[int, dict[str, str], bytes]:
    """Our answer to `data` once `ready(answer)` (a stat cache may keep the old view
    of the file system for a second), within a bounded wait."""
    deadline = time.monotonic() + 5
    got = parse(exchange(servers[1], data))
    while not ready(got) and time.monotonic() < deadline:
        time.sleep(0.1)
        got = parse(exchange(servers[1], data))
    return got


def _basic(credentials: str) -> str:
    return "Authorization: Basic " + base64.b64encode(credentials.encode()).decode()


def test_auth_basic(servers) -> None:
    status, headers, _ = answer(servers, "auth-none", request("/private/data.txt"))
    assert (status, headers["www-authenticate"]) == (401, 'Basic realm="private", charset="UTF-8"')
    wrong = request("/private/data.txt", _basic("admin:wrong"))
    assert answer(servers, "auth-wrong", wrong)[0] == 401
    assert answer(servers, "auth-garbage", request("/private/data.txt",
                                                   "Authorization: Basic !!!"))[0] == 401
    right = request("/private/data.txt", _basic("admin:change-me"))
    assert answer(servers, "auth-right", right)[2] == b"private data\n"


def _download_link(rel_path: str, stamp: int) -> str:
    hex_stamp = f"{stamp:x}"
    token = hashlib.md5(f"{SECRET}{rel_path}{hex_stamp}".encode()).hexdigest()
    return f"/dl/{token}/{hex_stamp}{rel_path}"


def test_secdownload_links(servers) -> None:
    now = int(time.time())
    link = _download_link("/secret/report.txt", now)
    assert answer(servers, "secdownload-valid", request(link))[2] == b"the report\n"
    expired = _download_link("/secret/report.txt", now - 3600)
    assert answer(servers, "secdownload-expired", request(expired))[0] == 410
    forged = link.replace("/dl/", "/dl/0", 1)[:-1]
    assert answer(servers, "secdownload-forged", request(forged))[0] == 403
    other = _download_link("/secret/report.txt", now).replace("report", "other")
    assert answer(servers, "secdownload-other-path", request(other))[0] == 403
    assert answer(servers, "secdownload-malformed", request("/dl/xyz"))[0] == 403


def test_webp_negotiation(servers) -> None:
    status, headers, body = answer(servers, "webp-accepted", request(
        "/img/photo.jpg", "Accept: image/avif,image/webp,*/*"))
    assert (status, body, headers["content-type"]) == (200, b"webp bytes", "image/webp")
    assert headers["vary"] == "Accept"
    status, headers, body = answer(servers, "webp-not-accepted", request(
        "/img/photo.jpg", "Accept: image/png,*/*"))
    assert (body, headers["content-type"], headers["vary"]) == (
        b"jpeg bytes", "image/jpeg", "Accept")
    _, _, body = answer(servers, "webp-no-variant", request(
        "/img/plain.jpg", "Accept: image/webp"))
    assert body == b"plain jpeg"


def test_usertrack_cookie(servers) -> None:
    _, headers, _ = answer(servers, "usertrack-new", request("/track/page.html"))
    name, _, rest = headers["set-cookie"].partition("=")
    value, _, attributes = rest.partition(";")
    assert (name, len(value), attributes.strip()) == ("TRACKID", 32, "Path=/; Max-Age=31536000")
    _, headers, _ = answer(servers, "usertrack-known", request(
        "/track/page.html", "Cookie: a=b; TRACKID=" + value))
    assert "set-cookie" not in headers


def test_ratelimit_answers_429_past_the_limit(servers) -> None:
    """100 requests in the window pass (the same answer each time, so the answer
    cache would replay it if the script's runs were taken for repeatable), the
    101st is refused until the window ends."""
    page = request("/limited/page.txt")
    statuses = [parse(exchange(servers[1], page))[0] for _ in range(100)]
    assert statuses == [200] * 100
    status, headers, _ = parse(exchange(servers[1], page))
    assert status == 429 and 0 < int(headers["retry-after"]) <= 10
    theirs = [parse(exchange(servers[0], page))[0] for _ in range(101)]
    assert theirs == [200] * 100 + [429]


def test_bundle_joins_the_named_files(servers) -> None:
    status, headers, body = answer(servers, "bundle-css", request("/bundle.css?a.css,b.css"))
    assert (status, headers["content-type"], body) == (200, "text/css", b"a {}\nb {}\n")
    _, headers, body = answer(servers, "bundle-js", request("/bundle.js?c.js"))
    assert (headers["content-type"], body) == ("text/javascript", b"c();\n")
    for refused in ("/bundle.css?a.css,missing.css", "/bundle.css?..%2Fsecret%2Freport.txt",
                    "/bundle.css?c.js", "/bundle.css", "/bundle.css?.htaccess.css"):
        assert answer(servers, "bundle-refused " + refused, request(refused))[0] == 404
