"""Compile the hot path with mypyc (see shared/hotpath.py).

    .venv/bin/python contrib/compile.py

Builds the modules of shared.hotpath.HOT_MODULES into shared.hotpath.BUILD_DIR and
writes its manifest last, so a build that fails half-way is never used.  Does nothing
when the build already matches the sources.  Exits 1, saying why, when there is no C
compiler, no Python headers or no mypyc: the server then runs as Python alone.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared import hotpath  # noqa: E402  (the repo first on the path)


# Compiled code trusts mypy's types and checks them as it runs.  mypy keeps an attribute
# narrowed by a test (`if self.x is None`) across calls that may change it; the
# compiled check of such a stale narrowing fails at run time with a TypeError.  The two
# last flags make mypy report the places where a narrowing says a later test is always
# true or its code unreachable, so they are fixed before anything is built.
MYPY_FLAGS = ("--ignore-missing-imports", "--follow-imports=silent",
              "--warn-unreachable", "--enable-error-code=redundant-expr")


def missing_toolchain() -> str | None:
    """What compiling needs and this machine lacks, or None."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return "no C compiler (Debian: apt-get install gcc)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (Debian: apt-get install python3-dev)"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "no mypyc (pip install '.[compile]')"
    return None


def build() -> None:
    """mypyc's C for the hot modules, compiled in a scratch directory; the extensions
    land in BUILD_DIR, the manifest after them."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    sources = [f"{name}.py" for name in hotpath.HOT_MODULES]
    hashes = hotpath.source_hashes()
    shutil.rmtree(hotpath.BUILD_DIR, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="pylighttpd-mypyc-") as scratch:
        os.chdir(REPO)     # mypy names the modules after their paths from here
        extensions = mypycify([*MYPY_FLAGS, "--cache-dir", f"{scratch}/mypy", *sources],
                              opt_level="3", target_dir=f"{scratch}/c")
        distribution = Distribution({"name": "pylighttpd-hot-path",
                                     "ext_modules": extensions})
        command = distribution.get_command_obj("build_ext")
        command.build_lib = str(hotpath.BUILD_DIR)
        command.build_temp = f"{scratch}/o"
        distribution.run_command("build_ext")
    hotpath.MANIFEST.write_text(json.dumps({"interpreter": sys.version, "sources": hashes}))


def main() -> int:
    if hotpath.build_matches():
        print("compile: the hot path's build is current")
        return 0
    lacking = missing_toolchain()
    if lacking is not None:
        print(f"compile: not compiled, the server runs as Python: {lacking}", file=sys.stderr)
        return 1
    build()
    print(f"compile: {len(hotpath.HOT_MODULES)} hot modules compiled into "
          f"{hotpath.BUILD_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
