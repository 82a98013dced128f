"""The modules through a real worker: access, alias, redirect, dirlisting."""

from __future__ import annotations

import html

from sites import site  # noqa: F401 (fixture)


def test_access_deny_suffix_is_403(site):
    status, _, body = site.get("/secret.inc")
    assert status == 403 and b"403 Forbidden" in body
    status, _, _ = site.get("/index.html~")
    assert status == 403


def test_alias_maps_prefix_outside_docroot(site):
    status, headers, body = site.get("/al/a.txt")
    assert status == 200 and body == b"from the alias\n"
    assert headers["Content-Type"] == "text/plain"


def test_alias_target_cannot_be_escaped(site):
    for path in ("/al/../outside/passwd", "/al/%2e%2e/outside/passwd", "/al/..%2foutside/passwd"):
        status, _, body = site.get(path)
        assert status == 404 and b"root:" not in body, path


def test_redirect_with_rule_capture(site):
    status, headers, body = site.get("/old/page?q=1")
    assert status == 301
    assert headers["Location"] == "/new/page?q=1"
    assert headers["Content-Length"] == "0" and body == b""


def test_redirect_with_condition_capture(site):
    status, headers, _ = site.get("/x/abc", Host="red.example")
    assert status == 301
    assert headers["Location"] == "http://red.example.org/abc"
    status, _, _ = site.get("/x/abc", Host="blue.example")
    assert status == 404


def test_dirlisting_escapes_names(site):
    status, headers, body = site.get("/listed/")
    assert status == 200
    assert headers["Content-Type"] == "text/html"
    page = body.decode()
    assert "<script>alert" not in page
    assert "&#x3C;script&#x3E;alert(1).txt" in page
    assert 'href="%3Cscript%3Ealert(1).txt"' in page      # ( ) kept, as lighttpd
    assert "a&#x26;b&#x22;.txt" in page
    assert ".hidden" not in page                 # hide-dotfiles is on by default
    assert '<a href="inner/">inner</a>/' in page
    assert page.index("inner/") < page.index("a&#x26;b")   # directories first
    assert "<title>Index of /listed/</title>" in page
    assert '<a href="../">..</a>' in page
    assert html.unescape(page).count("<script>alert(1).txt") == 1


def test_dirlisting_off_elsewhere_is_403(site):
    (site.docroot / "plain").mkdir(exist_ok=True)
    status, _, _ = site.get("/plain/")
    assert status == 403


def test_dirlisting_head_has_the_get_headers_and_no_body(site):
    """A HEAD answer from a module that writes its body carried the HTML page."""
    _, get_headers, page = site.get("/listed/")
    data = site.raw(b"HEAD /listed/ HTTP/1.1\r\nHost: t\r\n\r\n"
                    b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"\r\nContent-Length: {len(page)}\r\n".encode() in head + b"\r\n"
    assert rest.startswith(b"HTTP/1.1 200 OK\r\n")    # the next answer follows at once
