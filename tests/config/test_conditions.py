"""Evaluation of conditional blocks by CompiledConfig, and capture substitution.

Configs are built the way the master builds them (`master.configload.load`), then
evaluated against a fake request that only answers `condition_value(field)`.  One test
runs real lighttpd on the same file and compares the `Server:` header it sends (the
`server.tag` the request ended up with) with our evaluation, request by request.
"""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from cfgtest_helpers import LIGHTTPD
from master.configload import load
from shared.config import ConfigError, load_config_text
from shared.config.captures import expand, match_groups
from shared.config.compiled import NO_CAPTURES, CompiledConfig

# No modules (pylighttpd may not have lighttpd's), a document root: loadable by both.
HEADER = ('server.document-root = "/tmp"\n'
          'server.compat-module-load = "disable"\n'
          'server.tag = "global"\n')


class Subject:
    """A request as conditions see it.  Field names are CompiledConfig's: host, url,
    querystring, remoteip, scheme, request-method, socket, header:<lowercase name>.
    A header the request does not have is "" (what the worker passes for it)."""

    def __init__(self, **fields: str) -> None:
        self.fields = {name.replace("_", "-"): value for name, value in fields.items()}
        self.asked: list[str] = []

    def header(self, name: str, value: str) -> "Subject":
        self.fields[f"header:{name.lower()}"] = value
        return self

    def condition_value(self, field: str) -> str:
        self.asked.append(field)
        return self.fields.get(field, "")


def compile_text(tmp_path: Path, body: str, header: str = HEADER) -> CompiledConfig:
    path = tmp_path / "conditions.conf"
    path.write_text(header + body)
    return load(str(path)).compiled


def tag(compiled: CompiledConfig, subject: Subject) -> str:
    return compiled.settings_for(subject)["server.tag"]


# ---------------------------------------------------------------- every operator
DEFAULTS = dict(host="www.example.org", url="/index.html", querystring="a=1&b=2",
                remoteip="192.0.2.10", scheme="http", request_method="GET")

