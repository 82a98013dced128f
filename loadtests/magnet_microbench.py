"""Per-call cost of a trivial mod_magnet script, Lua against Python, in process.

Each script reads one request header and sets one response header, the smallest
useful script; both run through their real runtimes (worker/magnet_runtime.py,
worker/magnet_python.py) on a stand-in request, so the figures are the scripts' own
cost, without the HTTP around them.  Also measured: the Python side's time budget
alone (the SIGALRM timer set and stopped around each call).

    .venv/bin/python loadtests/magnet_microbench.py [calls]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.magnet_python import BUDGET, PythonScript  # noqa: E402
from worker.magnet_runtime import Script  # noqa: E402
from worker.request import Response  # noqa: E402

TRIVIAL_LUA = 'lighty.r.resp_header["X-Seen"] = lighty.r.req_header["X-Value"]\n'
TRIVIAL_PY = ('def handle(r, c):\n'
              '    r.resp_header["X-Seen"] = r.req_header["X-Value"]\n')


def stand_in_request() -> SimpleNamespace:
    """What the trivial scripts touch of a request."""
    return SimpleNamespace(headers={"x-value": "seen"}, response=Response())


def _per_call_us(call, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


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


if __name__ == "__main__":
    for label, micros in measure(int(sys.argv[1]) if len(sys.argv) > 1 else 20000).items():
        print(f"{label:12} {micros:6.2f} us per call")
