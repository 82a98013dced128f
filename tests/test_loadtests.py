"""The benchmark tools run: a smoke test, not a timing (speed targets are measured by
`loadtests/bench.py` itself, side by side with lighttpd, never asserted here)."""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from procutil import REPO

sys.path.insert(0, str(REPO))

from loadtests import bench  # noqa: E402

needs_wrk = pytest.mark.skipif(not shutil.which("wrk") or not shutil.which("lighttpd"),
                               reason="wrk and lighttpd are needed")


def test_microbench_reports_a_figure_and_a_profile():
    run = subprocess.run([sys.executable, "loadtests/microbench.py", "--rounds", "20",
                          "--connections", "4"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("/1k.bin: ") and " us/request " in run.stdout
    run = subprocess.run([sys.executable, "loadtests/microbench.py", "--rounds", "20",
                          "--connections", "4", "--path", "/dir/", "--profile"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    # the worker's loop is in the profile (what runs inside it shows where it runs as
    # Python: compiled functions are not profiled one by one)
    assert "function calls" in run.stdout and "run_once" in run.stdout


def test_microbench_runs_a_bench_row_in_process():
    run = subprocess.run([sys.executable, "loadtests/microbench.py", "--rounds", "20",
                          "--connections", "4", "--scenario", "ssi-small-nocache"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("ssi-small-nocache: ") and " us/request " in run.stdout
    run = subprocess.run([sys.executable, "loadtests/microbench.py", "--scenario", "https-1k"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "no in-process form" in run.stderr


@needs_wrk
def test_bench_compares_with_lighttpd(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "loadtests/bench.py", "--rounds", "1", "--seconds", "1",
                          "--servers", "pylighttpd,lighttpd", "--only", "1k-keepalive,idle",
                          "--idle-connections", "200", "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    rows = report["summary"]["1k-keepalive"]
    for name in ("pylighttpd", "lighttpd"):
        assert rows[name]["rps_median"] > 0 and rows[name]["errors"] == 0
        assert rows[name]["cpu_us_median"] > 0
    assert rows["lighttpd"]["rps_ratio_to_lighttpd"] == 1.0
    assert rows["pylighttpd"]["rps_ratio_to_lighttpd"] > 0
    idle = report["extra"]["idle_keepalive"]
    assert idle["pylighttpd"]["answered"] == idle["lighttpd"]["answered"] == 200


GATEWAY_ROWS = ("proxy-1k", "proxy-1k-nopool", "cgi-hello", "upload", "1k-keepalive-gateways")


@needs_wrk
def test_bench_gateway_rows_run_beside_lighttpd(tmp_path):
    """The proxy, CGI, upload and static-with-gateways-loaded rows, scaled down: every
    request answered in full by both servers (an upload of 4 MiB checked by the byte
    count the backend read)."""
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "loadtests/bench.py", "--rounds", "1", "--seconds", "1",
                          "--servers", "pylighttpd,lighttpd", "--only", ",".join(GATEWAY_ROWS),
                          "--upload-mib", "4", "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    summary = json.loads(out.read_text())["summary"]
    assert sorted(summary) == sorted(GATEWAY_ROWS)
    for scenario in GATEWAY_ROWS:
        for name in ("pylighttpd", "lighttpd"):
            row = summary[scenario][name]
            assert row["errors"] == 0, (scenario, name)
            assert row["rps_median"] > 0 and row["cpu_us_median"] > 0, (scenario, name)
            assert row["rps_ratio_to_lighttpd"] > 0
    for name in ("pylighttpd", "lighttpd"):
        upload = summary["upload"][name]
        assert upload["mb_per_second_median"] > 0 and upload["peak_rss_bytes"] > 0
    assert "upload, 4 MiB a request:" in run.stdout


def test_bench_refuses_an_unknown_scenario():
    run = subprocess.run([sys.executable, "loadtests/bench.py", "--only", "proxy-1k,no-such"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "unknown scenarios: no-such" in run.stderr


# the production-traffic rows, and those of mod_magnet, mod_webdav and mod_ssi
TRAFFIC_SETUPS = (bench.BROWSER, bench.BROWSER_LOG)
SCRIPTING_SETUPS = (bench.MAGNET, bench.WEBDAV, bench.SSI)
NEW_ROWS = tuple(s.name for s in bench.SCENARIOS
                 if s.setup in TRAFFIC_SETUPS + SCRIPTING_SETUPS) + ("404-nocache",)
# the rows of the other modules' setups (FastCGI, SCGI, rewrite, auth, deflate, TLS, HTTP/2)
MODULE_ROWS = tuple(s.name for s in bench.SCENARIOS
                    if s.setup not in (bench.STATIC, bench.GATEWAYS) and s.name not in NEW_ROWS)
SMOKE_SERVERS = ["pylighttpd", "lighttpd"]


def run_rows_beside_lighttpd(rows: tuple[str, ...], tmp_path: Path, *options: str) -> None:
    """Each row for a second, pylighttpd and lighttpd: every request answered with the
    status expected, none failed.  A row whose programs are missing here is left out
    (and named in the skip reason if all are)."""
    scenarios = {s.name: s for s in bench.SCENARIOS}
    runnable = [name for name in rows
                if not bench.missing_programs(scenarios[name], SMOKE_SERVERS)]
    if not runnable:
        pytest.skip("missing: " + ", ".join(sorted({
            need for name in rows
            for need in bench.missing_programs(scenarios[name], SMOKE_SERVERS)})))
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "loadtests/bench.py", "--rounds", "1", "--seconds", "1",
                          "--servers", ",".join(SMOKE_SERVERS), "--only", ",".join(runnable),
                          "--json", str(out), *options],
                         cwd=REPO, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr
    summary = json.loads(out.read_text())["summary"]
    assert sorted(summary) == sorted(runnable)
    for scenario in runnable:
        for name in SMOKE_SERVERS:
            row = summary[scenario][name]
            assert row["errors"] == 0, (scenario, name)
            assert row["rps_median"] > 0 and row["cpu_us_median"] > 0, (scenario, name)


@needs_wrk
def test_bench_module_rows_run_beside_lighttpd(tmp_path):
    """The module rows (h2load: 4,000 requests)."""
    run_rows_beside_lighttpd(MODULE_ROWS, tmp_path)


@needs_wrk
def test_bench_production_and_scripting_rows_run_beside_lighttpd(tmp_path):
    """The -nocache rows of production traffic over 300 files (the site mix's share of
    404s taken as expected, anything beyond it an error), of magnet, PROPFIND and SSI,
    and 404-nocache.  Their cached twins send the same requests without the query
    string, and the -log rows' setup is the one with access logs on: the tests below
    run those against every server, with their answers checked."""
    scenarios = {s.name: s for s in bench.SCENARIOS}
    run_rows_beside_lighttpd(tuple(name for name in NEW_ROWS if name.endswith("-nocache")
                                   and scenarios[name].setup != bench.BROWSER_LOG),
                             tmp_path, "--files", "300")


# what browser.lua sends and the servers log alike: lighttpd's default access log format
# and nginx's "combined" end with "REQUEST" STATUS BYTES "REFERER" "USER-AGENT"
LOGGED = re.compile(r'"(?:GET|HEAD) (?P<target>\S+) [^"]*" (?P<status>\d{3}) \S+ '
                    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$')


def logged_requests(log: Path) -> list[re.Match]:
    return [match for line in log.read_text().splitlines() if (match := LOGGED.search(line))]


def run_traffic(name: str, scenario_name: str, tmp_path: Path) -> list[re.Match]:
    """`scenario_name`'s traffic for a second against server `name` on 300 files, on
    the setup of the -log rows (access logs on, --accesslog or not): the requests
    logged."""
    scenario = next(s for s in bench.SCENARIOS if s.name == scenario_name)
    docroot = bench.make_docroot(tmp_path)
    bench.make_file_set(docroot, 300)
    with contextlib.ExitStack() as stack:
        server = bench.start_servers(bench.BROWSER_LOG, [name], docroot, tmp_path, False,
                                     stack)[name]
        measurement = bench.run_wrk(server, scenario, 1, tmp_path, files=300)
    assert measurement.errors == measurement.bad_status == 0
    return logged_requests(tmp_path / bench.BROWSER_LOG / f"{name}-access.log")


def traffic_servers() -> list[str]:
    return [name for name in bench.SERVERS if name == "pylighttpd" or shutil.which(name)]


@needs_wrk
@pytest.mark.parametrize("name", traffic_servers())
def test_site_mix_is_the_mix_it_says(name, tmp_path):
    """Against each server, from its access log: about 60 % files (200), 15 %
    revalidations answered 304 (one If-Modified-Since for every file), 10 % single
    ranges (206), 10 % missing files (404), 5 % listings of 50-entry directories (200),
    with browser headers that vary."""
    requests = run_traffic(name, "site-mix", tmp_path)
    assert len(requests) > 200
    kinds = collections.Counter()
    for request in requests:
        target, status = request["target"], request["status"]
        kind = ("listing" if target.startswith("/lists/") else
                "missing" if "/missing" in target else "file")
        kinds[kind, status] += 1
    total = len(requests)
    expected = {("file", "200"): 0.60, ("file", "304"): 0.15, ("file", "206"): 0.10,
                ("missing", "404"): 0.10, ("listing", "200"): 0.05}
    assert set(kinds) == set(expected), kinds
    for key, share in expected.items():
        assert abs(kinds[key] / total - share) < 0.03, (key, kinds)
    assert len({request["agent"] for request in requests}) >= 8
    assert len({request["referer"] for request in requests}) >= 50
    assert len({request["target"] for request in requests}) >= 150


@needs_wrk
def test_files_browser_nocache_never_sends_a_target_twice(tmp_path):
    """The -nocache rows of the traffic scripts: a new query string on every request,
    files spread over the whole set."""
    requests = run_traffic("lighttpd", "files-browser-nocache", tmp_path)
    targets = [request["target"] for request in requests]
    assert len(targets) > 200 and len(set(targets)) == len(targets)
    assert all(request["status"] == "200" for request in requests)
    assert len({target.split("?")[0] for target in targets}) >= 250


def scripting_answer(port: int, method: str, path: str, body: str = "",
                     headers: tuple[str, ...] = ()) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body or None,
                           headers=dict(header.split(": ", 1) for header in headers))
        response = connection.getresponse()
        return (response.status, dict(response.getheaders()),
                response.read().decode("latin-1"))
    finally:
        connection.close()


@pytest.mark.skipif(not shutil.which("lighttpd"), reason="lighttpd is needed")
@pytest.mark.parametrize("setup", SCRIPTING_SETUPS)
def test_scripting_rows_get_the_answer_their_row_stands_for(setup, tmp_path):
    """What the magnet, PROPFIND and SSI rows measure, from every server that runs
    them: the script's header on the 1 KiB file, a 207 listing the collection and its
    100 files, the page with its include done and its echo filled in."""
    scenario = next(s for s in bench.SCENARIOS if s.setup == setup)
    names = [name for name in traffic_servers() if name in scenario.servers]
    if missing := bench.missing_programs(scenario, names):
        pytest.skip("missing: " + ", ".join(missing))
    docroot = bench.make_docroot(tmp_path)
    with contextlib.ExitStack() as stack:
        servers = bench.start_servers(setup, names, docroot, tmp_path, False, stack)
        for name, server in servers.items():
            status, headers, body = scripting_answer(server.port, scenario.method,
                                                     scenario.path, scenario.body,
                                                     scenario.headers)
            if setup == bench.MAGNET:
                assert (status, headers.get("X-Bench"), len(body)) == (200, "magnet", 1024), name
            elif setup == bench.WEBDAV:
                assert status == 207, name
                assert len(re.findall(r"<(?:\w+:)?response\b", body)) == 1 + bench.DAV_FILES
            else:
                assert status == 200, name
                assert bench.SSI_PART in body and "This page is /ssi/page.shtml." in body, name


class TargetRecorder(BaseHTTPRequestHandler):
    """Answers every GET 200 with an empty body and records its target."""
    protocol_version = "HTTP/1.1"
    targets: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.targets.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is needed")
def test_nocache_rows_send_a_new_target_with_every_request(tmp_path):
    """What keeps pylighttpd's answer cache out of a -nocache row: no two requests of
    the run (both wrk threads, all connections) ask for the same target."""
    scenario = next(s for s in bench.SCENARIOS if s.name == "rewrite-1k-nocache")
    server = ThreadingHTTPServer(("127.0.0.1", 0), TargetRecorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        script = bench.wrk_script(tmp_path, scenario)
        assert script is not None
        subprocess.run(["wrk", "-t2", "-c4", "-d1s", "-s", str(script),
                        f"http://127.0.0.1:{server.server_address[1]}{scenario.path}"],
                       capture_output=True, timeout=60, check=True)
    finally:
        server.shutdown()
        server.server_close()
    targets = TargetRecorder.targets
    assert len(targets) > 10
    assert len(set(targets)) == len(targets)
    assert all(target.startswith("/rw/1k.bin?") for target in targets)


def test_a_missing_program_is_named_for_the_rows_that_need_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    scenarios = {s.name: s for s in bench.SCENARIOS}
    assert bench.missing_programs(scenarios["h2-1k"], ["pylighttpd"]) == ["openssl", "h2load"]
    assert bench.missing_programs(scenarios["fastcgi-php-hello"], SMOKE_SERVERS) == [
        "lighttpd", "php-cgi", "uwsgi", "wrk"]


def test_the_site_mix_expects_its_share_of_404s_and_no_more():
    """wrk counts the site mix's 404s among "Non-2xx or 3xx responses": its share
    (10 %, give or take a cycle per thread and the requests in flight) is no error,
    what comes beyond it is."""
    scenarios = {s.name: s for s in bench.SCENARIOS}
    mix, files = scenarios["site-mix"], scenarios["files-browser"]
    assert mix.not_found_share() == 0.10 and files.not_found_share() == 0.0
    assert bench.unexpected_statuses(mix, 100_000, 10_000) == 0
    assert bench.unexpected_statuses(mix, 100_000, 12_000) > 1_900
    assert bench.unexpected_statuses(files, 100_000, 3) == 3
    assert bench.unexpected_statuses(scenarios["404-nocache"], 100_000, 100_000) == 0


def test_a_scripting_row_names_the_lighttpd_module_it_lacks(monkeypatch, tmp_path):
    """Where Debian's lighttpd-modules-lua or lighttpd-mod-webdav is not installed, the
    row is refused with the module's path, not run against a lighttpd that fails."""
    monkeypatch.setattr(bench, "LIGHTTPD_MODULES", tmp_path)
    scenarios = {s.name: s for s in bench.SCENARIOS}
    for row, plugin in (("magnet-1k", "mod_magnet.so"), ("propfind-100", "mod_webdav.so"),
                        ("ssi-small-nocache", "mod_ssi.so")):
        assert bench.missing_programs(scenarios[row], SMOKE_SERVERS)[-1] == str(
            tmp_path / plugin)
        assert not bench.missing_programs(scenarios[row], ["pylighttpd"])


@needs_wrk
def test_the_floor_runs_beside_lighttpd_and_pylighttpd():
    """loadtests/floor.py: the four servers answer the row, without an error."""
    run = subprocess.run([sys.executable, "loadtests/floor.py", "--rounds", "1", "--seconds",
                          "1", "--only", "404-nocache"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = {fields[1]: fields for fields in map(str.split, run.stdout.splitlines())
            if fields and fields[0] == "404-nocache"}
    assert set(rows) == {"lighttpd", "pylighttpd", "floor", "floor-mypyc"}
    for fields in rows.values():
        assert float(fields[2]) > 0 and fields[-1] == "0"      # req/s; errors
