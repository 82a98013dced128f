"""Hostile and unlucky input over real sockets: each test replays an attack that once
froze, stalled or fooled a worker.  A hang shows as a socket timeout that expires."""

from __future__ import annotations

import importlib
import pkgutil
import re
import socket
import time

import pytest

import worker
from shared import hotpath
from server_util import read_until_closed, split_responses
from sites import start_worker
from worker.errors import BadRequest
from worker.host import normalize_host

DENIED = '$HTTP["host"] == "denied.example" { url.access-deny = ("") }'


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    uploads = base / "uploads"
    uploads.mkdir()
    extra = (f'{DENIED}\nindex-file.names = ("index.html")\n'
             f'server.upload-dirs = ("{uploads}")\n'
             'server.modules += ("mod_accesslog")\n'
             f'accesslog.filename = "{base}/access.log"\n')
    with start_worker(base, extra) as site:
        (site.docroot / "small.txt").write_bytes(b"s" * 100)
        (site.docroot / "15k.bin").write_bytes(b"k" * 15 * 1024)
        site.uploads = uploads      # type: ignore[attr-defined]
        site.access_log = base / "access.log"   # type: ignore[attr-defined]
        yield site


def status_of(site, raw: bytes, timeout: float = 5.0) -> int:
    answer = site.raw(raw, timeout=timeout)
    assert answer.startswith(b"HTTP/1."), answer[:80]
    return int(answer[9:12])


