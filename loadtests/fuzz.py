"""Coverage-guided fuzzing (atheris) of the worker's request path and of the config parser.

Both targets run in this one process, so a finding is a Python traceback, not a core:

    python loadtests/fuzz.py --target request --minutes 10
    python loadtests/fuzz.py --target config --minutes 10
    python loadtests/fuzz.py --target request --runs 500          # bounded (CI smoke)
    python loadtests/fuzz.py --target request --replay crash-1234  # re-run a finding

`request`: each input is a byte stream for a real `worker.connection.Connection` of a
real worker `Server` (all modules, one socketpair per input), sent in read sizes the
input picks, then half-closed or left open.  The first byte chooses the site variant
(answer cache, access log hooks, debug logging), the read sizes, and whether the rest
is raw bytes or a recipe for hostile requests (pipelined, bodies, chunked, Expect,
Range, conditionals, odd paths and Hosts).  Checked for every input: no exception and
no "internal error" in the error log; every answer is well-formed HTTP with a sane
status, the status the worker counted and a body of its Content-Length; the connection
ends idle or closed, closed once the client is gone, within a time bound (a busy or
stuck loop is a finding); the file planted outside the document root is never opened.

`config`: each input is a main config file in a sandbox directory (beside a copy of
`conf/`); `master.configload.load` must give a config or a `ConfigError` with a
position, and a loaded config must print (`-p`).  `include_shell` runs no shell: its
"output" is the command's own text; `include` reaches only the sandbox.

Findings are written to `--workdir` (default: a new temporary directory) as libFuzzer
`crash-*` / `timeout-*` files; the run stops at the first one.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from master.configload import load  # noqa: E402
from shared.config import ConfigError, format_config  # noqa: E402
from shared.config import parser as config_parser  # noqa: E402
from worker.connection import ConnState  # noqa: E402
from worker.counters import WorkerCounters  # noqa: E402
from worker.server import Server  # noqa: E402

PROJECT_PACKAGES = ("worker", "shared", "master")
EXAMPLE_SECONDS = 10.0     # one input, sent and answered (the hang detector)
MAX_PIECES = 1000
MAX_INPUT = 16384


class Finding(AssertionError):
    """An input broke an invariant; the message says which, with the evidence."""


# ------------------------------------------------------------------ choices
class Choices:
    """Decisions read from fuzz bytes, one byte each (0 once they are used up), so that
    a mutation of the input is a change of decision the fuzzer can keep or drop."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def byte(self) -> int:
        value = self.data[self.at] if self.at < len(self.data) else 0
        self.at += 1
        return value

    def pick(self, options: Sequence):
        return options[self.byte() % len(options)]

    def usual(self, options: Sequence):
        """The first option half of the time, else any: requests that are mostly right
        get past the first check and reach the code behind it."""
        choice = self.byte()
        return options[0] if choice & 1 else options[(choice >> 1) % len(options)]

    def count(self, most: int) -> int:
        return self.byte() % (most + 1)


# ----------------------------------------------------- hostile request recipe
_METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"OPTIONS", b"DELETE", b"TRACE", b"CONNECT",
            b"PATCH", b"PROPFIND", b"get", b"", b"G\x00T", b"BREW", b"GET GET"]
_SEGMENTS = [b"index.html", b"..", b".", b"%2e%2e", b"%2E%2e", b"%252e%252e", b"..%2f", b"..%5c", b"..\\",
             b"%2f", b"%00", b"%", b"%zz", b"%c0%ae%c0%ae", b"outside", b"passwd",
             b"secret.txt", b"sub", b"listed", b"big.bin", b"small.txt",
             b"secret.inc", b"al", b"a.txt", b"old", b"x", b"~", b";", b"?", b"?auto",
             b"?json", b"#frag", b"", b"server-status", b"\xc3\xbc", b"\xff", b"A" * 300,
             b"%7e", b"\t", b"\x7f", b"%20"]
_TARGET_STARTS = [b"/", b"", b"*", b"http://fuzz", b"http://red.example",
                  b"https://evil:80", b"//evil", b"http://[::1]:80", b"http:/"]
_VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2",
             b"http/1.1", b"", b"HTTP/1.1x", b"HTTP/11", b"HTTP/1.01"]
_HOSTS = [b"fuzz", b"red.example", b"", b"a..b", b"[::1]:80", b"[::1", b"bad/host",
          b"x:0", b"x:99999", b"127.0.0.1:80", b"%00", b"a b", b"A" * 300, b"..",
          b"example.org.", b"-a", b"host:", b"ex\x00am", b"RED.EXAMPLE", b"red.example:80"]
_HEADERS = [
    (b"Range", [b"bytes=0-1,5-", b"bytes=-0", b"bytes=" + b"0-0," * 300, b"bytes=5-2",
                b"bytes=0-", b"bytes=-5", b"bytes=1-1,1-1", b"bytes=999999-", b"items=0-1",
                b"bytes=0-18446744073709551616", b"bytes= 1 - 2", b"bytes=,"]),
    (b"If-Range", [b"\"x\"", b"Mon, 01 Jan 2001 00:00:00 GMT", b""]),
    (b"If-None-Match", [b"*", b"\"x\"", b"W/\"a\", \"b\"", b"\""]),
    (b"If-Match", [b"*", b"\"x\"", b"W/\"x\""]),
    (b"If-Modified-Since", [b"Mon, 01 Jan 2001 00:00:00 GMT", b"Sun, 06 Nov 2094 08:49:37 GMT",
                            b"garbage", b""]),
    (b"If-Unmodified-Since", [b"Mon, 01 Jan 2001 00:00:00 GMT", b"x"]),
    (b"Content-Length", [b"0", b"5", b"-1", b"99999999999999999999", b"5, 5", b" 5",
                         b"0x10", b"1e3", b""]),
    (b"Transfer-Encoding", [b"chunked", b"gzip, chunked", b"chunked, gzip", b"identity",
                            b"CHUNKED", b"chunked\x00"]),
    (b"Expect", [b"100-continue", b"100-Continue", b"200-ok", b""]),
    (b"Connection", [b"close", b"keep-alive", b"upgrade", b"Upgrade, close", b"TE"]),
    (b"Upgrade", [b"h2c", b"websocket"]),
    (b"Host", _HOSTS),
    (b"Cookie", [b"a=1", b"b=2"]),
    (b"Accept-Encoding", [b"gzip", b"*"]),
    (b"User-Agent", [b"\xff\xfe", b"A" * 9000]),
]
_BAD_HEADER_LINES = [b"X-\x00: x", b"Bad Name: x", b": empty name", b" folded continuation",
                     b"NoColon", b"Host: second"]


def recipe_stream(choices: Choices) -> bytes:
    """One to six hostile requests, back to back (pipelined), from `choices`."""
    return b"".join(_recipe_request(choices) for _ in range(1 + choices.count(5)))


def _recipe_request(choices: Choices) -> bytes:
    eol = choices.usual([b"\r\n", b"\n", b"\r"])
    target = choices.usual(_TARGET_STARTS) + b"/".join(
        choices.usual(_SEGMENTS) for _ in range(choices.count(6)))
    line = b" ".join(part for part in (choices.usual(_METHODS), target,
                                        choices.usual(_VERSIONS)) if part or choices.byte() & 1)
    lines = [line]
    if choices.byte() % 4:
        lines.append(b"Host: " + choices.usual(_HOSTS))
    for _ in range(choices.count(5)):
        if choices.byte() % 8:
            name, values = choices.pick(_HEADERS)
            lines.append(name + b": " + choices.pick(values))
        else:
            lines.append(choices.pick(_BAD_HEADER_LINES))
    head = eol.join(lines) + eol + choices.pick([eol, eol, eol, b""])
    return head + _recipe_body(choices)