# (condition, overrides of DEFAULTS, header name/value or None, expected match)
OPERATOR_CASES = [
    # host
    ('$HTTP["host"] == "www.example.org"', {}, None, True),
    ('$HTTP["host"] == "example.org"', {}, None, False),
    ('$HTTP["host"] != "example.org"', {}, None, True),
    ('$HTTP["host"] != "www.example.org"', {}, None, False),
    ('$HTTP["host"] =~ "(^|\\.)example\\.(org|com)"', {}, None, True),
    ('$HTTP["host"] =~ "example\\.(net|com)"', {}, None, False),
    ('$HTTP["host"] !~ "example\\.(net|com)"', {}, None, True),
    ('$HTTP["host"] !~ "exam.le"', {}, None, False),
    ('$HTTP["host"] =^ "www."', {}, None, True),
    ('$HTTP["host"] =^ "ftp."', {}, None, False),
    ('$HTTP["host"] =$ ".org"', {}, None, True),
    ('$HTTP["host"] =$ ".net"', {}, None, False),
    # host: case and :port do not matter for == / !=
    ('$HTTP["host"] == "www.example.org"', {"host": "WWW.Example.ORG"}, None, True),
    ('$HTTP["host"] == "www.example.org"', {"host": "www.example.org:8080"}, None, True),
    ('$HTTP["host"] == "www.example.org"', {"host": "WWW.EXAMPLE.ORG:443"}, None, True),
    ('$HTTP["host"] != "www.example.org"', {"host": "www.example.org:81"}, None, False),
    ('$HTTP["host"] == "[::1]"', {"host": "[::1]:8080"}, None, True),
    # a pattern's :port: the same port, or a Host without one (lighttpd 1.4.69)
    ('$HTTP["host"] == "www.example.org:8080"', {"host": "www.example.org:8080"}, None, True),
    ('$HTTP["host"] == "www.example.org:8080"', {"host": "www.example.org"}, None, True),
    ('$HTTP["host"] == "www.example.org:8080"', {"host": "www.example.org:8081"}, None, False),
    ('$HTTP["host"] == "www.example.org:80"', {"host": "www.example.org:8080"}, None, False),
    ('$HTTP["host"] == "www.example.org"', {"host": "www.example.org.evil"}, None, False),
    ('$HTTP["host"] =~ "^www\\.example"', {"host": "WWW.EXAMPLE.ORG"}, None, True),
    ('$HTTP["host"] =^ "www.ex"', {"host": "WWW.EXAMPLE.ORG"}, None, True),
    # url (path only)
    ('$HTTP["url"] == "/index.html"', {}, None, True),
    ('$HTTP["url"] == "/index.html?a=1&b=2"', {}, None, False),
    ('$HTTP["url"] != "/other"', {}, None, True),
    ('$HTTP["url"] =~ "\\.(html|htm)$"', {}, None, True),
    ('$HTTP["url"] =~ "^/(a|b)/"', {}, None, False),
    ('$HTTP["url"] !~ "^/(a|b)/"', {}, None, True),
    ('$HTTP["url"] =^ "/index"', {}, None, True),
    ('$HTTP["url"] =^ "/Index"', {}, None, False),          # url is case-sensitive
    ('$HTTP["url"] =$ ".html"', {}, None, True),
    ('$HTTP["url"] =$ ".php"', {}, None, False),
    ('$HTTP["url"] =~ "\\.php$"', {"url": "/x.php"}, None, True),   # simplified to =$
    ('$HTTP["url"] =~ "^/x$"', {"url": "/x"}, None, True),          # simplified to ==
    ('$HTTP["url"] =~ "^/x$"', {"url": "/xy"}, None, False),
    # querystring
    ('$HTTP["querystring"] == "a=1&b=2"', {}, None, True),
    ('$HTTP["querystring"] =~ "(^|&)b=2(&|$)"', {}, None, True),
    ('$HTTP["querystring"] !~ "c="', {}, None, True),
    ('$HTTP["querystring"] == ""', {"querystring": ""}, None, True),
    ('$HTTP["querystring"] =^ "b="', {}, None, False),
    # scheme and method
    ('$HTTP["scheme"] == "http"', {}, None, True),
    ('$HTTP["scheme"] == "https"', {}, None, False),
    ('$HTTP["scheme"] != "https"', {}, None, True),
    ('$HTTP["request-method"] == "GET"', {}, None, True),
    ('$HTTP["request-method"] == "POST"', {}, None, False),
    ('$HTTP["request-method"] =~ "^(PUT|DELETE)$"', {"request_method": "DELETE"}, None, True),
    ('$HTTP["request-method"] !~ "^(PUT|DELETE)$"', {}, None, True),
    # remoteip: CIDR v4, v6, v4-mapped
    ('$HTTP["remoteip"] == "192.0.2.0/24"', {}, None, True),
    ('$HTTP["remoteip"] == "192.0.3.0/24"', {}, None, False),
    ('$HTTP["remoteip"] != "192.0.3.0/24"', {}, None, True),
    ('$HTTP["remoteip"] != "192.0.2.0/24"', {}, None, False),
    ('$HTTP["remoteip"] == "192.0.2.10"', {}, None, True),
    ('$HTTP["remoteip"] == "192.0.2.11"', {}, None, False),
    ('$HTTP["remoteip"] == "10.0.0.0/8"', {"remoteip": "10.200.1.2"}, None, True),
    ('$HTTP["remoteip"] == "192.0.2.8/29"', {}, None, True),        # .8 - .15
    ('$HTTP["remoteip"] == "192.0.2.0/29"', {}, None, False),       # .0 - .7
    ('$HTTP["remoteip"] == "2001:db8::/32"', {"remoteip": "2001:db8:1::5"}, None, True),
    ('$HTTP["remoteip"] == "2001:db8::/32"', {"remoteip": "2001:db9::5"}, None, False),
    ('$HTTP["remoteip"] == "::1"', {"remoteip": "::1"}, None, True),
    ('$HTTP["remoteip"] == "2001:db8::/32"', {}, None, False),      # v4 client, v6 net
    ('$HTTP["remoteip"] == "192.0.2.0/24"', {"remoteip": "2001:db8::1"}, None, False),
    ('$HTTP["remoteip"] == "192.0.2.0/24"', {"remoteip": "::ffff:192.0.2.10"}, None, True),
    ('$HTTP["remoteip"] == "192.0.2.0/24"', {"remoteip": "::ffff:192.0.3.10"}, None, False),
    ('$HTTP["remoteip"] != "127.0.0.1"', {"remoteip": "::ffff:127.0.0.1"}, None, False),
    ('$HTTP["remoteip"] =~ "^192\\.0\\.2\\."', {}, None, True),
    ('$HTTP["remote-ip"] == "192.0.2.0/24"', {}, None, True),
    # =^ and =$ take an address, compared as text (lighttpd 1.4.69)
    ('$HTTP["remoteip"] =^ "192.0.2.1"', {}, None, True),       # 192.0.2.10
    ('$HTTP["remoteip"] =$ "::10"', {"remoteip": "2001:db8::10"}, None, True),
    ('$HTTP["remoteip"] =^ "192.0.2.0/24"', {}, None, False),   # a network is text here
    # headers, and a missing header compares as ""
    ('$REQUEST_HEADER["X-Api-Key"] == "secret"', {}, ("X-Api-Key", "secret"), True),
    ('$REQUEST_HEADER["X-Api-Key"] == "secret"', {}, ("X-Api-Key", "other"), False),
    ('$REQUEST_HEADER["x-api-key"] =^ "sec"', {}, ("X-API-KEY", "secret"), True),
    ('$REQUEST_HEADER["X-Api-Key"] == ""', {}, None, True),
    ('$REQUEST_HEADER["X-Api-Key"] != ""', {}, None, False),
    ('$REQUEST_HEADER["X-Api-Key"] =~ "."', {}, None, False),
    ('$REQUEST_HEADER["X-Api-Key"] !~ "."', {}, None, True),
    ('$HTTP["useragent"] =~ "(?i)bot"', {}, ("User-Agent", "Googlebot/2.1"), True),
    ('$HTTP["user-agent"] =$ "curl"', {}, ("User-Agent", "curl/8"), False),
    ('$HTTP["referer"] =^ "https://example.org/"', {}, ("Referer", "https://example.org/a"), True),
    ('$HTTP["cookie"] =~ "session=[0-9a-f]+"', {}, ("Cookie", "x=1; session=beef"), True),
    ('$HTTP["cookie"] == ""', {}, None, True),
    ('$HTTP["language"] =^ "de"', {}, ("Accept-Language", "de-DE,en"), True),
    # a pattern anchored at the start is matched there alone (match, not search); one
    # whose ^ sits in an alternative, or comes later, is still searched for
    ('$HTTP["url"] =~ "^/index"', {}, None, True),
    ('$HTTP["url"] =~ "^/html"', {"url": "/x/html"}, None, False),
    ('$HTTP["url"] =~ "^/nope|html"', {}, None, True),
    ('$HTTP["url"] =~ "(?:^/nope)|index"', {}, None, True),
    ('$HTTP["url"] !~ "^/index"', {}, None, False),
    ('$HTTP["querystring"] =~ "(^|&)b=2"', {}, None, True),
]


