"""Random requests beside lighttpd 1.4.69: a seeded stream of requests made of the
pieces real and hostile clients send (methods, versions, targets with dot segments,
escapes, %2F and non-ASCII octets (raw and escaped), Host forms, ranges, validators, credentials, bodies
and framing) goes to Debian's lighttpd and to a pylighttpd worker serving one config
(static files, aliases, redirects and rewrites with captures, conditions on the host,
query and user agent, setenv, basic auth, directory listings).  Each answer's status
and the headers that matter must agree, or the pair must be one of the differences
pylighttpd keeps on purpose (`deliberate`, each with its reason).  The differences a
probe like this found are fixed and listed in the commits that fixed them: empty
fields, POST without a length on HTTP/1.0, decoded %2F slashes, octets beyond ASCII,
error handlers' methods and statuses, REDIRECT_URI and REQUEST_URI.

A second stream asks CGI scripts through aliases, rewrites, index files, error
handlers and basic auth, with PATH_INFO and queries of every shape: the scripts'
environments (SCRIPT_NAME, PATH_INFO, REQUEST_URI, REDIRECT_URI, REMOTE_USER ...) must
be the same.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_differential import LIGHTTPD, beside_lighttpd, exchange, parse

pytestmark = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                reason="Debian's lighttpd is not installed")

SEEDS = (1, 2, 3)
REQUESTS_PER_SEED = 400
COMPARED = ("content-type", "content-length", "content-range", "location", "allow",
            "accept-ranges", "etag", "last-modified", "www-authenticate", "x-fz", "x-q",
            "x-ua", "cache-control")

CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_access", "mod_alias", "mod_redirect", "mod_rewrite", "mod_setenv",
                  "mod_expire", "mod_auth", "mod_authn_file", "mod_indexfile",
                  "mod_dirlisting", "mod_staticfile")
server.tag = "randomdiff"
index-file.names = ("index.html")
mimetype.assign = (".html" => "text/html", ".txt" => "text/plain", ".css" => "text/css",
                   ".bin" => "application/octet-stream")
url.access-deny = ("~", ".inc")
alias.url = ("/aliased/" => "{docroot}/sub/", "/al" => "{docroot}/list")
url.redirect = ("^/old/(.*)$" => "/new.txt?from=$1", "^/go$" => "http://example.org/%0")
url.rewrite-once = ("^/rw/([^/?]*)(\\?.*)?$" => "/sub/$1$2", "^/q\\?(.*)" => "/index.html?${{qsa}}")
url.rewrite-if-not-file = ("^/nf/(.*)" => "/sub/index.html?p=$1")
setenv.add-response-header = ("X-Fz" => "1")
expire.url = ("/sub/" => "access plus 1 hours")
$HTTP["url"] =^ "/list/" {{ dir-listing.activate = "enable" }}
auth.backend = "htpasswd"
auth.backend.htpasswd.userfile = "{base}/users"
auth.require = ("/priv/" => ("method" => "basic", "realm" => "fz", "require" => "valid-user"))
$HTTP["host"] =~ "^www\\.(.*)$" {{ url.redirect = ("^/(.*)" => "http://%1/$1") }}
$HTTP["querystring"] =~ "deny" {{ url.access-deny = ("") }}
$HTTP["querystring"] =~ "(^|&)q=([^&]*)" {{ setenv.add-response-header = ("X-Q" => "%2") }}
$HTTP["useragent"] =~ "bot" {{ url.access-deny = (".bin") }}
"""

PATHS = ["/", "/index.html", "/sub/", "/sub", "/sub/nums.txt", "/priv/p.txt", "/priv/",
         "/new.txt", "/list/", "/list", "/list/a.txt", "/list/b%20c.txt", "/style.css",
         "/rand.bin", "/link.html", "/aliased/", "/aliased/nums.txt", "/aliased", "/al/",
         "/ala.txt", "/al/a.txt", "/old/x", "/old/%C3%BC", "/go", "/rw/nums.txt", "/rw/",
         "/rw/x?y=1", "/q?a=b", "/nf/zz", "/missing", "/sub/../index.html",
         "/./index.html", "/%2e%2e/etc/passwd", "/sub/%2e%2e/index.html", "/index.html%00",
         "/index%2ehtml", "/index.html/", "/index.html/x", "/sub//nums.txt",
         "//index.html", "/x~", "/a.inc", "/sub/nums.txt?deny=1", "/%7Esub", "/%",
         "/%zz", "/%c3%a9", "/sub%2Fnums.txt", "/sub/%2F/nums.txt", "/%2F/old/y",
         "http://example.com/index.html", "/index.html#frag", "/sub/nums.txt?q=%C3%BC",
         "/index.html?q=a%20b&r=1", "*", "/old/ü", "/list/ü.txt", "/sub/nums.txt?q=ü",
         "/index.html#ü\x01", "/rw/é?x=é", "/%C3%BC\xfc"]
