"""Logs: lighttpd's error-log line format, to a file, a pipe, stderr or syslog; reopened
on USR1.

A `LogFile` is one output: a path opened O_APPEND (so lines written by several workers
never interleave: each line is one write()), or `|command`, a logger program reading
our lines on its stdin.  Every LogFile registers itself, so `reopen_all()` (the USR1
handler of master and worker) cycles them all after logrotate moved the files away.

Messages are formatted only when written, and callers pass a finished string only on
error or debug paths, so the request hot path never pays for logging it does not do.
"""

from __future__ import annotations

import errno
import os
import subprocess
import syslog
import time
import weakref
from typing import Iterable

IDENT = "pylighttpd"
_FACILITIES = {"daemon", "user", "local0", "local1", "local2", "local3", "local4",
               "local5", "local6", "local7", "auth", "authpriv", "cron", "ftp", "kern",
               "lpr", "mail", "news", "syslog", "uucp"}
_syslog_open = False
_open_files: "weakref.WeakSet[LogFile]" = weakref.WeakSet()


def open_syslog(facility: str = "daemon") -> None:
    """openlog() once per process (the error log and access logs share it)."""
    global _syslog_open
    if _syslog_open:
        return
    name = facility.lower() if facility.lower() in _FACILITIES else "daemon"
    syslog.openlog(IDENT, syslog.LOG_PID, getattr(syslog, f"LOG_{name.upper()}"))
    _syslog_open = True


BUFFER_BYTES = 8192        # a buffered log writes once it holds this much