def _recipe_body(choices: Choices) -> bytes:
    """What follows a head: nothing, a body of some length, or chunks (good or bad)."""
    kind = choices.byte() % 6
    if kind == 0 or kind == 5:
        return b""
    if kind in (1, 2):
        return bytes([choices.byte()]) * (choices.byte() * choices.pick([1, 1, 16]))
    chunks = []
    for _ in range(choices.count(3)):
        size = choices.byte() % 40
        header = choices.pick([b"%x" % size, b"%X" % size, b"ffffffffffffffffff", b"-1",
                               b"0x10", b"%x;ext=1" % size, b"%x " % size, b""])
        chunks.append(header + b"\r\n" + b"z" * size + choices.pick([b"\r\n", b"\n", b""]))
    return b"".join(chunks) + choices.pick([b"0\r\n\r\n", b"0\r\nTrailer: x\r\n\r\n", b"",
                                            b"0\r\n"])


# ------------------------------------------------------- answers: parsing
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9]) [ -~]*")
_HEADER_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+: [\t -~\x80-\xff]*")


def check_answers(data: bytes, counted: list[tuple[str, int]]) -> None:
    """Every answer well-formed, in the order and with the status the worker counted,
    each body exactly as long as its Content-Length (none for HEAD, 204 and 304)."""
    at = index = 0
    while at < len(data):
        end = data.find(b"\r\n\r\n", at)
        if end < 0:
            raise Finding(f"an answer's head never ends: {data[at:at + 300]!r}")
        status, headers = _parse_head(data[at:end])
        at = end + 4
        if status == 100:
            continue
        if index >= len(counted):
            raise Finding(f"more answers than counted requests {counted}: {data[:300]!r}")
        method, expected = counted[index]
        index += 1
        if status != expected:
            raise Finding(f"answer {index} has status {status}, {expected} was counted")
        at += _body_length(status, method, headers, data, at)
        if method == "HEAD" and data[at:] and not data.startswith(b"HTTP/1.", at):
            raise Finding(f"the answer to HEAD ({status}) carries a body: {data[:600]!r}")
        if at > len(data):
            raise Finding(f"answer {index}'s body is cut short: {data[-300:]!r}")
    if index != len(counted):
        raise Finding(f"{len(counted)} requests counted, {index} answers sent: {counted}")


def _parse_head(head: bytes) -> tuple[int, dict[bytes, list[bytes]]]:
    lines = head.split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise Finding(f"not a status line: {lines[0][:200]!r}")
    status = int(match.group(1))
    if 100 < status < 200 or status > 505:
        raise Finding(f"status {status} in {head[:200]!r}")
    headers: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        if _HEADER_LINE.fullmatch(line) is None:
            raise Finding(f"malformed header line {line[:200]!r} in {head[:300]!r}")
        name, _, value = line.partition(b": ")
        headers.setdefault(name.lower(), []).append(value)
    return status, headers


def _body_length(status: int, method: str, headers: dict[bytes, list[bytes]],
                 data: bytes, at: int) -> int:
    lengths = headers.get(b"content-length", [])
    if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
        raise Finding(f"Content-Length {lengths} in a {status} answer")
    if b"transfer-encoding" in headers:
        raise Finding("the worker sent Transfer-Encoding (it frames with Content-Length)")
    if method == "HEAD" or status in (204, 304):
        return 0
    if not lengths:
        raise Finding(f"a {status} answer to {method} without Content-Length")
    return int(lengths[0])


# --------------------------------------------------------- request target
SITE_CONFIG = """
server.document-root = "{base}/www"
server.port = 80
server.errorlog = "{base}/error.log"
server.modules = ("mod_access", "mod_alias", "mod_redirect", "mod_indexfile",
                  "mod_dirlisting", "mod_status", {accesslog}"mod_staticfile")
mimetype.assign = (".html" => "text/html", ".txt" => "text/plain",
                   "" => "application/octet-stream")
index-file.names = ("index.html")
url.access-deny = ("~", ".inc")
alias.url = ("/al/" => "{base}/aliased/")
url.redirect = ("^/old/(.*)$" => "/new/$1")
status.status-url = "/server-status"
$HTTP["host"] =~ "^(red)\\.example$" {{
  url.redirect = ("^/x/(.*)$" => "http://%1.example.org/$1")
}}
$HTTP["url"] =^ "/listed/" {{ dir-listing.activate = "enable" }}
server.max-request-size = 1
server.max-request-field-size = 4096
{extra}
"""
_VARIANTS = {
    "cached": ("", ""),
    "accesslog": ('"mod_accesslog", ', 'accesslog.filename = "{base}/access.log"'),
    "debug": ("", "\n".join(f'debug.log-{name} = "enable"' for name in (
        "request-header", "response-header", "request-handling", "file-not-found",
        "condition-handling", "timeouts", "request-header-on-error"))),
}


