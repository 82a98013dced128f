"""The command line, run as a separate process the way users and scripts run it."""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import pytest

from procutil import REPO, run_cli, run_lighttpd
from serverproc import free_port

DEBIAN_CONF = "/etc/lighttpd/lighttpd.conf"
UNKNOWN_KEY = re.compile(r"WARNING: unknown config-key: (\S+) \(ignored\)")


def _without_pid(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.lstrip().startswith("var.PID")]


def debian_variants(tmp_path_factory) -> list[tuple[str, Path]]:
    """Debian's lighttpd.conf, and that file with each available snippet enabled."""
    if not os.path.exists(DEBIAN_CONF):
        return []
    base = tmp_path_factory.mktemp("debian")
    enabled = {os.path.basename(p) for p in glob.glob("/etc/lighttpd/conf-enabled/*.conf")}
    variants = [("lighttpd.conf", Path(DEBIAN_CONF))]
    for snippet in sorted(glob.glob("/etc/lighttpd/conf-available/*.conf")):
        if os.path.basename(snippet) in enabled:
            continue  # lighty-enable-mod would not include it twice
        main = base / f"with-{os.path.basename(snippet)}"
        main.write_text(f'include "{DEBIAN_CONF}"\ninclude "{snippet}"\n')
        variants.append((os.path.basename(snippet), main))
    return variants


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    found = debian_variants(tmp_path_factory)
    if not found:
        pytest.skip("Debian's lighttpd configs are not installed")
    return found


def test_print_matches_lighttpd_for_every_debian_variant(variants):
    for name, path in variants:
        ours = run_cli("-p", "-f", str(path))
        theirs = run_lighttpd("-p", "-f", str(path))
        assert ours.returncode == 0, (name, ours.stderr)
        assert _without_pid(ours.stdout) == _without_pid(theirs.stdout), name


def test_tt_reports_unknown_keys_as_lighttpd_or_names_the_missing_module(variants):
    available = {Path(p).stem for p in glob.glob(str(REPO / "worker/modules/mod_*.py"))}
    compared = 0
    for name, path in variants:
        ours = run_cli("-tt", "-f", str(path))
        assert "Traceback" not in ours.stderr, name
        missing = re.search(r'module "(mod_\w+)" named in server.modules is not available',
                            ours.stderr)
        if missing:
            assert ours.returncode == 1, name
            assert missing.group(1) not in available, name
            continue
        theirs = run_lighttpd("-tt", "-f", str(path))
        if ours.returncode != 0 and theirs.returncode != 0:
            continue  # both refuse it (10-ssl.conf without its certificate, ...)
        assert ours.returncode == 0, (name, ours.stderr)
        if theirs.returncode != 0:
            continue  # lighttpd failed for a reason of its own (certificates, ...)
        assert set(UNKNOWN_KEY.findall(ours.stderr)) == \
            set(UNKNOWN_KEY.findall(theirs.stderr)), name
        compared += 1
    assert compared >= 1


def test_t_prints_syntax_ok_and_checks_syntax_only(tmp_path):
    conf = tmp_path / "a.conf"
    conf.write_text('server.document-root = "/tmp"\nserver.modules = ("mod_nonexistent")\n')
    result = run_cli("-t", "-f", str(conf))
    assert (result.returncode, result.stdout) == (0, "Syntax OK\n")


def test_tt_refuses_a_module_that_does_not_exist(tmp_path):
    conf = tmp_path / "a.conf"
    conf.write_text('server.document-root = "/tmp"\nserver.modules = ("mod_nonexistent")\n')
    result = run_cli("-tt", "-f", str(conf))
    assert result.returncode == 1
    assert f"{conf}:2:1" in result.stderr and "mod_nonexistent" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="lighttpd checks the names as root only")
@pytest.mark.parametrize("line, words", [
    ('server.username = "no-such-user-here"', 'unknown user "no-such-user-here"'),
    ('server.groupname = "no-such-group-here"', 'unknown group "no-such-group-here"'),
    ('server.username = "root"', "never switched to root"),
    ('server.groupname = "root"', "never switched to root"),
])
def test_tt_checks_who_the_workers_become_as_lighttpd_does(tmp_path, line, words):
    conf = tmp_path / "a.conf"
    conf.write_text(f'server.document-root = "/tmp"\n{line}\n')
    result = run_cli("-tt", "-f", str(conf))
    assert result.returncode == 1 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert run_lighttpd("-tt", "-f", str(conf)).returncode != 0


