"""Helpers for the config-language tests: run the reference lighttpd and our printer
on the same file, from the same working directory, and compare what they print."""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.config import format_config, load_config

LIGHTTPD = shutil.which("lighttpd") or ("/usr/sbin/lighttpd"
                                        if os.path.exists("/usr/sbin/lighttpd") else None)

# Lines that differ between any two processes: the predefined var.PID always, var.CWD
# only when the working directories differ (we always run both in the same one).
_VOLATILE = re.compile(r"^\s*var\.(PID|CWD)\s*=")


def need_lighttpd() -> str:
    if LIGHTTPD is None:
        pytest.skip("Debian's lighttpd (/usr/sbin/lighttpd) is not installed")
    return LIGHTTPD


def lighttpd(*args: str, cwd: str | Path | None = None,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the reference lighttpd with `args` (skips the test if it is missing)."""
    binary = need_lighttpd()
    return subprocess.run([binary, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or os.getcwd(),
                          env={**os.environ, "SHELL": "/bin/sh"})


def lighttpd_print(path: str | Path, cwd: str | Path | None = None) -> str:
    """`lighttpd -p -f path`; fails the test (with lighttpd's stderr) if it refuses."""
    done = lighttpd("-p", "-f", str(path), cwd=cwd)
    assert done.returncode == 0, f"lighttpd -p rejected {path}:\n{done.stderr}"
    return done.stdout


def ours_print(path: str | Path, cwd: str | Path | None = None) -> str:
    """`format_config(load_config(path))` run in `cwd`, like `lighttpd -p` would be."""
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return format_config(load_config(str(path)))
    finally:
        os.chdir(old)


def stable_lines(text: str, keep_cwd: bool = True) -> list[str]:
    """The printed lines minus the ones that differ per process."""
    return [line for line in text.splitlines()
            if not (_VOLATILE.match(line) and (not keep_cwd or "var.PID" in line))]


def assert_same_print(ours: str, theirs: str, label: str = "") -> None:
    """Line-by-line equality of two `-p` outputs, with a readable diff on failure."""
    mine, ref = stable_lines(ours), stable_lines(theirs)
    if mine != ref:
        diff = "\n".join(difflib.unified_diff(ref, mine, "lighttpd -p", "pylighttpd",
                                              lineterm="", n=2))
        pytest.fail(f"-p output differs{(' for ' + label) if label else ''}:\n{diff}")


def assert_print_parity(path: str | Path, cwd: str | Path | None = None) -> None:
    cwd = cwd or os.getcwd()
    theirs = lighttpd_print(path, cwd)
    assert_same_print(ours_print(path, cwd), theirs, str(path))


def without_volatile(text: str) -> str:
    return "\n".join(stable_lines(text, keep_cwd=False))
