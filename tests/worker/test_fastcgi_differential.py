"""Differential test of mod_fastcgi and mod_scgi: Debian's lighttpd 1.4.69 and a
pylighttpd worker on the same config, in front of the same backends (php-cgi, the
WSGI app of gw_app.py under flup for FastCGI and SCGI and under uwsgi for the uwsgi
protocol, a garbage backend, a socket nobody listens on).  Each request goes to both
at the same time and the answers must agree on the status, the headers (but those in
IGNORED_HEADERS) and the body.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cgi_site import parse_answer
from gw_backends import backends_in, fastcgi_server, flup, php_cgi, uwsgi, write_php_site
from server_util import config_text
from test_cgi_differential import IGNORED_HEADERS
from test_differential import LIGHTTPD, beside_lighttpd, exchange

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")


# request name -> why pylighttpd answers otherwise
KNOWN_DIFFERENCES = {
    "backend-garbage": "bytes that are no FastCGI: lighttpd answers 500, pylighttpd 502 "
                       "(RFC 9110 15.6.3: an invalid answer from an upstream server), as "
                       "its mod_proxy does",
}


def gateway_config(sockets: Path, sendable: Path) -> str:
    return fastcgi_server(sockets, sendable) + f"""
scgi.server = (
  "/scgi/" => ( ( "socket" => "{sockets}/scgi.sock", "check-local" => "disable" ) ),
)
$HTTP["host"] == "authphp.test" {{
  fastcgi.server = ( "/" => ( ( "socket" => "{sockets}/app.sock", "check-local" => "disable",
                                "mode" => "authorizer" ) ),
                     ".php" => ( ( "socket" => "{sockets}/php.sock" ) ) )
}}
$HTTP["host"] == "broken.test" {{
  fastcgi.server = ( ".php" => ( ( "socket" => "{sockets}/php.sock",
                                   "broken-scriptfilename" => "enable" ) ) )
}}
$HTTP["url"] =^ "/uwsgi/" {{
  scgi.server = ( "/uwsgi/" => ( ( "socket" => "{sockets}/uwsgi.sock",
                                   "check-local" => "disable" ) ) )
  scgi.protocol = "uwsgi"
}}
"""


def get(target: str, *headers: str, method: str = "GET", host: str = "test.example") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(target: str, body: bytes) -> bytes:
    return get(target, f"Content-Length: {len(body)}", method="POST") + body


def chunked_post(target: str, body: bytes) -> bytes:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                      for part in (body[:50_000], body[50_000:])) + b"0\r\n\r\n"
    return get(target, "Transfer-Encoding: chunked", method="POST") + chunks


def _requests(sendable: Path) -> list[tuple[str, bytes]]:
    body = os.urandom(120_000)
    return [
        ("php-hello", get("/hello.php")),
        ("php-info-path-info", get("/info.php/extra/path?a=1&b=%20")),
        ("php-head", get("/hello.php", method="HEAD")),
        ("php-post", post("/info.php", body)),
        ("php-post-chunked", chunked_post("/info.php", body)),
        ("php-missing", get("/missing.php")),
        ("php-status", get("/status.php")),
        ("php-redirect", get("/redirect.php")),
        ("php-broken-scriptfilename", get("/info.php/more", host="broken.test")),
        ("php-sendfile-not-allowed", get(f"/sendfile.php?f={sendable}/file.txt")),
        ("authorizer-then-php", get("/info.php/p?x=1", host="authphp.test")),
        ("authorizer-denies-php", get("/info.php?deny", host="authphp.test")),
        ("authorizer-then-missing-php", get("/missing.php", host="authphp.test")),
        ("prefix-no-slash", get("/app/x/y?q=1")),
        ("prefix-slash", get("/pre/x/y")),
        ("prefix-itself", get("/pre/")),
        ("fix-root-scriptname", get("/a/b?c", host="root.test")),
        ("strip-request-uri", get("/strip/x?q")),
        ("remote-docroot", get("/remote/page/more")),
        ("app-post", post("/app/p", body)),
        ("app-post-chunked", chunked_post("/app/p", body)),
        ("app-head", get("/app/h", method="HEAD")),
        ("app-status", get("/app/s?status=409")),
        ("authorizer-approves", get("/auth/page")),
        ("authorizer-denies", get("/auth/page?deny")),
        ("x-sendfile", get(f"/send/?sendfile={sendable}/file.txt")),
        ("x-sendfile-outside", get("/send/?sendfile=/etc/hostname")),
        ("backend-down", get("/down/x")),
        ("backend-garbage", get("/garbage/x")),
        ("backend-timeout", get("/slow/?sleep=3")),
        ("scgi-get", get("/scgi/x/y?a=1")),
        ("scgi-post", post("/scgi/p", body)),
        ("scgi-post-chunked", chunked_post("/scgi/p", body)),
        ("uwsgi-get", get("/uwsgi/x/y?a=1")),
        ("uwsgi-post", post("/uwsgi/p", body)),
    ]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = tmp_path_factory.mktemp("gwdiff")
    docroot = base / "www"
    write_php_site(docroot)
    sendable = base / "sendable"
    sendable.mkdir()
    (sendable / "file.txt").write_text("sent by X-Sendfile\n")
    conf = base / "common.conf"
    with backends_in("gwdiff") as (sockets, backends):
        conf.write_text(config_text(docroot, gateway_config(sockets, sendable),  # the port is
                                    ("mod_fastcgi", "mod_scgi"))                  # each one's
                        .replace("server.port = 80\n", ""))
        backends.append(flup("fcgi", f"{sockets}/app.sock"))
        backends.append(flup("scgi", f"{sockets}/scgi.sock"))
        backends.append(flup("garbage", f"{sockets}/garbage.sock"))
        backends.append(php_cgi(f"{sockets}/php.sock", children=2))
        backends.append(uwsgi(f"{sockets}/uwsgi.sock", "uwsgi"))
        with beside_lighttpd(conf) as (theirs, ours):
            yield theirs, ours, sendable


def summary(raw: bytes, method: str) -> dict:
    status, headers, body = parse_answer(raw, method)
    found: dict = {"status": status, "body": body}
    found.update({k: v for k, v in headers.items() if k not in IGNORED_HEADERS})
    return found


def test_same_answers_as_lighttpd(servers):
    lighttpd_port, our_port, sendable = servers
    differences, known = {}, {}
    requests = _requests(sendable)
    with ThreadPoolExecutor(2) as pool:
        for name, raw in requests:
            theirs, ours = pool.map(lambda port: exchange(port, raw),
                                    (lighttpd_port, our_port))
            method = raw.split(b" ", 1)[0].decode()
            a, b = summary(theirs, method), summary(ours, method)
            diff = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys()
                    if a.get(k) != b.get(k)}
            if name in KNOWN_DIFFERENCES:
                known[name] = diff
            elif diff:
                differences[name] = {k: (x[:300], y[:300]) if isinstance(x, bytes) and
                                     isinstance(y, bytes) else (x, y)
                                     for k, (x, y) in diff.items()}
    assert not differences, "\n".join(f"{name}: {diff}" for name, diff in differences.items())
    stale = [name for name, diff in known.items() if not diff]
    assert not stale, f"listed in KNOWN_DIFFERENCES but now the same: {stale}"


def test_the_bodies_really_went_through(servers):
    """The POST cases compare equal because both backends saw the whole body."""
    _, our_port, _ = servers
    body = os.urandom(120_000)
    _, _, answer = parse_answer(exchange(our_port, post("/app/p", body)))
    assert f"BODY=120000 {hashlib.md5(body).hexdigest()}".encode() in answer
