"""lighttpd's `-1` on a pipe, with requests a module holds: the pipe transport waits on
the worker's loop for the module (a CGI script here) and answers in order."""

from __future__ import annotations

import hashlib
import shutil

from procutil import REPO, run_cli


def _site(tmp_path):
    docroot = tmp_path / "www"
    docroot.mkdir()
    for name in ("hello.sh", "sum.pl"):
        shutil.copy(REPO / "tests" / "cgi" / name, docroot / name)
        (docroot / name).chmod(0o755)
    (docroot / "index.html").write_text("static\n")
    conf = tmp_path / "one.conf"
    conf.write_text(f'server.document-root = "{docroot}"\n'
                    f'server.errorlog = "{tmp_path}/error.log"\n'
                    'server.modules = ("mod_cgi", "mod_indexfile", "mod_staticfile")\n'
                    'cgi.assign = (".sh" => "", ".pl" => "")\n')
    return conf


def test_one_shot_answers_held_and_plain_requests_in_order(tmp_path):
    conf = _site(tmp_path)
    body = "x" * 100_000
    requests = ("GET /hello.sh HTTP/1.1\r\nHost: t\r\n\r\n"
                "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n"
                f"POST /sum.pl HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n{body}")
    done = run_cli("-1", "-f", str(conf), stdin=requests, timeout=30)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.count("HTTP/1.1 200 OK\n") == 3      # text mode: CRLF read as LF
    first, second, third = (out.index(text) for text in
                            ("hello from sh", "static\n", hashlib.sha256(body.encode())
                             .hexdigest()))
    assert first < second < third
    assert "read=100000" in out