class RecordingCounters(WorkerCounters):
    """The worker's counters, also noting (method, status) of each answer it counts:
    the order and statuses the answers on the wire must have."""

    __slots__ = ("answered",)

    def __init__(self) -> None:
        super().__init__()
        self.answered: list[tuple[str, int]] = []

    def request(self, method: str, status: int, seconds: float) -> None:
        self.answered.append((method, status))
        super().request(method, status, seconds)


def make_site(base: Path) -> bytes:
    """The docroot, an alias and the secret planted beside them; returns the secret."""
    secret = secrets.token_hex(32).encode()
    www = base / "www"
    for directory in (www / "sub", www / "listed" / "inner", base / "outside",
                      base / "aliased"):
        directory.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_text("hello from pylighttpd\n")
    (www / "sub" / "index.html").write_text("sub index\n")
    (www / "small.txt").write_text("0123456789" * 10)
    (www / "big.bin").write_bytes(bytes(range(256)) * 1200)     # 300 KiB: sendfile
    (www / "secret.inc").write_text("denied")
    (www / "listed" / "<script>.txt").write_text("x")
    (www / "listed" / ".hidden").write_text("x")
    (base / "aliased" / "a.txt").write_text("from the alias\n")
    (base / "secret.txt").write_bytes(secret)
    (base / "outside" / "passwd").write_bytes(secret)
    return secret


_WATCHED: set[str] = set()     # files the worker must never open
_OPENED: list[str] = []
_hook_installed = False


def _watch_opens(paths: set[str]) -> None:
    """Note every open() of `paths` in this process (an audit hook, installed once: it
    cannot be removed, and costs a set lookup per open while nothing is watched)."""
    global _hook_installed
    _WATCHED.update(paths)
    if not _hook_installed:
        sys.addaudithook(_audit_open)
        _hook_installed = True


def _audit_open(event: str, args: tuple) -> None:
    if event == "open" and _WATCHED and args and isinstance(args[0], (str, bytes)):
        path = os.path.normpath(os.fsdecode(args[0]))
        if path in _WATCHED:
            _OPENED.append(path)


