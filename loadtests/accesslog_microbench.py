"""What the access log adds to a request's CPU, in one process and with wrk.

In-process (the default): microbench.py's worker on socket pairs, 1 KiB keep-alive
requests each with a query string of its own (no kept answer can be replayed), the
worker's CPU time per request with the access log off and on (lighttpd's default
combined format, to a file), in alternating runs: the mean over every round, so that
the garbage collections a request's leftovers cause are counted (microbench.py's 10th
percentile leaves out the rounds they fall in); also the time of mod_accesslog's
request-done hook alone.

With `--wrk`: pylighttpd itself (master and 2 workers), log off and on alternating,
wrk with a Lua script sending a new query string per request (bench.py's -nocache
rows); the figure is the server tree's CPU microseconds per request.

    python loadtests/accesslog_microbench.py
    python loadtests/accesslog_microbench.py --wrk --seconds 5 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.bench import RunningServer, Scenario, make_docroot, run_wrk  # noqa: E402
from loadtests.microbench import (REQUEST, Requests, build, connect, one_round,  # noqa: E402
                                  run)
from worker.modules import mod_accesslog  # noqa: E402

VARIED = 20_000            # distinct requests each in-process run cycles through


def varied_requests() -> Requests:
    return Requests([REQUEST.format(path=f"/1k.bin?q={number}").encode()
                     for number in range(VARIED)])


HOOK_CALLS = 20_000        # calls of the hook timed on one logged request


def hook_cost() -> float:
    """us per call of mod_accesslog's handle_request_done, called again and again on a
    request the worker answered (the line goes to the log's buffer each time)."""
    logged: list = []
    original: Callable = mod_accesslog.Module.handle_request_done

    def keep_first(module: mod_accesslog.Module, request: object) -> None:
        if not logged:
            logged.append((module, request))
        original(module, request)
    mod_accesslog.Module.handle_request_done = keep_first     # type: ignore[method-assign]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            server, _paths = build(Path(tmp), True, 0)    # binds keep_first
            run(server, connect(server, 1), varied_requests(), 1)
            module, request = logged[0]
            start = time.perf_counter()
            for _ in range(HOOK_CALLS):
                original(module, request)
            spent = time.perf_counter() - start
            server.close_all()
    finally:
        mod_accesslog.Module.handle_request_done = original   # type: ignore[method-assign]
    return spent / HOOK_CALLS * 1e6


def in_process(accesslog: bool, rounds: int, connections: int) -> tuple[float, float]:
    """(worker CPU us per request, us per call of the log hook) for one run."""
    with tempfile.TemporaryDirectory() as tmp:
        server, _paths = build(Path(tmp), accesslog, 0)
        clients = connect(server, connections)
        requests = varied_requests()
        run(server, clients, requests, 20)
        spent = sum(one_round(server, clients, requests) for _ in range(rounds))
        server.close_all()
    return spent / (rounds * connections) * 1e6, hook_cost() if accesslog else 0.0


def with_wrk(accesslog: bool, seconds: float, base: Path) -> tuple[float, float]:
    """(req/s, server CPU us per request) of one wrk run against a fresh pylighttpd."""
    run_dir = base / f"run-{time.monotonic_ns()}"
    run_dir.mkdir()
    server = RunningServer("pylighttpd", base / "www", run_dir, accesslog)
    try:
        measured = run_wrk(server, Scenario("1k-nocache", "/1k.bin", vary_query=True),
                           seconds, run_dir)
    finally:
        server.stop()
    return measured.requests_per_second, measured.cpu_us_per_request


def report(rows: dict[bool, list[tuple[float, float]]], labels: tuple[str, str],
           cost: int) -> None:
    """Medians of each column, log off and on, and what the log adds to column `cost`
    (the figure that is a request's CPU)."""
    medians = {accesslog: [statistics.median(row[column] for row in rows[accesslog])
                           for column in (0, 1)] for accesslog in (False, True)}
    for accesslog, (first, second) in medians.items():
        print(f"log {'on ' if accesslog else 'off'}: {labels[0]} {first:8.1f}   "
              f"{labels[1]} {second:6.1f}")
    off, on = medians[False][cost], medians[True][cost]
    print(f"the log adds {on - off:.1f} us per request ({(on - off) / off * 100:.0f} %)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wrk", action="store_true", help="real servers under wrk")
    parser.add_argument("--runs", type=int, default=3, help="of each, alternating")
    parser.add_argument("--rounds", type=int, default=500, help="in-process rounds")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0, help="of each wrk run")
    args = parser.parse_args()
    rows: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        make_docroot(base)
        for _ in range(args.runs):
            for accesslog in (False, True):
                rows[accesslog].append(
                    with_wrk(accesslog, args.seconds, base) if args.wrk
                    else in_process(accesslog, args.rounds, args.connections))
    if args.wrk:
        report(rows, ("req/s", "cpu us/req"), 1)
    else:
        report(rows, ("worker us/req", "hook us/req"), 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
