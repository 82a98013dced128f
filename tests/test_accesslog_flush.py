"""The access log's buffered lines against the real master and its workers: lines wait
in a worker's buffer (up to a second, as lighttpd's do), and none is lost when the
server stops, fast or gracefully, or reloads (the old workers' buffers are written
before they exit)."""

from __future__ import annotations

import signal
from pathlib import Path

from serverproc import Server, get, wait_until

REQUESTS = 40


def _server(tmp_path: Path) -> tuple[Server, Path]:
    logfile = tmp_path / "access.log"
    server = Server(tmp_path, 'server.modules = ("mod_accesslog", "mod_indexfile", '
                    '"mod_staticfile")\n'
                    f'accesslog.filename = "{logfile}"\naccesslog.format = "%U %s"')
    server.wait_serving()
    return server, logfile


def _logged(logfile: Path) -> set[str]:
    return set(logfile.read_text().splitlines()) if logfile.exists() else set()


def _ask(server: Server, prefix: str) -> set[str]:
    """REQUESTS requests for paths of their own; the lines they must leave."""
    for number in range(REQUESTS):
        assert get(server.port, f"/{prefix}-{number}")[0] == 404
    return {f"/{prefix}-{number} 404" for number in range(REQUESTS)}


def test_no_line_is_lost_when_the_server_stops(tmp_path):
    for how in (signal.SIGTERM, signal.SIGQUIT):      # fast, graceful
        run = tmp_path / how.name
        run.mkdir()
        server, logfile = _server(run)
        try:
            expected = _ask(server, how.name)
            server.process.send_signal(how)
            assert server.process.wait(timeout=15) == 0
        finally:
            server.stop()
        assert expected <= _logged(logfile), how.name


def test_no_line_is_lost_when_the_server_reloads(tmp_path):
    server, logfile = _server(tmp_path)
    try:
        before = _ask(server, "before")
        old_workers = set(server.children())
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: not old_workers & set(server.children()))
        assert before <= _logged(logfile)
        after = _ask(server, "after")
    finally:
        server.stop()
    assert before | after <= _logged(logfile)
