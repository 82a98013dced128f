"""pylighttpd and lighttpd side by side in front of one external gateway backend:
php-cgi -b (FastCGI, PHP_FCGI_CHILDREN) or a WSGI hello world under uwsgi (SCGI), on a
unix socket both servers connect to, two workers each, wrk against each in turn,
rounds alternating the order.  Per round: req/s and the server's CPU microseconds
per request (its process tree's CPU time, as loadtests/bench.py counts it; the
backend is not in it, being nobody's child).

    python loadtests/gateway_bench.py                  # FastCGI, 3 rounds of 10 s
    python loadtests/gateway_bench.py --no-keep-conn   # a connection per request
    python loadtests/gateway_bench.py --scgi --rounds 5
    python loadtests/gateway_bench.py --path /1k.bin   # static, modules loaded
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtests.bench import RunningServer, free_port, wrk_counts  # noqa: E402
from loadtests.gateway_microbench import PHP_HELLO, start_backend  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def write_config(base: Path, name: str, port: int, sock: str, scgi: bool,
                 keep_conn: bool) -> Path:
    docroot = base / "www"
    docroot.mkdir(exist_ok=True)
    (docroot / "hello.php").write_text(PHP_HELLO)
    (docroot / "1k.bin").write_bytes(b"x" * 1024)
    module = "scgi" if scgi else "fastcgi"
    keep = 'fastcgi.keep-conn = "disable"\n' if not keep_conn and name == "pylighttpd" \
        and not scgi else ""
    path = base / f"{name}.conf"
    path.write_text(
        f'server.document-root = "{docroot}"\nserver.bind = "127.0.0.1"\n'
        f"server.port = {port}\nserver.max-worker = 2\n"
        f'server.modules = ("mod_{module}", "mod_staticfile")\n'
        "server.max-keep-alive-requests = 1000000\nserver.max-connections = 9000\n"
        "server.max-fds = 19000\n"
        'mimetype.assign = (".bin" => "application/octet-stream")\n'
        f'server.errorlog = "{base}/{name}-error.log"\n'
        f'{module}.server = ( ".php" => ( ( "socket" => "{sock}" ) ) )\n{keep}')
    return path


class Front(RunningServer):
    """A server started on a config of our own (RunningServer writes its own)."""

    def __init__(self, name: str, conf: Path, port: int) -> None:  # noqa: D107
        self.name, self.port, self.config = name, port, conf
        command = ([sys.executable, "-m", "master.cli", "-D", "-f", str(conf)]
                   if name == "pylighttpd" else ["lighttpd", "-D", "-f", str(conf)])
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        env={**os.environ, "PYTHONPATH": str(REPO)})
        self._wait_ready()


def measure(server: Front, path: str, seconds: int, connections: int) -> tuple[float, float]:
    """(req/s, server CPU us per request) of one wrk run."""
    before = server.cpu_seconds()
    result = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
                             f"http://127.0.0.1:{server.port}{path}"],
                            capture_output=True, text=True, timeout=seconds + 30)
    spent = server.cpu_seconds() - before
    requests, errors, bad = wrk_counts(result.stdout)
    if errors or bad or not requests:
        print(f"  {server.name}: {errors} errors, {bad} bad statuses", file=sys.stderr)
    return requests / seconds, spent / max(requests, 1) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scgi", action="store_true")
    parser.add_argument("--no-keep-conn", dest="keep_conn", action="store_false",
                        help='pylighttpd with fastcgi.keep-conn = "disable"')
    parser.add_argument("--children", type=int, default=4)
    parser.add_argument("--path", default="/hello.php")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=20)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))    # stop what was started
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        base = Path(tmp)
        backend, sock = start_backend(base, args.scgi, args.children)
        fronts: list[Front] = []
        try:
            for name in ("pylighttpd", "lighttpd"):
                port = free_port()
                conf = write_config(base, name, port, sock, args.scgi, args.keep_conn)
                fronts.append(Front(name, conf, port))
            for number in range(args.rounds):
                for front in fronts if number % 2 == 0 else reversed(fronts):
                    rate, cpu = measure(front, args.path, args.seconds, args.connections)
                    print(f"round {number + 1} {front.name:10} {rate:9.0f} req/s "
                          f"{cpu:7.1f} us CPU/request", flush=True)
        finally:
            for front in fronts:
                front.stop()
            os.killpg(backend.pid, signal.SIGKILL)
            backend.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
