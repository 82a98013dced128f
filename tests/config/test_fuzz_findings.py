"""Configs the fuzzer (loadtests/fuzz.py --target config) found crashing the parser:
each is now a ConfigError that says where, like any other broken config."""

from __future__ import annotations

import pytest

from shared.config import ConfigError, load_config_text

NESTED_ARRAYS = "x = " + "(" * 150 + "1" + ")" * 150
NESTED_BLOCKS = '$HTTP["url"] =^ "/a" {\n' * 150 + "}\n" * 150


@pytest.mark.parametrize("text, message, where", [
    ("x = " + "9" * 5000, r"integer 999999999999\.\.\. \(5000 digits\) is out of range",
     "1:5"),
    (NESTED_ARRAYS, "nested deeper than 100 levels", "1:105"),
    (NESTED_BLOCKS, "nested deeper than 100 levels", "101:22"),
    ('include "conf\0/*.conf"', "include file not found: .* has a NUL byte", "1:1"),
    ('include_shell "echo\0"', 'include_shell "echo.*" could not run', "1:1"),
])
def test_a_fuzzer_finding_is_a_config_error_with_its_place(tmp_path, text, message, where):
    with pytest.raises(ConfigError, match=message) as refused:
        load_config_text(text, "fuzzed.conf", str(tmp_path))
    assert str(refused.value).startswith(f"fuzzed.conf:{where}: ")


def test_nesting_up_to_the_limit_still_loads(tmp_path):
    tree = load_config_text("x = " + "(" * 100 + "1" + ")" * 100, "deep.conf", str(tmp_path))
    assert tree.root.keys.get("var.x") is not None


def test_leading_zeros_are_not_digits_too_many(tmp_path):
    tree = load_config_text("x = " + "0" * 30 + "7", "zeros.conf", str(tmp_path))
    assert tree.root.keys.get("var.x").value == 7
