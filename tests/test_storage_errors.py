"""A disk that will not take more: request bodies and answers that go to
server.upload-dirs fail with 500 and one line in the error log (as lighttpd answers
them), nothing of them is left behind, and the worker goes on serving.

A file size limit (RLIMIT_FSIZE, inherited by the workers) stands in for a full disk:
the kernel refuses the write the same way (EFBIG here, ENOSPC there), through the same
code, and the test needs no filesystem of its own to fill.
"""

from __future__ import annotations

import http.client
import resource
import subprocess
import sys

import pytest

from serverproc import Server, get, wait_until
from test_h2 import Client

FILE_LIMIT = 100_000             # bytes any file of the server's may hold
BIG = 300_000                    # a body or an answer past it (and past 64 KiB in memory)
SUM_PY = """import sys
data = sys.stdin.buffer.read()
sys.stdout.write("Content-Type: text/plain\\r\\n\\r\\nread=%d\\n" % len(data))
"""
BIG_PY = f"""import sys
sys.stdout.write("Content-Type: application/octet-stream\\r\\n\\r\\n")
sys.stdout.flush()
sys.stdout.buffer.write(bytes({BIG}))
"""


def _limit_files() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    base = tmp_path_factory.mktemp("storage")
    (base / "up").mkdir()
    running = Server(base, f'server.modules += ("mod_cgi")\ncgi.assign = (".py" => '
                           f'"{sys.executable}")\nserver.upload-dirs = ("{base}/up")',
                     preexec_fn=_limit_files)
    for name, text in (("sum.py", SUM_PY), ("big.py", BIG_PY)):
        (running.docroot / name).write_text(text)
    try:
        running.wait_serving()
        yield running
    finally:
        running.stop()


def _post(port: int, path: str, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, body)
        response = connection.getresponse()
        return response.status, response.read()
    except (BrokenPipeError, ConnectionResetError):   # answered before the body was sent
        return 0, b""
    finally:
        connection.close()


def _logged_once(running: Server, words: str) -> bool:
    """`words` in the error log, in one line, and no traceback anywhere."""
    log = running.errorlog.read_text()
    assert "Traceback" not in log and "internal error" not in log
    return any(words in line for line in log.splitlines())


def test_a_body_the_disk_refuses_is_answered_500(limited):
    status, _ = _post(limited.port, "/sum.py", b"x" * BIG)
    assert status in (500, 0)        # 0: the server answered and closed mid-upload
    wait_until(lambda: _logged_once(limited, "a request body could not be written to "
                                             "server.upload-dirs: File too large"))
    assert _post(limited.port, "/sum.py", b"x" * 1000) == (200, b"read=1000\n")
    assert list((limited.docroot.parent / "up").iterdir()) == []   # nothing left behind


def test_an_answer_the_disk_refuses_to_keep_is_answered_500(limited):
    status, _, body = get(limited.port, "/big.py")
    assert status == 500 and len(body) < 1000
    wait_until(lambda: _logged_once(limited, "an answer to /big.py for 127.0.0.1 could "
                                             "not be spooled to server.upload-dirs"))
    assert get(limited.port, "/index.html")[0] == 200
    wait_until(lambda: subprocess.run(["pgrep", "-f", f"{limited.docroot}/big.py"],
                                      capture_output=True).returncode == 1)
    # the script was stopped, not left writing


def test_the_same_over_http2(limited):
    client = Client(limited.port)
    upload = client.get("/sum.py", "POST", b"x" * BIG)
    answer = client.get("/big.py")
    client.run(lambda: upload in client.statuses and answer in client.statuses)
    assert (client.statuses[upload], client.statuses[answer]) == ("500", "500")
    small = client.get("/sum.py", "POST", b"y" * 10)
    client.run(lambda: small in client.ended)
    assert client.bodies[small] == b"read=10\n"
    assert _logged_once(limited, "(h2.c) a request body could not be written")

