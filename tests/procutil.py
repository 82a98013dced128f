"""Test helpers: where the repo is, how to run the real command line and lighttpd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIGHTTPD = shutil.which("lighttpd") or ("/usr/sbin/lighttpd"
                                        if os.path.exists("/usr/sbin/lighttpd") else None)


def run_cli(*args: str, stdin: str | None = None, cwd: str | Path | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `pylighttpd ARGS` as a user would, in a separate process."""
    return subprocess.run([sys.executable, "-m", "master.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def run_lighttpd(*args: str, cwd: str | Path | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the reference lighttpd (skip the test when it is not installed)."""
    if LIGHTTPD is None:
        pytest.skip("Debian's lighttpd is not installed")
    return subprocess.run([LIGHTTPD, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or REPO)