@pytest.mark.parametrize("condition,overrides,header,expected", OPERATOR_CASES,
                         ids=[f"{i}:{c[0]}" for i, c in enumerate(OPERATOR_CASES)])
def test_operator(tmp_path: Path, condition: str, overrides: dict, header, expected: bool
                  ) -> None:
    compiled = compile_text(tmp_path, condition + ' { server.tag = "matched" }\n')
    subject = Subject(**{**DEFAULTS, **overrides})
    if header:
        subject.header(*header)
    assert tag(compiled, subject) == ("matched" if expected else "global")


# ---------------------------------------------------------------- structure
NESTED = '''
$HTTP["host"] == "a.example" {
    server.tag = "a"
    $HTTP["url"] =^ "/api/" {
        server.tag = "a-api"
        $HTTP["request-method"] == "POST" { server.tag = "a-api-post" }
    }
}
$HTTP["url"] =^ "/api/" {
    server.name = "api-anywhere"
}
'''


@pytest.mark.parametrize("host,url,method,expected_tag,expected_name", [
    ("a.example", "/", "GET", "a", ""),
    ("a.example", "/api/x", "GET", "a-api", "api-anywhere"),
    ("a.example", "/api/x", "POST", "a-api-post", "api-anywhere"),
    ("b.example", "/api/x", "POST", "global", "api-anywhere"),   # inner needs outer
    ("b.example", "/", "POST", "global", ""),
])
def test_nesting(tmp_path: Path, host, url, method, expected_tag, expected_name) -> None:
    compiled = compile_text(tmp_path, NESTED)
    settings = compiled.settings_for(Subject(host=host, url=url, request_method=method))
    assert settings["server.tag"] == expected_tag
    assert settings["server.name"] == expected_name


