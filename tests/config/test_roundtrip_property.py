"""Property tests: print(parse(text)) is a fixed point of parse-then-print, and (smaller)
it equals what `lighttpd -p` prints for the same generated file.

The `-p` text is wrapped in `config { ... }` and starts with the predefined var.CWD /
var.PID; to re-read it we unwrap it and drop those two lines (see
test_printer_output_reparses_directly for the unwrapped claim in printer.py).

The generator leaves out a few inputs on which lighttpd 1.4.69 itself is quirky and
that are tested explicitly elsewhere: an else-branch repeating a sibling's condition
(lighttpd: "unreachable else condition", or a merge into the else-branch), and blocks
with the same condition under two different plain `else` blocks, which lighttpd merges
into the first one (its block identity is the printed path "global / else / ...";
shared.config keeps them apart, which is what the config says).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, assume, example, given, note, settings
from hypothesis import strategies as st

from cfgtest_helpers import LIGHTTPD, assert_same_print, lighttpd, without_volatile
from shared.config import ConfigError, format_config, load_config, load_config_text

# ---------------------------------------------------------------- generators
# Keys have a fixed kind each, so that `+=` never meets a value of another kind.
STRING_KEYS = ["server.name", "my.tag", "s1", "var.s-2", "my.string"]
SMALL_INT_KEYS = ["n1", "var.count", "server.max-keep-alive-requests"]  # may be +=
BIG_INT_KEYS = ["big.port", "big", "var.limit"]                      # only = and :=
ARRAY_KEYS = ["my.list", "list", "var.arr", "my.map", "url.rewrite-once"]

SAFE_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
PIECES = ['"', "\\", '\\"', "é", "☃", "日本", "$1", "%2", "\t", "\n", " ", "#", "=>", "{",
          "}", "(", ")", ",", "a", "Z", "0", "/", ".", "-", "\r", "\x7f", "ÿ", "\u2028"]


def _no_trailing_backslash(text: str) -> bool:
    # a string value cannot end in a backslash in this language (`"a\"` does not end)
    return not text.endswith("\\")


def strings(alphabet=SAFE_TEXT, pieces=PIECES, max_pieces: int = 4) -> st.SearchStrategy[str]:
    """Short strings built mostly from pieces that stress the lexer and the printer."""
    piece = st.one_of(st.sampled_from(pieces), st.text(alphabet, max_size=3))
    return st.lists(piece, max_size=max_pieces).map("".join).filter(_no_trailing_backslash)


class Texts(NamedTuple):
    """Where generated strings come from: values (and patterns), and array keys."""

    values: st.SearchStrategy[str]
    keys: st.SearchStrategy[str]


def quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def string_expr(texts: Texts) -> st.SearchStrategy[str]:
    literal = texts.values.map(quote)
    concat = st.tuples(texts.values, st.integers(0, 99999)).map(
        lambda pair: f"{quote(pair[0])} + {pair[1]}")
    return st.one_of(literal, literal, concat)


def int_expr(low: int, high: int) -> st.SearchStrategy[str]:
    plain = st.integers(low, high).map(str)
    summed = st.tuples(st.integers(0, high // 2), st.integers(0, high // 2)).map(
        lambda pair: f"{pair[0]} + {pair[1]}")
    return st.one_of(plain, plain, summed)


def array_expr(texts: Texts, keyed_allowed: bool) -> st.SearchStrategy[str]:
    scalar = st.one_of(texts.values.map(quote), st.integers(0, 2**31 - 1).map(str))

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        unkeyed = st.lists(children, max_size=4)
        keyed = st.lists(st.tuples(texts.keys, children), max_size=4,
                         unique_by=lambda pair: pair[0])
        def render(elements: list[str], trailing: bool) -> str:
            return "(" + ", ".join(elements) + ("," if trailing and elements else "") + ")"
        plain = st.tuples(unkeyed, st.booleans()).map(lambda p: render(*p))
        with_keys = st.tuples(keyed, st.booleans()).map(
            lambda p: render([f"{quote(k)} => {v}" for k, v in p[0]], p[1]))
        return st.one_of(plain, with_keys)

    nested = st.recursive(scalar, extend, max_leaves=4)
    top_unkeyed = st.lists(nested, max_size=7).map(lambda e: "(" + ", ".join(e) + ")")
    if not keyed_allowed:
        return top_unkeyed
    return st.one_of(top_unkeyed, extend(nested))


_VALUE_STRATEGIES: dict[tuple[int, str], st.SearchStrategy[str]] = {}


def value_strategy(texts, kind: str) -> st.SearchStrategy[str]:
    """Built once per text strategy: building strategies on every draw is slow."""
    key = (id(texts), kind)
    if key not in _VALUE_STRATEGIES:
        _VALUE_STRATEGIES[key] = {
            "string": lambda: string_expr(texts),
            "small": lambda: int_expr(0, 100000),
            "big": lambda: int_expr(0, 2**31 - 1),
            "array": lambda: array_expr(texts, keyed_allowed=True),
            "array+=": lambda: array_expr(texts, keyed_allowed=False),
            "pattern": lambda: texts.values.filter(lambda s: '"' not in s and "\n" not in s),
        }[kind]()
    return _VALUE_STRATEGIES[key]


@st.composite
def assignments(draw, texts, in_block: bool) -> list[str]:
    """Statements for one block: each key at most once (so no duplicate-key errors)."""
    lines = []
    used: set[str] = set()
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["string", "small", "big", "array"]))
        pool = {"string": STRING_KEYS, "small": SMALL_INT_KEYS, "big": BIG_INT_KEYS,
                "array": ARRAY_KEYS}[kind]
        key = draw(st.sampled_from(pool))
        if key in used:
            continue
        used.add(key)
        operator = draw(st.sampled_from(["=", "=", ":="] + ([] if kind == "big" else ["+="])))
        if kind == "array" and operator == "+=":
            kind = "array+="   # merges with an outer array: unkeyed only, no key clash
        value = draw(value_strategy(texts, kind))
        lines.append(f"{key} {operator} {value}")
    return lines


FIELDS = ['$HTTP["host"]', '$HTTP["url"]', '$HTTP["querystring"]', '$HTTP["scheme"]',
          '$HTTP["request-method"]', '$HTTP["useragent"]', '$REQUEST_HEADER["X-Test"]',
          '$HTTP["remoteip"]', '$SERVER["socket"]', '$HTTP["cookie"]']
REGEXES = ["^/api/", "\\.php$", "^/exact$", "(a|b)+", "^/x.y", "example\\.(org|com)$",
           "^$", "[0-9]{2,}", "suffix$", "^(www\\.)?h"]
ADDRESSES = ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32", "::1", "127.0.0.1/32"]
SOCKETS = [":8080", "127.0.0.1:81", "[::]:8443"]


@st.composite
def conditions(draw, texts) -> str:
    field = draw(st.sampled_from(FIELDS))
    if field == '$SERVER["socket"]':
        return f'{field} {draw(st.sampled_from(["==", "!="]))} "{draw(st.sampled_from(SOCKETS))}"'
    if field == '$HTTP["remoteip"]':
        return f'{field} {draw(st.sampled_from(["==", "!="]))} "{draw(st.sampled_from(ADDRESSES))}"'
    operator = draw(st.sampled_from(["==", "!=", "=~", "!~", "=^", "=$"]))
    if operator in ("=~", "!~"):
        pattern = draw(st.sampled_from(REGEXES))
    elif field == '$HTTP["host"]':
        # lighttpd wants a host starting with "[" to be an IPv6 literal (see
        # test_broken_configs.py, host_bad_ipv6_literal)
        pattern = draw(value_strategy(texts, "pattern").filter(lambda s: not s.startswith("[")))
    else:
        # a `"` or a newline in a condition is printed as is (as lighttpd does), which
        # breaks the printed text: kept out here, see test_condition_pattern_reparses
        pattern = draw(value_strategy(texts, "pattern"))
    return f"{field} {operator} {quote(pattern)}"


_NEGATION = {"==": "!=", "!=": "==", "=~": "!~", "!~": "=~"}


def negated(condition: str) -> str:
    field, operator, pattern = condition.split(" ", 2)
    return f"{field} {_NEGATION.get(operator, operator)} {pattern}"


@st.composite
def blocks(draw, texts, depth: int, registry: dict | None = None,
           in_plain_else: bool = False) -> list[str]:
    """Statements of a block, with conditional children (chains, else, nesting)."""
    registry = {} if registry is None else registry   # shared by one whole config
    out = list(draw(assignments(texts, in_block=depth > 0)))
    if depth >= 2:
        return out
    seen: set[str] = set()
    # lighttpd 1.4.69 identifies a block under a plain `else` by its printed path
    # ("global / else / $HTTP[...]"), so same-condition children of two different
    # plain-else blocks are merged into one: not generated (see the module docstring)
    else_children = registry.setdefault("else children", set()) if in_plain_else else set()
    for _ in range(draw(st.integers(0, 3 if depth == 0 else 1))):
        first = draw(conditions(texts))
        if first in seen or first in else_children:
            continue            # siblings with one condition merge: keep them distinct
        seen.add(first)
        else_children.add(first)
        chain = [f"{first} {{"] + [
            "  " + s for s in draw(blocks(texts, depth + 1, registry))]
        last = first
        for _ in range(draw(st.integers(0, 2))):
            branch = draw(conditions(texts))
            # lighttpd refuses an else-branch whose condition its block already has
            # ("unreachable else condition") and merges a later sibling into it
            if branch in seen or branch in else_children:
                continue
            seen.add(branch)
            else_children.add(branch)
            last = branch
            chain += [f"}} else {branch} {{"] + [
                "  " + s for s in draw(blocks(texts, depth + 1, registry))]
        if draw(st.booleans()):
            # lighttpd treats a plain else as the negation of the branch before it
            # (`== "x" {} else {}` is `!= "x"`), and merges a later sibling into it
            seen.add(negated(last))
            chain += ["} else {"] + [
                "  " + s for s in draw(blocks(texts, depth + 1, registry, in_plain_else=True))]
        chain.append("}")
        out += chain
    return out


def configs(texts: Texts | None = None) -> st.SearchStrategy[str]:
    if texts is None:
        texts = Texts(strings(), strings())
    return blocks(texts, 0).map(lambda lines: "\n".join(lines) + "\n")


# ---------------------------------------------------------------- helpers
def reparseable(printed: str) -> str:
    """The -p text without its `config {` wrapper and the predefined variables."""
    lines = printed.rstrip("\n").split("\n")
    assert lines[0] == "config {" and lines[-1] == "}", printed[:200]
    return "\n".join(line for line in lines[1:-1]
                     if not line.lstrip().startswith(("var.PID ", "var.CWD ")))


def parse_print(text: str, source: str = "<generated>") -> str:
    return format_config(load_config_text(text, source, tempfile.gettempdir(), environ={}))


# Generated configs that lighttpd refuses too, for reasons not tested here: branches
# that coincide after regex simplification (=~ "^/x" is =^ "/x"), so that keys clash or
# an else-branch is unreachable; a host pattern with a bad port (":"), which
# test_conditions.py compares with lighttpd one by one.
REFUSED_BY_BOTH = ("duplicate config key", "unreachable else", "invalid IP addr")


def assume_not_refused_by_both(err: ConfigError) -> None:
    assume(not any(reason in err.message for reason in REFUSED_BY_BOTH))


def _first_parse(text: str) -> str:
    try:
        return parse_print(text)
    except ConfigError as err:
        assume_not_refused_by_both(err)
        raise


# ---------------------------------------------------------------- properties
_BLOCK_NUMBER = re.compile(r"^\s*# block \d+$")


def _without_block_numbers(text: str) -> str:
    """A print without its `# block N` comments: they number the source's blocks, and
    a print leaves out the blocks lighttpd folds into others (an `=~ "^$"` that is an
    `== ""` already there), so printing the print numbers the rest anew, as
    lighttpd's own -p does."""
    return "\n".join(line for line in without_volatile(text).splitlines()
                     if not _BLOCK_NUMBER.match(line))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
