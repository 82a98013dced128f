"""mod_status on the real server: lighttpd's formats, for the whole server.

The master runs 2 workers; whichever answers a status request reports every worker
(and the retired slot), so totals are exact: a request counts once its response is
queued, and a status request is counted after its own page is built.  Everything goes
to 127.0.0.1 and is bounded in time.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from procutil import LIGHTTPD
from serverproc import free_port, get, serving, wait_until
from shared.metrics import STATISTICS, Snapshot, Statistics
from shared.stats import Field, StatsSegment
from worker.modules.mod_status import multiplier, uptime_text

BODY = b"hello from pylighttpd\n"
STATUS_CONFIG = '''server.modules = ("mod_status")
$HTTP["remoteip"] =~ "^127\\.0\\.0\\.1$|^::1$" {
    status.status-url = "/server-status"
    status.config-url = "/server-config"
    status.statistics-url = "/server-statistics"
}
'''
AUTO_KEYS = ["Total Accesses", "Total kBytes", "Uptime", "BusyServers", "IdleServers",
             "Scoreboard"]
JSON_KEYS = ["RequestsTotal", "TrafficTotal", "Uptime", "BusyServers", "IdleServers",
             "RequestAverage5s", "TrafficAverage5s"]


@pytest.fixture
def status_server(tmp_path):
    with serving(tmp_path, STATUS_CONFIG) as running:
        yield running


def fresh_get(port: int, path: str, headers: dict[str, str] | None = None,
              method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection (so that either worker may answer it)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def parse_auto(text: str) -> dict[str, str]:
    """How Apache/lighttpd monitoring tools (collectd's apache plugin, Munin, Zabbix
    templates) read `?auto`: one `Key: value` per line, split at the first ": "."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            values[key] = value
    return values


def auto(port: int) -> dict[str, str]:
    status, headers, body = fresh_get(port, "/server-status?auto")
    assert status == 200 and headers["Content-Type"] == "text/plain"
    return parse_auto(body.decode())


