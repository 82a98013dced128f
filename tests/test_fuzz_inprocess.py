"""The fuzz targets of loadtests/fuzz.py, bounded, so that they keep working.

hypothesis feeds a few hundred inputs to each target in this process (the invariants
are the targets' own: see loadtests/fuzz.py); the atheris runner itself runs a few
hundred inputs per target in a subprocess.  Long runs: `loadtests/fuzz.py --minutes N`.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from procutil import REPO

sys.path.insert(0, str(REPO))

from loadtests.fuzz import (ConfigTarget, Finding, RequestTarget, config_seeds,  # noqa: E402
                            request_seeds)

BOUNDED = settings(max_examples=300, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])


@pytest.fixture(scope="module")
def request_target(tmp_path_factory):
    target = RequestTarget(tmp_path_factory.mktemp("fuzz-request"))
    yield target
    target.close()


@pytest.fixture(scope="module")
def config_target(tmp_path_factory):
    target = ConfigTarget(tmp_path_factory.mktemp("fuzz-config"))
    yield target
    target.close()


def test_the_request_seeds_pass(request_target):
    for seed in request_seeds():
        request_target.one_input(seed)


@BOUNDED
@given(flags=st.integers(0, 255), rest=st.binary(max_size=1024))
def test_fuzzed_requests_keep_every_invariant(request_target, flags, rest):
    request_target.one_input(bytes([flags]) + rest)


def test_a_secret_opened_during_an_input_is_a_finding(request_target, monkeypatch):
    """The watch on the file outside the document root works (so its silence means
    something)."""
    exchange = RequestTarget._exchange

    def exchange_and_peek(self, *args, **kwargs):
        received = exchange(self, *args, **kwargs)
        with open(self.base / "outside" / "passwd", "rb"):
            return received
    monkeypatch.setattr(RequestTarget, "_exchange", exchange_and_peek)
    with pytest.raises(Finding, match="opened"):
        request_target.one_input(b"\x00GET / HTTP/1.0\r\n\r\n")


def test_the_config_seeds_pass(config_target):
    for seed in config_seeds():
        config_target.one_input(seed)


@st.composite
def mutated_configs(draw) -> bytes:
    """A shipped or test config with a few bytes replaced somewhere."""
    seed = draw(st.sampled_from(config_seeds()))
    at = draw(st.integers(0, len(seed)))
    return seed[:at] + draw(st.binary(max_size=16)) + seed[at + draw(st.integers(0, 8)):]


@BOUNDED
@given(text=st.one_of(st.binary(max_size=512), mutated_configs()))
def test_fuzzed_configs_load_or_are_refused_with_a_place(config_target, text):
    config_target.one_input(text)


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris missing")
@pytest.mark.parametrize("target", ["request", "config"])
def test_the_coverage_guided_runner_runs(tmp_path, target):
    run = subprocess.run([sys.executable, "loadtests/fuzz.py", "--target", target,
                          "--runs", "300", "--seed", "1", "--workdir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done 300 runs" in run.stderr
    assert not list(tmp_path.glob("crash-*")) and not list(tmp_path.glob("timeout-*"))
