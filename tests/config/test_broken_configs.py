"""A corpus of broken configs, one mistake each.

For every case: loading raises ConfigError; `str(err)` names the file and the line of
the mistake (computed from the fixture text, not hard-coded); the message is one line
that says what is wrong.  Where lighttpd 1.4.69 also refuses the file, `lighttpd -t`
must exit non-zero (and, where it says something recognisable, say it).

Cases where lighttpd itself is lenient (so only our side is checked), noted per case:
  * integer out of range: lighttpd wraps 99999999999 to 1215752191 silently.
  * else without a condition before it: lighttpd accepts and ignores it.
  * include loop: lighttpd recurses until it crashes with SIGSEGV, so it is not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cfgtest_helpers import LIGHTTPD, lighttpd
from master.configload import load
from shared.config import ConfigError, load_config

# What the loader-level cases need so that only the mistake under test can fail: no
# modules (pylighttpd may not have lighttpd's), and a document root.
END_OF_INPUT = "<end of input>"
LOADABLE = 'server.document-root = "/tmp"\nserver.compat-module-load = "disable"\n'


@dataclass
class Case:
    files: dict[str, str]            # relative path -> text; "main.conf" is loaded
    at: tuple[str, str]              # (file, text on the line the error must point at)
    message: str                     # regex the one-line message must match (search, I)
    via: str = "parse"               # "parse": shared.config.load_config; "load": configload
    lighttpd_rejects: bool = True    # False: lighttpd is lenient, see the module docstring
    lighttpd_says: str | None = None # substring of lighttpd's stderr, when it rejects
    lighttpd_flags: str = "-t"
    env: dict[str, str] = field(default_factory=dict)
    xfail: str | None = None         # a known bug: reason
    also_at: tuple[str, str] | None = None  # another acceptable place


def main(text: str, at: str, message: str, **kw) -> Case:
    return Case({"main.conf": text}, ("main.conf", at), message, **kw)


CASES: dict[str, Case] = {
    "unterminated_string": main(
        'server.tag = "ok"\nserver.name = "no end\nx = 1\n',
        'server.name', r"closing quote|unterminated", lighttpd_says="missing closing quote"),
    "bad_character": main(
        'a = 1\nb = @\n', 'b = @', r"unexpected character '@'|'@'",
        lighttpd_says="invalid character"),
    "missing_closing_brace": main(
        # reported where the input ends (the block's own line would help more)
        '$HTTP["host"] == "a" {\n  x = 1\n', END_OF_INPUT,
        r"'}'.*(end of input|end of file)|unclosed|not closed"),
    "unknown_condition_field": main(
        'x = 1\n$HTTP["hots"] == "example.org" {\n  y = 1\n}\n', '$HTTP["hots"]',
        r'unknown condition field \$HTTP\["hots"\]', lighttpd_says='error comp_key $HTTP["hots"]'),
    "unknown_condition_kind": main(
        '$FOO["bar"] == "a" { y = 1 }\n', '$FOO', r"unknown condition \$FOO",
        lighttpd_says="error comp_key"),
    "bad_operator_single_equals": main(
        'x = 1\n\n$HTTP["host"] = "a" { y = 1 }\n', '$HTTP["host"] = ',
        r"comparison|operator", lighttpd_says="only == =~ =^ =$ are allowed"),
    "bad_operator_angle": main(
        '$HTTP["url"] <> "/a" { y = 1 }\n', '<>', r"unexpected character '<'|operator|comparison",
        lighttpd_says="invalid character in condition"),
    "bad_regex": main(
        '$HTTP["url"] =~ "^/(unclosed" {\n  y = 1\n}\n', '=~',
        r'invalid regular expression "\^/\(unclosed"', lighttpd_says="pcre2_compile"),
    "bad_cidr_remoteip": main(
        'x = 1\n$HTTP["remoteip"] == "10.0.0.300/8" { y = 1 }\n', 'remoteip',
        r'"10\.0\.0\.300/8" is not an IP address or CIDR', lighttpd_says="invalid IP addr"),
    "duplicate_key_in_block": main(
        '$HTTP["host"] == "a" {\n  server.tag = "one"\n  server.tag = "two"\n}\n',
        'server.tag = "two"', r"duplicate config key server\.tag.*first set at .*main\.conf:2",
        lighttpd_says="Duplicate config variable"),
    "duplicate_key_global": main(
        'x = 1\ny = 2\nx = 3\n', 'x = 3', r"duplicate config key var\.x",
        lighttpd_says="Duplicate config variable"),
    "duplicate_array_key": main(
        'mimetype.assign = (\n  ".html" => "text/html",\n  ".html" => "text/plain",\n)\n',
        '"text/plain"', r'duplicate array key "\.html"', lighttpd_says="duplicate array-key"),
    "duplicate_array_key_in_another_case": main(
        'mimetype.assign = (\n  ".txt" => "text/plain",\n  ".TXT" => "text/upper",\n)\n',
        '"text/upper"', r'duplicate array key "\.TXT"', lighttpd_says="duplicate array-key"),
    "plus_equals_array_onto_string": main(
        'x = "a"\nx += ("b")\n', 'x +=', r"var\.x.*(string|array)",
        lighttpd_says="data type mismatch"),
    "plus_equals_string_onto_array": main(
        'x = ("a")\n$HTTP["host"] == "h" {\n  x += "b"\n}\n', 'x += "b"',
        r"var\.x.*(array|string)", lighttpd_says="data type mismatch"),
    "string_plus_array": main(
        'y = 1\nx = "s" + ("a")\n', 'x = "s"', r"cannot combine string and array",
        lighttpd_says="data type mismatch"),
    "undefined_variable": main(
        'a = 1\nb = nosuchvariable + "x"\n', 'b = ', r"undefined config variable var\.nosuchvariable",
        lighttpd_says="Undefined config variable"),
    "undefined_dotted_variable": main(
        'server.tag = var.missing\n', 'server.tag', r"undefined config variable var\.missing",
        lighttpd_says="Undefined config variable"),
    "unset_env_var": main(
        'a = 1\nserver.tag = env.PYLIGHTTPD_SURELY_UNSET_VAR\n', 'env.',
        r"environment variable PYLIGHTTPD_SURELY_UNSET_VAR is not set",
        lighttpd_says="Undefined env variable"),
    "missing_include_file": main(
        'a = 1\ninclude "does-not-exist.conf"\n', 'include', r"include file not found: does-not-exist\.conf",
        lighttpd_says="include file not found"),
    "error_inside_included_file": Case(
        {"main.conf": 'a = 1\ninclude "sub/inner.conf"\n',
         "sub/inner.conf": '# comment\nb = 2\nc = undefinedthing\n'},
        ("sub/inner.conf", "c = "), r"undefined config variable var\.undefinedthing",
        lighttpd_says="Undefined config variable"),
    "include_shell_nonzero_exit": main(
        'a = 1\ninclude_shell "echo oops >&2; exit 3"\n', 'include_shell',
        r"include_shell .*exit.* 3", lighttpd_says="exited non-zero"),
    "include_shell_output_broken": main(
        'a = 1\ninclude_shell "echo \'x = \\"unterminated\'"\n', 'include_shell',
        r"closing quote",
        # the error is inside the command's output: it names the command, line 1
        lighttpd_says="missing closing quote"),
    "include_loop": Case(
        {"main.conf": 'a = 1\ninclude "loop-a.conf"\n',
         "loop-a.conf": '# a\ninclude "loop-b.conf"\n',
         "loop-b.conf": '# b\n\ninclude "loop-a.conf"\n'},
        # either include of the cycle is a fair place to report it
        ("loop-b.conf", "include"), r"include.*(loop|nested|deep)",
        also_at=("loop-a.conf", "include"),
        lighttpd_rejects=False),   # lighttpd 1.4.69 segfaults; not run
    "else_without_condition": main(
        'x = 1\nelse {\n  y = 1\n}\n', 'else', r"'else' without a condition",
        lighttpd_rejects=False),   # lighttpd accepts a stray else
    "integer_out_of_range": main(
        'a = 1\nserver.max-fds = 99999999999\n', 'server.max-fds', r"99999999999.*out of range",
        lighttpd_rejects=False),   # lighttpd wraps it silently
    "integer_sum_out_of_range": main(
        'a = 2147483647\nb = a +\n  1\n', 'b = a +', r"2147483648.*out of range",
        lighttpd_rejects=False),   # lighttpd wraps to -2147483648
    "wrong_type_port_string": main(
        LOADABLE + 'server.port = "abc"\n', 'server.port', r'server\.port: expected an integer.*"abc"',
        via="load", lighttpd_says="expected a short"),
    "wrong_type_tag_integer": main(
        LOADABLE + 'server.tag = 5\n', 'server.tag', r"server\.tag: expected a string.*integer",
        via="load", lighttpd_says="server.tag should have been a string"),
    "wrong_type_port_too_big": main(
        LOADABLE + 'server.port = 70000\n', 'server.port', r"server\.port: expected an integer from 0 to 65535",
        via="load", lighttpd_rejects=False),   # lighttpd truncates it to a short
    "boolean_word_lighttpd_does_not_know": main(
        LOADABLE + 'server.follow-symlink = "on"\n', 'server.follow-symlink',
        r'server\.follow-symlink: expected a boolean.*"on"',
        via="load", lighttpd_flags="-tt", lighttpd_says="(enable|disable)"),
    "lone_string_for_a_list": main(
        LOADABLE + 'server.upload-dirs = "/tmp"\n', 'server.upload-dirs',
        r"server\.upload-dirs: expected an array of strings",
        via="load", lighttpd_flags="-tt", lighttpd_says="should have been a list"),
    "keyed_array_for_a_list": main(
        LOADABLE + 'server.upload-dirs = ( "a" => "/tmp" )\n', 'server.upload-dirs',
        r"server\.upload-dirs: expected an array of strings",
        via="load", lighttpd_flags="-tt", lighttpd_says="list of string values"),
    "wrong_type_in_conditional_block": main(
        LOADABLE + '$HTTP["host"] == "a" {\n  server.follow-symlink = "maybe"\n}\n',
        'server.follow-symlink', r'server\.follow-symlink: expected a boolean.*"maybe"',
        via="load", lighttpd_says="follow-symlink"),
    "unknown_module": main(
        'server.document-root = "/tmp"\nserver.compat-module-load = "disable"\n'
        'server.modules = (\n  "mod_nonexistent_pyl",\n)\n', 'server.modules',
        r'"?mod_nonexistent_pyl"?.*server\.modules|server\.modules.*mod_nonexistent_pyl',
        via="load", lighttpd_flags="-tt",   # plain -t does not load modules
        lighttpd_says="mod_nonexistent_pyl"),
    # lighttpd refuses these, and so do we.
    "condition_inside_global_block": main(
        'x = 1\n$HTTP["url"] =^ "/a" {\n  global {\n    $HTTP["host"] == "b" { y = 1 }\n  }\n}\n',
        '$HTTP["host"] == "b"', r"condition.*global|global.*condition",
        lighttpd_says="Cannot use conditionals inside a global"),
    "unreachable_else_condition": main(
        'x = 1\n$HTTP["host"] == "a" { y = 1 }\nelse $HTTP["host"] == "a" { z = 2 }\n',
        'else $HTTP', r"unreachable|same condition|never", lighttpd_says="unreachable else"),
    "unreachable_else_condition_sibling": main(
        '$HTTP["url"] == "/x" { z = 1 }\n'
        '$HTTP["host"] == "a" { x = 1 }\nelse $HTTP["url"] == "/x" { y = 1 }\n',
        'else $HTTP', r"unreachable|same condition|already", lighttpd_says="unreachable else"),
    "host_bad_ipv6_literal": main(
        'x = 1\n$HTTP["host"] == "[not-ipv6" { y = 1 }\n', '[not-ipv6',
        r"IPv6|IP address|\[", lighttpd_says="invalid IP addr"),
    "remoteip_prefix_operator": main(
        'x = 1\n$HTTP["remoteip"] =^ "10." { y = 1 }\n', 'remoteip',
        r"remoteip|IP|operator", lighttpd_says="invalid IP addr"),
}


def _write(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return tmp_path / "main.conf"


def _expected_line(tmp_path: Path, case: Case, at: tuple[str, str] | None = None
                   ) -> tuple[Path, int]:
    name, needle = at or case.at
    text = (tmp_path / name).read_text()
    if needle == END_OF_INPUT:
        return tmp_path / name, text.count("\n") + 1
    lines = text.splitlines()
    matching = [number for number, line in enumerate(lines, 1) if needle in line]
    assert matching, f"fixture error: {needle!r} is not in {name}"
    return tmp_path / name, matching[0]


def _params():
    for name in sorted(CASES):
        case = CASES[name]
        marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
        yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_params()))
def test_broken_config_error(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    monkeypatch.delenv("PYLIGHTTPD_SURELY_UNSET_VAR", raising=False)
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, case.files)
    with pytest.raises(ConfigError) as info:
        if case.via == "load":
            load(str(path))
        else:
            load_config(str(path))
    err = info.value
    text = str(err)
    file, line = _expected_line(tmp_path, case)
    if name == "include_shell_output_broken":
        # an error in a command's output is placed in that output, which is named
        # after the command; the include_shell line itself is not in the message
        assert re.search(r'include_shell "echo.*":1:\d+: ', text), text
        assert err.position is not None and err.position.line == 1
    else:
        places = [(file, line)]
        if case.also_at:
            places.append(_expected_line(tmp_path, case, case.also_at))
        assert any(f"{f}:{n}:" in text for f, n in places), \
            f"expected one of {[f'{f.name}:{n}' for f, n in places]} in: {text}"
        assert err.position is not None and (err.position.source, err.position.line) in [
            (str(f), n) for f, n in places]
    assert "\n" not in text, f"message is not one line: {text!r}"
    assert len(err.message) < 250, f"message too long: {err.message!r}"
    assert re.search(case.message, err.message, re.I), \
        f"message does not describe the mistake ({case.message!r}): {err.message!r}"
    assert "Traceback" not in text


@pytest.mark.skipif(LIGHTTPD is None, reason="Debian's lighttpd is not installed")
@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c.lighttpd_rejects))
def test_lighttpd_rejects_too(name: str, tmp_path: Path) -> None:
    """The same file is an error for lighttpd (so the case is a mistake, not a feature)."""
    case = CASES[name]
    path = _write(tmp_path, case.files)
    done = lighttpd(case.lighttpd_flags, "-f", str(path), cwd=tmp_path, timeout=20)
    assert done.returncode != 0, f"lighttpd accepted it:\n{done.stdout}{done.stderr}"
    assert done.returncode > 0, f"lighttpd crashed (signal {-done.returncode})"
    if case.lighttpd_says:
        assert case.lighttpd_says in done.stderr, done.stderr


@pytest.mark.skipif(LIGHTTPD is None, reason="Debian's lighttpd is not installed")
@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c.via == "load"))
def test_loader_fixtures_fixed_are_fine(name: str, tmp_path: Path) -> None:
    """Control: with the offending line removed, both lighttpd and our loader accept the
    file, so the error really comes from that line."""
    case = CASES[name]
    _, needle = case.at
    text = case.files["main.conf"]
    kept = [line for line in text.splitlines() if needle not in line]
    if name == "unknown_module":
        kept = [line for line in kept if "mod_nonexistent" not in line and line != ")"]
    if name == "wrong_type_in_conditional_block":
        kept.insert(len(kept) - 1, "  server.follow-symlink = \"enable\"")
    path = tmp_path / "main.conf"
    path.write_text("\n".join(kept) + "\n")
    loaded = load(str(path))
    assert loaded.settings["server.document-root"] == "/tmp"
    done = lighttpd("-tt", "-f", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