def test_tt_warns_about_unknown_keys_with_their_place(tmp_path):
    conf = tmp_path / "a.conf"
    conf.write_text('server.document-root = "/tmp"\n\nfoo.bar = 1\n'
                    '$HTTP["host"] == "x" { other.key = "v" }\n')
    result = run_cli("-tt", "-f", str(conf))
    assert result.returncode == 0
    assert set(UNKNOWN_KEY.findall(result.stderr)) == {"foo.bar", "other.key"}
    assert f"{conf}:3:1" in result.stderr and f"{conf}:4:24" in result.stderr


@pytest.mark.parametrize("text, place, words", [
    ('server.port = "http"\nserver.document-root = "/tmp"\n', ":1:1", "server.port"),
    ('server.document-root = "/tmp"\nserver.tag = 5\n', ":2:1", "expected a string"),
    ('server.document-root = "/tmp"\nserver.tag = "unterminated\n', ":2:14", "quote"),
    ('server.document-root = "/tmp"\n$HTTP["hots"] == "x" {}\n', ":2:7", "hots"),
])
def test_bad_config_is_one_clear_line_and_exit_1(tmp_path, text, place, words):
    conf = tmp_path / "bad.conf"
    conf.write_text(text)
    for flags in (["-tt"], ["-D"]):
        result = run_cli(*flags, "-f", str(conf))
        assert result.returncode == 1
        assert f"{conf}{place}" in result.stderr and words in result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_missing_config_file_is_a_clear_error(tmp_path):
    result = run_cli("-t", "-f", str(tmp_path / "nope.conf"))
    assert result.returncode == 1 and "cannot read config file" in result.stderr


def test_config_from_stdin_uses_the_current_directory(tmp_path):
    (tmp_path / "extra.conf").write_text('server.tag = "from-include"\n')
    result = run_cli("-p", "-f", "-", stdin='include "extra.conf"\n', cwd=tmp_path)
    assert result.returncode == 0
    assert 'server.tag = "from-include"' in result.stdout
    assert f'var.CWD    = "{tmp_path}"' in result.stdout


def test_version_help_and_usage_errors():
    assert run_cli("-v").stdout.startswith("pylighttpd/")
    assert "-tt" in run_cli("-h").stdout
    bad = run_cli("-x")
    assert bad.returncode == 2 and "usage:" in bad.stderr
    assert run_cli("-i", "soon", "-f", "x").returncode == 2
    assert run_cli().returncode == 2


def test_feature_list_has_lighttpd_form():
    lines = run_cli("-V").stdout.splitlines()
    assert "\t+ PCRE support" in lines
    assert "\t+ epoll (Linux)" in lines
    assert all(re.fullmatch(r"\t[+-] .+", line) for line in lines if line.startswith("\t"))


# names lighttpd 1.4.69 on Linux takes for a key, and its words for one it refuses
NAMED_VALUES = {
    "server.event-handler": ("the selected event-handler in unknown or not supported: ",
                             ["linux-sysepoll", "epoll", "poll", "select", "libev",
                              "kqueue", "solaris-eventports", "bogus"]),
    "server.stat-cache-engine": ('can be one of "disable", "simple", "inotify", "fam", '
                                 "but not: ",
                                 ["simple", "disable", "inotify", "fam", "kqueue", "bogus"]),
}


@pytest.mark.parametrize("key, value", [(key, value) for key, (_, values) in NAMED_VALUES.items()
                                        for value in values])
def test_tt_takes_the_names_lighttpd_takes_here(tmp_path, key, value):
    """A name lighttpd on Linux refuses is a config error with its words; the ones it
    takes run (the workers wait with epoll whatever the event handler: poll and
    select are said to)."""
    conf = tmp_path / "named.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\n{key} = "{value}"\n')
    theirs = run_lighttpd("-tt", "-f", str(conf))
    ours = run_cli("-tt", "-f", str(conf))
    assert (ours.returncode == 0) == (theirs.returncode == 0), ours.stderr
    if ours.returncode:
        assert NAMED_VALUES[key][0] + value in ours.stderr
    elif value in ("poll", "select"):
        assert "the workers wait with epoll" in ours.stderr
    else:
        assert ours.stderr == ""