METHODS = ["GET"] * 8 + ["HEAD"] * 3 + ["POST", "OPTIONS", "get"]
VERSIONS = ["HTTP/1.1"] * 16 + ["HTTP/1.0"] * 6 + ["HTTP/1.2"]


def _fields(chooser: random.Random) -> list[tuple[bytes, bytes]]:
    """Header fields, each present or not, from what browsers, bots and probes send."""
    def maybe(chance: float, name: bytes, *values: bytes) -> None:
        if chooser.random() < chance:
            fields.append((name, chooser.choice(values)))
    fields: list[tuple[bytes, bytes]] = []
    maybe(0.9, b"Host", *[b"fz.test"] * 6, b"www.fz.test", b"FZ.TEST", b"fz.test:80", b"",
          b"fz.test.", b"[::1]", b"a b", b"x" * 300)
    maybe(0.3, b"Range", b"bytes=0-9", b"bytes=-5", b"bytes=10-", b"bytes=0-0,5-6",
          b"bytes=100000-", b"bytes=5-1", b"items=0-1", b"")
    maybe(0.2, b"If-None-Match", b"*", b'"x"', b'W/"x"', b"")
    maybe(0.2, b"If-Modified-Since", b"Sat, 01 Jan 2000 00:00:00 GMT",
          b"Sat, 01 Jan 2050 00:00:00 GMT", b"garbage")
    maybe(0.2, b"Authorization", b"Basic YWxpY2U6c2VjcmV0", b"Basic YWxpY2U6d3Jvbmc=",
          b"Basic !!!", b"Bearer x", b"Basic")
    maybe(0.2, b"User-Agent", b"bot", b"Mozilla/5.0", b"caf\xc3\xa9", b"")
    maybe(0.1, b"Cookie", b"a=1", b"a=\xc3\xbc")
    return fields


def random_request(chooser: random.Random) -> bytes:
    method, path = chooser.choice(METHODS), chooser.choice(PATHS)
    lines = [f"{method} {path} {chooser.choice(VERSIONS)}".encode("utf-8", "surrogateescape")]
    lines += [name + b": " + value for name, value in _fields(chooser)]
    body = b""
    if method == "POST" and chooser.random() < 0.8:
        body = chooser.choice([b"", b"hello"])
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def summary(raw: bytes) -> dict:
    status, headers, body = parse(raw)
    found = {"status": status, "line": raw.partition(b" ")[0]}
    found.update({name: headers.get(name) for name in COMPARED})
    found["body"] = body
    return found


def deliberate(raw: bytes, theirs: dict, ours: dict) -> str | None:
    """Why the two answers differ on purpose (RFC 9110/9112 sections), or None."""
    line = raw.split(b"\r\n", 1)[0]
    pair = theirs["status"], ours["status"]
    if pair == (501, 405) and line.split(b" ")[0] in (b"OPTIONS", b"get"):
        return "15.5.6: a method the resource does not support is 405 with Allow"
    if line.count(b" ") > 2 and ours["status"] == 400:
        return "9112 3.2: whitespace in a request-target makes it invalid"
    differing = {name for name in theirs if theirs[name] != ours[name]}
    target = line.split(b" ")[1] if line.count(b" ") >= 1 else b""
    if differing <= {"content-length", "content-range", "body"} and \
            ours["status"] in (200, 206) and \
            target.startswith((b"/list/", b"/al/")) and ours["content-type"] == "text/html":
        return "a directory listing: its markup and script are pylighttpd's own"
    if differing <= {"allow"} and ours["status"] == 405:
        return "15.5.6: a 405 carries Allow"
    if differing <= {"content-range", "x-fz", "x-q"} and ours["status"] == 416:
        return "15.5.17: a 416 says Content-Range: bytes */N (and keeps the fields " \
            "modules set, which lighttpd drops)"
    if differing == {"content-length"} and line.startswith(b"HEAD") and \
            ours["content-length"] == "0":
        return "8.6: a HEAD answer says the length a GET would get, 0 included"
    if differing <= {"etag", "last-modified"} and \
            ours["content-type"] == "application/octet-stream":
        return "8.8.3: a file of no known type keeps its validators (as in nginx)"
    if differing <= {"line"} and ours["status"] == 400 and theirs["line"] != ours["line"]:
        return "an unparsable request line is answered as HTTP/1.0"
    return None


