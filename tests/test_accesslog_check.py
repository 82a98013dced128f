"""An access log the workers could not open is a config error, as lighttpd makes it.

Workers open their access logs lazily, after the privilege drop, so the master checks
every `accesslog.filename` (in conditional blocks too) when it loads the config: at
start-up such a log stops the server with the file:line of the setting, on SIGHUP the
reload is refused and the running workers go on logging where they did.  Servers run
on 127.0.0.1 and every wait has a deadline.
"""

from __future__ import annotations

import os
import pwd
import signal
import tempfile
from pathlib import Path

import pytest

from procutil import run_cli
from serverproc import free_port, get, serving, wait_until

ACCESSLOG = 'server.modules = ("mod_accesslog")\n'
FIRST_EXTRA_LINE = 7        # serverproc's config has six lines before the extra ones


def _config(tmp_path: Path, body: str) -> Path:
    docroot = tmp_path / "www"
    docroot.mkdir(exist_ok=True)
    conf = tmp_path / "server.conf"
    conf.write_text(f'server.document-root = "{docroot}"\nserver.bind = "127.0.0.1"\n'
                    f'server.port = {free_port()}\n{ACCESSLOG}{body}\n')
    return conf


def test_a_reload_naming_an_unwritable_access_log_is_refused(tmp_path):
    access = tmp_path / "access.log"
    with serving(tmp_path, f'{ACCESSLOG}accesslog.filename = "{access}"\n'
                           'server.tag = "first"') as server:
        wait_until(lambda: "GET / " in access.read_text())
        server.write_config(f'{ACCESSLOG}accesslog.filename = "{tmp_path}/gone/access.log"\n'
                            'server.tag = "second"')
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in server.errorlog.read_text())
        refusal = server.errorlog.read_text()
        assert f"{server.conf}:{FIRST_EXTRA_LINE + 1}:1: opening log " \
               f"'{tmp_path}/gone/access.log' failed: No such file or directory" in refusal
        assert get(server.port, "/?after-the-refusal")[1]["Server"] == "first"
        wait_until(lambda: "GET /?after-the-refusal " in access.read_text())


@pytest.mark.parametrize("setting, place, reason", [
    ('accesslog.filename = "{tmp}/gone/access.log"', "5:1", "No such file or directory"),
    ('$HTTP["host"] == "a" {{\n  accesslog.filename = "{tmp}"\n}}', "6:3", "Is a directory"),
])
def test_start_up_with_an_unwritable_access_log_fails_with_its_place(tmp_path, setting,
                                                                      place, reason):
    conf = _config(tmp_path, setting.format(tmp=tmp_path))
    result = run_cli("-D", "-f", str(conf), timeout=20)
    assert result.returncode == 1
    assert f"{conf}:{place}: opening log" in result.stderr and reason in result.stderr
    assert "Traceback" not in result.stderr


def test_loggers_and_syslog_are_not_files_to_check(tmp_path):
    conf = _config(tmp_path, 'accesslog.filename = "|cat >/dev/null"\n'
                             '$HTTP["host"] == "a" {\n'
                             f'  accesslog.filename = "{tmp_path}/gone/access.log"\n'
                             '  accesslog.use-syslog = "enable"\n}')
    result = run_cli("-tt", "-f", str(conf))
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.skipif(os.geteuid() != 0, reason="server.username needs root")
def test_the_check_is_made_as_the_workers_user():
    nobody = pwd.getpwnam("nobody")
    with tempfile.TemporaryDirectory() as top:   # in /tmp: a path nobody can reach
        os.chmod(top, 0o755)
        root_only, theirs = Path(top, "root-only"), Path(top, "nobody")
        root_only.mkdir(mode=0o755)
        theirs.mkdir(mode=0o755)
        os.chown(theirs, nobody.pw_uid, nobody.pw_gid)
        refused = _check_as_nobody(Path(top), root_only)
        accepted = _check_as_nobody(Path(top), theirs)
        assert not (theirs / "access.log").exists()    # checked, not created
    assert refused.returncode == 1
    assert f"'{root_only}/access.log' failed: Permission denied" in refused.stderr
    assert accepted.returncode == 0, accepted.stderr


def _check_as_nobody(top: Path, directory: Path):
    conf = _config(top, f'server.username = "nobody"\n'
                        f'accesslog.filename = "{directory}/access.log"')
    return run_cli("-tt", "-f", str(conf))
