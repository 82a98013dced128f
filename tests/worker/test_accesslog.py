"""mod_accesslog through a real worker, compared with lighttpd 1.4.69 itself.

Both servers get the same docroot, the same requests and the same format; the lines
must agree field by field, except timestamps and ports.  Every test is bounded (socket
timeouts, process deadlines) and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from server_util import WorkerProcess, config_text, read_until_closed
from test_differential import Lighttpd as _Lighttpd

# starting lighttpd on a free port is test_differential's; SIGTERM makes it flush its
# buffered access log

LIGHTTPD = "/usr/sbin/lighttpd"
needs_lighttpd = pytest.mark.skipif(not os.access(LIGHTTPD, os.X_OK),
                                    reason="lighttpd is not installed")
BIG = bytes(range(256)) * 65536         # 16 MiB: more than the socket buffers hold

# requests whose answers do not depend on which server answers (no ETag in them)
REQUESTS = [
    b'GET /index.html?a=1&b=%20 HTTP/1.1\r\nHost: Example.COM:81\r\n'
    b'Referer: http://x/"q\\z\r\nUser-Agent: UA\t1\r\nCookie: a=1; sid=xyz ; c=3\r\n'
    b'If-None-Match: *\r\nConnection: close\r\n\r\n',
    b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /sub HTTP/1.1\r\nHost: x\r\n\r\nGET /sub?x=1 HTTP/1.1\r\nHost: x\r\n"
    b"Connection: close\r\n\r\n",
    b"HEAD /nope HTTP/1.0\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET http://abs.example/nope HTTP/1.1\r\nHost: abs.example\r\n"
    b"Connection: close\r\n\r\n",
    b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n"
    b"\r\n",
]
FULL_FORMAT = ("%h|%a|%A|%l|%u|%r|%s|%>s|%b|%B|%O|%I|%U|%q|%m|%H|%v|%V|%f|%X|%k|"
               "%{Content-Type}o|%{Content-Length}o|%{Connection}o|%{Location}o|"
               "%{X-None}o|%{x-none}i|%{Referer}i|%{User-Agent}i|%{sid}C|%{none}C|"
               "%{FOO}e|%%|%P")


# ------------------------------------------------------------------ helpers
def make_docroot(base: Path) -> Path:
    docroot = base / "www"
    (docroot / "sub").mkdir(parents=True)
    (docroot / "index.html").write_text("hello from pylighttpd\n")
    (docroot / "sub" / "index.html").write_text("sub index\n")
    return docroot


def slow_client(port: int) -> socket.socket:
    """A client with a tiny receive window, so that most of a big answer stays queued
    in the server (its send buffer is at most net.ipv4.tcp_wmem's 4 MiB)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def common_config(docroot: Path, extra: str) -> str:
    return (f'server.document-root = "{docroot}"\n'
            'index-file.names = ("index.html")\n'
            'mimetype.assign = (".html" => "text/html", "" => "application/octet-stream")\n'
            f"{extra}\n")


class Lighttpd(_Lighttpd):
    """lighttpd -D on a free port with the given config text (and mod_accesslog)."""

    def __init__(self, base: Path, text: str) -> None:
        conf = base / "lighttpd-base.conf"
        conf.write_text('server.modules = ("mod_accesslog")\n' + text)
        super().__init__(conf)


def send(port: int, data: bytes, timeout: float = 3.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def start_worker(base: Path, docroot: Path, extra: str) -> WorkerProcess:
    conf = base / "pylighttpd.conf"
    conf.write_text(config_text(docroot, 'index-file.names = ("index.html")\n' + extra,
                                modules=("mod_accesslog",)))
    return WorkerProcess(conf)


def wait_lines(path: Path, count: int, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text("utf-8", "surrogateescape").splitlines()
            if len(lines) >= count:
                return lines
        time.sleep(0.02)
    raise AssertionError(f"{path}: fewer than {count} lines: "
                         f"{path.read_text() if path.exists() else 'missing'}")


def both_logs(tmp_path: Path, log_format: str, requests: list[bytes],
              extra: str = "") -> tuple[list[str], list[str]]:
    """The access log lines of lighttpd and of pylighttpd for the same requests."""
    docroot = make_docroot(tmp_path)
    ours_log, theirs_log = tmp_path / "ours.log", tmp_path / "theirs.log"
    fmt = f'accesslog.format = "{log_format}"\n{extra}'
    theirs = Lighttpd(tmp_path, common_config(
        docroot, f'accesslog.filename = "{theirs_log}"\n{fmt}\nserver.tag = "t"'))
    try:
        for data in requests:
            send(theirs.port, data)
    finally:
        theirs.stop()
    with start_worker(tmp_path, docroot, f'accesslog.filename = "{ours_log}"\n{fmt}'
                      '\nserver.tag = "t"') as ours:
        for data in requests:
            send(ours.port, data)
        expected = theirs_log.read_text("utf-8", "surrogateescape").splitlines()
        got = wait_lines(ours_log, len(expected))
    return got, expected


# -------------------------------------------------------------- comparisons
@needs_lighttpd
def test_default_format_matches_lighttpd(tmp_path):
    got, expected = _default_format_logs(tmp_path)
    assert len(got) == len(expected) == 10
    stamp = re.compile(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]")
    for ours, theirs in zip(got, expected):
        assert stamp.search(ours), ours
        assert stamp.sub("[T]", ours) == stamp.sub("[T]", theirs)


def _default_format_logs(tmp_path: Path) -> tuple[list[str], list[str]]:
    """No accesslog.format: lighttpd's default `%h %V %u %t "%r" %>s %b ...`."""
    docroot = make_docroot(tmp_path)
    ours_log, theirs_log = tmp_path / "ours.log", tmp_path / "theirs.log"
    theirs = Lighttpd(tmp_path, common_config(docroot, f'accesslog.filename = "{theirs_log}"'))
    try:
        for data in REQUESTS:
            send(theirs.port, data)
    finally:
        theirs.stop()
    with start_worker(tmp_path, docroot, f'accesslog.filename = "{ours_log}"') as ours:
        for data in REQUESTS:
            send(ours.port, data)
        expected = theirs_log.read_text().splitlines()
        return wait_lines(ours_log, len(expected)), expected


@needs_lighttpd
def test_every_field_matches_lighttpd(tmp_path):
    got, expected = both_logs(tmp_path, FULL_FORMAT, REQUESTS)
    assert len(got) == len(expected) == 10
    names = FULL_FORMAT.split("|")
    for ours, theirs in zip(got, expected):
        ours_fields, theirs_fields = ours.split("|"), theirs.split("|")
        assert len(ours_fields) == len(theirs_fields) == len(names), (ours, theirs)
        for name, mine, its in zip(names, ours_fields, theirs_fields):
            assert mine == its, (name, ours, theirs)


@needs_lighttpd
def test_json_escaping_and_backslashes_match_lighttpd(tmp_path):
    requests = [b'GET /index.html?q="x" HTTP/1.1\r\nHost: x\r\nReferer: a"b\\c\td\r\n'
                b"If-None-Match: *\r\nConnection: close\r\n\r\n"]
    got, expected = both_logs(tmp_path, r"%{Referer}i\t%q\t%r", requests,
                              extra='accesslog.escaping = "json"')
    assert got == expected
    assert got[0].split("\t")[0] == 'a\\"b\\\\c\\td'


@needs_lighttpd
@pytest.mark.parametrize("escaping", ["default", "json"])
def test_octets_beyond_ascii_are_logged_as_lighttpd_logs_them(tmp_path, escaping):
    """A header's octets as the client sent them, UTF-8 or not (each once, escaped)."""
    latin_1 = b"\xfc" if escaping == "default" else b"u"    # json logs octets as they are
    requests = [b"GET /index.html HTTP/1.1\r\nHost: x\r\nUser-Agent: caf\xc3\xa9\r\n"
                b"Cookie: a=\xc3\xbc; sid=" + latin_1 + b"\r\nConnection: close\r\n\r\n",
                b"GET /index.html HTTP/1.1\r\nHost: x\r\nUser-Agent: caf" + latin_1 +
                b"\r\nConnection: close\r\n\r\n"]
    got, expected = both_logs(tmp_path, "%{User-Agent}i|%{sid}C|%{a}C", requests,
                              extra=f'accesslog.escaping = "{escaping}"')
    assert got == expected and len(got) == 2
    assert got[0].startswith("caf\\xC3\\xA9|" if escaping == "default" else "caf\u00e9|")


@needs_lighttpd
@pytest.mark.parametrize("escaping", ["default", "json"])
def test_targets_of_raw_octets_are_logged_as_lighttpd_logs_them(tmp_path, escaping):
    """A target with octets beyond ASCII (served since llhttp's refusal is undone) and
    a fragment with a control: %r and %U as received, %q normalised, every field."""
    requests = [b"GET /ind\xc3\xa9x.html?q=\xc3\xbc&r=%C3%BC#fr\x01\xc3\xa9 HTTP/1.1\r\n"
                b"Host: x\r\nConnection: close\r\n\r\n",
                b"GET /index.html?\xfc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
    got, expected = both_logs(tmp_path, FULL_FORMAT, requests,
                              extra=f'accesslog.escaping = "{escaping}"')
    assert got == expected and len(got) == 2
    assert "|404|" in got[0] and "|400|" in got[1]


# ------------------------------------------------------------- our own
@pytest.fixture
def site(tmp_path):
    return make_docroot(tmp_path)


def test_custom_format_fields(tmp_path, site):
    logfile = tmp_path / "access.log"
    fmt = (r"%{%Y}t %{msec}t %{begin:usec}t %{usec_frac}t %D %T %{ms}T %{us}T %{ns}T "
           r"%{remote}p %p %m\t%U%%")
    with start_worker(tmp_path, site, f'accesslog.filename = "{logfile}"\n'
                      f'accesslog.format = "{fmt}"') as worker:
        before = time.time()
        status, _, _ = worker.get("/index.html")
        line = wait_lines(logfile, 1)[0]
        # the end is taken once the answer is sent, which the client may have read
        # before: the bound is when the line was read
        after = time.time()
    assert status == 200
    head, _, tail = line.partition("\t")
    year, msec, usec, frac, micros, secs, ms, us, ns, rport, port, method = head.split(" ")
    assert year == time.strftime("%Y")
    assert before * 1000 - 1 <= int(msec) <= after * 1000 + 1
    assert before * 10**6 - 1 <= int(usec) <= int(msec) * 1000
    assert len(frac) == 6 and frac.isdigit()
    assert 0 < int(micros) < 5 * 10**6 and secs in ("0", "1")
    assert int(ms) >= 1 and int(us) >= 1 and int(ns) >= int(us)
    assert int(rport) > 0 and port == str(worker.port) and method == "GET"
    assert tail == "/index.html%"


def test_bad_formats_are_config_errors():
    from shared.config.directives import DirectiveValueError
    from worker.modules.mod_accesslog import compile_format

    for bad, words in (("%", "must be followed by a format-specifier"),
                       ("%{x", "must be terminated by }"),
                       ("%{}i", "must contain string"),
                       ("%j", "valid format-specifier"),
                       ("%t %{%Y}t", "strftime timestamp format %{}t twice"),
                       ("%{min}T", "invalid time unit"),
                       ("%{year}t", "constant string for time format"),
                       ("%{other}p", "canonical,local,remote")):
        with pytest.raises(DirectiveValueError, match=re.escape(words)):
            compile_format(bad)
    assert compile_format("%>s %<s %%").render is not None


@needs_lighttpd
def test_bad_format_is_refused_like_lighttpd(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text(common_config(tmp_path, 'server.modules = ("mod_accesslog")\n'
                                  'accesslog.filename = "/dev/null"\n'
                                  'accesslog.format = "%j"'))
    theirs = subprocess.run([LIGHTTPD, "-tt", "-f", str(conf)], capture_output=True,
                            text=True, timeout=10)
    ours = subprocess.run([sys.executable, "-m", "master.cli", "-tt", "-f", str(conf)],
                          capture_output=True, text=True, timeout=30,
                          cwd=Path(__file__).resolve().parents[2])
    assert theirs.returncode != 0 and ours.returncode != 0
    assert "valid format-specifier" in theirs.stderr + theirs.stdout
    assert "valid format-specifier" in ours.stderr + ours.stdout


def test_line_is_written_when_the_response_is_sent(tmp_path, site):
    """A slow reader: no line while the body is still queued, then %b is the full size."""
    logfile = tmp_path / "access.log"
    with start_worker(tmp_path, site, f'accesslog.filename = "{logfile}"\n'
                      'accesslog.format = "%s %b %X"') as worker:
        (site / "big.bin").write_bytes(BIG)
        with slow_client(worker.port) as sock:
            sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            first = sock.recv(1024)
            time.sleep(0.5)
            assert first.startswith(b"HTTP/1.1 200")
            assert not logfile.exists() or logfile.read_text() == ""
            data = first + read_until_closed(sock)
        assert data.endswith(BIG[-1000:])
        assert wait_lines(logfile, 1) == [f"200 {len(BIG)} -"]


def test_aborted_connection_logs_what_was_sent(tmp_path, site):
    logfile = tmp_path / "access.log"
    with start_worker(tmp_path, site, f'accesslog.filename = "{logfile}"\n'
                      'accesslog.format = "%s %b %O %X %k"') as worker:
        (site / "big.bin").write_bytes(BIG)
        sock = slow_client(worker.port)
        sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1024)
        time.sleep(0.3)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()                  # reset: the server's next write fails
        lines = wait_lines(logfile, 2)
    assert lines[0].startswith("200 22 ") and lines[0].endswith(" + 0")
    status, body, total, flag, count = lines[1].split(" ")
    assert (status, flag, count) == ("200", "X", "1")
    assert 0 <= int(body) < len(BIG) and int(total) > int(body)


def test_pipe_logger(tmp_path, site):
    target = tmp_path / "piped.log"
    with start_worker(tmp_path, site, f'accesslog.filename = "|cat >> {target}"\n'
                      'accesslog.format = "%s %U"') as worker:
        for path in ("/index.html", "/nope", "/sub/"):
            worker.get(path)
        lines = wait_lines(target, 3)
    assert lines == ["200 /index.html", "404 /nope", "200 /sub/"]


def test_conditional_filename_and_format(tmp_path, site):
    main, other = tmp_path / "main.log", tmp_path / "other.log"
    with start_worker(tmp_path, site, f'accesslog.filename = "{main}"\n'
                      'accesslog.format = "main %U"\n'
                      f'$HTTP["url"] =^ "/sub/" {{ accesslog.filename = "{other}"\n'
                      'accesslog.format = "other %U %s" }\n'
                      '$HTTP["url"] == "/quiet" { accesslog.filename = "" }') as worker:
        for path in ("/index.html", "/sub/", "/quiet", "/nope"):
            worker.get(path)
        assert wait_lines(main, 2) == ["main /index.html", "main /nope"]
        assert wait_lines(other, 1) == ["other /sub/ 200"]


def test_usr1_reopens_after_rename(tmp_path, site):
    """logrotate in a worker: rename, USR1, new lines go to a new file."""
    logfile = tmp_path / "access.log"
    with start_worker(tmp_path, site, f'accesslog.filename = "{logfile}"\n'
                      'accesslog.format = "%U"') as worker:
        worker.get("/index.html")
        wait_lines(logfile, 1)
        rotated = tmp_path / "access.log.1"
        logfile.rename(rotated)
        worker.get("/before-usr1")
        wait_lines(rotated, 2)
        worker.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not logfile.exists() and time.monotonic() < deadline:
            worker.get("/probe")
            time.sleep(0.05)
        worker.get("/after")
        deadline = time.monotonic() + 5
        while "/after" not in logfile.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert rotated.read_text().splitlines()[:2] == ["/index.html", "/before-usr1"]
    assert logfile.read_text().splitlines()[-1] == "/after"


@pytest.mark.skipif(not os.path.exists("/dev/log"), reason="no syslog socket (/dev/log)")
def test_syslog(tmp_path, site):
    marker = f"acclog-{os.getpid()}-{time.time_ns()}"
    with start_worker(tmp_path, site, 'accesslog.use-syslog = "enable"\n'
                      f'accesslog.format = "{marker} %U"') as worker:
        status, _, _ = worker.get("/index.html")
    assert status == 200     # where syslog puts it is the host's business


def test_no_accesslog_module_means_no_tracking(tmp_path, site):
    """Without a request-done hook the core keeps no per-answer records."""
    from worker.connection import Connection
    assert "answers" in dir(Connection)
    conf = tmp_path / "plain.conf"
    conf.write_text(config_text(site))
    with WorkerProcess(conf) as worker:
        assert worker.get("/index.html")[0] == 200


def test_master_usr1_reopens_access_log(tmp_path):
    """logrotate against the real master: rename, USR1 to the master, new file."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from serverproc import Server, get, wait_until

    logfile = tmp_path / "access.log"
    server = Server(tmp_path, 'server.modules = ("mod_accesslog")\n'
                    f'accesslog.filename = "{logfile}"\naccesslog.format = "%U %s"')
    try:
        server.wait_serving()
        get(server.port, "/first")
        wait_until(lambda: "/first 404" in logfile.read_text())
        rotated = tmp_path / "access.log.1"
        logfile.rename(rotated)
        server.process.send_signal(signal.SIGUSR1)
        wait_until(lambda: get(server.port, "/after")[0] == 404 and logfile.exists()
                   and "/after 404" in logfile.read_text())
        assert "/first 404" in rotated.read_text()
        assert "/first" not in logfile.read_text()
        # the error log was reopened too
        server.errorlog.rename(tmp_path / "error.log.1")
        server.process.send_signal(signal.SIGUSR1)
        wait_until(lambda: server.errorlog.exists())
    finally:
        server.stop()
    shutil.rmtree(tmp_path / "www", ignore_errors=True)


@needs_lighttpd
def test_a_rewritten_request_or_one_with_a_fragment_logs_as_lighttpd(tmp_path):
    """%r is the request line the client sent (before a rewrite, with a fragment);
    the other fields see the request as served."""
    requests = [b"GET /old/index.html?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                b"GET /index.html#part HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                b"GET /old/index.html?y=2#p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
    got, expected = both_logs(tmp_path, FULL_FORMAT, requests,
                              extra='server.modules += ("mod_rewrite")\n'
                                    'url.rewrite-once = ("^/old/(.*)$" => "/$1")')
    assert len(got) == len(expected) == 3
    for ours, theirs in zip(got, expected):
        for name, mine, its in zip(FULL_FORMAT.split("|"), ours.split("|"),
                                   theirs.split("|")):
            assert mine == its, (name, ours, theirs)


@needs_lighttpd
def test_bytes_in_host_and_filename_of_odd_requests_log_as_lighttpd(tmp_path):
    """%I counts a request read whole (not what came after it on a connection that
    closes after it) and a refused head as far as its end; %{Host}i is the Host as
    lighttpd normalizes it in place; %f of an error page names its file, if it has
    one; a bare %e or %n names no variable."""
    (tmp_path / "err").mkdir()
    (tmp_path / "err" / "404.html").write_text("gone\n")
    requests = [b"POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nqqq"
                b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /index.html HTTP/1.1\r\nHost: X.Example.:80\r\n"
                b"Connection: close\r\n\r\nleftover",
                b"GET /index.html HTTP/1.1\r\nHost: x\r\nX-Odd: \x7f\r\n"
                b"Connection: close\r\n\r\n",
                b"GET /nope HTTP/1.0\r\nHost: Y.example:81\r\n\r\n",
                b"GET /nope HTTP/1.0\r\nHost: Y.example:81\r\n\r\n",    # replays
                b"GET /nope HTTP/1.0\r\nHost: Y.example:81\r\n\r\n",
                b"GET /index.html#f HTTP/1.0\r\n\r\n",
                b"GET /index.html HTTP/1.1\r\nHost: x\r\nRange: bytes=99-\r\n"
                b"Connection: close\r\n\r\n"]
    got, expected = both_logs(tmp_path, "%s|%I|%{Host}i|%V|%f|%n|%e|%b", requests)
    assert got == expected and len(got) == 8
    assert got[1].split("|")[1:3] == ["68", "x.example"]
    assert {line.split("|")[4] for line in got[3:6]} == {"-"}
    found, expected = both_logs(tmp_path / "prefix", "%s|%f|%b", requests[3:4],
                                extra=f'server.errorfile-prefix = "{tmp_path}/err/"')
    assert found == expected == [f"404|{tmp_path}/err/404.html|5"]
