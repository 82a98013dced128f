"""Per-call cost of a trivial mod_magnet script, Lua against Python, in process.

Each script reads one request header and sets one response header, the smallest
useful script; both run through their real runtimes (worker/magnet_runtime.py,
worker/magnet_python.py) on a stand-in request, so the figures are the scripts' own
cost, without the HTTP around them.  Also measured: the Python side's time budget
alone (the SIGALRM timer set and stopped around each call).

`--http` measures whole requests instead: a worker (worker/server.py) answering a
1 KiB file over socketpairs (loadtests/microbench.py's loop), with no script, with a
script on magnet.attract-physical-path-to that sets a response header (repeatable:
the answer cache replays its answer), and with one that also reads a request header
(run for every request); `--profile` prints where the last of those spends its time.

    .venv/bin/python loadtests/magnet_microbench.py [calls]
    .venv/bin/python loadtests/magnet_microbench.py --http [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests.bench import lighttpd_style_config, make_docroot  # noqa: E402
from loadtests.microbench import Requests, connect, one_round  # noqa: E402
from master.configload import load  # noqa: E402
from shared.config.compiled import RequestSettings  # noqa: E402
from worker.magnet_python import BUDGET, PythonScript  # noqa: E402
from worker.magnet_runtime import Script  # noqa: E402
from worker.request import Request  # noqa: E402
from worker.server import Server  # noqa: E402

TRIVIAL_LUA = 'lighty.r.resp_header["X-Seen"] = lighty.r.req_header["X-Value"]\n'
TRIVIAL_PY = ('def handle(r, c):\n'
              '    r.resp_header["X-Seen"] = r.req_header["X-Value"]\n')
SETS_HEADER_LUA = 'lighty.r.resp_header["X-Magnet"] = "1"\n'
HTTP_REQUEST = b"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Value: seen\r\n\r\n"
HTTP_CASES = {"no script": "", "sets a header (replayed)": SETS_HEADER_LUA,
              "reads and sets a header": TRIVIAL_LUA}
CONNECTIONS = 50


def stand_in_request() -> Request:
    """A request of no connection, with the header the trivial scripts read."""
    connection = SimpleNamespace(scheme="http", remote_ip="127.0.0.1", socket_spec="",
                                 condition_cache=None,
                                 server=SimpleNamespace(global_settings=RequestSettings({}),
                                                        compiled=None))
    request = Request(connection, 0.0)
    request.headers["x-value"] = "seen"
    return request


def _per_call_us(call, calls: int) -> float:
    """CPU time per call (process time: what else runs on a shared machine hardly
    moves it, unlike the wall clock)."""
    started = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - started) / calls * 1e6


def measure(calls: int = 20000) -> dict[str, float]:
    """Microseconds per call: {"lua": ..., "py": ..., "time budget": ...}."""
    request = stand_in_request()
    figures = {}
    with tempfile.TemporaryDirectory() as directory:
        for name, make, source in (("lua", Script, TRIVIAL_LUA),
                                   ("py", PythonScript, TRIVIAL_PY)):
            path = os.path.join(directory, "trivial." + ("lua" if name == "lua" else "py"))
            Path(path).write_text(source)
            script = make(path)
            script.load((0, 0, 0))
            script.run(request)
            assert request.response.get_header("X-Seen") == "seen"
            figures[name] = _per_call_us(lambda: script.run(request), calls)

    def guarded_nothing() -> None:
        with BUDGET:
            pass
    figures["time budget"] = _per_call_us(guarded_nothing, calls)
    return figures


def http_server(base: Path, script: str) -> Server:
    """A worker on bench.py's static config and docroot, `script` (if any) on
    magnet.attract-physical-path-to."""
    conf = lighttpd_style_config(make_docroot(base), 8080, base, False, "magnet")
    text = conf.read_text().replace("server.modules = (", 'server.modules = ("mod_magnet", ')
    if script:
        (base / "script.lua").write_text(script)
        text += f'magnet.attract-physical-path-to = ("{base}/script.lua")\n'
    conf.write_text(text)
    return Server(load(str(conf)), [])


def measure_http(rounds: int = 400, profile: bool = False) -> dict[str, float]:
    """Worker time per request, microseconds, for each of HTTP_CASES (the 10th
    percentile of `rounds` rounds of CONNECTIONS requests)."""
    figures = {}
    for name, script in HTTP_CASES.items():
        with tempfile.TemporaryDirectory() as directory:
            server = http_server(Path(directory), script)
            clients = connect(server, CONNECTIONS)
            requests = Requests([HTTP_REQUEST])
            for _ in range(20):
                one_round(server, clients, requests)
            profiler = cProfile.Profile() if profile and script == TRIVIAL_LUA else None
            if profiler:
                profiler.enable()
            times = sorted(one_round(server, clients, requests) for _ in range(rounds))
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
            figures[name] = times[rounds // 10] / CONNECTIONS * 1e6
            server.close_all()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calls", nargs="?", type=int, default=20000)
    parser.add_argument("--http", action="store_true", help="whole requests in a worker")
    parser.add_argument("--profile", action="store_true", help="with --http: cProfile")
    args = parser.parse_args()
    if args.http:
        for label, micros in measure_http(profile=args.profile).items():
            print(f"{label:26} {micros:6.1f} us per request")
        return 0
    for label, micros in measure(args.calls).items():
        print(f"{label:12} {micros:6.2f} us per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
