"""The request-target under server.http-parseopts (worker/urlnorm.py), and how the option
list combines (shared/config/parseopts.py), each rule as lighttpd 1.4.69's src/burl.c
and src/configfile.c have it; test_parseopts_differential.py runs the same targets
through lighttpd itself."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings, strategies as st

from shared.config.directives import DirectiveValueError
from shared.config.parseopts import (DEFAULT, DEFAULT_URL, URL_2F_DECODE, URL_2F_REJECT,
                                     URL_CTRLS_REJECT, URL_DOTSEG_REJECT, URL_DOTSEG_REMOVE,
                                     URL_INVALID_UTF8_REJECT, URL_NORMALIZE,
                                     URL_QUERY_20_PLUS, URL_REQUIRED, URL_UNRESERVED,
                                     parse_options, relaxed_warning)
from shared.config.values import Array
from worker import urlnorm
from worker.bytesets import all_kept
from worker.urlnorm import clean_path, normalised, normalised_query, refusal, split_at


def options(**pairs: str):
    """parse_options of ("key" => "value", ...) in the order given."""
    return parse_options(Array([(key.replace("_", "-"), value)
                                for key, value in pairs.items()]))


REQUIRED = options(url_normalize_required="enable").url
RAW = options(url_normalize="disable").url


# ------------------------------------------------------------ the option list
def test_no_list_is_lighttpds_defaults():
    assert parse_options(None) is DEFAULT
    assert DEFAULT.url == (URL_NORMALIZE | URL_UNRESERVED | URL_CTRLS_REJECT | URL_2F_DECODE
                           | URL_DOTSEG_REMOVE | URL_INVALID_UTF8_REJECT)
    assert not DEFAULT.method_get_body and not DEFAULT.relaxed


def test_debians_list_adds_the_required_form():
    debian = options(header_strict="enable", host_strict="enable", host_normalize="enable",
                     url_normalize_unreserved="enable", url_normalize_required="enable",
                     url_ctrls_reject="enable", url_path_2f_decode="enable",
                     url_path_dotseg_remove="enable")
    assert debian.url == DEFAULT_URL | URL_REQUIRED
    assert not debian.relaxed


def test_url_normalize_off_drops_every_url_rule_and_the_options_after_it():
    assert options(url_normalize="disable").url == 0
    assert options(url_normalize="disable", method_get_body="enable").method_get_body is False
    assert options(method_get_body="enable", url_normalize="disable").method_get_body is True


def test_with_neither_form_on_the_unreserved_form_comes_back():
    without = options(url_normalize_unreserved="disable", url_invalid_utf8_reject="disable")
    assert without.url & (URL_UNRESERVED | URL_INVALID_UTF8_REJECT | URL_2F_DECODE) == \
        URL_UNRESERVED | URL_INVALID_UTF8_REJECT | URL_2F_DECODE
    kept = options(url_path_2f_decode="disable", url_normalize_unreserved="disable")
    assert not kept.url & URL_2F_DECODE


@pytest.mark.parametrize("pairs, message", [
    ({"url_path_2f_reject": "enable"},
     "conflicting options: url-path-2f-decode, url-path-2f-reject"),
    ({"url_path_dotseg_reject": "enable"},
     "conflicting options: url-path-dotseg-remove, url-path-dotseg-reject"),
    ({"url_bogus": "enable"}, "unrecognized key: url-bogus"),
    ({"url_ctrls_reject": "maybe"},
     'unrecognized value: url-ctrls-reject => maybe (expect "[enable|disable]")'),
])
def test_what_lighttpd_refuses_is_refused(pairs, message):
    with pytest.raises(DirectiveValueError, match=re.escape(message)):
        options(**pairs)


def test_rejecting_in_place_of_removing_is_accepted():
    chosen = options(url_path_2f_decode="disable", url_path_2f_reject="enable",
                     url_path_dotseg_remove="disable", url_path_dotseg_reject="enable")
    assert chosen.url & (URL_2F_REJECT | URL_DOTSEG_REJECT) == URL_2F_REJECT | URL_DOTSEG_REJECT
    assert not chosen.url & (URL_2F_DECODE | URL_DOTSEG_REMOVE)


def test_turning_strict_reading_off_is_warned_about():
    relaxed = options(header_strict="disable", host_strict="0", host_normalize="disable")
    assert relaxed.relaxed == ("header-strict", "host-strict")
    assert "header-strict, host-strict are kept enabled" in relaxed_warning(relaxed)
    assert relaxed_warning(DEFAULT) is None


# ------------------------------------------------------------- normalising
@pytest.mark.parametrize("raw, expected", [
    ("/plain/path?q=1", "/plain/path?q=1"),
    ("/%41%2f%7e%20%3d", "/A/~%20%3D"),                 # unreserved decoded, %2F a slash
    ("/a?b=%41%2f%3d", "/a?b=A%2F%3D"),                 # ... but not in the query
    ("/caf\u00e9?\u00e9", "/caf%C3%A9?%C3%A9"),          # raw UTF-8 escaped
    ("/a\\b", "/a%5Cb"),
    ("/a/./b/../c//d?x/../y", "/a/c/d?x/../y"),          # dot segments: the path only
    ("/a/%2e%2e/b", "/b"),
    ("/x#fragment", "/x"),
    ("/100%", "/100%25"),
])
def test_the_default_target_is_lighttpds(raw, expected):
    assert normalised(raw, DEFAULT_URL) == expected


@pytest.mark.parametrize("flags, raw, expected", [
    # url-normalize-required: escapes decoded unless the character needs one, or is
    # "/" or "?" in the path, or "&", "=", ";", "+" in the query
    (REQUIRED, "/%41%2f%3d%3f%21?a=%3d%26%2b%3b%21%3f%20", "/A/=%3F!?a=%3D%26%2B%3B!?%20"),
    (REQUIRED, "/p?a?b%3fc", "/p?a?b?c"),
    # no normalising at all: only the fragment goes
    (RAW, "/%7e/./a%2fb?%41#f", "/%7e/./a%2fb?%41"),
    (DEFAULT_URL & ~URL_2F_DECODE, "/a%2fb?c%2fd", "/a%2Fb?c%2Fd"),
    (DEFAULT_URL & ~URL_DOTSEG_REMOVE, "/a/./b/../c", "/a/./b/../c"),
    (DEFAULT_URL | URL_QUERY_20_PLUS, "/a%20b?c%20d+e", "/a%20b?c+d+e"),
])
def test_the_options_shape_the_target(flags, raw, expected):
    assert normalised(raw, flags) == expected


def test_with_the_required_form_the_query_starts_after_the_last_raw_question_mark():
    assert split_at("/p?a?b", REQUIRED) == 4 and split_at("/p?a?b", DEFAULT_URL) == 2
    assert normalised_query("/p?a?b%3fc", REQUIRED) == "b?c"
    assert normalised_query("/p?a?b%3fc", DEFAULT_URL) == "a?b%3Fc"


@pytest.mark.parametrize("flags, target, refused", [
    (DEFAULT_URL, "/a%20b", False), (DEFAULT_URL, "/caf%C3%A9", False),
    (DEFAULT_URL, "/a%00", True), (DEFAULT_URL, "/a%1F", True), (DEFAULT_URL, "/a%7F", True),
    (DEFAULT_URL, "/a%C0%AF", True), (DEFAULT_URL, "/a%FF", True), (DEFAULT_URL, "/plain", False),
    (DEFAULT_URL, "/a\udcff", True), (DEFAULT_URL, "/a\x01", True),
    (DEFAULT_URL & ~URL_CTRLS_REJECT, "/a%01", False),
    (DEFAULT_URL & ~URL_CTRLS_REJECT, "/a%FF", True),
    (DEFAULT_URL & ~URL_CTRLS_REJECT, "/a\x01", True),     # the strict request line's
    (DEFAULT_URL & ~URL_INVALID_UTF8_REJECT, "/a%C0", False),
    (DEFAULT_URL & ~URL_INVALID_UTF8_REJECT, "/a%00", True),
    (RAW, "/a%00%FF", False), (RAW, "/a\udcff", True), (RAW, "/a\udcc0", False),
    (options(url_path_2f_decode="disable", url_path_2f_reject="enable").url,
     "/a%2fb", True),
    (options(url_path_2f_decode="disable", url_path_2f_reject="enable").url,
     "/a?b%2F", False),
    (options(url_path_dotseg_remove="disable", url_path_dotseg_reject="enable").url,
     "/a/%2E%2E/b", True),
    (options(url_path_dotseg_remove="disable", url_path_dotseg_reject="enable").url,
     "/a//b", True),
    (options(url_path_dotseg_remove="disable", url_path_dotseg_reject="enable").url,
     "/a/..b/c?x/../y", False),
])
def test_targets_refused(flags, target, refused):
    assert (refusal(target, flags) is not None) is refused


def test_a_decoded_control_character_is_an_underscore_in_the_path():
    assert clean_path("/a%01b%7f/../c%2Fd") == "/c/d"
    assert clean_path("/a%01b%7fc") == "/a_b_c"
    assert clean_path("/%00") == "/_"


# ---------------------------------------------------------------- any input
_FLAGS = st.sampled_from([DEFAULT_URL, REQUIRED, RAW, DEFAULT_URL | URL_QUERY_20_PLUS,
                          DEFAULT_URL & ~(URL_2F_DECODE | URL_DOTSEG_REMOVE)])


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60), _FLAGS)
def test_any_target_normalises_to_what_normalises_to_itself(target, flags):
    target = "/" + target.replace("#", "")
    once = normalised(target, flags)
    assert normalised(once, flags) == once
    if flags & URL_NORMALIZE:
        assert once.isascii()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["/", ".", "..", "%2e", "%2F", "%41", "%25", "a", "é",
                                 "?"]), max_size=14).map("".join), _FLAGS)
def test_the_path_never_climbs_above_the_root(target, flags):
    full = "/" + target
    mark = split_at(full, flags)
    path = clean_path(full if mark < 0 else full[:mark])
    assert path.startswith("/") and "/../" not in path + "/" and "/./" not in path + "/"


_AS_IS_PATTERN = re.compile(r"[!$&'()*+,\-./0-9:;=?@A-Z_a-z~]*")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["/", ".", "..", "//", "%2F", "%41", "?", "a", "~", "é",
                                 "\udcff", " ", "\x7f", "\"", "#", ":", "%"]),
                max_size=16).map("".join))
def test_the_c_level_checks_decide_as_the_patterns_do(target):
    """The shortcuts (a translate table for the characters kept as they are, substring
    tests before the dot-segment pattern) against the patterns alone."""
    kept_as_is = all_kept(target, urlnorm.AS_IS_TABLE)
    assert kept_as_is == (_AS_IS_PATTERN.fullmatch(target) is not None)
    path = target.partition("?")[0]
    if urlnorm._DOT_SEGMENT.search(path):
        assert "/." in path or "//" in path or path.startswith(".")


# ---------------------------------------------------------------- in a config
def _load(tmp_path, text: str):
    from master.configload import load
    conf = tmp_path / "x.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\n{text}\n')
    return load(str(conf))


def test_a_config_gets_the_options_and_a_refused_list_its_line(tmp_path):
    from shared.config import ConfigError
    loaded = _load(tmp_path, 'server.http-parseopts = ("url-query-20-plus" => "enable",\n'
                             '  "method-get-body" => "enable")')
    assert loaded.compiled.url_flags == DEFAULT_URL | URL_QUERY_20_PLUS
    assert loaded.compiled.method_get_body
    with pytest.raises(ConfigError, match=r"x\.conf:3:1: server\.http-parseopts: "
                                          r"conflicting options"):
        _load(tmp_path, '\nserver.http-parseopts = ("url-path-2f-reject" => "enable")')


def test_turning_strict_reading_off_in_a_config_is_a_warning(tmp_path):
    loaded = _load(tmp_path, 'server.http-parseopts = ("host-strict" => "disable")\n'
                             'server.http-parseopt-header-strict = "disable"')
    said = [w for w in loaded.warnings if "kept enabled" in w]
    assert len(said) == 2 and said[0].startswith(f"{tmp_path}/x.conf:2:1: WARNING:")
    assert _load(tmp_path, "").warnings == []
