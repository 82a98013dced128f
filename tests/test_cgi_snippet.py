"""conf/conf-available/10-cgi.conf enabled as the README says (a link in conf-enabled/
of a copy of conf/): a program in conf/cgi-bin/ runs, and is never sent as a file
(mod_staticfile comes first in the default server.modules).  tests/test_declarations.py
starts and serves every snippet; this one also needs a program to run.
"""

from __future__ import annotations

import os
import subprocess
import sys

from procutil import REPO
from serverproc import get, wait_until
from test_declarations import _site_with, _stop

SNIPPET = REPO / "conf" / "conf-available" / "10-cgi.conf"
PROGRAM = ('#!/bin/sh\n'
           'printf "Content-Type: text/plain\\r\\n\\r\\nran as %s\\n" "$SCRIPT_NAME"\n')


def test_the_cgi_snippet_runs_the_programs_of_cgi_bin(tmp_path):
    conf, port, errorlog = _site_with(tmp_path, SNIPPET)
    program = conf.parent / "cgi-bin" / "hello"
    program.parent.mkdir()
    program.write_text(PROGRAM)
    program.chmod(0o755)
    process = subprocess.Popen(
        [sys.executable, "-m", "master.cli", "-D", "-f", str(conf)], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        status, headers, body = wait_until(lambda: get(port, "/cgi-bin/hello?x=1"))
        assert get(port, "/")[0] == 200
    finally:
        _stop(process)
    assert (status, headers["Content-Type"], body) == \
        (200, "text/plain", b"ran as /cgi-bin/hello\n")
    assert "WARNING" not in errorlog.read_text()
