"""The hot path compiled with mypyc (shared/hotpath.py, contrib/compile.py): used where
it can be built, and only while it matches the sources."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import worker
from shared import hotpath

REPO = Path(__file__).resolve().parent.parent


def _compile_script():
    spec = importlib.util.spec_from_file_location("compile_script", REPO / "contrib" / "compile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hot_path_runs_compiled_where_it_can_be_built():
    lacking = _compile_script().missing_toolchain()
    if lacking is not None:
        pytest.skip(f"this machine cannot compile: {lacking}")
    log = Path(sys.prefix) / "compile.log"
    assert worker.COMPILED, (
        "a C compiler is here, yet the compiled hot path is missing or stale: run "
        "contrib/compile.py" + (f"; its last log:\n{log.read_text()[-3000:]}"
                                if log.exists() else ""))
    for name in hotpath.HOT_MODULES:
        module = importlib.import_module(name.replace("/", "."))
        assert Path(module.__file__).parent == (hotpath.BUILD_DIR / name).parent, name
        assert module.__file__.endswith(".so"), name


def _write_manifest(path: Path, **changes) -> Path:
    manifest = {"interpreter": sys.version, "sources": hotpath.source_hashes()} | changes
    path.write_text(json.dumps(manifest))
    return path


def test_a_build_matches_only_the_sources_and_interpreter_it_was_made_from(tmp_path):
    assert hotpath.build_matches(_write_manifest(tmp_path / "current.json"))
    edited = dict(hotpath.source_hashes(), **{"worker/http1": "0" * 64})
    assert not hotpath.build_matches(_write_manifest(tmp_path / "edited.json", sources=edited))
    fewer = {name: digest for name, digest in hotpath.source_hashes().items()
             if name != "worker/loop"}
    assert not hotpath.build_matches(_write_manifest(tmp_path / "fewer.json", sources=fewer))
    assert not hotpath.build_matches(_write_manifest(tmp_path / "other.json", interpreter="3.0"))
    (tmp_path / "torn.json").write_text('{"interpreter": ')
    assert not hotpath.build_matches(tmp_path / "torn.json")
    assert not hotpath.build_matches(tmp_path / "absent.json")


def test_only_a_matching_build_goes_in_front_of_the_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(hotpath, "BUILD_DIR", tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    stale = _write_manifest(tmp_path / "manifest.json", interpreter="3.0")
    monkeypatch.setattr(hotpath, "MANIFEST", stale)
    package_path = ["worker-sources"]
    assert not hotpath.activate(package_path, "worker")
    assert package_path == ["worker-sources"]
    _write_manifest(stale)
    assert hotpath.activate(package_path, "worker")
    assert package_path == [str(tmp_path / "worker"), "worker-sources"]
    assert str(tmp_path) not in sys.path     # its worker/ is no namespace package


def test_the_console_script_runs_the_build_from_anywhere(tmp_path):
    """`pylighttpd` as installed (the README's serve command), started outside the
    repository, imports the real packages and the build beside them."""
    script = Path(sys.executable).parent / "pylighttpd"
    if not script.exists():
        pytest.skip("no console script: the project is not installed in this interpreter")
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run([str(script), "-V"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    mark = "+" if worker.COMPILED else "-"
    assert f"\t{mark} compiled hot path (mypyc)" in result.stdout