def test_tt_says_what_lighttpd_says_of_upload_dirs_that_are_not_there(tmp_path):
    (tmp_path / "a-file").write_text("")
    conf = tmp_path / "up.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\n'
                    f'server.upload-dirs = ("{tmp_path}/missing", "{tmp_path}/a-file", '
                    f'"{tmp_path}")\n')
    ours, theirs = run_cli("-tt", "-f", str(conf)), run_lighttpd("-tt", "-f", str(conf))
    assert ours.returncode == theirs.returncode == 0
    said = [f"server.upload-dirs doesn't exist: {tmp_path}/missing",
            f"server.upload-dirs isn't a directory: {tmp_path}/a-file"]
    assert ours.stderr.splitlines() == said
    assert [line.split(") ", 1)[1] for line in theirs.stderr.splitlines()] == said


@pytest.mark.parametrize("key, said", [
    ("server.errorlog", "opening errorlog '{path}' failed: No such file or directory"),
    ("server.pid-file", "opening pid-file failed: {path}: No such file or directory")])
def test_a_log_or_pid_file_that_cannot_be_written_stops_the_start_in_lighttpds_words(
        tmp_path, key, said):
    path = tmp_path / "missing" / "file"
    conf = tmp_path / "start.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.bind = "127.0.0.1"\n'
                    f'server.port = {free_port()}\n{key} = "{path}"\n')
    started = run_cli("-D", "-f", str(conf), timeout=20)
    assert (started.returncode, started.stderr) == (1, f"pylighttpd: {said.format(path=path)}\n")


def _tt_both(tmp_path: Path, modules: str, lines: str):
    conf = tmp_path / "a.conf"
    conf.write_text(f'server.document-root = "/tmp"\nserver.modules = ({modules})\n{lines}\n')
    return run_cli("-tt", "-f", str(conf)), run_lighttpd("-tt", "-f", str(conf))


@pytest.mark.parametrize("modules, lines", [
    ('"mod_auth"', 'auth.require = ("/p" => ("method" => " basic", "realm" => "r", '
                   '"require" => "valid-user"))'),
    ('"mod_auth"', 'auth.require = ("/p" => ("method" => "digest", "realm" => "r", '
                   '"require" => "valid-user", "algorithm" => " "))'),
    ('"mod_proxy"', 'proxy.server = ("/" => (("host" => "127.0.0.1", "port" => 1, '
                    '"mode" => "authorizer")))'),
    ('"mod_fastcgi"', 'fastcgi.server = (".php" => (("host" => "127.0.0.1", "port" => 1, '
                      '"bin-path" => "/bin/true", "bin-copy-environment" => ("A" => "b"))))'),
])
def test_tt_refuses_what_lighttpd_refuses(tmp_path, modules, lines):
    ours, theirs = _tt_both(tmp_path, modules, lines)
    assert theirs.returncode != 0
    assert ours.returncode == 1 and "Traceback" not in ours.stderr, ours.stderr


# values lighttpd 1.4.69 starts with (logging an error, or reading them as something
# else) and pylighttpd refuses with the key's file and line, with the reason
STRICTER = {
    "port-beyond-65535": ('"mod_proxy"', 'proxy.server = ("/" => (("host" => "127.0.0.1", '
                          '"port" => 70000)))'),        # lighttpd truncates it to 4464
    "cidr-beyond-32": ('"mod_extforward"', 'extforward.forwarder = ("10.0.0.0/33" => '
                       '"trust")'),                    # a forwarder that can never match
    "bad-exclude-regex": ('"mod_dirlisting"', 'dir-listing.exclude = ("(")'),
    "empty-alias-target": ('"mod_alias"', 'alias.url = ("/a/" => "")'),
    "unknown-cgi-limit": ('"mod_cgi"', 'cgi.limits = ("bogus" => 1)'),    # logged only
    "redirect-code-0": ('"mod_redirect"', "url.redirect-code = 0"),
    "unknown-balance": ('"mod_scgi"', 'scgi.balance = "random"'),  # logged, then "fair"
}


@pytest.mark.parametrize("name", list(STRICTER))
def test_tt_is_stricter_than_lighttpd_on_purpose(tmp_path, name):
    ours, theirs = _tt_both(tmp_path, *STRICTER[name])
    assert theirs.returncode == 0, f"{name}: lighttpd refuses it now"
    assert ours.returncode == 1 and ":3:" in ours.stderr and "Traceback" not in ours.stderr
