"""The unit files in contrib/systemd pass systemd's own checker."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from procutil import REPO

UNITS = REPO / "contrib" / "systemd"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_units_verify(tmp_path):
    # verify insists that ExecStart's binary exists: point it at this Python
    service = (UNITS / "pylighttpd.service").read_text()
    (tmp_path / "pylighttpd.service").write_text(
        service.replace("/usr/local/bin/pylighttpd", sys.executable))
    for unit in ("pylighttpd.socket", "pylighttpd-rotate-keys.service",
                 "pylighttpd-rotate-keys.timer"):
        shutil.copy(UNITS / unit, tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", "pylighttpd.service",
                             "pylighttpd.socket", "pylighttpd-rotate-keys.service",
                             "pylighttpd-rotate-keys.timer"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pylighttpd" not in result.stderr, result.stderr


def test_service_uses_the_master_protocol():
    service = (UNITS / "pylighttpd.service").read_text()
    assert "Type=notify" in service
    assert "ExecReload=/bin/kill -HUP $MAINPID" in service


def test_ticket_keys_rotate_daily_by_a_graceful_reload():
    timer = (UNITS / "pylighttpd-rotate-keys.timer").read_text()
    service = (UNITS / "pylighttpd-rotate-keys.service").read_text()
    assert "OnCalendar=daily" in timer and "WantedBy=timers.target" in timer
    assert "ExecStart=/bin/systemctl reload pylighttpd.service" in service
    assert "Requisite=pylighttpd.service" in service     # never starts a stopped server
