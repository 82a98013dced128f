"""The URL rule engine of mod_rewrite / mod_redirect (worker/urlsubst.py), piece by
piece: lighttpd's normalised target, replacements and their encoders, the PCRE
patterns Python's `re` is given, and the config errors for what it cannot do.
(tests/worker/test_rewrite_differential.py compares whole answers with lighttpd.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from master.configload import load
from shared.config import ConfigError
from shared.config.directives import DirectiveValueError
from shared.config.pcre import translate_pcre
from worker.urlsubst import (CONDITION_GROUP, DECODE_B64U, ENCODE_ALL, ENCODE_B64U,
                             ENCODE_NDE, ENCODE_NONE, ENCODE_PSNDE, PORT, QSA,
                             RULE_GROUP, TOLOWER, URL_PART, UrlParts, burl_append,
                             compile_pattern, compile_replacement, expand,
                             normalize_key, normalize_value, rule_target,
                             without_missing_groups)
from worker.urlsubst import _keeps_plain
from worker.bytesets import all_kept
from worker.urlnorm import AS_IS_TABLE, normalised
from shared.config.parseopts import DEFAULT_URL
from server_util import detached_request

URL = UrlParts("http", "example.org:8080", 81, "/p/a%20th", "x=1&y")


def filled(replacement: str, groups=("/all", "one"), condition=("host", "h1"),
           url: UrlParts = URL) -> str:
    parts = without_missing_groups(compile_replacement(replacement), len(groups) - 1)
    return expand(parts, groups, condition, url)


def test_keys_and_values_are_normalised_like_targets():
    assert normalize_key("^/caf%c3%a9/\u00e9$") == "^/caf%C3%A9/%C3%A9$"
    assert normalize_value("/%%c3%%a9/\u00e9/%1") == "/%%C3%%A9/%%C3%%A9/%1"


# ------------------------------------------------------------ replacements
def test_plain_references_are_copied_as_they_are():
    assert filled("/$0|$1|$2|%0|%1|%2") == "//all|one||host|h1|"


def test_doubled_sigils_escape_and_others_stay():
    assert filled("/$$/%%/$a/%z/end$") == "/$/%/$a/%z/end$"


def test_braced_references_are_encoded_path_safe_by_default():
    assert filled("/${1}/%{1}", groups=("", "a b/c%41?"), condition=("", "é")) == \
        "/a%20b/cA%3F/%C3%A9"


def test_two_digit_group_numbers():
    groups = tuple(str(n) for n in range(13))
    assert filled("${12}|$12", groups=groups) == "12|12"


def test_url_parts_and_port():
    assert filled("${url.scheme}|${url.authority}|${url.port}|${url.path}|${url.query}"
                  ) == "http|example.org:8080|81|/p/a%20th|x=1&y"
    assert filled("${esc:url.path}|${esc:url.port}") == "%2Fp%2Fa%2520th|81"
    assert filled("${url.unknown}x") == "x"


@pytest.mark.parametrize("replacement, expected", [
    ("/new${qsa}", "/new?x=1&y"),
    ("/new?a=b${qsa}", "/new?a=b&x=1&y"),
])
def test_qsa_appends_the_query(replacement, expected):
    assert filled(replacement) == expected


def test_qsa_with_no_query_or_an_empty_one():
    no_query = UrlParts("http", "h", 80, "/p", None)
    empty = UrlParts("http", "h", 80, "/p", "")
    assert filled("/new${qsa}", url=no_query) == "/new"
    assert filled("/new${qsa}", url=empty) == "/new?"
    assert filled("/new?a${qsa}", url=empty) == "/new?a"


def test_lighttpds_reading_of_odd_references():
    # unknown characters are skipped, an unknown esc... runs to the next ':',
    # junk after the number is skipped to '}', an unterminated one ends the result
    assert filled("/${foo1}/${ 1 }/${1junk}/${esc}x:${1}/${1") == "/one/one/one/one/"


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["/$1", "/x/$1$2", "/$0?a=b", "/$1%2", "/${1}", "/%41$1",
                        "/${noesc:1}", "/a b/$1", "/${url.path}"]),
       st.text(alphabet="/.ab?=&%2F", max_size=10), st.text(alphabet="/.ab?=&", max_size=6))
def test_a_replacement_said_to_keep_plain_groups_plain_does(replacement, group, host):
    parts = without_missing_groups(compile_replacement(normalize_value(replacement)), 2)
    result = expand(parts, ("/" + group, group, group), ("", host), URL)
    if _keeps_plain(parts) and all_kept(group, AS_IS_TABLE):
        assert all_kept(result, AS_IS_TABLE)
    assert _keeps_plain(parts) == (replacement in ("/$1", "/x/$1$2", "/$0?a=b"))


def test_compiled_parts():
    assert compile_replacement("/a$1%2${esc:3}${url.path}${url.port}${qsa}") == (
        "/a", (RULE_GROUP, 1, 0), (CONDITION_GROUP, 2, 0), (RULE_GROUP, 3, ENCODE_ALL),
        (URL_PART, "path", 0), (PORT, 0, 0), (QSA, 0, 0))


# ---------------------------------------------------------------- encoders
@pytest.mark.parametrize("flags, expected", [
    (ENCODE_ALL, "a%2520b%2Fc%3Fd%3De%257e"),
    (ENCODE_NDE, "a%20b%2Fc%3Fd%3De~"),
    (ENCODE_PSNDE, "a%20b/c%3Fd%3De~"),
    (ENCODE_NONE, "a%20b/c?d=e%7e"),
])
def test_escaping_encoders(flags, expected):
    assert burl_append("a%20b/c?d=e%7e", flags) == expected


def test_no_double_encoding_keeps_the_case_of_escapes_it_keeps():
    assert burl_append("%2f%41", ENCODE_NDE) == "%2fA"


def test_base64url():
    assert burl_append("hello/w?", ENCODE_B64U) == "aGVsbG8vdz8"
    assert burl_append("aGVsbG8vdz8", DECODE_B64U) == "hello/w?"
    assert burl_append("aGVsbG8vdz8=", DECODE_B64U) == "hello/w?"
    assert burl_append("a b", DECODE_B64U) == "i"         # spaces and controls skipped
    assert burl_append("a", DECODE_B64U) == ""            # six bits are no octet: nothing
    assert burl_append("YWJj/Zm9v", DECODE_B64U) == "abc"  # stops at an outsider
    assert burl_append("YWJjZA?x", DECODE_B64U) == "abcd"  # with the octets before it
    assert burl_append("YWJj\0Zm9v", DECODE_B64U) == ""   # but a NUL spoils it all


def test_case_changes_skip_escapes_and_need_an_encoder():
    assert burl_append("AbC%2F", TOLOWER | ENCODE_NONE) == "abc%2F"
    assert burl_append("AbC", TOLOWER) == ""               # lighttpd writes nothing
    assert filled("${toupper:noesc:1}", groups=("", "AbC")) == "abc"  # sic, lighttpd


def test_an_empty_value_is_empty_with_any_encoder():
    for flags in (ENCODE_ALL, ENCODE_B64U, DECODE_B64U, TOLOWER | ENCODE_NONE):
        assert burl_append("", flags) == ""


# ----------------------------------------------------------------- patterns
@pytest.mark.parametrize("pcre, python", [
    (r"^/a\z", r"^/a\Z"),
    (r"^/a\Z", r"^/a(?=\n?\Z)"),
    (r"(?<name>x)", r"(?P<name>x)"),
    (r"\Qa.b*\E+", r"a\.b\*+"),
    (r"\h+", r"[ \t]+"),
    (r"^/\x{41}\x{2e}", r"^/A\."),
    (r"(?i)^/a", r"(?i)^/a"),                   # flags at the start: as they are
    (r"^/(?i)img(/(?-i)X)?$", r"^/(?i:img(/(?-i:X))?$)"),   # to the end of the group
    (r"[[:alpha:][:digit:]_]", r"[a-zA-Z0-9_]"),
    (r"[\]\z(]", r"[\]\z(]"),                   # a class is not read for escapes
    (r"(?>a+)b++", r"(?>a+)b++"),               # atomic, possessive: re has them
])
def test_pcre_spelt_for_re(pcre, python):
    assert translate_pcre(pcre) == python


@pytest.mark.parametrize("pattern, named", [
    (r"^/a\Kb", r"\K"), (r"(?R)", "(?R)"), (r"(?|a|b)", "(?|"), (r"\p{L}", r"\p"),
    (r"(*UTF)a", "(*"), (r"[[:^alpha:]]", "[:^alpha:]"), (r"[[:nothing:]]", "nothing"),
])
def test_what_re_cannot_do_is_refused_by_name(pattern, named):
    with pytest.raises(DirectiveValueError, match=re.escape(named)):
        compile_pattern(pattern)


@pytest.mark.parametrize("module, setting, message", [
    ("mod_rewrite", 'url.rewrite-once = ( "^/(a" => "/b" )', "pcre2_compile failed"),
    ("mod_redirect", 'url.redirect = ( "^/a\\K" => "/b" )', r"\\K .* is not supported"),
    ("mod_alias", 'alias.url = ( "/a" => "/tmp/", "/a/b" => "/tmp/" )',
     "`/a/b' will never match as `/a' matched first"),
])
def test_a_rule_that_cannot_work_is_a_config_error(tmp_path: Path, module, setting,
                                                   message):
    conf = tmp_path / "bad.conf"
    conf.write_text(f'server.document-root = "/tmp"\nserver.modules = ("{module}")\n'
                    f"{setting}\n")
    with pytest.raises(ConfigError, match=message):
        load(str(conf))


@pytest.mark.parametrize("target", ["/a/b.html?x=1", "/a/./b/../c?y", "/a//b", "/caf%c3%a9",
                                    "/%7euser/", "http://h.example/p?q", "*", "/a?b=/./c",
                                    "/.well-known/x", "/a/b/.", "/a/..?x", "/a/.b?c//d"])
def test_the_rule_target_is_the_normalised_target_however_it_was_found(target):
    """A target set_target found kept as it is skips the check of its octets; any other
    (escapes, dot segments, absolute form, one changed since) is normalised."""
    request = detached_request()
    request.method = "OPTIONS" if target == "*" else "GET"
    request.set_target(target)
    origin = request.uri_path_raw + target[len(target.partition("?")[0]):] \
        if target.startswith("http") else target
    assert rule_target(request) == normalised(origin, DEFAULT_URL)
    request.target = "/changed/%7e/./x"            # as mod_magnet may set it
    assert rule_target(request) == normalised("/changed/%7e/./x", DEFAULT_URL) == \
        "/changed/~/x"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="/.a?%7e", max_size=12))
def test_the_rule_target_of_any_origin_form_target_is_its_normalised_form(tail):
    request = detached_request()
    request.set_target("/" + tail)
    assert rule_target(request) == normalised("/" + tail, DEFAULT_URL)


def test_patterns_match_the_normalised_target():
    pattern = compile_pattern("^/caf\u00e9$")
    assert pattern.search(normalised("/caf%c3%a9", DEFAULT_URL))
    assert not pattern.search("/caf\u00e9")


# ------------------------------------------------------------- any input
_PIECES = st.sampled_from(["$", "%", "{", "}", ":", "1", "9", "esc", "noesc:", "url.",
                           "path", "qsa", "tolower:", "decb64u:", "?", "&", "/", "a",
                           "\u00e9", "%%", "$$", "${", "%{", "\x00", "\r\n"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=24).map("".join),
       st.text(max_size=40), st.text(max_size=20))
def test_any_replacement_and_input_expand_without_error(replacement, group, query):
    url = UrlParts("http", "h", 80, "/p", query)
    assert isinstance(filled(replacement, groups=("/all", group), condition=(group,),
                             url=url), str)