CHAIN = r'''
$HTTP["host"] == "one.example" {
    server.tag = "one"
} else $HTTP["host"] =~ "example" {
    server.tag = "regex"
} else $HTTP["host"] =$ ".example" {
    server.tag = "never: the regex branch already matches these"
} else $HTTP["url"] =^ "/u" {
    server.tag = "url"
} else {
    server.tag = "else"
}
'''


@pytest.mark.parametrize("host,url,expected", [
    ("one.example", "/u", "one"),         # first branch; later matching ones skipped
    ("two.example", "/u", "regex"),
    ("x.example", "/", "regex"),
    ("other.test", "/u", "url"),
    ("other.test", "/", "else"),
])
def test_else_chain_takes_first_matching_branch(tmp_path: Path, host, url, expected) -> None:
    compiled = compile_text(tmp_path, CHAIN)
    assert tag(compiled, Subject(host=host, url=url)) == expected


NESTED_CHAIN = '''
$HTTP["host"] == "n.example" {
    $HTTP["url"] =^ "/a" { server.tag = "a" }
    else $HTTP["url"] =^ "/b" { server.tag = "b" }
    else {
        server.tag = "n-else"
        $HTTP["querystring"] == "" { server.name = "no-query" }
        else { server.name = "query" }
    }
} else {
    server.tag = "outer-else"
}
'''


@pytest.mark.parametrize("host,url,query,expected_tag,expected_name", [
    ("n.example", "/a", "", "a", ""),
    ("n.example", "/b", "q", "b", ""),
    ("n.example", "/c", "", "n-else", "no-query"),
    ("n.example", "/c", "q=1", "n-else", "query"),
    ("m.example", "/a", "q=1", "outer-else", ""),
])
def test_nested_else_chains(tmp_path: Path, host, url, query, expected_tag, expected_name
                            ) -> None:
    compiled = compile_text(tmp_path, NESTED_CHAIN)
    settings = compiled.settings_for(Subject(host=host, url=url, querystring=query))
    assert (settings["server.tag"], settings["server.name"]) == (expected_tag, expected_name)


def test_file_order_later_block_wins(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, '''
$HTTP["url"] =^ "/" { server.tag = "first" server.name = "from-first" }
$HTTP["host"] == "h" { server.tag = "second" }
$HTTP["url"] =$ ".html" { server.tag = "third" }
''')
    assert tag(compiled, Subject(host="x", url="/")) == "first"
    assert tag(compiled, Subject(host="h", url="/")) == "second"
    settings = compiled.settings_for(Subject(host="h", url="/i.html"))
    assert settings["server.tag"] == "third"
    assert settings["server.name"] == "from-first"    # untouched keys survive


