"""mod_authn_pam with a real PAM stack: a test user (created here, removed after) and test
service files in /etc/pam.d using pam_unix; each exchange goes to Debian's lighttpd
1.4.69 (mod_authn_pam) and to a pylighttpd worker, whose answers must agree.  pam_unix's
delay after a failure shows that a login waits off the worker's loop."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from held_backend import answer_of, answers_at, served_meanwhile
from server_util import WorkerProcess
from test_differential import LIGHTTPD, beside_lighttpd

PAM_DIR = Path("/etc/pam.d")
PAM_UNIX = next((path for path in ("/lib/x86_64-linux-gnu/security/pam_unix.so",
                                   "/usr/lib/x86_64-linux-gnu/security/pam_unix.so",
                                   "/lib/security/pam_unix.so") if os.path.exists(path)), None)
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creating a PAM service and a user needs root"),
    pytest.mark.skipif(PAM_UNIX is None or not shutil.which("useradd"),
                       reason="pam_unix or useradd is missing (Debian: libpam-modules, passwd)"),
]
LIGHTTPD_PAM = Path("/usr/lib/lighttpd/mod_authn_pam.so")
PASSWORD = "pam-Secret-1"
CONFIG = """server.document-root = "{docroot}"
server.modules = ("mod_auth", "mod_authn_pam", "mod_staticfile")
mimetype.assign = (".txt" => "text/plain")
auth.backend = "pam"
auth.backend.pam.opts = ("service" => "{service}")
auth.require = (
  "/p/" => ("method" => "basic", "realm" => "pam", "require" => "valid-user"),
  "/only/" => ("method" => "basic", "realm" => "pam", "require" => "user=somebody-else"),
  "/delayed/" => ("method" => "basic", "realm" => "pam", "require" => "valid-user"),
)
$HTTP["url"] =~ "^/delayed/" {{ auth.backend.pam.opts = ("service" => "{service}-delay") }}
"""


@pytest.fixture(scope="module")
def pam_user():
    """A system user with a password and two PAM services checking it with pam_unix
    (the second with pam_unix's delay after a failure)."""
    name = "pylt" + secrets.token_hex(4)
    service = f"pylighttpd-test-{name}"
    files = [PAM_DIR / service, PAM_DIR / f"{service}-delay"]
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True,
                   capture_output=True, timeout=30)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{PASSWORD}\n", text=True, check=True,
                       capture_output=True, timeout=30)
        files[0].write_text("auth required pam_unix.so nodelay\n"
                            "account required pam_unix.so\n")
        files[1].write_text("auth required pam_unix.so\naccount required pam_unix.so\n")
        yield name, service
    finally:
        for path in files:
            path.unlink(missing_ok=True)
        subprocess.run(["userdel", name], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def site(tmp_path_factory, pam_user):
    base = tmp_path_factory.mktemp("pam")
    docroot = base / "www"
    for folder in ("", "p", "only", "delayed"):
        (docroot / folder).mkdir(parents=True, exist_ok=True)
        (docroot / folder / "f.txt").write_text(f"file of /{folder}\n")
    conf = base / "pam.conf"
    conf.write_text(CONFIG.format(docroot=docroot, service=pam_user[1]))
    return conf


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def exchanges(user: str) -> dict[str, tuple[str, dict[str, str]]]:
    return {
        "right": ("/p/f.txt", basic(user, PASSWORD)),
        "wrong": ("/p/f.txt", basic(user, PASSWORD + "x")),
        "unknown-user": ("/p/f.txt", basic("no-such-user-here", PASSWORD)),
        "empty-password": ("/p/f.txt", basic(user, "")),
        "none": ("/p/f.txt", {}),
        "not-the-user-required": ("/only/f.txt", basic(user, PASSWORD)),
        "open": ("/f.txt", {}),
    }


EXPECTED = {"right": 200, "wrong": 401, "unknown-user": 401, "empty-password": 401,
            "none": 401, "not-the-user-required": 401, "open": 200}


def test_logins_through_pam(site, pam_user):
    with WorkerProcess(site) as worker:
        for name, (path, headers) in exchanges(pam_user[0]).items():
            status, challenge, body = answer_of(worker.port, path, headers)
            assert status == EXPECTED[name], name
            if status == 401:
                assert challenge == 'Basic realm="pam", charset="UTF-8"'
            else:
                assert body == f"file of {path.rsplit('/', 1)[0] or '/'}\n".encode()


@pytest.mark.skipif(not (os.access(LIGHTTPD, os.X_OK) and LIGHTTPD_PAM.exists()),
                    reason="Debian's lighttpd with mod_authn_pam is not installed "
                           "(lighttpd-mod-authn-pam)")
def test_same_answers_as_lighttpd(site, pam_user):
    exchanged = list(exchanges(pam_user[0]).values())
    with beside_lighttpd(site) as (theirs, ours):
        assert answers_at(ours, exchanged) == answers_at(theirs, exchanged)


def test_a_delayed_pam_failure_holds_no_other_request(site, pam_user):
    with WorkerProcess(site) as worker:
        held, other, first = served_meanwhile(
            lambda: answer_of(worker.port, "/delayed/f.txt", basic(pam_user[0], "wrong"))[0],
            lambda: answer_of(worker.port, "/f.txt", {})[0])
        assert (held, other, first) == (401, 200, True)
        assert answer_of(worker.port, "/delayed/f.txt", basic(pam_user[0], PASSWORD))[0] == 200
