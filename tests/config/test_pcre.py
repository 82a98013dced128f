"""PCRE2 patterns as lighttpd compiles them (PCRE2_UTF, no PCRE2_UCP) spelt for `re`:
\\w, \\d, \\s and \\b know ASCII alone, in and out of classes, and the PCRE syntax `re`
reads otherwise is rewritten, for config conditions as for rewrite rules."""

from __future__ import annotations

import pytest

from shared.config import ConfigError, load_config_text
from shared.config.pcre import compile_pcre, translate_pcre


@pytest.mark.parametrize("pcre, python", [
    (r"^/\w+$", r"^/[a-zA-Z0-9_]+$"),
    (r"\W\D\S", r"[\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\U0010ffff]"
                r"[\x00-\x2f\x3a-\U0010ffff][\x00-\x08\x0e-\x1f\x21-\U0010ffff]"),
    (r"\bx\B", r"(?a:\b)x(?a:\B)"),
    (r"[\w.-]", r"[a-zA-Z0-9_.-]"),
    (r"[^\s\d]", r"[^\t\n\v\f\r 0-9]"),
    (r"[\\w]", r"[\\w]"),                     # an escaped backslash, then a w
    (r"[[:word:][:space:]]", r"[a-zA-Z0-9_\t\n\v\f\r ]"),
])
def test_classes_know_ascii_alone(pcre, python):
    assert translate_pcre(pcre) == python


@pytest.mark.parametrize("pattern, subject, matches", [
    (r"^/\w+$", "/café", False),             # é is no word character to PCRE2 without UCP
    (r"^/\w+$", "/cafe_1", True),
    (r"^/.$", "/é", True),                   # PCRE2_UTF: a character, not an octet
    (r"^/[^\W]+$", "/日本", False),
    (r"\bx", "éx", True),                    # é is no word character: a boundary
    (r"^/\s", "/\u00a0", False),
    (r"^/\d", "/\u0663", False),             # an Arabic-Indic digit
    (r"(?i)^/ü$", "/Ü", True),               # caseless matching knows Unicode
])
def test_matching_as_pcre2_matches(pattern, subject, matches):
    assert bool(compile_pcre(pattern).search(subject)) is matches


@pytest.mark.parametrize("pattern, subject", [
    (r"^/\Qa.b\E$", "/a.b"),
    (r"^/[[:digit:]]+$", "/123"),
    (r"^/x(?i)ab$", "/xAB"),
    (r"^/(?<name>\d+)$", "/7"),
    (r"^/a\z", "/a"),
])
def test_conditions_read_pcre_syntax(pattern, subject):
    """A condition's pattern was compiled by `re` as written: \\Q was a config error,
    [[:digit:]] a set of characters, a flag group in mid-pattern an error."""
    text = 'server.document-root = "/tmp"\n$HTTP["url"] =~ "%s" { server.tag = "x" }\n' % pattern
    condition = load_config_text(text, "test.conf", "/tmp").root.children[0].condition
    assert condition is not None and condition.regex is not None
    assert condition.regex.search(subject)


def test_a_pattern_re_cannot_run_is_a_config_error_with_its_place():
    with pytest.raises(ConfigError, match=r":2:.*\\K .* is not supported"):
        load_config_text('server.document-root = "/tmp"\n'
                         '$HTTP["url"] =~ "^/a\\Kb" { server.tag = "x" }\n',
                         "test.conf", "/tmp")
