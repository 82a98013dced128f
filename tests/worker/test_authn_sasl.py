"""mod_authn_sasl with Cyrus libsasl2 and real sasldb files written by Debian's
`saslpasswd2` (sasl2-bin): users in two realms, a second database for one URL's
block; each exchange goes to Debian's lighttpd 1.4.69 (mod_authn_sasl) and to a
pylighttpd worker, whose answers must agree.  pwcheck_method saslauthd asks a
saslauthd of the test's own (checking a system user it creates) on libsasl2's fixed
socket.  A pwcheck_method lighttpd does not know refuses the config, with its words."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from held_backend import answer_of, answers_at
from server_util import WorkerProcess
from test_authn_pam import basic
from test_differential import LIGHTTPD, beside_lighttpd
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/: procutil
from procutil import run_cli, run_lighttpd  # noqa: E402
from serverproc import wait_until  # noqa: E402

SASLPASSWD2 = shutil.which("saslpasswd2") or "/usr/sbin/saslpasswd2"
pytestmark = pytest.mark.skipif(not os.access(SASLPASSWD2, os.X_OK),
                                reason="saslpasswd2 is missing (Debian: sasl2-bin)")
LIGHTTPD_SASL = Path("/usr/lib/lighttpd/mod_authn_sasl.so")
CONFIG = """server.document-root = "{docroot}"
server.modules = ("mod_auth", "mod_authn_sasl", "mod_staticfile")
mimetype.assign = (".txt" => "text/plain")
auth.backend = "sasl"
auth.backend.sasl.opts = ("pwcheck_method" => "sasldb", "sasldb_path" => "{first}")
auth.require = (
  "/p/" => ("method" => "basic", "realm" => "site", "require" => "valid-user"),
  "/only/" => ("method" => "basic", "realm" => "site", "require" => "user=somebody-else"),
  "/other/" => ("method" => "basic", "realm" => "other", "require" => "valid-user"),
  "/second/" => ("method" => "basic", "realm" => "site", "require" => "valid-user"),
)
$HTTP["url"] =^ "/second/" {{
  auth.backend.sasl.opts = ("pwcheck_method" => "auxprop", "sasldb_path" => "{second}")
}}
"""
USERS = {"first": [("alice", "site", "alice-Secret-1"), ("bob", "other", "bob-Secret-2")],
         "second": [("carol", "site", "carol-Secret-3")]}


def _database(path: Path, users: list[tuple[str, str, str]]) -> None:
    for user, realm, password in users:
        subprocess.run([SASLPASSWD2, "-p", "-c", "-f", str(path), "-u", realm, user],
                       input=password, text=True, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("sasl")
    docroot = base / "www"
    for folder in ("", "p", "only", "other", "second"):
        (docroot / folder).mkdir(parents=True, exist_ok=True)
        (docroot / folder / "f.txt").write_text(f"file of /{folder}\n")
    for name, users in USERS.items():
        _database(base / f"{name}.db", users)
    conf = base / "sasl.conf"
    conf.write_text(CONFIG.format(docroot=docroot, first=base / "first.db",
                                  second=base / "second.db"))
    return conf


EXCHANGES = {
    "right": ("/p/f.txt", basic("alice", "alice-Secret-1"), 200),
    "wrong": ("/p/f.txt", basic("alice", "alice-Secret-x"), 401),
    "unknown-user": ("/p/f.txt", basic("nobody-here", "alice-Secret-1"), 401),
    "empty-password": ("/p/f.txt", basic("alice", ""), 401),
    "none": ("/p/f.txt", {}, 401),
    "not-the-user-required": ("/only/f.txt", basic("alice", "alice-Secret-1"), 401),
    "user-of-that-realm": ("/other/f.txt", basic("bob", "bob-Secret-2"), 200),
    "user-of-another-realm": ("/other/f.txt", basic("alice", "alice-Secret-1"), 401),
    "second-database": ("/second/f.txt", basic("carol", "carol-Secret-3"), 200),
    "not-in-second-database": ("/second/f.txt", basic("alice", "alice-Secret-1"), 401),
    "open": ("/f.txt", {}, 200),
}


def test_logins_through_libsasl2(site):
    with WorkerProcess(site) as worker:
        for name, (path, headers, expected) in EXCHANGES.items():
            status, challenge, body = answer_of(worker.port, path, headers)
            assert status == expected, name
            if status == 200:
                assert body == f"file of {path.rsplit('/', 1)[0] or '/'}\n".encode(), name


@pytest.mark.skipif(not (os.access(LIGHTTPD, os.X_OK) and LIGHTTPD_SASL.exists()),
                    reason="Debian's lighttpd with mod_authn_sasl is not installed "
                           "(lighttpd-mod-authn-sasl)")
def test_same_answers_as_lighttpd(site):
    exchanged = [(path, headers) for path, headers, _ in EXCHANGES.values()]
    with beside_lighttpd(site) as (theirs, ours):
        assert answers_at(ours, exchanged) == answers_at(theirs, exchanged)


def test_an_unknown_pwcheck_method_refuses_the_config(tmp_path, site):
    conf = tmp_path / "bad.conf"
    conf.write_text(site.read_text().replace('"pwcheck_method" => "sasldb"',
                                             '"pwcheck_method" => "shadow"'))
    ours = run_cli("-tt", "-f", str(conf))
    assert ours.returncode == 1
    assert ("sasl pwcheck_method must be one of saslauthd, sasldb, or auxprop, not: shadow"
            in ours.stderr)
    if LIGHTTPD_SASL.exists():
        assert run_lighttpd("-tt", "-f", str(conf)).returncode != 0


SASLAUTHD = shutil.which("saslauthd") or "/usr/sbin/saslauthd"
SASLAUTHD_DIR = Path("/run/saslauthd")       # libsasl2's fixed place for its socket
SASLAUTHD_CONFIG = """server.document-root = "{docroot}"
server.modules = ("mod_auth", "mod_authn_sasl", "mod_staticfile")
auth.backend = "sasl"
auth.backend.sasl.opts = ("pwcheck_method" => "saslauthd", "service" => "http")
auth.require = ("/p/" => ("method" => "basic", "realm" => "site", "require" => "valid-user"))
"""


@pytest.fixture
def saslauthd_user(tmp_path):
    """A system user with a password, checked by a saslauthd of the test's own
    (`-a shadow`) on libsasl2's socket, which must be free."""
    if os.geteuid() != 0 or not os.access(SASLAUTHD, os.X_OK) or not shutil.which("useradd"):
        pytest.skip("a saslauthd of the test's own needs root, saslauthd and useradd")
    if (SASLAUTHD_DIR / "mux").exists():
        pytest.skip(f"{SASLAUTHD_DIR / 'mux'} is another saslauthd's")
    name = "pylts" + secrets.token_hex(4)
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True,
                   capture_output=True, timeout=30)
    SASLAUTHD_DIR.mkdir(exist_ok=True)
    daemon = None
    try:
        subprocess.run(["chpasswd"], input=f"{name}:sasl-Secret-4\n", text=True, check=True,
                       capture_output=True, timeout=30)
        daemon = subprocess.Popen([SASLAUTHD, "-a", "shadow", "-m", str(SASLAUTHD_DIR), "-d",
                                   "-n", "1"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL,
                                  start_new_session=True)   # it signals its whole group
        wait_until(lambda: (SASLAUTHD_DIR / "mux").exists())
        yield name
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=10)
        for left in ("mux", "mux.accept", "saslauthd.pid.lock"):
            (SASLAUTHD_DIR / left).unlink(missing_ok=True)
        subprocess.run(["userdel", name], capture_output=True, timeout=30)


def test_saslauthd_checks_the_password(tmp_path, saslauthd_user):
    docroot = tmp_path / "www"
    (docroot / "p").mkdir(parents=True)
    (docroot / "p" / "f.txt").write_text("protected\n")
    conf = tmp_path / "saslauthd.conf"
    conf.write_text(SASLAUTHD_CONFIG.format(docroot=docroot))
    exchanged = [("/p/f.txt", basic(saslauthd_user, "sasl-Secret-4")),
                 ("/p/f.txt", basic(saslauthd_user, "sasl-Secret-x")),
                 ("/p/f.txt", basic("nobody-here-at-all", "sasl-Secret-4"))]
    with WorkerProcess(conf) as worker:
        ours = answers_at(worker.port, exchanged)
    assert [status for status, _, _ in ours] == [200, 401, 401]
    if os.access(LIGHTTPD, os.X_OK) and LIGHTTPD_SASL.exists():
        with beside_lighttpd(conf) as (theirs, port):
            assert answers_at(port, exchanged) == answers_at(theirs, exchanged)
