"""mod_fastcgi through a real worker in front of real FastCGI backends (gw_backends.py):
php-cgi and php-fpm on unix sockets, the WSGI app of gw_app.py under flup, a backend
that answers garbage, and a socket nobody listens on.

Extension and prefix layouts (SCRIPT_NAME, PATH_INFO, fix-root-scriptname,
strip-request-uri, docroot), check-local, bodies with a length and chunked, HEAD,
the error log's STDERR lines, X-Sendfile inside and outside x-sendfile-docroot,
authorizer and responder, 502 / 503 / 504, a backend dying mid-answer, the processes
of a spawned host (started here as php-cgi -b on socket-N), kept connections with
fastcgi.keep-conn (as many as the backend's FCGI_MAX_CONNS spares, idle ones closed
after 2 s), a client gone mid-answer.  Every wait has a deadline.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import struct
import time
from pathlib import Path

import pytest

from gw_backends import (ScriptedFastCgi, backends_in, fastcgi_server, flup, php_cgi, php_fpm,
                         variables, write_php_site)
from loadtests.bench import PeakRss
from server_util import WorkerProcess, config_text, read_until_closed
from worker import fastcgi

MODULES = ("mod_fastcgi", "mod_staticfile")


def fastcgi_config(sockets: Path, sendable: Path, errorlog: Path) -> str:
    return f"""
server.errorlog = "{errorlog}"
{fastcgi_server(sockets, sendable)}
fastcgi.map-extensions = ( ".php5" => ".php" )
$HTTP["host"] == "spawned.test" {{
  fastcgi.server = ( ".php" => ( ( "socket" => "{sockets}/spawn.sock",
                                   "bin-path" => "/usr/bin/php-cgi", "max-procs" => 2 ) ) )
}}
server.max-worker = 2
$HTTP["host"] == "fpm.test" {{
  fastcgi.server = ( ".php" => ( ( "socket" => "{sockets}/fpm.sock" ) ) )
  fastcgi.debug = 1
}}
$HTTP["host"] == "kept.test" {{
  fastcgi.server = ( ".php" => ( ( "socket" => "{sockets}/kept.sock" ) ) )
  fastcgi.debug = 1
}}
$HTTP["host"] == "stream.test" {{ server.stream-response-body = 2 }}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("fcgi")
    docroot = base / "www"
    write_php_site(docroot)
    (docroot / "auth").mkdir()
    sendable = base / "sendable"
    sendable.mkdir()
    (sendable / "file.txt").write_text("sent by X-Sendfile\n")
    errorlog = base / "error.log"
    conf = base / "fcgi.conf"
    with backends_in("fcgi-test") as (sockets, backends):
        conf.write_text(config_text(docroot, fastcgi_config(sockets, sendable, errorlog),
                                    MODULES))
        backends.append(flup("fcgi", f"{sockets}/app.sock"))
        backends.append(flup("garbage", f"{sockets}/garbage.sock"))
        backends.append(php_cgi(f"{sockets}/php.sock"))
        backends.append(php_cgi(f"{sockets}/spawn.sock-0"))
        backends.append(php_cgi(f"{sockets}/spawn.sock-1"))
        backends.append(php_fpm(base, f"{sockets}/fpm.sock"))
        backends.append(php_cgi(f"{sockets}/kept.sock", children=4))
        with WorkerProcess(conf) as worker:
            yield {"worker": worker, "docroot": docroot, "sendable": sendable,
                   "errorlog": errorlog, "backends": backends}