def test_duplicate_condition_blocks_merge_at_first_position(tmp_path: Path) -> None:
    """A repeated condition is the same block, at the place of its first occurrence."""
    compiled = compile_text(tmp_path, '''
$HTTP["host"] == "h" { server.name = "h" }
$HTTP["url"] =^ "/" { server.tag = "url" }
$HTTP["host"] == "h" { server.tag = "host-again" }
''')
    assert len(compiled.blocks) == 2
    # merged into the first host block, which comes before the url block
    assert tag(compiled, Subject(host="h", url="/")) == "url"
    assert tag(compiled, Subject(host="h", url="x")) == "host-again"


def test_plus_equals_in_block_extends_global(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, '''
mimetype.assign = (".html" => "text/html")
server.name = "base"
$HTTP["host"] == "h" {
    mimetype.assign += (".css" => "text/css")
    server.name += "-h"
    $HTTP["url"] =^ "/js/" { mimetype.assign += (".js" => "text/javascript") }
}
''')
    outside = compiled.settings_for(Subject(host="x", url="/js/a"))
    assert outside["mimetype.assign"] == ((".html", "text/html"),)
    assert outside["server.name"] == "base"
    inside = compiled.settings_for(Subject(host="h", url="/"))
    assert inside["mimetype.assign"] == ((".html", "text/html"), (".css", "text/css"))
    assert inside["server.name"] == "base-h"
    deeper = compiled.settings_for(Subject(host="h", url="/js/x"))
    assert deeper["mimetype.assign"] == ((".html", "text/html"), (".css", "text/css"),
                                         (".js", "text/javascript"))
    # the global value is not changed by evaluating a request
    assert compiled.globals["mimetype.assign"] == ((".html", "text/html"),)


def test_no_blocks_returns_globals(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, 'server.name = "n"\n')
    settings = compiled.settings_for(Subject(host="h"))
    assert settings["server.tag"] == "global" and settings["server.name"] == "n"
    assert settings.captures("server.name") == NO_CAPTURES


def test_each_condition_evaluated_once_per_request(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, '''
$HTTP["host"] == "h" { server.tag = "a" }
$HTTP["url"] =^ "/x" {
    $HTTP["host"] == "h" { server.name = "b" }
}
$HTTP["host"] == "h" { server.name = "c" }
''')
    subject = Subject(host="h", url="/x")
    settings = compiled.settings_for(subject)
    # the third block merges into the first, so the nested one (block 3) comes last
    assert (settings["server.tag"], settings["server.name"]) == ("a", "b")
    assert sorted(subject.asked) == ["host", "url"]


def test_remoteip_cached_per_connection(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, '$HTTP["remoteip"] == "10.0.0.0/8" { server.tag = "lan" }\n'
                                      '$HTTP["url"] == "/u" { server.name = "u" }\n')
    cache: dict = {}
    first = Subject(remoteip="10.1.1.1", url="/u")
    assert tag(compiled, first) == "lan"
    second = Subject(remoteip="10.1.1.1", url="/v")
    assert compiled.settings_for(second, cache)["server.tag"] == "lan"
    third = Subject(remoteip="10.1.1.1", url="/u")
    settings = compiled.settings_for(third, cache)
    assert settings["server.tag"] == "lan" and settings["server.name"] == "u"
    assert third.asked == ["url"]                 # remoteip came from the cache
    assert Subject(remoteip="8.8.8.8").condition_value("remoteip") == "8.8.8.8"
    assert tag(compiled, Subject(remoteip="8.8.8.8")) == "global"


@pytest.mark.parametrize("socket_value,expected", [
    ("0.0.0.0:8080", "s8080"), (":8080", "s8080"), ("*:8080", "s8080"),
    ("127.0.0.1:8080", "global"), ("0.0.0.0:80", "global"),
])
def test_socket_condition(tmp_path: Path, socket_value: str, expected: str) -> None:
    compiled = compile_text(tmp_path, '$SERVER["socket"] == ":8080" { server.tag = "s8080" }\n')
    assert compiled.socket_specs() == [":8080"]
    assert tag(compiled, Subject(socket=socket_value)) == expected