def make_site(base: Path) -> Path:
    docroot = base / "www"
    for sub in ("sub", "priv", "list/inner", "old"):
        (docroot / sub).mkdir(parents=True)
    files = {"index.html": "hello\n", "sub/index.html": "sub\n", "new.txt": "new\n",
             "sub/nums.txt": "".join(f"{n}\n" for n in range(1, 2001)),
             "priv/p.txt": "secret\n", "list/a.txt": "a\n", "list/b c.txt": "b\n",
             "list/inner/i.html": "in\n", "style.css": "body{}", "a.inc": "inc\n"}
    for name, text in files.items():
        (docroot / name).write_text(text)
    (docroot / "rand.bin").write_bytes(random.Random(0).randbytes(5000))
    for path in docroot.rglob("*"):       # written a while ago: lighttpd leaves the
        os.utime(path, (1767225600, 1767225600))   # validators of a file of this second out
    (docroot / "link.html").symlink_to("index.html")
    subprocess.run(["htpasswd", "-bc", str(base / "users"), "alice", "secret"],
                   check=True, capture_output=True, timeout=10)
    return docroot


@pytest.fixture(scope="module")
def ports(tmp_path_factory):
    base = tmp_path_factory.mktemp("randomdiff")
    conf = base / "common.conf"
    conf.write_text(CONFIG.format(docroot=make_site(base), base=base))
    with beside_lighttpd(conf) as pair:
        yield pair


@pytest.mark.skipif(subprocess.run(["which", "htpasswd"], capture_output=True).returncode,
                    reason="needs apache2-utils' htpasswd")
@pytest.mark.parametrize("seed", SEEDS)
def test_random_requests_are_answered_as_lighttpd_answers_them(ports, seed):
    chooser = random.Random(seed)
    differences, statuses = [], set()
    for _ in range(REQUESTS_PER_SEED):
        raw = random_request(chooser)
        theirs, ours = (summary(exchange(port, raw)) for port in ports)
        statuses.add(theirs["status"])
        if theirs != ours and deliberate(raw, theirs, ours) is None:
            differences.append((raw, {k: (theirs[k], ours[k]) for k in theirs
                                      if theirs[k] != ours[k]}))
    assert not differences, "\n".join(f"{raw!r}: {diff}" for raw, diff in differences[:10])
    assert statuses >= {200, 206, 301, 304, 400, 401, 403, 404}, statuses


CGI_CONFIG = """
server.document-root = "{docroot}"
server.modules = ("mod_alias", "mod_rewrite", "mod_auth", "mod_authn_file", "mod_setenv",
                  "mod_indexfile", "mod_cgi", "mod_staticfile")
server.tag = "randomdiff"
index-file.names = ("index.py")
mimetype.assign = (".txt" => "text/plain")
cgi.assign = (".py" => "{python}")
alias.url = ("/alt/" => "{base}/alt/", "/apx" => "{docroot}/app")
url.rewrite-once = ("^/r/([^?]*)(\\?(.*))?$" => "/app/env.py/$1?rw=1&$3",
                    "^/pretty/(\\w+)$" => "/app/sub/env.py?id=$1")
url.rewrite-if-not-file = ("^/fb/(.*)$" => "/app/index.py/$1")
$HTTP["url"] =^ "/eh/" {{ server.error-handler-404 = "/app/env.py" }}
$HTTP["url"] =^ "/eh2/" {{ server.error-handler = "/app/env.py" }}
$HTTP["url"] =^ "/alt/" {{ setenv.add-environment = ("X_ENV" => "1") }}
auth.backend = "htpasswd"
auth.backend.htpasswd.userfile = "{base}/users"
auth.require = ("/app/sub/" => ("method" => "basic", "realm" => "r", "require" => "valid-user"))
"""
SEGMENTS = ["app", "env.py", "sub", "index.py", "x", "y", "", "..", ".", "%2e%2e", "%20",
            "%2F", "p.txt", "alt", "apx", "r", "pretty", "fb", "eh", "eh2", "nope.py",
            "%C3%BC", "a%3Fb", "ü", "é%C3%A9"]