@example('$HTTP["host"] == "" {\n} else $HTTP["host"] =~ "^/api/" {\n}\n'
         '$HTTP["host"] =~ "^$" {\n} else $HTTP["host"] != "" {\n}\n')
def test_print_is_a_fixed_point(text: str) -> None:
    note(text)
    first = _first_parse(text)
    second = parse_print(reparseable(first), "<printed>")
    note(first)
    assert _without_block_numbers(second) == _without_block_numbers(first)


@settings(max_examples=200, deadline=None)
@given(strings(max_pieces=12))
def test_string_values_survive(value: str) -> None:
    printed = parse_print(f"x = {quote(value)}\ny = ({quote(value)} => {quote(value)})\n")
    tree = load_config_text(reparseable(printed), "<printed>", "/", environ={})
    assert tree.global_value("var.x") == value
    assert tree.global_value("var.y").get(value) == value


DIFFERENTIAL_TEXTS = Texts(
    # control characters would be compared through text mode: kept out of this part
    values=strings(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                   pieces=[p for p in PIECES if p.isprintable()] + ["\\"]),
    # array keys: printable ASCII without `"`.  lighttpd prints a `"` in a key unescaped
    # (we escape it), and aligns `=>` by bytes, not characters (see the xfail in
    # test_lighttpd_print_parity.py)
    keys=strings(alphabet=st.characters(min_codepoint=32, max_codepoint=126,
                                        blacklist_characters='"'),
                 pieces=[p for p in PIECES if p.isascii() and p.isprintable() and '"' not in p]
                 + ["\\"]))