# ---------------------------------------------------------------- captures
def test_captures_from_regex_condition(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, r'''
$HTTP["host"] =~ "^(www\.)?([^.]+)\.example\.org$" {
    server.document-root = "/srv/%2/htdocs"
    $HTTP["url"] =^ "/static/" { server.name = "static-%2" }
    $HTTP["url"] =~ "^/u/(\w+)" { server.tag = "user-%1" }
}
''')
    settings = compiled.settings_for(Subject(host="www.shop.example.org", url="/u/alice/x"))
    assert settings.captures("server.document-root") == ("www.shop.example.org", "www.", "shop")
    assert expand(settings["server.document-root"], (),
                  settings.captures("server.document-root")) == "/srv/shop/htdocs"
    # the innermost regex condition around a setting provides its captures
    assert settings.captures("server.tag") == ("/u/alice", "alice")
    assert expand(settings["server.tag"], (), settings.captures("server.tag")) == "user-alice"
    # a global setting has none
    assert settings.captures("server.errorlog") == NO_CAPTURES

    plain = compiled.settings_for(Subject(host="shop.example.org", url="/static/a.css"))
    # a group that did not take part in the match is ""
    assert plain.captures("server.document-root") == ("shop.example.org", "", "shop")
    # a non-regex block inherits the captures of the regex block around it
    assert plain.captures("server.name") == ("shop.example.org", "", "shop")
    assert expand(plain["server.name"], (), plain.captures("server.name")) == "static-shop"


def test_no_captures_without_regex(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, '$HTTP["host"] == "h" { server.name = "%1" }\n')
    settings = compiled.settings_for(Subject(host="h"))
    assert settings["server.name"] == "%1"
    assert settings.captures("server.name") == NO_CAPTURES


def test_captures_follow_the_block_that_won(tmp_path: Path) -> None:
    compiled = compile_text(tmp_path, r'''
$HTTP["host"] =~ "^([a-z]+)\.example$" { server.document-root = "/srv/%1" }
$HTTP["url"] =^ "/static/" { server.document-root = "/static" }
''')
    settings = compiled.settings_for(Subject(host="abc.example", url="/static/x"))
    assert settings["server.document-root"] == "/static"
    assert settings.captures("server.document-root") == NO_CAPTURES


@pytest.mark.parametrize("template,rule,cond,expected", [
    ("/x/$1/%1", ("/a/b", "b"), ("h.example", "h"), "/x/b/h"),
    ("$0|%0", ("R", "r"), ("C", "c"), "R|C"),
    ("$2$1", ("ab", "a", "b"), (), "ba"),
    ("%1-%2-%9", (), ("all", "one"), "one--"),          # out of range: empty
    ("$5", ("m",), (), ""),
    (r"\$1 costs 100\%1", ("x", "y"), ("c", "d"), "$1 costs 100%1"),   # escapes
    ("100% of $", ("x",), ("y",), "100% of $"),         # no digit: kept as written
    ("$$1", ("x", "y"), (), "$y"),
    ("%%1", (), ("x", "y"), "%y"),
    ("no references", ("x",), ("y",), "no references"),
    ("$10", ("a", "b"), (), "b0"),                       # one digit only
    ("ünï/$1", ("x", "çé"), (), "ünï/çé"),
])
def test_expand(template: str, rule: tuple, cond: tuple, expected: str) -> None:
    assert expand(template, rule, cond) == expected


def test_match_groups_unmatched_group_is_empty() -> None:
    match = re.search(r"^/(a)?(b+)(c)?", "/bbx")
    assert match_groups(match) == ("/bb", "", "bb", "")
    assert expand("[$1][$2][$3]", match_groups(match), ()) == "[][bb][]"


