"""The answer cache with mod_setenv, mod_expire and the virtual-host modules loaded:
requests repeated on one keep-alive connection (the repeats are replayed from the
cache) get the same answers the pipeline gives, whatever Host they name, with the
headers the modules add, and with expiry times that agree with their own Date.
"""

from __future__ import annotations

import os
import time

from server_util import WorkerProcess, config_text
from test_answercache import exchange, get
from worker.http import parse_http_date

MODULES = ("mod_setenv", "mod_expire", "mod_simple_vhost", "mod_evhost", "mod_userdir",
           "mod_indexfile", "mod_staticfile")
EXTRA = """
index-file.names = ("index.html")
simple-vhost.server-root = "{base}/vh"
simple-vhost.default-host = "default.test"
$HTTP["host"] =~ "\\.ev$" {{
  simple-vhost.server-root = ""
  evhost.path-pattern = "{base}/ev/%2"
}}
userdir.path = "pub"
userdir.basepath = "{base}/home"
setenv.add-response-header = ("X-Added" => "by setenv")
setenv.set-response-header = ("X-Set" => "also")
expire.url = ("/mod/" => "modification plus 2 years", "/acc/" => "access plus 1 hours")
"""
MTIME = 1767225600        # 2026-01-01: the /mod/ file's
SECONDS = 1.3             # how long the expiry test repeats its requests


def _worker(base) -> WorkerProcess:
    for host in ("a.test", "b.test", "default.test"):
        _page(base / "vh" / host / "index.html", f"site {host}\n")
    for sub in ("x", "y"):
        _page(base / "ev" / sub / "index.html", f"evhost {sub}\n")
    _page(base / "home" / "alice" / "pub" / "index.html", "alice\n")
    docroot = base / "vh" / "default.test"
    _page(docroot / "mod" / "f.txt", "mod\n")
    os.utime(docroot / "mod" / "f.txt", (MTIME, MTIME))
    _page(docroot / "acc" / "f.txt", "acc\n")
    conf = base / "worker.conf"
    conf.write_text(config_text(docroot, EXTRA.format(base=base), MODULES))
    return WorkerProcess(conf)


def _page(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_repeats_for_several_hosts_each_get_their_own_site(tmp_path):
    hosts = ("a.test", "b.test", "nowhere.test", "x.ev", "y.ev", "A.TEST:8080")
    expected = [b"site a.test\n", b"site b.test\n", b"site default.test\n",
                b"evhost x\n", b"evhost y\n", b"site a.test\n"]
    with _worker(tmp_path) as worker:
        answers = exchange(worker, *(get("/", host) for host in hosts * 3),
                           *(get("/~alice/") for _ in range(3)))
    assert [body for _, _, body in answers[:18]] == expected * 3
    assert [body for _, _, body in answers[18:]] == [b"alice\n"] * 3


def test_repeats_carry_the_setenv_headers(tmp_path):
    with _worker(tmp_path) as worker:
        answers = exchange(worker, *(get("/acc/f.txt") for _ in range(4)),
                           *(get("/missing") for _ in range(3)))
    assert [(status, headers["x-added"], headers["x-set"]) for status, headers, _ in answers] \
        == [(200, "by setenv", "also")] * 4 + [(404, "by setenv", "also")] * 3


def _expiries(worker, request: str) -> list[tuple[float, float]]:
    """(Date, the time the expiry header names) of answers to `request` repeated for
    SECONDS: across at least one turn of the second, replays included."""
    found = []
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        for _, headers, _ in exchange(worker, *[request] * 20):
            date = parse_http_date(headers["date"])
            if "expires" in headers:
                found.append((date, parse_http_date(headers["expires"])))
            else:
                found.append((date, date + int(headers["cache-control"][8:])))
    return found


def test_replayed_expiries_agree_with_their_date(tmp_path):
    """An expiry counted from the clock, kept with its answer, still names the same
    time relative to the Date each replay carries (or the same absolute time, for one
    counted from the file's mtime)."""
    http10 = "GET /acc/f.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    with _worker(tmp_path) as worker:
        by_mtime = _expiries(worker, get("/mod/f.txt"))
        by_access = _expiries(worker, http10)
    assert len({date for date, _ in by_mtime + by_access}) >= 2     # the second turned
    assert {expiry for _, expiry in by_mtime} == {MTIME + 2 * 360 * 86400}
    assert {expiry - date for date, expiry in by_access} == {3600}