def check_against_lighttpd(text: str) -> None:
    """Our -p and lighttpd's for `text` written to a file, run in the same directory."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "generated.conf"
        path.write_text(text, encoding="utf-8")
        old = os.getcwd()
        os.chdir(directory)
        try:
            try:
                ours = format_config(load_config(str(path), environ={}))
            except ConfigError as err:
                assume_not_refused_by_both(err)
                raise
        finally:
            os.chdir(old)
        done = lighttpd("-p", "-f", str(path), cwd=directory)
        if done.returncode < 0:
            # lighttpd 1.4.69 occasionally aborts ("malloc(): invalid size") on configs
            # with empty nested arrays; not reproducible on a second run
            done = lighttpd("-p", "-f", str(path), cwd=directory)
            assume(done.returncode >= 0)
        # lighttpd refuses a chain whose (implied) condition a sibling already has, e.g.
        # `== "" {}` then `!= "" {} else {}` (the else is `== ""`): not generated on
        # purpose, and the explicit cases are in test_broken_configs.py
        assume("unreachable" not in done.stderr)
        assert done.returncode == 0, done.stderr
        assert_same_print(ours, done.stdout)


@pytest.mark.skipif(LIGHTTPD is None, reason="Debian's lighttpd is not installed")
@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(configs(DIFFERENTIAL_TEXTS))
def test_same_print_as_lighttpd(text: str) -> None:
    note(text)
    check_against_lighttpd(text)


# ---------------------------------------------------------------- known gaps
def test_printer_output_reparses_directly() -> None:
    printed = parse_print('x = 1\n$HTTP["host"] == "a" { y = 2 }\n')
    without_predefined = "\n".join(line for line in printed.splitlines()
                                   if "var.PID" not in line and "var.CWD" not in line)
    assert without_volatile(parse_print(without_predefined)) == without_volatile(printed)


@pytest.mark.xfail(strict=True, reason='a condition pattern containing " (written \\" in the '
                   "config) or a newline is printed as is, in the block line and in the "
                   "'# end of' comment, so the printed config does not parse")
@pytest.mark.parametrize("pattern", ['/a\\"b', "/a\nb"], ids=["quote", "newline"])
def test_condition_pattern_reparses(pattern: str) -> None:
    printed = parse_print(f'$HTTP["url"] == "{pattern}" {{ x = 1 }}\n')
    again = parse_print(reparseable(printed))
    assert without_volatile(again) == without_volatile(printed)


@pytest.mark.xfail(strict=True, reason="a string ending in a backslash (possible through "
                   "env.*) is printed as \"...\\\" and the printed config does not parse")
def test_value_ending_in_backslash_reparses() -> None:
    tree = load_config_text("x = env.WINDIR\n", "<t>", "/", environ={"WINDIR": "C:\\"})
    assert tree.global_value("var.x") == "C:\\"
    printed = format_config(tree)
    again = format_config(load_config_text(reparseable(printed), "<p>", "/", environ={}))
    assert without_volatile(again) == without_volatile(printed)