# ---------------------------------------------------------------- against lighttpd
LIVE_BODY = r'''
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{errorlog}"
$HTTP["scheme"] == "http" { server.tag = "http" }
$HTTP["remoteip"] == "127.0.0.0/8" { server.tag = "lo" }
$HTTP["remoteip"] == "::ffff:127.0.0.0/104" { server.tag = "v6-mapped-net" }
$REQUEST_HEADER["X-Tag"] == "" { server.tag = "no-x-tag" }
$HTTP["host"] == "example.org" {
    server.tag = "ex"
    $HTTP["url"] =^ "/api/" { server.tag = "ex-api" }
    else $HTTP["url"] =$ ".php" { server.tag = "ex-php" }
    else $HTTP["querystring"] =~ "(^|&)debug=1" { server.tag = "ex-debug" }
}
else $HTTP["host"] =~ "^(www\.)?test\.(com|net)$" { server.tag = "test" }
else $HTTP["host"] =$ ".org" { server.tag = "org" }
else $HTTP["host"] == "withport.x:8080" { server.tag = "withport" }
else $HTTP["host"] =^ "pre" { server.tag = "prefix" }
else $HTTP["host"] != "ne.x" {
    $REQUEST_HEADER["X-Tag"] != "" { server.tag = "hdr" }
}
else { server.tag = "else" }
$HTTP["host"] == "merge.x" { server.tag = "merge-host" }
else $HTTP["url"] == "/merge" { server.name = "m" }
$HTTP["url"] == "/merge" { server.tag = "merge-url" }
$HTTP["request-method"] == "POST" { server.tag = "post" }
'''