QUERIES = ["", "?", "?a=1", "?a=%20b&c", "?x=%2F", "?q=ü&r=%C3%BC", "#ü"]
STARTS = ["/", "/app/env.py/", "/apx/env.py/", "/alt/env.py/", "/r/", "/pretty/", "/fb/",
          "/eh/", "/eh2/", "/app/", "/app/sub/env.py/", "/x/../app/%65nv.py/"]
OWN_VARIABLES = (b"REMOTE_PORT=", b"SERVER_PORT=", b"HTTP_HOST=")


def random_cgi_request(chooser: random.Random) -> bytes:
    start = chooser.choice(STARTS)
    path = start + "/".join(chooser.choice(SEGMENTS) for _ in range(chooser.randint(0, 3)))
    path += chooser.choice(QUERIES)
    if chooser.random() < 0.15:
        path = "http://Test.Example" + path
    method = chooser.choice(["GET", "GET", "POST", "HEAD"])
    lines = [f"{method} {path} HTTP/1.1", "Host: test.example", "Connection: close"]
    if chooser.random() < 0.3:
        lines.append(chooser.choice(["Authorization: Basic YWxpY2U6c2VjcmV0",
                                     "Authorization: Basic YWxpY2U6eA=="]))
    body = "abc" if method == "POST" else ""
    if body:
        lines += ["Content-Length: 3", "Content-Type: text/plain"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def environment(raw: bytes) -> tuple[int, bytes]:
    """The status and the script's environment but the variables that differ by
    nature (the servers' ports); a body that is no environment by its length."""
    status, _, body = parse(raw)
    if b"GATEWAY_INTERFACE=" not in body:
        return status, b"%d octets" % len(body)
    return status, b"\n".join(line for line in body.split(b"\n")
                              if not line.startswith(OWN_VARIABLES))


@pytest.fixture(scope="module")
def cgi_ports(tmp_path_factory):
    base = tmp_path_factory.mktemp("randomcgi")
    docroot = base / "www"
    script = Path(__file__).resolve().parents[1] / "cgi" / "env.py"
    for folder in (docroot / "app" / "sub", base / "alt"):
        folder.mkdir(parents=True)
    for name in ("app/env.py", "app/index.py", "app/sub/env.py"):
        shutil.copyfile(script, docroot / name)
    shutil.copyfile(script, base / "alt" / "env.py")
    (docroot / "app" / "p.txt").write_text("plain\n")
    subprocess.run(["htpasswd", "-bc", str(base / "users"), "alice", "secret"],
                   check=True, capture_output=True, timeout=10)
    conf = base / "common.conf"
    conf.write_text(CGI_CONFIG.format(docroot=docroot, base=base, python=sys.executable))
    with beside_lighttpd(conf) as pair:
        yield pair


@pytest.mark.skipif(shutil.which("htpasswd") is None, reason="needs apache2-utils' htpasswd")
def test_random_script_requests_get_lighttpd_s_environment(cgi_ports):
    chooser = random.Random(7)
    differences, scripts_run = [], 0
    for _ in range(400):
        raw = random_cgi_request(chooser)
        theirs, ours = (environment(exchange(port, raw)) for port in cgi_ports)
        scripts_run += b"GATEWAY_INTERFACE=" in theirs[1]
        if theirs != ours:
            differences.append((raw, theirs, ours))
    assert not differences, "\n".join(f"{raw!r}:\n  {theirs}\n  {ours}"
                                       for raw, theirs, ours in differences[:5])
    assert scripts_run > 200, scripts_run