class LogFile:
    """One log destination: `path` appended to, or `|command` piped to (the command is
    started by the process that opens the LogFile; its children share the pipe)."""

    def __init__(self, target: str, buffered: bool = False) -> None:
        self.target = target
        self.piped = target.startswith("|")
        self.fd = -1
        # buffered (access logs, as lighttpd's): lines wait for BUFFER_BYTES or flush(),
        # which the owner calls about once a second; reopen and close flush first.  A
        # compiled writer may append to `pending` itself and flush at BUFFER_BYTES
        # (mod_accesslog's LineBuffer): flush() empties this very list, never a new one
        self.buffered = buffered
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.process: subprocess.Popen | None = None
        self.owner = os.getpid()       # a forked child leaves the parent's pipes alone
        self.open()
        _open_files.add(self)

    def open(self) -> None:
        """Open the file or start the logger; raises OSError."""
        if self.piped:
            # not close_fds=False: the logger must not hold our listeners or clients
            self.process = subprocess.Popen(["/bin/sh", "-c", self.target[1:]],
                                            stdin=subprocess.PIPE, close_fds=True)
            assert self.process.stdin is not None
            self.fd = os.dup(self.process.stdin.fileno())
            os.set_inheritable(self.fd, False)
            self.process.stdin.close()
        else:
            self.fd = os.open(self.target,
                              os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def reopen(self) -> None:
        """Cycle a file (logrotate); a pipe stays as it is.  On failure the old file
        stays in use and the error is logged."""
        self.flush()                     # what was logged before goes to the old file
        if self.piped:
            return
        try:
            new_fd = os.open(self.target,
                             os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            error("mod_accesslog.c", f"cycling log {self.target} failed: {err.strerror}")
            return
        old, self.fd = self.fd, new_fd
        if old >= 0:
            os.close(old)

    def write(self, data: bytes) -> None:
        """Whole lines: written at once, or kept until the buffer is full."""
        if not self.buffered:
            self._write_now(data)
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            self.pending_size = 0
            self._write_now(data)

    def _write_now(self, data: bytes) -> None:
        """One write() of whole lines (atomic with O_APPEND); a dead pipe logger is
        started again once."""
        try:
            written = os.write(self.fd, data)
            if written < len(data):
                self._write_rest(memoryview(data)[written:])
        except OSError as err:
            if self.piped and err.errno == errno.EPIPE:
                self._restart_logger(data)
            else:
                error("mod_accesslog.c", f"error flushing log {self.target}: {err.strerror}")

    def _write_rest(self, view: memoryview) -> None:
        while view:
            view = view[os.write(self.fd, view):]

    def _restart_logger(self, data: bytes) -> None:
        self.close()
        try:
            self.open()
            os.write(self.fd, data)
        except OSError as err:
            error("mod_accesslog.c", f"error flushing log {self.target}: {err.strerror}")

    def close(self) -> None:
        if self.fd >= 0:
            self.flush()
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        if self.process is not None:
            try:
                self.process.wait(timeout=0 if self.process.poll() is not None else 2)
            except subprocess.TimeoutExpired:
                pass
            self.process = None


class BreakageLogs:
    """server.breakagelog: where CGI scripts, SSI exec commands and spawned backends
    write their stderr, as lighttpd hands it to them.  The master opens a config's
    targets before its workers start (as root, before they drop privileges) and
    holds each for the generations that name it; workers inherit them through fork;
    a worker started alone opens a target when first asked for it."""

    def __init__(self) -> None:
        self.files: dict[str, LogFile] = {}
        self.holders: dict[str, set[int]] = {}

    def fd(self, target: str) -> int:
        """The open fd of `target` (raises OSError if it cannot be opened)."""
        logfile = self.files.get(target)
        if logfile is None:
            logfile = self.files[target] = LogFile(target)
        return logfile.fd

    def hold(self, holder: int, target: str) -> None:
        """Open `target` (if it is not yet) for `holder`, a generation; raises
        OSError."""
        self.fd(target)
        self.holders.setdefault(target, set()).add(holder)

    def release(self, holder: int) -> None:
        """Close the targets no holder is left for."""
        for target in list(self.files):
            holders = self.holders.get(target, set())
            holders.discard(holder)
            if not holders:
                self.holders.pop(target, None)
                self.files.pop(target).close()


BREAKAGE = BreakageLogs()


def reopen_all() -> None:
    """USR1: reopen the error log and every access log this process has open."""
    for logfile in list(_open_files):
        logfile.reopen()


def close_all() -> None:
    """At exit: close the files and pipes this process opened, so that its piped
    loggers see EOF and finish."""
    pid = os.getpid()
    for logfile in list(_open_files):
        if logfile.owner == pid:
            logfile.close()


class ErrorLog:
    """`YYYY-MM-DD HH:MM:SS: (source) message` lines, one write() each (atomic append)."""

    def __init__(self, path: str = "", use_syslog: bool = False,
                 facility: str = "daemon") -> None:
        self.path = path
        self.use_syslog = use_syslog
        self._file: LogFile | None = None
        self._stamp_second = -1
        self._stamp = ""
        if use_syslog:
            open_syslog(facility)
        elif path:
            self._file = LogFile(path)

    def reopen(self) -> None:
        """Open (again) the log file: after logrotate moved it away, on SIGUSR1."""
        if self._file is not None:
            self._file.reopen()

    def matches(self, path: str, use_syslog: bool) -> bool:
        return self.path == path and self.use_syslog == use_syslog

    def write(self, source: str, message: str) -> None:
        if self.use_syslog:
            syslog.syslog(syslog.LOG_ERR, f"({source}) {message}")
            return
        self._write(f"{self._timestamp()}: ({source}) {message}\n")

    def write_lines(self, source: str, lines: Iterable[str]) -> None:
        """Several lines with one source, in one write (debug dumps of headers)."""
        if self.use_syslog:
            for line in lines:
                syslog.syslog(syslog.LOG_DEBUG, f"({source}) {line}")
            return
        prefix = f"{self._timestamp()}: ({source}) "
        self._write("".join(f"{prefix}{line}\n" for line in lines))

    def _timestamp(self) -> str:
        now = int(time.time())
        if now != self._stamp_second:
            self._stamp_second = now
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        return self._stamp

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape")
        fd = self.fileno()
        try:
            os.write(fd, data)
        except OSError:
            if fd != 2:
                os.write(2, data)

    def fileno(self) -> int:
        return self._file.fd if self._file is not None and self._file.fd >= 0 else 2


_default = ErrorLog()


def set_default(log: ErrorLog) -> None:
    global _default
    _default = log


def default() -> ErrorLog:
    return _default


def ensure_default(path: str, use_syslog: bool, facility: str = "daemon") -> ErrorLog:
    """The process's error log as `server.errorlog` says: a worker forked by the master
    keeps the log it inherited; a worker started alone opens its own."""
    if not _default.matches(path, use_syslog):
        set_default(ErrorLog(path, use_syslog, facility=facility))
    return _default


def error(source: str, message: str) -> None:
    """Write one line to the process's error log."""
    _default.write(source, message)


def lines(source: str, texts: Iterable[str]) -> None:
    """Write several lines with one source to the process's error log, in one write."""
    _default.write_lines(source, texts)


# ------------------------------------------------------------------ escaping
def _bs_table() -> list[str]:
    table = [chr(c) for c in range(256)]
    for c in list(range(0, 0x20)) + list(range(0x7f, 0x100)):
        table[c] = f"\\x{c:02X}"
    for c, text in ((0x22, '\\"'), (0x5c, "\\\\"), (0x08, "\\b"), (0x0a, "\\n"),
                    (0x0d, "\\r"), (0x09, "\\t"), (0x0b, "\\v")):
        table[c] = text
    return table


def _json_table() -> list[str]:
    table = [chr(c) for c in range(256)]
    for c in list(range(0, 0x20)) + [0x7f]:
        table[c] = f"\\u{c:04x}"
    for c, text in ((0x22, '\\"'), (0x5c, "\\\\"), (0x08, "\\b"), (0x0c, "\\f"),
                    (0x0a, "\\n"), (0x0d, "\\r"), (0x09, "\\t")):
        table[c] = text
    return table


_BS = _bs_table()
_JSON = _json_table()
PLAIN = frozenset(range(0x20, 0x7f)) - {0x22, 0x5c}


def _is_plain(text: str) -> bool:
    """Printable ASCII without `"` or `\\`: what every escaping leaves as it is (the
    common case, checked in C rather than byte by byte)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def escape_bs(text: str) -> str:
    """lighttpd's buffer_append_bs_escaped: printable ASCII stays, `"` and `\\` get a
    backslash, \\b \\n \\r \\t \\v their C names, every other byte \\xHH."""
    if _is_plain(text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    return "".join([_BS[byte] for byte in data])


def escape_json(text: str) -> str:
    """accesslog.escaping = "json": JSON string escapes; bytes >= 0x80 (UTF-8) stay."""
    if _is_plain(text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    if all(byte in PLAIN or byte >= 0x80 for byte in data):
        return text
    return "".join([_JSON[byte] if byte < 0x80 else chr(byte) for byte in data]
                   ).encode("latin-1").decode("utf-8", "surrogateescape")


def escape_c(text: str) -> str:
    """lighttpd's buffer_append_string_c_escaped (headers in debug dumps): control and
    non-ASCII bytes become \\xHH, \\t \\r \\n their C names."""
    data = text.encode("utf-8", "surrogateescape")
    if all(0x20 <= byte < 0x7f for byte in data):
        return text
    out = []
    for byte in data:
        if 0x20 <= byte < 0x7f:
            out.append(chr(byte))
        elif byte in (0x09, 0x0a, 0x0d):
            out.append({0x09: "\\t", 0x0a: "\\n", 0x0d: "\\r"}[byte])
        else:
            out.append(f"\\x{byte:02X}")
    return "".join(out)