def test_auto_totals_are_the_requests_of_the_whole_server(status_server):
    port = status_server.port
    time.sleep(0.05)        # the fixture's own probes are counted once sent (see below)
    before = auto(port)
    assert list(before) == AUTO_KEYS
    sent = 0
    for _ in range(30):                       # new connections: both workers serve
        status, _, body = fresh_get(port, "/")
        assert (status, body) == (200, BODY)
        sent += 1
    for _ in range(5):
        assert fresh_get(port, "/missing")[0] == 404
        sent += 1
    # consecutive status requests, answered by either worker, count up by exactly one.
    # A request is counted when its last byte has left (as lighttpd counts in its
    # request-done hook): a page never counts itself, and the other worker may answer
    # the next request in the microseconds between that send and the count: a pause.
    totals = []
    for _ in range(8):
        time.sleep(0.05)
        totals.append(int(auto(port)["Total Accesses"]))
    start = int(before["Total Accesses"]) + 1 + sent    # +1: the first ?auto
    assert totals == list(range(start, start + 8))
    after = auto(port)
    assert int(after["Total kBytes"]) >= (int(before["Total kBytes"] or 0)
                                          + sent * len(BODY) // 1024)
    assert int(after["Uptime"]) >= 0
    busy, idle = int(after["BusyServers"]), int(after["IdleServers"])
    board = after["Scoreboard"]
    assert len(board) == busy + idle and set(board) <= set("rWk._")
    assert board.count("_") == idle


def test_the_connection_asking_is_on_the_board_as_in_lighttpd(status_server):
    """lighttpd counts the connection its page answers among the busy ones; the
    worker answering publishes its connections' states right before it reads the
    slots, not only at its once-a-second tick."""
    port = status_server.port
    for _ in range(5):                        # new connections, either worker
        values = auto(port)
        assert int(values["BusyServers"]) >= 1 and "W" in values["Scoreboard"], values


def test_each_worker_counts_its_own_share(status_server):
    port = status_server.port
    for _ in range(40):
        fresh_get(port, "/")
    segment_rows = _worker_rows(fresh_get(port, "/server-status")[2].decode())
    assert sorted(int(row[1]) for row in segment_rows) == status_server.children()
    total = int(auto(port)["Total Accesses"])
    # the HTML page was built before the ?auto request, which itself is not counted yet
    assert sum(int(row[5]) for row in segment_rows) == total - 1
    assert all(int(row[5]) > 0 for row in segment_rows), segment_rows


def _worker_rows(page: str) -> list[list[str]]:
    table = page.split("<h2>Workers</h2>", 1)[1]
    rows = re.findall(r"<tr>(<td.*?)</tr>", table)
    return [re.findall(r'<td class="\w+">(.*?)</td>', row) for row in rows]


def test_json_and_jsonp_follow_lighttpd(status_server):
    port = status_server.port
    time.sleep(0.05)        # the fixture's own probe is counted once sent (see above)
    status, headers, body = fresh_get(port, "/server-status?json")
    assert status == 200 and headers["Content-Type"] == "application/javascript"
    data = json.loads(body)
    assert list(data) == JSON_KEYS and all(isinstance(v, int) for v in data.values())
    time.sleep(0.05)        # counted once sent: let the other worker see it (see above)
    second = json.loads(fresh_get(port, "/server-status?json")[2])
    assert second["RequestsTotal"] == data["RequestsTotal"] + 1
    time.sleep(0.05)
    wrapped = fresh_get(port, "/server-status?jsonp=callback_1")[2].decode()
    assert wrapped.startswith("callback_1({\n") and wrapped.endswith("});")
    assert json.loads(wrapped[len("callback_1("):-2])["RequestsTotal"] == \
        data["RequestsTotal"] + 2
    # lighttpd wraps only when the query starts with jsonp=NAME, NAME alphanumeric
    for query in ("json&jsonp=cb", "jsonp=1cb", "jsonp=a-b", "jsonp="):
        plain = fresh_get(port, f"/server-status?{query}")[2]
        assert list(json.loads(plain)) == JSON_KEYS, query


@pytest.mark.skipif(LIGHTTPD is None, reason="Debian's lighttpd is not installed")
def test_auto_and_json_have_lighttpds_exact_form(status_server, tmp_path):
    """The same lines and keys, in the same order, as lighttpd 1.4.69 itself sends."""
    port = free_port()
    (tmp_path / "lt").mkdir()
    conf = tmp_path / "lighttpd.conf"
    conf.write_text(f'server.document-root = "{tmp_path / "lt"}"\nserver.port = {port}\n'
                    'server.bind = "127.0.0.1"\nserver.modules = ("mod_status")\n'
                    'status.status-url = "/server-status"\n')
    process = subprocess.Popen([LIGHTTPD, "-D", "-f", str(conf)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: get(port, "/server-status?auto")[0] == 200)
        for query in ("auto", "json", "jsonp=cb", "json&jsonp=cb"):
            theirs = get(port, f"/server-status?{query}")
            ours = fresh_get(status_server.port, f"/server-status?{query}")
            assert ours[1]["Content-Type"] == theirs[1]["Content-Type"], query
            assert _shape(ours[2]) == _shape(theirs[2]), query
    finally:
        process.terminate()
        process.wait(timeout=10)


def _shape(body: bytes) -> str:
    """The text with numbers and the scoreboard letters blanked out."""
    text = re.sub(rb"\d+", b"0", body).decode()
    return re.sub(r"Scoreboard: \S*", "Scoreboard: ", text)


def test_html_page_lists_every_worker(status_server):
    port = status_server.port

    def html() -> tuple[int, dict[str, str], bytes]:
        return fresh_get(port, "/server-status",
                         {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})

    # the fixture waits for one worker to answer; the other may still be starting
    wait_until(lambda: {row[3] for row in _worker_rows(html()[2].decode())} == {"ready"})
    status, headers, body = html()
    assert status == 200 and headers["Content-Type"] == "text/html"
    page = body.decode()
    for text in ("<h1>Server-Status (pylighttpd)</h1>", "<td>Uptime</td>", "Started at",
                 "absolute (since start)", "average (since start)",
                 "average (5s sliding average)", "k = keep-alive", "function resort(lnk)"):
        assert text in page, text
    rows = _worker_rows(page)
    assert len(rows) == 2 and {row[3] for row in rows} == {"ready"}
    refresh = fresh_get(port, "/server-status?refresh=7")[2].decode()
    assert '<meta http-equiv="refresh" content="7">' in refresh
    head = fresh_get(port, "/server-status", method="HEAD")
    assert head[0] == 200 and head[2] == b"" and int(head[1]["Content-Length"]) > 1000


def test_enable_sort_disable_drops_the_script(tmp_path):
    with serving(tmp_path, STATUS_CONFIG + 'status.enable-sort = "disable"') as running:
        page = fresh_get(running.port, "/server-status")[2].decode()
    assert "<script" not in page and '<th class="status">PID</th>' in page


def test_status_urls_follow_the_remoteip_condition(tmp_path):
    """Outside the condition (here: a network 127.0.0.1 is not in) there is no page."""
    elsewhere = STATUS_CONFIG.replace('=~ "^127\\.0\\.0\\.1$|^::1$"', '== "10.0.0.0/8"')
    assert elsewhere != STATUS_CONFIG
    with serving(tmp_path, elsewhere) as running:
        assert fresh_get(running.port, "/server-status?auto")[0] == 404


def test_config_and_statistics_pages(status_server):
    status, headers, body = fresh_get(status_server.port, "/server-config")
    page = body.decode()
    assert status == 200 and headers["Content-Type"] == "text/html"
    assert "<td>linux-sysepoll</td>" in page
    assert re.search(r"<td>indexfile<br />status<br />.*staticfile", page)   # prepended
    assert "2 (server.max-worker); 2 running" in page
    status, headers, body = fresh_get(status_server.port, "/server-statistics")
    assert (status, body) == (204, b"")      # lighttpd: no module statistics, no content


def test_statistics_registry_is_lighttpds_key_value_list(monkeypatch):
    stats = Statistics()
    stats.inc("fastcgi.backend.php.load")
    stats.inc("fastcgi.backend.php.load", 2)
    stats.set("a.first", 7)
    stats.provide("z.computed", lambda: 42)
    assert stats.items() == [("a.first", 7), ("fastcgi.backend.php.load", 3),
                             ("z.computed", 42)]
    stats.remove("a.first")
    assert [key for key, _ in stats.items()] == ["fastcgi.backend.php.load", "z.computed"]
    assert STATISTICS.items() == []


def test_number_formats_are_lighttpds():
    # from lighttpd 1.4.69's own page: "8  req", "4.61 kbyte", "196.62  byte/s"
    assert multiplier(8, 1000) + "req" == "8  req"
    assert multiplier(4720, 1024) + "byte" == "4.61 kbyte"
    assert multiplier(196.62, 1024) + "byte/s" == "196.62  byte/s"
    assert multiplier(2_500_000, 1000) + "req" == "2 Mreq"
    assert uptime_text(24) == "24 s"
    assert uptime_text(90061) == "1 days 1 hours 1 min 1 s"


def test_retired_counts_are_kept_and_never_counted_twice():
    """A worker's counters move to the retired slot when it exits: totals stay put."""
    segment = StatsSegment(worker_slots=4)
    first = segment.claim(100, 1)
    segment.slot(first)[Field.REQUESTS + 1] += 5
    segment.slot(first)[Field.BYTES_OUT] += 1000
    second = segment.claim(101, 1)
    segment.slot(second)[Field.REQUESTS + 1] += 3
    assert Snapshot(segment).requests() == 8
    segment.retire(first)
    snap = Snapshot(segment)
    assert (snap.requests(), snap.total(Field.BYTES_OUT)) == (8, 1000)
    assert list(snap.workers) == [second]


def test_concurrent_retirements_never_make_totals_go_back():
    """A child plays the master with the real protocol (claim a slot, fork a worker
    that counts in it and exits, reap, retire) as fast as it can, while this process
    reads: every read must see totals at least as high as the one before."""
    segment = StatsSegment(worker_slots=8)
    master = os.fork()
    if master == 0:
        try:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                slot = segment.claim(0, 1)
                worker = os.fork()
                if worker == 0:
                    words = segment.slot(slot)
                    for offset in range(Field.REQUESTS, Field.WORDS):
                        words[offset] += 1
                    os._exit(0)
                segment.slot(slot)[Field.PID] = worker
                os.waitpid(worker, 0)
                segment.retire(slot)
        finally:
            os._exit(0)
    try:
        previous, reads = [0, 0], 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            snap = Snapshot(segment)
            totals = [snap.requests(), snap.total(Field.WORDS - 1)]
            assert totals[0] >= previous[0] and totals[1] >= previous[1], (previous, totals)
            previous, reads = totals, reads + 1
        assert previous[0] > 0 and reads > 100
    finally:
        os.waitpid(master, 0)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_html_page_renders_in_headless_chromium(status_server, tmp_path):
    shot = tmp_path / "status.png"
    profile = tmp_path / "profile"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         f"--screenshot={shot}", "--window-size=1200,900",
         f"http://127.0.0.1:{status_server.port}/server-status"],
        capture_output=True, text=True, timeout=60)
    assert shot.exists(), result.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    keep = os.environ.get("PYLIGHTTPD_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


@pytest.mark.parametrize("asked, shown", [("poll", "linux-sysepoll"), ("epoll", "epoll")])
def test_the_config_page_names_the_event_handler_the_workers_use(tmp_path, asked, shown):
    with serving(tmp_path, STATUS_CONFIG + f'server.event-handler = "{asked}"\n') as running:
        page = fresh_get(running.port, "/server-config")[2].decode()
    assert f"<td>{shown}</td>" in page
    assert (f"<td>{asked}</td>" in page) == (asked == shown)     # poll is not claimed