# (method, Host, target, extra headers); xfail reason where we know we differ.
LIVE_REQUESTS = [
    ("GET", "example.org", "/", {}, None),
    ("GET", "Example.ORG", "/", {}, None),
    ("GET", "example.org:8080", "/", {}, None),
    ("GET", "example.org", "/api/v1", {}, None),
    ("GET", "example.org", "/api/v1?debug=1", {}, None),
    ("GET", "example.org", "/x.php", {}, None),
    ("GET", "example.org", "/x.html?a=2&debug=1", {}, None),
    ("GET", "example.org", "/x.html?debug=10", {}, None),
    ("GET", "example.org", "/ap%69/v1", {}, None),
    ("GET", "www.test.com", "/", {}, None),
    ("GET", "TEST.NET", "/", {}, None),
    ("GET", "test.org", "/", {}, None),
    ("GET", "a.b.org", "/", {}, None),
    ("GET", "prefix.x", "/", {}, None),
    ("GET", "PREfix.y", "/", {}, None),
    ("GET", "other.x", "/", {}, None),
    ("GET", "other.x", "/", {"X-Tag": "1"}, None),
    ("GET", "ne.x", "/", {}, None),
    ("GET", "NE.X:81", "/", {"X-Tag": "1"}, None),
    ("GET", "withport.x:8080", "/", {}, None),
    ("POST", "example.org", "/api/v1", {}, None),
    ("GET", "test.net:99", "/", {}, None),
    ("GET", "a.org:8080", "/", {}, None),
    ("GET", "withport.x:9999", "/", {}, None),
    ("GET", "PRE.y", "/", {}, None),
    ("GET", "other.x", "/merge", {}, None),
    ("GET", "merge.x", "/merge", {}, None),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    """Real lighttpd on a free 127.0.0.1 port, and our compiled view of the same file."""
    if LIGHTTPD is None:
        pytest.skip("Debian's lighttpd is not installed")
    directory = tmp_path_factory.mktemp("live")
    (directory / "root").mkdir()
    port = _free_port()
    conf = directory / "live.conf"
    conf.write_text(HEADER.replace('"/tmp"', f'"{directory / "root"}"')
                    + LIVE_BODY.replace("{port}", str(port))
                    .replace("{errorlog}", str(directory / "error.log")))
    compiled = load(str(conf)).compiled
    process = subprocess.Popen([LIGHTTPD, "-D", "-f", str(conf)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, cwd=directory)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stdout.read().decode(errors="replace") \
                        if process.poll() is not None else ""
                    pytest.fail(f"lighttpd did not start: {output}")
                time.sleep(0.05)
        yield port, compiled
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _lighttpd_tag(port: int, method: str, host: str, target: str, headers: dict) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host)
        for name, value in headers.items():
            connection.putheader(name, value)
        if method == "POST":
            connection.putheader("Content-Length", "0")
        connection.endheaders()
        response = connection.getresponse()
        response.read()
        return response.getheader("Server")
    finally:
        connection.close()


def _our_tag(compiled: CompiledConfig, method: str, host: str, target: str,
             headers: dict) -> str:
    path, _, query = target.partition("?")
    subject = Subject(host=host, url=urllib.parse.unquote(path), querystring=query,
                      remoteip="127.0.0.1", scheme="http", request_method=method,
                      socket=f"127.0.0.1:{compiled.globals['server.port']}")
    for name, value in headers.items():
        subject.header(name, value)
    return tag(compiled, subject)


def _live_params():
    for method, host, target, headers, divergence in LIVE_REQUESTS:
        marks = [pytest.mark.xfail(reason=divergence, strict=True)] if divergence else []
        yield pytest.param(method, host, target, headers, marks=marks,
                           id=f"{method} {host}{target} {headers or ''}".strip())


@pytest.mark.parametrize("method,host,target,headers", list(_live_params()))
def test_same_block_as_lighttpd(live, method: str, host: str, target: str, headers: dict
                                ) -> None:
    port, compiled = live
    theirs = _lighttpd_tag(port, method, host, target, headers)
    ours = _our_tag(compiled, method, host, target, headers)
    assert ours == theirs, f"lighttpd chose {theirs!r}, we chose {ours!r}"


# host patterns lighttpd 1.4.69 accepts or refuses ("invalid IP addr") with ==, !=, =^, =$
HOST_PATTERNS = [":", "a:", ":80", "a:80", "a:b", "1.2.3.4:", "a:1x", "a:99999", "a:65535",
                 "a:0", "a::b", "::", "1:2", ":a", "a:080", "a:+1", "a: 1", "[::1]:",
                 "[::1]80", "[::1]:80", "[::1]:65536", "[::1]:x", ""]


@pytest.mark.skipif(LIGHTTPD is None, reason="Debian's lighttpd is not installed")
@pytest.mark.parametrize("operator", ["==", "=^"])
def test_host_patterns_are_checked_as_lighttpd_checks_them(operator, tmp_path):
    for pattern in HOST_PATTERNS:
        text = f'$HTTP["host"] {operator} "{pattern}" {{ }}\n'
        conf = tmp_path / "host.conf"
        conf.write_text(text)
        theirs = subprocess.run([LIGHTTPD, "-p", "-f", str(conf)], capture_output=True,
                                timeout=10).returncode == 0
        try:
            load_config_text(text, "<test>", str(tmp_path))
            ours = True
        except ConfigError:
            ours = False
        assert ours == theirs, (pattern, "lighttpd accepts" if theirs else "lighttpd refuses")


def test_settings_are_remembered_by_the_values_that_decide_them(tmp_path: Path) -> None:
    """A second request with the same Host and socket finds its settings without a
    walk of the blocks; other values (captures included) get their own."""
    compiled = compile_text(tmp_path,
                            '$SERVER["socket"] == ":8443" { server.name = "tls" }\n'
                            '$HTTP["host"] =~ "^(.+)\\.example$" { server.tag = "%1" }\n')
    cache: dict = {}
    first = compiled.settings_for(Subject(host="a.example", socket=":8443"), cache)
    again = Subject(host="a.example", socket=":8443")
    assert compiled.settings_for(again, cache) is first
    assert again.asked == ["host"]                   # the socket's result is the connection's
    other = compiled.settings_for(Subject(host="b.example", socket=":8443"), cache)
    assert other is not first
    assert (first.captures("server.tag"), other.captures("server.tag")) == \
        (("a.example", "a"), ("b.example", "b"))
    plain = compiled.settings_for(Subject(host="a.example", socket=":80"), {})
    assert plain["server.name"] != "tls" and first["server.name"] == "tls"
