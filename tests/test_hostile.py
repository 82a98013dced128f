"""Hostile load, scaled down (loadtests/hostile.py runs the same at full size).

One real server (master and two workers) for the whole file: HUPs under load lose no
request, every kind of broken config is refused on HUP while the old one serves, slow
clients and thousands of idle connections do not stop normal requests from being
answered.  Every wait is bounded; a hang fails as a wait that expires.
"""

from __future__ import annotations

import sys

import pytest

from procutil import REPO
from serverproc import Server

sys.path.insert(0, str(REPO))

from loadtests import hostile  # noqa: E402

IDLE = 2000
SETTINGS = hostile.server_settings(max_fds=4 * IDLE)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("hostile"), SETTINGS)
    try:
        running.wait_serving()
        (running.docroot / hostile.BIG.lstrip("/")).write_bytes(b"x" * (10 << 20))
        yield running
    finally:
        running.stop()


def test_ten_hups_under_load_fail_no_request(server):
    row = hostile.hups_under_load(server, SETTINGS, hups=10, interval=0.5, use_wrk=False)
    assert row.passed, row
    assert row.figures["failures"] == [] and row.figures["retried_idle"] == 0
    assert row.figures["reloads"] >= 1 and row.figures["ok"] > 50


def test_every_broken_config_is_refused_on_hup_while_the_old_one_serves(server):
    rows = hostile.broken_reloads(server, SETTINGS)
    assert [row.scenario for row in rows] == [
        f"broken:{case.kind}" for case in hostile.BROKEN_CONFIGS]
    assert [row for row in rows if not row.passed] == []
    refused = [row for row in rows if row.detail.startswith("refused")]
    assert len(refused) == 9 and all(row.figures["old_workers_kept"] for row in refused)
    assert rows[-1].detail.startswith("warned")        # an unknown key, as lighttpd


@pytest.mark.parametrize("kind", sorted(hostile.SLOW_KINDS))
def test_slow_clients_leave_normal_requests_answered(server, kind):
    row = hostile.hold_slow("pylighttpd", server.port, kind, count=200, seconds=2.0,
                            probes=5)
    assert row.passed, row
    assert row.figures["probes_ok"] == 5 and row.figures["still_open"] == 200


def test_two_thousand_idle_connections_are_held_and_normal_requests_answered(server):
    row = hostile.hold_idle("pylighttpd", server.port, IDLE, probes=5)
    assert row.passed, row
    assert row.figures["answered"] == row.figures["still_open"] == IDLE