def wait_for_log(errorlog: Path, text: str, seconds: float = 5.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        content = errorlog.read_text(errors="replace") if errorlog.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the error log")


# ------------------------------------------------------------------- php-cgi
def test_php_by_extension_with_path_info(site) -> None:
    status, headers, body = site["worker"].get("/info.php/extra/path?a=1")
    assert status == 200 and headers["X-Php"] == "yes"
    env = variables(body)
    docroot = str(site["docroot"])
    assert env["SCRIPT_NAME"] == "/info.php" and env["PATH_INFO"] == "/extra/path"
    assert env["SCRIPT_FILENAME"] == f"{docroot}/info.php"
    assert env["PATH_TRANSLATED"] == f"{docroot}/extra/path"
    assert env["REQUEST_URI"] == "/info.php/extra/path?a=1"
    assert env["QUERY_STRING"] == "a=1" and env["DOCUMENT_ROOT"] == docroot


def test_php_hello_and_own_status(site) -> None:
    worker = site["worker"]
    assert worker.get("/hello.php")[::2] == (200, b"Hello, world!")
    assert worker.get("/status.php")[::2] == (418, b"teapot")
    status, headers, _ = worker.get("/redirect.php")
    assert status == 302 and headers["Location"] == "http://example.com/elsewhere"


def test_missing_script_is_404_with_check_local(site) -> None:
    assert site["worker"].get("/missing.php")[0] == 404


def test_map_extensions_send_another_suffix_to_a_backend(site) -> None:
    (site["docroot"] / "mapped.php5").write_text("<?php echo 'mapped';\n")
    assert site["worker"].get("/mapped.php5")[::2] == (200, b"mapped")


def test_post_bodies_reach_php_whole(site) -> None:
    worker = site["worker"]
    for size in (11, 300_000):
        body = os.urandom(size)
        status, _, answer = worker.request("POST", "/info.php", body=body)
        env = variables(answer)
        assert status == 200 and env["CONTENT_LENGTH"] == str(size)
        assert env["BODY"] == f"{size} {hashlib.md5(body).hexdigest()}"


def test_chunked_post_gets_its_length(site) -> None:
    body = os.urandom(150_000)
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                       for part in (body[:70_000], body[70_000:])) + b"0\r\n\r\n"
    raw = site["worker"].raw(b"POST /info.php HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
    env = variables(raw.partition(b"\r\n\r\n")[2])
    assert raw.startswith(b"HTTP/1.1 200") and env["CONTENT_LENGTH"] == "150000"
    assert env["BODY"] == f"150000 {hashlib.md5(body).hexdigest()}"


def test_head_has_no_body(site) -> None:
    raw = site["worker"].raw(b"HEAD /hello.php HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"\r\n\r\n")


def test_stderr_goes_to_the_error_log(site) -> None:
    assert site["worker"].get("/stderr.php")[::2] == (200, b"logged")
    wait_for_log(site["errorlog"], "FastCGI-stderr:")
    assert "a line for the error log" in site["errorlog"].read_text()


# ---------------------------------------------------------- prefix layouts
@pytest.mark.parametrize("path, script, info", [
    ("/app/x/y?q=1", "/app", "/x/y"),
    ("/pre/x/y", "/pre/x", "/y"),
    ("/pre/", "/pre/", ""),      # flup sets an absent PATH_INFO empty
])
def test_prefix_splits_script_name_and_path_info(site, path, script, info) -> None:
    status, _, body = site["worker"].get(path)
    env = variables(body)
    assert status == 200 and (env["SCRIPT_NAME"], env["PATH_INFO"]) == (script, info)
    assert env["REQUEST_URI"] == path


def test_fix_root_scriptname(site) -> None:
    env = variables(site["worker"].get("/a/b", host="root.test")[2])
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/a/b")


def test_strip_request_uri_and_remote_docroot(site) -> None:
    worker = site["worker"]
    assert variables(worker.get("/strip/x?q")[2])["REQUEST_URI"] == "/x?q"
    env = variables(worker.get("/remote/page")[2])
    assert env["SCRIPT_FILENAME"] == "/srv/remote/remote/page"
    assert env["DOCUMENT_ROOT"] == "/srv/remote"


# ------------------------------------------------------------- X-Sendfile
def test_x_sendfile_inside_and_outside_its_docroot(site) -> None:
    worker = site["worker"]
    inside = site["sendable"] / "file.txt"
    status, headers, body = worker.get(f"/send/?sendfile={inside}")
    assert (status, body) == (200, b"sent by X-Sendfile\n")
    assert "X-Sendfile" not in headers
    outside = site["docroot"] / "hello.php"
    assert worker.get(f"/send/?sendfile={outside}")[0] == 403


# -------------------------------------------------------------- authorizer
def test_authorizer_approves_and_its_variables_reach_the_responder(site) -> None:
    status, _, body = site["worker"].get("/auth/page")
    env = variables(body)
    assert status == 200 and env["USER"] == "alice"
    assert env["SCRIPT_NAME"] == "/auth/page"


def test_authorizer_denial_is_the_answer(site) -> None:
    status, _, body = site["worker"].get("/auth/page?deny")
    assert (status, body) == (403, b"denied by the authorizer\n")


# ----------------------------------------------------------------- failures
def test_backend_down_is_503(site) -> None:
    assert site["worker"].get("/down/x")[0] == 503


def test_garbage_is_502(site) -> None:
    assert site["worker"].get("/garbage/x")[0] == 502


def test_read_timeout_is_504(site) -> None:
    assert site["worker"].get("/slow/?sleep=2.5")[0] == 504


def test_backend_dying_mid_answer(site) -> None:
    """502 while nothing went out (the answer is kept whole by default); a streamed
    answer whose head went out is cut: the connection closes short of its length."""
    worker = site["worker"]
    assert worker.get("/app/?cut=1")[0] == 502
    _restart_app(site)
    raw = worker.raw(b"GET /app/?cut=1 HTTP/1.1\r\nHost: stream.test\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 100000" in head
    assert 0 < len(body) < 100_000
    _restart_app(site)
    assert worker.get("/app/")[0] == 200


def _restart_app(site) -> None:
    """gw_app.py's `cut` ended its process: a new one on the same socket."""
    old = site["backends"][0]
    old.stop()
    Path(old.path).unlink()
    site["backends"][0] = flup("fcgi", old.path)


def test_client_gone_mid_answer_leaves_the_worker_serving(site) -> None:
    worker = site["worker"]
    with worker.socket() as sock:
        sock.sendall(b"GET /slow/?sleep=0.5 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert worker.get("/app/")[0] == 200


# ------------------------------------------------------------ spawned hosts
def test_spawned_host_balances_over_its_processes(site) -> None:
    worker = site["worker"]
    for _ in range(4):
        assert worker.get("/hello.php", host="spawned.test")[::2] == (200, b"Hello, world!")
    first = site["backends"][3]
    first.stop()                          # socket-0 dies: socket-1 serves alone
    for _ in range(3):
        assert worker.get("/hello.php", host="spawned.test")[::2] == (200, b"Hello, world!")


# ------------------------------------------------------------ kept connections
def _hellos(worker, host: str, count: int) -> None:
    client = worker.connection()
    try:
        for _ in range(count):
            client.request("GET", "/hello.php", headers={"Host": host})
            response = client.getresponse()
            assert (response.status, response.read()) == (200, b"Hello, world!")
    finally:
        client.close()


def _backend_sockets(pid: int) -> int:
    """The worker's open sockets (its listener and a client's aside, all backends').
    An fd closed between the listing and its readlink (a client's connection the
    worker lets go meanwhile) is no longer open, so not counted."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except FileNotFoundError:
            continue
    return count


def test_php_cgi_capacity_sets_the_connections_kept(site) -> None:
    """php-cgi with 4 children says FCGI_MAX_CONNS 4: (4 - 1) // 2 workers = 1 kept;
    it is closed after 2 s unused."""
    worker, errorlog = site["worker"], site["errorlog"]
    _hellos(worker, "kept.test", 4)
    log = wait_for_log(errorlog, "kept.sock: FCGI_MAX_CONNS 4, keeping up to 1 connections")
    wait_for_log(errorlog, "fastcgi - reusing a connection to unix:" +
                 str(site["backends"][-1].path))
    pid = worker.process.pid
    kept = _backend_sockets(pid)
    assert log.count("kept.sock: FCGI_MAX_CONNS") == 1
    deadline = time.monotonic() + 5
    while _backend_sockets(pid) >= kept and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _backend_sockets(pid) <= kept - 1      # other tests' idle ones may close too


def test_php_fpm_says_no_capacity_so_nothing_is_kept(site) -> None:
    """php-fpm answers FCGI_GET_VALUES without FCGI_MAX_CONNS: a connection per request."""
    _hellos(site["worker"], "fpm.test", 3)
    log = wait_for_log(site["errorlog"],
                       "fpm.sock: FCGI_MAX_CONNS unknown, keeping up to 0 connections")
    assert "fastcgi - reusing a connection to unix:" + str(site["backends"][-2].path) \
        not in log


def test_big_answers_stream_in_order(site) -> None:
    (site["docroot"] / "big.php").write_text(
        "<?php for ($i = 0; $i < 20000; $i++) echo str_pad($i, 99, '.') . \"\\n\";\n")
    status, _, body = site["worker"].get("/big.php")
    lines = body.split(b"\n")
    assert status == 200 and len(body) == 2_000_000
    assert lines[12345] == b"12345".ljust(99, b".")


def test_raw_client_reads_whole_answer(site) -> None:
    with site["worker"].socket() as sock:
        sock.sendall(b"GET /hello.php HTTP/1.0\r\n\r\n")
        raw = read_until_closed(sock)
    assert raw.startswith(b"HTTP/1.0 200") and raw.endswith(b"Hello, world!")



# ------------------------------------------------------------ resources
def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _settled_fds(pid: int, seconds: float = 5.0) -> int:
    """The worker's fd count once it stayed the same for a quarter of a second."""
    value = _fds(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.25)
        again = _fds(pid)
        if again == value:
            break
        value = again
    return value


def test_clients_gone_mid_request_leave_no_fd_behind(site) -> None:
    worker = site["worker"]
    pid = worker.process.pid
    assert worker.get("/app/")[0] == 200
    before = _settled_fds(pid)
    clients = [worker.socket() for _ in range(30)]
    for sock in clients:
        sock.sendall(b"GET /slow/?sleep=0.3 HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.2)
    for sock in clients:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert worker.get("/app/")[0] == 200
    deadline = time.monotonic() + 10
    while _fds(pid) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _fds(pid) <= before


def test_a_100_mib_upload_streams_through_with_little_memory(site, tmp_path) -> None:
    """The body is spooled to a file by the core, then sent as STDIN records one read
    at a time: the worker's memory does not grow with it."""
    size = 100 * 1024 * 1024
    upload = tmp_path / "upload.bin"
    digest = hashlib.md5()
    with open(upload, "wb") as out:
        block = os.urandom(1024 * 1024)
        for _ in range(size // len(block)):
            out.write(block)
            digest.update(block)
    pid = site["worker"].process.pid
    with PeakRss(lambda: _resident(pid), every=0.05) as rss:
        client = http.client.HTTPConnection("127.0.0.1", site["worker"].port, timeout=60)
        try:
            with open(upload, "rb") as body:
                client.request("POST", "/app/upload", body=body,
                               headers={"Content-Length": str(size)})
            response = client.getresponse()
            status, answer = response.status, response.read()
        finally:
            client.close()
    assert status == 200
    assert variables(answer)["BODY"] == f"{size} {digest.hexdigest()}"
    assert rss.peak - rss.before < 24 * 1024 * 1024


def _resident(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# ------------------------------------------------------- the protocol itself
@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    base = tmp_path_factory.mktemp("scripted")
    with backends_in("fcgi-scripted") as (sockets, _):
        backend = ScriptedFastCgi(f"{sockets}/s.sock")
        conf = base / "s.conf"
        conf.write_text(config_text(base, f"""
server.errorlog = "{base}/error.log"
server.max-worker = 1
fastcgi.server = ( "/s/" => ( ( "socket" => "{backend.path}", "check-local" => "disable" ) ),
                   "/sk/" => ( ( "socket" => "{backend.path}", "check-local" => "disable",
                                 "docroot" => "/" ) ),
                   "/sx/" => ( ( "socket" => "{backend.path}", "check-local" => "disable",
                                 "x-sendfile" => "enable" ) ) )
""", MODULES))
        (base / "parts.txt").write_text("0123456789abcdef")
        try:
            with WorkerProcess(conf) as worker:
                yield backend, worker, base / "error.log", base
        finally:
            backend.stop()


def test_records_in_any_pieces_with_stderr_and_other_ids_between(scripted) -> None:
    backend, worker, errorlog, _ = scripted
    backend.answer = (fastcgi.record(fastcgi.STDOUT, 1, b"Status: 203\r\nX-A: 1\r\n")
                      + fastcgi.record(fastcgi.STDERR, 1, b"careful\n")
                      + fastcgi.record(fastcgi.STDOUT, 2, b"not ours")
                      + fastcgi.get_values_result({"FCGI_MPXS_CONNS": "0"})
                      + fastcgi.record(fastcgi.STDOUT, 1, b"\r\nbody ")
                      + fastcgi.stream(fastcgi.STDOUT, 1, b"x" * 70_000)
                      + fastcgi.end_request(1))
    backend.piece = 7
    status, headers, body = worker.get("/s/pieces")
    assert (status, headers["X-A"], body) == (203, "1", b"body " + b"x" * 70_000)
    wait_for_log(errorlog, "FastCGI-stderr:careful")


def test_the_request_as_the_backend_reads_it(scripted) -> None:
    backend, worker, _, _ = scripted
    backend.answer = fastcgi.record(fastcgi.STDOUT, 1, b"\r\n") + fastcgi.end_request(1)
    body = os.urandom(150_000)
    long_value = "v" * 300
    assert worker.request("POST", "/s/req?q=1", {"X-Long": long_value}, body)[0] == 200
    seen = backend.seen[-1]
    assert (seen["id"], seen["role"], seen["flags"]) == (1, fastcgi.RESPONDER, 0)
    assert seen["stdin"] == body and seen["stdin_records"] >= 3
    env = seen["env"]
    assert env[b"HTTP_X_LONG"] == long_value.encode() and env[b"CONTENT_LENGTH"] == b"150000"
    assert env[b"SCRIPT_NAME"] == b"/s/req" and env[b"QUERY_STRING"] == b"q=1"


def test_capacity_is_asked_once_then_connections_are_kept(scripted) -> None:
    """FCGI_GET_VALUES goes ahead of the first request only; once FCGI_MAX_CONNS is
    known (3: one worker may keep 2) the requests ask for FCGI_KEEP_CONN."""
    backend, worker, _, _ = scripted
    backend.answer = (fastcgi.get_values_result({"FCGI_MAX_CONNS": "3"})
                      + fastcgi.record(fastcgi.STDOUT, 1, b"\r\nok") + fastcgi.end_request(1))
    for _ in range(3):
        assert worker.get("/sk/x")[::2] == (200, b"ok")
    seen = backend.seen[-3:]
    assert [request.get("asked") for request in seen] == [[(b"FCGI_MAX_CONNS", b"")], None,
                                                          None]
    assert [request["flags"] for request in seen] == [0, fastcgi.KEEP_CONN, fastcgi.KEEP_CONN]


def test_no_end_request_is_502_and_a_head_too_large_too(scripted) -> None:
    backend, worker, _, _ = scripted
    backend.answer = fastcgi.record(fastcgi.STDOUT, 1, b"Status: 200\r\n\r\npartial")
    assert worker.get("/s/cut")[0] == 502
    backend.answer = fastcgi.stream(fastcgi.STDOUT, 1, b"X-Big: " + b"y" * 70_000)
    assert worker.get("/s/big")[0] == 502


def test_a_close_after_the_end_of_stdout_ends_the_answer(scripted) -> None:
    """No END_REQUEST, but the empty STDOUT record came: nothing is missing, so the
    answer stands (lighttpd takes any close after the head for the end)."""
    backend, worker, _, _ = scripted
    backend.answer = (fastcgi.record(fastcgi.STDOUT, 1, b"Status: 200\r\n\r\nwhole")
                      + fastcgi.record(fastcgi.STDOUT, 1, b""))
    assert worker.get("/s/ended")[::2] == (200, b"whole")


@pytest.mark.parametrize("header, value, expected", [
    ("X-Sendfile2", "{base}/parts.txt 2-4, {base}/parts.txt 10-", b"234abcdef"),
    ("X-LIGHTTPD-send-file", "{base}/parts.txt", b"0123456789abcdef"),
])
def test_other_x_sendfile_headers(scripted, header, value, expected) -> None:
    backend, worker, _, base = scripted
    line = f"{header}: {value.format(base=base)}\r\n\r\n".encode()
    backend.answer = fastcgi.record(fastcgi.STDOUT, 1, line) + fastcgi.end_request(1)
    status, headers, body = worker.get("/sx/f")
    assert (status, body) == (200, expected) and header not in headers
    status, headers, body = worker.get("/s/f")          # x-sendfile off: header dropped
    assert (status, body) == (200, b"") and header not in headers
