"""server.network-backend: lighttpd's sendfile names hand file bodies to sendfile(2);
"write" and "writev" read them and write the bytes (for a filesystem sendfile cannot
read from).  The worker's system calls are watched with strace while curl downloads a
file whole and in a range: the bytes are the file's either way, and only the backend
asked for is used.  An unknown name refuses the config, as lighttpd refuses to start."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from procutil import run_cli
from serverproc import Server, wait_until

pytestmark = pytest.mark.skipif(shutil.which("strace") is None or shutil.which("curl") is None,
                                reason="strace and curl are needed")

SIZE = 3 * 1024 * 1024 + 17


def _tracer_pid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return int(line.split()[1])
    return 0


def _traced_downloads(tmp_path: Path, backend: str) -> tuple[list[bytes], str]:
    """The file downloaded whole and a range of it, and the worker's traced calls."""
    extra = "server.max-worker := 1\n"
    if backend:
        extra += f'server.network-backend = "{backend}"\n'
    running = Server(tmp_path, extra)
    (running.docroot / "big.bin").write_bytes(os.urandom(SIZE))
    trace = tmp_path / "trace.txt"
    try:
        running.wait_serving()
        [worker] = running.children()
        tracer = subprocess.Popen(["strace", "-qq", "-e", "trace=sendfile,pread64",
                                   "-o", str(trace), "-p", str(worker)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: _tracer_pid(worker) != 0 or tracer.poll() is not None)
            if tracer.poll() is not None:      # no ptrace here (a container without it)
                pytest.skip(f"strace cannot attach: {tracer.stderr.read().strip()}")
            url = f"http://127.0.0.1:{running.port}/big.bin"
            bodies = [subprocess.run(["curl", "-s", *args, url], capture_output=True,
                                     timeout=30, check=True).stdout
                      for args in ([], ["-r", "100000-2999999"])]
        finally:
            tracer.terminate()
            tracer.wait(timeout=10)
            tracer.stderr.close()
    finally:
        running.stop()
    return bodies, trace.read_text()


@pytest.mark.parametrize("backend", ["", "linux-sendfile", "write", "writev"])
def test_file_bodies_go_out_by_the_backend_named(tmp_path, backend):
    bodies, calls = _traced_downloads(tmp_path, backend)
    content = (tmp_path / "www" / "big.bin").read_bytes()
    assert bodies == [content, content[100000:3000000]]
    sendfiles, preads = calls.count("sendfile("), calls.count("pread64(")
    if backend in ("write", "writev"):
        assert sendfiles == 0 and preads >= SIZE // (256 * 1024)
    else:
        assert sendfiles > 0 and preads == 0


def test_an_unknown_backend_refuses_the_config(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.port = 8080\n'
                    'server.network-backend = "splice"\n')
    checked = run_cli("-tt", "-f", str(conf))
    assert checked.returncode != 0
    assert f"{conf}:3:1: server.network-backend: unknown value: splice" in checked.stderr


def test_the_key_is_known(tmp_path):
    conf = tmp_path / "ok.conf"
    conf.write_text(f'server.document-root = "{tmp_path}"\nserver.port = 8080\n'
                    'server.network-backend = "writev"\n')
    checked = run_cli("-tt", "-f", str(conf))
    assert (checked.returncode, checked.stderr) == (0, "")