class RequestTarget:
    """One worker Server per site variant in this process; one connection per input."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.secret = make_site(base)
        self.forbidden = {str(base / "secret.txt"), str(base / "outside" / "passwd")}
        _watch_opens(self.forbidden)
        self.servers = [self._server(name, module, extra)
                        for name, (module, extra) in _VARIANTS.items()]
        self.errorlog = base / "error.log"
        self.log_seen = 0

    def _server(self, name: str, module: str, extra: str) -> Server:
        conf = self.base / f"{name}.conf"
        conf.write_text(SITE_CONFIG.format(base=self.base, accesslog=module,
                                           extra=extra.format(base=self.base)))
        server = Server(load(str(conf)), [])
        server.counters = RecordingCounters()
        return server

    def close(self) -> None:
        _WATCHED.difference_update(self.forbidden)
        for server in self.servers:
            server.close_all()
            server.loop.close()

    def one_input(self, data: bytes) -> None:
        """Send `data` (decoded as the module docstring says) and check the invariants."""
        flags, rest = (data[0], data[1:]) if data else (0, b"")
        server = self.servers[flags % len(self.servers)]
        self._forget_previous(server)
        stream = recipe_stream(Choices(rest)) if flags & 0x08 else rest
        pieces = split(stream, random.Random(flags >> 4))
        received = self._exchange(server, pieces, half_close=bool(flags & 0x04))
        self._check(server, received)

    def _forget_previous(self, server: Server) -> None:
        """What an input that failed left behind (a connection, a log line, an open
        noted) must not count against the next one: shrinking re-runs inputs."""
        server.close_all()
        server.counters.answered.clear()
        _OPENED.clear()
        self.log_seen = self.errorlog.stat().st_size

    def _exchange(self, server: Server, pieces: list[bytes], half_close: bool) -> bytes:
        client, end = socket.socketpair()
        client.setblocking(False)
        connection = server.add_connection(end, "127.0.0.1", "127.0.0.1:80")
        received = bytearray()
        deadline = time.monotonic() + EXAMPLE_SECONDS
        try:
            for piece in pieces:
                send_all(client, piece, lambda: self._drive(server, client, received,
                                                            deadline), deadline)
                self._drive(server, client, received, deadline)
            if half_close and not connection.closed:
                client.shutdown(socket.SHUT_WR)
                self._drive(server, client, received, deadline)
                if not connection.closed:
                    raise Finding(f"still open after the client's EOF: {state(connection)}")
            self._check_idle(connection)
        finally:
            client.close()
        self._drive(server, None, received, deadline)
        if not connection.closed or server.connections:
            raise Finding(f"not closed once the client had gone: {state(connection)}")
        return bytes(received)

    @staticmethod
    def _drive(server: Server, client: socket.socket | None, received: bytearray,
               deadline: float) -> None:
        """Run the loop and read the answers until neither side has anything to do."""
        while True:
            if time.monotonic() > deadline:
                raise Finding(f"no rest after {EXAMPLE_SECONDS}s: the loop keeps waking "
                              f"up for {server.loop.epoll.poll(0)}")
            server.loop.run_once(0)
            got = read_available(client, received) if client is not None else 0
            if not got and not server.loop.epoll.poll(0):
                return

    @staticmethod
    def _check_idle(connection) -> None:
        """Open and quiet: it must be waiting for the client, nothing else."""
        if connection.state >= ConnState.LINGER:
            return
        if connection.out.chunks or not connection.events & select.EPOLLIN:
            raise Finding(f"stuck: neither reading nor writing: {state(connection)}")

    def _check(self, server: Server, received: bytes) -> None:
        if _OPENED:
            opened = list(_OPENED)
            raise Finding(f"the worker opened {opened} outside the document root")
        if self.secret[:16] in received or self.secret[-16:] in received:
            raise Finding("the secret outside the document root was served")
        self._check_log()
        check_answers(received, server.counters.answered)

    def _check_log(self) -> None:
        with open(self.errorlog, "rb") as log_file:
            log_file.seek(self.log_seen)
            new = log_file.read()
        self.log_seen += len(new)
        if b"internal error" in new or b"Traceback" in new:
            raise Finding(f"the error log says:\n{new.decode(errors='replace')[-3000:]}")


def split(stream: bytes, rng: random.Random) -> list[bytes]:
    """The stream in the read sizes a client might produce: mostly whole, sometimes
    byte by byte (in at most MAX_PIECES pieces, so that an input stays quick)."""
    sizes = rng.choice([[1 << 20], [1 << 20], [1, 2, 3], [7, 64, 200], [1, 1000, 65536]])
    least = len(stream) // MAX_PIECES
    pieces, at = [], 0
    while at < len(stream):
        size = max(rng.choice(sizes), least)
        pieces.append(stream[at:at + size])
        at += size
    return pieces


def send_all(client: socket.socket, piece: bytes, make_room: Callable[[], None],
             deadline: float) -> None:
    """Send all of `piece` on a non-blocking socket, letting the worker read when full
    (outside the except block: the worker must not run with our exception as context)."""
    view = memoryview(piece)
    while view:
        try:
            view = view[client.send(view):]
            continue
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            return          # the worker closed: the rest is never read
        if time.monotonic() > deadline:
            raise Finding("the worker stopped reading a client that still sends")
        make_room()


def read_available(client: socket.socket, received: bytearray) -> int:
    count = 0
    while True:
        try:
            data = client.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return count
        except ConnectionResetError:
            return count
        if not data:
            return count
        received += data
        count += len(data)


def state(connection) -> str:
    return (f"state={connection.state.name} "
            f"closing={connection.closing} events={connection.events} "
            f"ready={len(connection.ready)} current={connection.protocol.current is not None} "
            f"queued={len(connection.out.chunks)} answered={connection.requests_done}")


# ---------------------------------------------------------- config target
_WHOLE_CONFIG_ERRORS = ("server.document-root is not set", "cannot read config file")


class ConfigTarget:
    """Configs in a sandbox directory beside a copy of conf/; the fuzz process works
    there, so that var.CWD and relative includes stay inside it."""

    def __init__(self, base: Path) -> None:
        self.sandbox = base.resolve()
        shutil.copytree(REPO / "conf", self.sandbox / "conf", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("www"))
        (self.sandbox / "conf" / "www").mkdir(exist_ok=True)
        self.main = self.sandbox / "main.conf"
        self.cwd = os.getcwd()
        os.chdir(self.sandbox)
        self.include = config_parser.ConfigParser._include
        config_parser.subprocess = _NoShell
        config_parser.ConfigParser._include = _sandboxed(self.include, str(self.sandbox))

    def close(self) -> None:
        config_parser.subprocess = subprocess
        config_parser.ConfigParser._include = self.include
        os.chdir(self.cwd)

    def one_input(self, data: bytes) -> None:
        self.main.write_bytes(data)
        try:
            loaded = load(str(self.main))
        except ConfigError as err:
            check_config_error(err)
            return
        format_config(loaded.tree)


def check_config_error(err: ConfigError) -> None:
    """A refusal must say where: every line of the message starts with a position,
    unless it is about the whole config."""
    if not str(err).strip():
        raise Finding("a ConfigError without a message")
    if err.position is not None or err.message.startswith(_WHOLE_CONFIG_ERRORS):
        return
    for line in err.message.splitlines():
        if not re.match(r"\S.*:\d+:\d+: ", line):
            raise Finding(f"a ConfigError without a position: {err.message!r}")


def _sandboxed(include: Callable, sandbox: str) -> Callable:
    """The parser's include, refusing (as a missing file) what is outside `sandbox`:
    a fuzzed path must not read /dev/zero or walk the whole file system."""
    def sandboxed_include(parser, pattern: str, block, position) -> None:
        path = os.path.normpath(os.path.join(parser.basedir, pattern))
        if os.path.commonpath([path, sandbox]) != sandbox:
            raise ConfigError(f"include outside the fuzz sandbox: {pattern}", position)
        include(parser, pattern, block, position)
    return sandboxed_include


class _NoShell:
    """Stands in for `subprocess` in the config parser: include_shell's command is not
    run, its text is its output (a command with "fail" in it exits 1; one with a NUL
    byte raises ValueError, as the real one does)."""

    TimeoutExpired = subprocess.TimeoutExpired

    @staticmethod
    def run(args: list[str], **_kwargs) -> subprocess.CompletedProcess:
        command = args[-1].encode("utf-8", "surrogateescape")
        if b"\0" in command:
            raise ValueError("embedded null byte")
        failed = b"fail" in command
        return subprocess.CompletedProcess(args, int(failed), b"" if failed else command,
                                           b"no" if failed else b"")


# ------------------------------------------------------------ corpus seeds
def request_seeds() -> list[bytes]:
    """Well-formed starts for the fuzzer (a flags byte, then the stream)."""
    streams = [
        b"GET /index.html HTTP/1.1\r\nHost: fuzz\r\n\r\n",
        b"GET /index.html HTTP/1.1\r\nHost: fuzz\r\n\r\n" * 3,
        b"HEAD /big.bin HTTP/1.1\r\nHost: fuzz\r\nRange: bytes=0-9,20-29\r\n\r\n",
        b"GET /small.txt HTTP/1.1\r\nHost: fuzz\r\nRange: bytes=-5\r\n"
        b"If-Range: \"x\"\r\n\r\n",
        b"GET /small.txt HTTP/1.1\r\nHost: fuzz\r\nIf-None-Match: *\r\n"
        b"If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT\r\n\r\n",
        b"POST /index.html HTTP/1.1\r\nHost: fuzz\r\nContent-Length: 5\r\n\r\nhelloGET / "
        b"HTTP/1.0\r\n\r\n",
        b"PUT /x HTTP/1.1\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n"
        b"Expect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET /al/a.txt HTTP/1.1\r\nHost: red.example\r\n\r\nGET /x/y HTTP/1.1\r\n"
        b"Host: red.example\r\nConnection: close\r\n\r\n",
        b"GET /listed/ HTTP/1.0\r\n\r\nGET /server-status?auto HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /%2e%2e/secret.txt HTTP/1.1\r\nHost: ../outside\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: fuzz\r\n\r\n",
    ]
    seeds = [bytes([flags]) + stream for stream in streams for flags in (0, 1, 2, 0x26)]
    rng = random.Random(7)
    seeds += [bytes([0x08 | rng.randrange(256) & ~0x08]) + rng.randbytes(64)
              for _ in range(64)]
    return seeds


def config_seeds() -> list[bytes]:
    """The shipped configs, the broken-config corpus of the tests, and some odd ones."""
    files = [REPO / "conf" / "pylighttpd.conf", *sorted((REPO / "conf").glob("*.conf")),
             *sorted((REPO / "conf" / "conf-available").glob("*.conf"))]
    seeds = [path.read_bytes() for path in files]
    seeds += [text.encode() for text in _broken_config_corpus()]
    seeds += [
        b'server.document-root = "/tmp"\nx = 1 + 2\ny = "a" + x\narr = ("a" => 1, 2)\n'
        b'arr += ("b" => (3, 4))\n$HTTP["host"] =~ "^(a)\\.b$" { server.tag = "%1" }\n'
        b'else $HTTP["url"] =^ "/x" { z := 1 } else { }\n',
        b'server.document-root = "/tmp"\ninclude "conf/conf-available/*.conf"\n'
        b'include_shell "echo server.tag = 1"\nglobal { q = env.HOME }\n',
        b'server.document-root = "/tmp"\n$SERVER["socket"] == "127.0.0.1:8080" {\n'
        b'  $HTTP["remoteip"] == "10.0.0.0/8" { url.access-deny = ("") }\n}\n',
    ]
    return seeds


def _broken_config_corpus() -> list[str]:
    sys.path.insert(0, str(REPO / "tests" / "config"))
    try:
        from test_broken_configs import CASES
    except ImportError:        # pytest is not installed: the shipped configs suffice
        return []
    return [text for case in CASES.values() for text in case.files.values()]


HTTP_TOKENS = [b"GET", b"HEAD", b"POST", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b"\r\n\r\n",
               b"Host: ", b"Range: bytes=", b"Content-Length: ", b"Transfer-Encoding: chunked",
               b"Expect: 100-continue", b"Connection: close", b"If-None-Match: ",
               b"If-Modified-Since: ", b"If-Range: ", b"%2e%2e/", b"../", b"/index.html",
               b"/big.bin", b"/listed/", b"/al/", b"0\r\n\r\n", b"\"", b"*"]
CONFIG_TOKENS = [b"server.document-root", b"server.modules", b"include", b"include_shell",
                 b"$HTTP[\"host\"]", b"$HTTP[\"url\"]", b"$SERVER[\"socket\"]", b"=~", b"!~",
                 b"=^", b"=$", b"==", b"!=", b"+=", b":=", b"=>", b"else", b"elseif",
                 b"global", b"var.", b"env.", b"(", b")", b"{", b"}", b"\"", b"%1", b"$1",
                 b"\"mod_", b"enable", b"disable", b"1", b"\\\""]


# ------------------------------------------------------------------ running
def write_corpus(directory: Path, seeds: list[bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for number, seed in enumerate(seeds):
        (directory / f"seed-{number:04}").write_bytes(seed[:MAX_INPUT])


def write_dictionary(path: Path, tokens: list[bytes]) -> None:
    path.write_text("".join('"' + "".join(f"\\x{b:02x}" for b in token) + '"\n'
                            for token in tokens))


def make_target(name: str, base: Path) -> "RequestTarget | ConfigTarget":
    return RequestTarget(base) if name == "request" else ConfigTarget(base)


def project_functions() -> list[types.FunctionType]:
    """The server's own functions, loaded by now: coverage is measured in them only
    (instrumenting the standard library too takes ten times longer, for nothing)."""
    return [obj for obj in gc.get_objects() if isinstance(obj, types.FunctionType)
            and str(obj.__module__).partition(".")[0] in PROJECT_PACKAGES]


def tolerating(one_input: Callable[[bytes], None], ignore: str | None
               ) -> Callable[[bytes], None]:
    """`one_input`, with the findings whose message matches `ignore` (a known bug being
    fixed) noted once and let pass, so that a long run can look for others."""
    if not ignore:
        return one_input
    pattern, noted = re.compile(ignore), set()

    def run(data: bytes) -> None:
        try:
            one_input(data)
        except Finding as finding:
            if not pattern.search(str(finding)):
                raise
            if pattern.pattern not in noted:
                noted.add(pattern.pattern)
                print(f"ignored (--ignore): {str(finding)[:200]}", file=sys.stderr)
    return run


def run_atheris(target, name: str, work: Path, args: argparse.Namespace) -> None:
    import atheris

    corpus = work / "corpus"
    write_corpus(corpus, request_seeds() if name == "request" else config_seeds())
    dictionary = work / "tokens.dict"
    write_dictionary(dictionary, HTTP_TOKENS if name == "request" else CONFIG_TOKENS)
    limits = [f"-max_total_time={int(args.minutes * 60)}"] if args.minutes else []
    limits += [f"-runs={args.runs}"] if args.runs else []
    argv = [sys.argv[0], *limits, f"-max_len={MAX_INPUT}", f"-timeout={args.timeout}",
            "-rss_limit_mb=4096", f"-dict={dictionary}", f"-artifact_prefix={work}/",
            "-print_final_stats=1", f"-seed={args.seed}", str(corpus)]
    print(f"fuzzing {name}: {' '.join(argv[1:])}", flush=True)
    for function in project_functions():
        atheris.instrument_func(function)
    atheris.Setup(argv, tolerating(target.one_input, args.ignore))
    atheris.Fuzz()


def replay(target, files: list[str]) -> int:
    for path in files:
        data = Path(path).read_bytes()
        try:
            target.one_input(data)
        except Exception as err:  # noqa: BLE001 - a finding is reported, whatever it is
            print(f"{path}: {type(err).__name__}: {err}")
            return 1
        print(f"{path}: passes")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("request", "config"), required=True)
    parser.add_argument("--minutes", type=float, default=0, help="stop after this long")
    parser.add_argument("--runs", type=int, default=0, help="stop after this many inputs")
    parser.add_argument("--timeout", type=int, default=20,
                        help="seconds one input may take before it counts as a hang")
    parser.add_argument("--seed", type=int, default=0, help="libFuzzer's; 0 picks one")
    parser.add_argument("--ignore", metavar="REGEX",
                        help="let findings whose message matches pass (a known bug)")
    parser.add_argument("--workdir", help="corpus and findings (default: a temporary dir)")
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="re-run these inputs")
    args = parser.parse_args(argv)
    if not args.replay and not args.minutes and not args.runs:
        parser.error("say how long: --minutes or --runs")
    work = Path(args.workdir or tempfile.mkdtemp(prefix=f"fuzz-{args.target}-")).resolve()
    site = work / "site"      # atheris ends the process itself: nothing is left elsewhere
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    target = make_target(args.target, site)
    if args.replay:
        return replay(target, args.replay)
    run_atheris(target, args.target, work, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
