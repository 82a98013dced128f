"""What pylighttpd declares matches what it does.

`-V` shows a feature as `+` only when the module that provides it is in worker/modules/
and its library imports; every core key declared is read by the code (or acted on
without a read, each named with its reason); an unknown key is reported as lighttpd
reports it (by `-tt`, and in the error log when the server starts, or reloads); every
snippet in conf/conf-available/ loads without a warning and serves.
Servers run on 127.0.0.1 free ports and every wait has a deadline.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from master import features
from procutil import REPO, run_cli, run_lighttpd
from serverproc import Server, free_port, get, wait_until
from shared.config.core_directives import CORE_DIRECTIVES

WARNING = re.compile(r"WARNING: unknown config-key: (\S+) \(ignored\)")
SNIPPETS = sorted((REPO / "conf" / "conf-available").glob("*.conf"))
# Declared keys no code of master/ or worker/ reads that still do what they say: the
# master always takes sockets passed in systemd's LISTEN_FDS form, which is what
# "enable" asks for; server.http-parseopts is read once into the compiled config
# (shared/config/compiled.py: url_flags, method_get_body); the single strictness keys
# ask for the strict reading the workers always do, and are warned about when off;
# server.reject-expect-100-with-417 is ignored by lighttpd 1.4.69 itself.
ACTED_ON_WITHOUT_A_READ = frozenset({
    "server.bsd-accept-filter",            # none on Linux: a warning, as lighttpd's no-op
    "server.systemd-socket-activation", "server.http-parseopts",
    "server.reject-expect-100-with-417",
    "server.http-parseopt-header-strict", "server.http-parseopt-host-strict",
    "server.http-parseopt-host-normalize"})


# ------------------------------------------------------------------------------ -V
def _feature_lines(text: str) -> dict[str, str]:
    """name -> "+" or "-" for the lines of the Features section."""
    section = text.split("\nFeatures:\n", 1)[1]
    return {line[3:]: line[1] for line in section.splitlines() if line.startswith("\t")}


def _expected(feature: features.Feature) -> str:
    module_there = not feature.module or (
        REPO / "worker" / "modules" / f"{feature.module}.py").is_file()
    present = feature.platform and module_there and (
        not feature.shared_library or ctypes.util.find_library(feature.shared_library)) and (
        not feature.libraries
        or any(importlib.util.find_spec(name) is not None for name in feature.libraries))
    return "+" if present else "-"


def test_feature_lines_follow_the_module_files_and_their_libraries():
    shown = _feature_lines(run_cli("-V").stdout)
    assert shown == {feature.name: _expected(feature) for feature in features.FEATURES}


def test_an_installed_library_is_not_a_feature_without_its_module():
    shown = _feature_lines(features.report(frozenset()))
    for name in ("zlib support", "bzip2 support", "OpenSSL support", "Prometheus metrics"):
        assert shown[name] == "-", name
    assert shown["PCRE support"] == "+"


def test_a_feature_turns_on_when_its_module_lands():
    shown = _feature_lines(features.report(frozenset({"mod_deflate", "mod_openssl"})))
    assert (shown["zlib support"], shown["bzip2 support"]) == ("+", "+")  # stdlib
    assert shown["OpenSSL support"] == "+"                                 # ssl: stdlib


def test_a_module_without_its_library_is_not_a_feature():
    needs_missing = features.Feature("X support", "mod_x", ("no_such_library_here",))
    assert not features.is_present(needs_missing, frozenset({"mod_x"}))


def test_event_handlers_are_only_the_one_the_worker_uses():
    text = run_cli("-V").stdout
    handlers = text.split("Event Handlers:\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line for line in handlers if line.startswith("\t+")] == ["\t+ epoll (Linux)"]


# ------------------------------------------------------------- keys not acted on yet
# the readers in shared/ (the others there declare or check keys)
SHARED_READERS = (REPO / "shared" / "config" / "feature_flags.py",)


def _source_reads(key: str) -> list[str]:
    """Files of master/ and worker/ (and SHARED_READERS) that name `key` as a string
    literal."""
    quoted = (f'"{key}"', f"'{key}'")
    files = [*(REPO / "master").rglob("*.py"), *(REPO / "worker").rglob("*.py"),
             *SHARED_READERS]
    return [str(path.relative_to(REPO)) for path in files
            if any(text in path.read_text() for text in quoted)]


def test_every_declared_key_is_read_or_acted_on_without_a_read():
    unread = {d.name for d in CORE_DIRECTIVES if not _source_reads(d.name)}
    assert unread == ACTED_ON_WITHOUT_A_READ


def _config_with(tmp_path: Path, keys: list[str], name: str = "x.conf") -> Path:
    conf = tmp_path / name
    conf.write_text(f'server.document-root = "{tmp_path}"\n'
                    + "".join(f'{key} = "some value"\n' for key in keys))
    return conf


def test_tt_reports_an_unknown_key_as_lighttpd_reports_it(tmp_path):
    keys = ["bogus.key", "server.clock-jump-restart"]   # the latter a feature flag
    theirs = run_lighttpd("-tt", "-f", str(_config_with(tmp_path, keys)))
    ours = run_cli("-tt", "-f", str(_config_with(tmp_path, keys, "ours.conf")))
    assert ours.returncode == theirs.returncode == 0
    for key in keys:    # a value of any type: the key is ignored, not checked
        wording = f"WARNING: unknown config-key: {key} (ignored)"
        assert theirs.stderr.count(wording) == ours.stderr.count(wording) == 1, key
    assert "Traceback" not in ours.stderr


# an unknown key, and a known one whose value is ignored here (said by its advice)
IN_VAIN = 'server.bsd-accept-filter = "httpready"\nbogus.key = 1'
ADVICE = re.compile(r"WARNING: (server\.bsd-accept-filter) \"httpready\": FreeBSD")


def _in_vain(log: str) -> set[str]:
    return set(WARNING.findall(log)) | set(ADVICE.findall(log))


def test_keys_set_in_vain_are_warned_in_the_error_log_at_start_up(tmp_path):
    running = Server(tmp_path, IN_VAIN)
    try:
        running.wait_serving()
        log = running.errorlog.read_text()
    finally:
        running.stop()
    assert _in_vain(log) == {"server.bsd-accept-filter", "bogus.key"}
    assert f"{running.conf}:7:1: WARNING" in log and f"{running.conf}:8:1: WARNING" in log


def test_one_shot_logs_the_warnings_too(tmp_path):
    errorlog = tmp_path / "error.log"
    conf = _config_with(tmp_path, ["bogus.key"])
    conf.write_text(conf.read_text() + f'server.errorlog = "{errorlog}"\n')
    (tmp_path / "index.html").write_text("one\n")
    done = run_cli("-1", "-f", str(conf), stdin="GET /index.html HTTP/1.0\r\n\r\n")
    assert done.returncode == 0 and "200" in done.stdout.splitlines()[0]
    assert WARNING.findall(errorlog.read_text()) == ["bogus.key"]


# --------------------------------------------------------------------- conf snippets
def _site_with(tmp_path: Path, snippet: Path) -> tuple[Path, int, Path]:
    """A copy of conf/ with `snippet` enabled as the README says (a link in
    conf-enabled/), on a free port, logging errors to a file."""
    shutil.copytree(REPO / "conf", tmp_path / "conf", symlinks=True)
    enabled = tmp_path / "conf" / "conf-enabled"
    for needed in _with_dependencies(snippet):
        (enabled / needed.name).symlink_to(Path("..") / "conf-available" / needed.name)
    port, errorlog = free_port(), tmp_path / "error.log"
    (enabled / "zz-test.conf").write_text(
        f'server.port := {port}\nserver.errorlog = "{errorlog}"\n')
    return tmp_path / "conf" / "pylighttpd.conf", port, errorlog


def _with_dependencies(snippet: Path) -> list[Path]:
    """The snippet and those its `# -*- depends: NAME -*-` lines name (Debian's
    lighty-enable-mod enables them together)."""
    needed = [snippet]
    for name in re.findall(r"^# -\*- depends: (\S+) -\*-$", snippet.read_text(), re.M):
        needed += snippet.parent.glob(f"??-{name}.conf")
    return needed


def _start(conf: Path, tmp_path: Path) -> subprocess.Popen:
    """The server on `conf` in the foreground, its stderr in tmp_path/stderr."""
    with open(tmp_path / "stderr", "w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "master.cli", "-D", "-f", str(conf)], cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL, stderr=stderr)


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[path.name for path in SNIPPETS])
def test_each_available_snippet_loads_cleanly_and_serves(tmp_path, snippet):
    conf, port, errorlog = _site_with(tmp_path, snippet)
    checked = run_cli("-tt", "-f", str(conf), cwd=tmp_path)
    assert (checked.returncode, checked.stderr) == (0, ""), snippet.name
    process = _start(conf, tmp_path)
    try:
        status, _, body = wait_until(lambda: get(port, "/"))
        assert (status, b"pylighttpd works" in body) == (200, True)
    finally:
        _stop(process)
    assert "WARNING" not in errorlog.read_text(), snippet.name


def test_a_reload_warns_of_the_keys_its_new_config_sets_in_vain(tmp_path):
    running = Server(tmp_path)
    try:
        running.wait_serving()
        running.write_config(IN_VAIN)
        running.process.send_signal(signal.SIGHUP)
        wait_until(lambda: len(_in_vain(running.errorlog.read_text())) >= 2)
        log = running.errorlog.read_text()
    finally:
        running.stop()
    assert _in_vain(log) == {"server.bsd-accept-filter", "bogus.key"}


def test_an_auth_backend_brings_its_module_with_lighttpds_warning(tmp_path):
    """lighttpd 1.4.69 loads mod_authn_file for auth.backend = "htpasswd" when only
    mod_auth is listed (server.compat-module-load), and says so."""
    (tmp_path / "users").write_text("")
    conf = tmp_path / "auth.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.modules = ("mod_auth")\n'
                    f'auth.backend = "htpasswd"\n'
                    f'auth.backend.htpasswd.userfile = "{tmp_path}/users"\n')
    checked = run_cli("-tt", "-f", str(conf))
    assert checked.returncode == 0, checked.stderr
    assert 'please add "mod_authn_file" to server.modules' in checked.stderr + checked.stdout
    conf.write_text(conf.read_text() + 'server.compat-module-load = "disable"\n')
    refused = run_cli("-tt", "-f", str(conf))
    assert refused.returncode != 0
    assert "auth.backend not supported: htpasswd" in refused.stderr
