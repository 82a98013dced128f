"""Compile the hot path with mypyc (see shared/hotpath.py).

    .venv/bin/python contrib/compile.py
    PYLIGHTTPD_PGO=0 .venv/bin/python contrib/compile.py     # one build, no training

Builds the modules of shared.hotpath.HOT_MODULES into shared.hotpath.BUILD_DIR and
writes its manifest last, so a build that fails half-way is never used.  Does nothing
when the build already matches the sources.  Exits 1, saying why, when there is no C
compiler, no Python headers or no mypyc: the server then runs as Python alone.

With GCC the C is built twice, guided by a profile (PGO), as CPython itself is built:
first instrumented, then run on TRAINING (loadtests/microbench.py's in-process forms
of the benchmark's rows: static files, 404s, listings, gateways, rewrite and auth,
compression, WebDAV, SSI, Lua, browser traffic with an access log), then built again
with what the run counted.  GCC then lays the code a request runs out together and
its branches as they go, which costs a worker fewer instruction-cache and TLB misses:
4-14% less CPU a request (loadtests/README.md, thirty-fifth run).  A row whose
backend is not installed trains nothing; code no row ran is optimised as without a
profile (-fprofile-partial-training).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
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


def c_compiler() -> str:
    """The C compiler Python's extensions are built with."""
    return (sysconfig.get_config_var("CC") or "cc").split()[0]


def missing_toolchain() -> str | None:
    """What compiling needs and this machine lacks, or None."""
    compiler = c_compiler()
    if shutil.which(compiler) is None:
        return "no C compiler (Debian: apt-get install gcc)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (Debian: apt-get install python3-dev)"
    try:
        import mypyc.build  # noqa: F401
    except ImportError:
        return "no mypyc (pip install '.[compile]')"
    return None


# the rows the instrumented build is run on (microbench.py --scenario), and the
# browser-shaped runs beside them; each is a few seconds
TRAINING = ("1k-keepalive", "16k-keepalive", "404", "404-nocache", "dirlisting",
            "proxy-1k", "cgi-hello", "fastcgi-php-hello", "scgi-wsgi-hello",
            "rewrite-auth-1k", "rewrite-auth-1k-nocache", "gzip-1k-nocache",
            "gzip-100k-cachedir", "gzip-100k-cachedir-nocache", "magnet-1k-nocache",
            "propfind-100-nocache", "ssi-small-nocache")
BROWSER_TRAINING = ((), ("--accesslog",), ("--no-answer-cache",))
TRAINING_ROUNDS = "20"
TRAINING_SECONDS = 180          # a row that takes longer than this is stopped
TRAINING_GRACE_SECONDS = 20     # for it to stop its backends


def uses_gcc() -> bool:
    """Whether the C compiler is GCC, whose profile flags PGO uses."""
    try:
        version = subprocess.run([c_compiler(), "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "gcc" in version.lower() or "free software foundation" in version.lower()


def build() -> None:
    """The hot path built, with a profile when GCC can use one."""
    scratch = hotpath.BUILD_DIR.parent / "pylighttpd-build"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        if os.environ.get("PYLIGHTTPD_PGO", "1") != "0" and uses_gcc():
            profile = scratch / "profile"
            build_once(scratch, ["-fprofile-generate", "-fprofile-update=single",
                                 f"-fprofile-dir={profile}"], ["-fprofile-generate"])
            trained = train()
            print(f"compile: {trained} training runs for the profile")
            build_once(scratch, ["-fprofile-use", "-fprofile-partial-training",
                                 "-Wno-missing-profile", f"-fprofile-dir={profile}"], [])
        else:
            build_once(scratch, [], [])
    except BaseException:
        hotpath.MANIFEST.unlink(missing_ok=True)    # never the instrumented build
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def build_once(scratch: Path, compile_flags: list[str], link_flags: list[str]) -> None:
    """mypyc's C for the hot modules, compiled in `scratch` (the same paths each
    time: a profile is found by its object's path); the extensions land in BUILD_DIR,
    the manifest after them."""
    from mypyc.build import mypycify
    from setuptools import Distribution

    sources = [f"{name}.py" for name in hotpath.HOT_MODULES]
    hashes = hotpath.source_hashes()
    shutil.rmtree(hotpath.BUILD_DIR, ignore_errors=True)
    os.chdir(REPO)     # mypy names the modules after their paths from here
    extensions = mypycify([*MYPY_FLAGS, "--cache-dir", f"{scratch}/mypy", *sources],
                          opt_level="3", target_dir=f"{scratch}/c")
    for extension in extensions:
        extension.extra_compile_args = [*extension.extra_compile_args, *compile_flags]
        extension.extra_link_args = [*extension.extra_link_args, *link_flags]
    distribution = Distribution({"name": "pylighttpd-hot-path", "ext_modules": extensions})
    command = distribution.get_command_obj("build_ext")
    command.build_lib = str(hotpath.BUILD_DIR)
    command.build_temp = f"{scratch}/o"
    command.parallel = os.cpu_count() or 1     # a C file per module
    command.force = True                       # the objects of the last build are stale
    distribution.run_command("build_ext")
    hotpath.MANIFEST.write_text(json.dumps({"interpreter": sys.version, "sources": hashes}))


def train() -> int:
    """Run the instrumented build on TRAINING; the number of runs that completed (its
    counts are written as each one exits)."""
    runs = [["--scenario", name] for name in TRAINING] + \
        [["--browser", *extra] for extra in BROWSER_TRAINING]
    completed = 0
    for run in runs:
        process = subprocess.Popen([sys.executable, str(REPO / "loadtests" / "microbench.py"),
                                    *run, "--rounds", TRAINING_ROUNDS], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            completed += process.wait(TRAINING_SECONDS) == 0
        except subprocess.TimeoutExpired:
            stop_training_run(process)
    return completed


def stop_training_run(process: subprocess.Popen) -> None:
    """Stop a run that took too long: interrupted, so that it stops the backends it
    started (each in a session of its own), killed if it does not end."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(TRAINING_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


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
