"""The floor under the 404 rows: lighttpd, pylighttpd and floor_server.py (the least a
Python worker does for such a request, interpreted and compiled by mypyc), side by side
in one run, 2 workers each, as bench.py measures its rows.

What pylighttpd costs above the compiled floor is its own code (URL cleaning,
configuration, modules, stat cache, counters, headers); what the floor costs above
lighttpd is the language's.  The speed lines of the 404 rows are judged against
lighttpd alone; this says how much of the distance our code can close.

    .venv/bin/python loadtests/floor.py [--rounds 3] [--seconds 4] [--only 404-nocache]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import bench

HERE = Path(__file__).resolve().parent
ROWS = ("404", "404-nocache")
WORKERS = 2


class FloorServer(bench.RunningServer):
    """floor_server.py as bench.run_wrk measures a server (its process tree's CPU)."""

    def __init__(self, name: str, docroot: Path, directory: Path) -> None:
        # none of RunningServer's config writing: only its measuring and stopping
        self.name = name
        self.port, self.tls_port = bench.free_port(), 0
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys, floor_server; floor_server.main(sys.argv)",
             str(self.port), str(docroot), str(WORKERS)],
            cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        bench.wait_listening(self.port, self.process)


def compiled_copy(base: Path) -> Path:
    """A directory holding floor_server compiled by mypyc (as contrib/compile.py
    compiles pylighttpd's hot modules)."""
    directory = base / "floor-compiled"
    directory.mkdir()
    shutil.copy(HERE / "floor_server.py", directory)
    subprocess.run([sys.executable, "-m", "mypyc", "floor_server.py"], cwd=directory,
                   check=True, capture_output=True, timeout=600)
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--only", default=",".join(ROWS), help="of " + ", ".join(ROWS))
    options = parser.parse_args(argv)
    rows = [s for s in bench.SCENARIOS if s.name in options.only.split(",")
            and s.name in ROWS]
    report = bench.Report()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        docroot = bench.make_docroot(base)
        servers: list[bench.RunningServer] = list(bench.start_servers(
            bench.STATIC, ["lighttpd", "pylighttpd"], docroot, base, False, stack).values())
        for name, directory in (("floor", HERE), ("floor-mypyc", compiled_copy(base))):
            floor = FloorServer(name, docroot, directory)
            stack.callback(floor.stop)
            servers.append(floor)
        for round_number in range(options.rounds):
            shift = round_number % len(servers)
            for scenario in rows:
                for server in servers[shift:] + servers[:shift]:
                    report.rounds.append(bench.run_wrk(server, scenario, options.seconds,
                                                       base))
    bench.print_table(bench.summarise(report), {"machine": bench.machine()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
