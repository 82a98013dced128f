"""mod_setenv's environment and request headers reach FastCGI and SCGI backends (the
WSGI app of gw_app.py under flup), as they reach CGI (test_header_modules_differential.py);
a variable's name upper-cased, all but letters and digits `_`, as lighttpd 1.4.69 names
it for a backend (`MY_VAR` for `my-var`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from gw_backends import flup
from server_util import WorkerProcess, config_text

pytest.importorskip("flup", reason="flup (FastCGI and SCGI for WSGI) is not installed")

EXTRA = """
fastcgi.server = ( "/f/" => ( ( "socket" => "{sockets}/f.sock", "check-local" => "disable" ) ) )
scgi.server = ( "/s/" => ( ( "socket" => "{sockets}/s.sock", "check-local" => "disable" ) ) )
setenv.add-environment = ( "user" => "from-setenv" )
setenv.add-request-header = ( "X-Custom" => "added" )
"""


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    base = tmp_path_factory.mktemp("setenvgw")
    sockets = Path(tempfile.mkdtemp(prefix="setenv-", dir="/tmp"))   # short socket paths
    backends = []
    try:
        backends.append(flup("fcgi", f"{sockets}/f.sock"))
        backends.append(flup("scgi", f"{sockets}/s.sock"))
        conf = base / "setenv.conf"
        conf.write_text(config_text(base, EXTRA.format(sockets=sockets),
                                    ("mod_setenv", "mod_fastcgi", "mod_scgi")))
        with WorkerProcess(conf) as running:
            yield running
    finally:
        for backend in backends:
            backend.stop()
        shutil.rmtree(sockets, ignore_errors=True)


@pytest.mark.parametrize("prefix", ["/f/", "/s/"], ids=["fastcgi", "scgi"])
def test_the_backend_sees_the_environment_and_headers_setenv_adds(worker, prefix):
    status, _, body = worker.get(prefix + "app", X_Custom="from-client")
    assert status == 200
    assert "USER=from-setenv" in body.decode().splitlines()     # set as "user"
    assert "HTTP_X_CUSTOM=from-client, added" in body.decode().splitlines()