# ------------------------------------------------------------ ReDoS in the Host check
def test_a_host_made_to_backtrack_is_refused_at_once_on_every_connection(hostile_site):
    """`Host: ggg...g!` once froze a worker per connection for minutes."""
    evil = "g" * 30 + "!"
    sockets = [hostile_site.socket(timeout=5) for _ in range(4)]
    for sock in sockets:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {evil}\r\n\r\n".encode())
    for sock in sockets:
        with sock:
            assert read_until_closed(sock).startswith(b"HTTP/1.1 400 ")
    absolute = f"GET http://{evil}/ HTTP/1.1\r\nHost: {evil}\r\n\r\n".encode()
    assert status_of(hostile_site, absolute) == 400
    assert status_of(hostile_site, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n") == 200


def _patterns_client_input_reaches() -> list[tuple[str, re.Pattern, bool]]:
    """Every module-level compiled pattern of the worker's own code (not the modules'
    config-made ones): the request line, the URL, the headers and queries meet these.
    Each comes with whether its module scans text with it (search, sub, finditer...)."""
    found = []
    for info in pkgutil.walk_packages(worker.__path__, "worker."):
        module = importlib.import_module(info.name)
        path = hotpath.REPO_DIR.joinpath(*info.name.split("."))   # compiled or not
        source = (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern):
                scanned = re.search(rf"\b{name}\.(?:search|sub|subn|finditer|findall|split)\(",
                                    source) is not None
                found.append((f"{info.name}.{name}", value, scanned))
    return found


def _adversarial(pattern: re.Pattern) -> list:
    """Long inputs made of the characters a pattern's repetitions feed on, each ended
    by a character that makes the match fail at the very end."""
    pieces = ["g", "a-", "0.", "%2", "%c", "a ", "9", "\udcc3", "x\t", "& format=", "GET /"]
    texts = [piece * (60_000 // len(piece)) + ending
             for piece in pieces for ending in ("!", " HTTP/1", "\x00")]
    if isinstance(pattern.pattern, bytes):
        return [text.encode("utf-8", "surrogateescape") for text in texts]
    return texts


@pytest.mark.timeout(60)
def test_every_core_pattern_is_linear_on_adversarial_input():
    """A pattern with nested or overlapping repetitions takes exponential or quadratic
    time on one of these 60 kB inputs: the test then runs into its timeout.  Anchored
    use (match, fullmatch) is tried on every pattern; an unanchored scan only on those
    the code scans with, since any scan for a pattern that starts with a repetition is
    quadratic, however it is written."""
    patterns = _patterns_client_input_reaches()
    assert any(name == "worker.http1._REQUEST_LINE" for name, _, _ in patterns)
    for name, pattern, scanned in patterns:
        for text in _adversarial(pattern):
            pattern.match(text)
            pattern.fullmatch(text)
            if scanned:
                pattern.search(text)


@pytest.mark.timeout(30)
def test_the_host_check_is_linear_on_adversarial_input():
    for text in ("g" * 60_000 + "!", "a-." * 20_000 + "!", "1." * 30_000, "[" + ":" * 60_000,
                 "a" * 1000 + ":" + "9" * 60_000):
        with pytest.raises(BadRequest):
            normalize_host(text)


# ----------------------------------------------------- pipelining past the high water
@pytest.mark.parametrize("name, count", [("small.txt", 300), ("15k.bin", 100)])
def test_every_pipelined_request_is_answered(hostile_site, name, count):
    """The answers once stopped at the output high-water mark and never resumed."""
    request = f"GET /{name} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    last = f"GET /{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    data = hostile_site.raw(request * (count - 1) + last, timeout=10)
    responses = split_responses(data)
    assert len(responses) == count
    assert all(status == 200 for status, _, _ in responses)


# ------------------------------------------------------------------ unread bodies
def test_a_huge_body_to_a_static_file_is_neither_stored_nor_waited_for(hostile_site):
    """A 2 GiB POST was spooled whole to the upload dir before the answer."""
    with hostile_site.socket(timeout=5) as sock:
        sock.sendall(b"POST /index.html HTTP/1.1\r\nHost: t\r\nContent-Length: 2147483648\r\n\r\n")
        chunk = b"x" * 65536
        answer = b""
        sent = 0
        sock.setblocking(False)
        deadline = time.monotonic() + 10
        while not answer.endswith(b"hello from pylighttpd\n") and time.monotonic() < deadline:
            try:
                sent += sock.send(chunk)
            except (BlockingIOError, ConnectionError):
                time.sleep(0.01)
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in answer
    assert sent < 256 * 1024 * 1024
    assert list(hostile_site.uploads.iterdir()) == []


# ----------------------------------------------------------------------- the Host
@pytest.mark.parametrize("host", ["denied.example", "denied.example.", "denied.example.:80",
                                  "DENIED.Example:80", "denied.example:0080"])
def test_a_host_written_another_way_does_not_escape_its_conditions(hostile_site, host):
    raw = f"GET /index.html HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    assert status_of(hostile_site, raw.encode()) in (400, 403)


@pytest.mark.parametrize("host, status", [("", 400), ("X.:0080", 400), ("x:65536", 400),
                                          ("1.2.3", 400), ("-a", 400), ("[::1]:0", 400),
                                          ("a-.b", 200), ("x:", 200), ("[::1]:8080", 200)])
def test_hosts_are_checked_as_lighttpd_checks_them(hostile_site, host, status):
    raw = f"GET /index.html HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    assert status_of(hostile_site, raw.encode()) == status


# ------------------------------------------------------------------------ framing
def test_http10_with_transfer_encoding_is_400_and_closes(hostile_site):
    data = hostile_site.raw(b"POST /index.html HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"0\r\n\r\nGET /index.html HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.0 400 ")
    assert data.count(b"HTTP/1.") == 1


def test_requests_after_an_upgrade_request_are_answered(hostile_site):
    """No module switches protocols: the request is answered as any other, and the
    pipelined requests after it are no longer dropped."""
    data = hostile_site.raw(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\n"
                            b"Upgrade: websocket\r\n\r\n"
                            b"GET /small.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert [status for status, _, _ in split_responses(data)] == [200, 200]


@pytest.mark.parametrize("target", ["/%c0%ae%c0%ae/", "/%ff", "/index.html?q=%ff", "/%7f",
                                    "/index.html?%01", "/\xff"])
def test_invalid_octets_in_the_url_are_400(hostile_site, target):
    raw = f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    assert status_of(hostile_site, raw.encode("latin-1")) == 400


@pytest.mark.parametrize("version, status", [("HTTP/3.1", 505), ("HTTP/1.2", 505),
                                             ("HTTP/1.01", 400)])
def test_other_http_versions_are_505(hostile_site, version, status):
    raw = f"GET /index.html {version}\r\nHost: t\r\n\r\n".encode()
    assert status_of(hostile_site, raw) == status


# --------------------------------------------------------------------- access log
def test_a_request_refused_among_its_headers_is_logged_with_its_line(hostile_site):
    assert status_of(hostile_site, b"GET /logged.html HTTP/1.1\r\nHost: a b\r\n\r\n") == 400
    deadline = time.monotonic() + 5      # the log is written at 8 KiB or once a second
    while time.monotonic() < deadline:
        log = hostile_site.access_log.read_text() if hostile_site.access_log.exists() else ""
        if "logged.html" in log:
            break
        time.sleep(0.1)
    assert '"GET /logged.html HTTP/1.1" 400 ' in log


def test_a_silent_new_connection_is_not_closed_at_the_keep_alive_idle(hostile_site):
    """5 s is the keep-alive idle; a new connection gets server.max-read-idle (60 s)."""
    with hostile_site.socket(timeout=10) as sock:
        sock.settimeout(6.5)
        with pytest.raises(socket.timeout):
            sock.recv(1)             # the server neither answers nor closes
        sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200 OK")
