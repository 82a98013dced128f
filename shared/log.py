"""The error log: lighttpd's line format, to a file, stderr or syslog; reopened on USR1.

Messages are formatted only when written, and callers pass a finished string only on
error paths, so the request hot path never pays for logging it does not do.
"""

from __future__ import annotations

import os
import syslog
import time


class ErrorLog:
    """`YYYY-MM-DD HH:MM:SS: (source) message` lines, one write() each (atomic append)."""

    def __init__(self, path: str = "", use_syslog: bool = False, ident: str = "pylighttpd",
                 facility: str = "daemon") -> None:
        self.path = path
        self.use_syslog = use_syslog
        self._fd = 2
        if use_syslog:
            syslog.openlog(ident, syslog.LOG_PID,
                           getattr(syslog, f"LOG_{facility.upper()}", syslog.LOG_DAEMON))
        self.reopen()

    def reopen(self) -> None:
        """Open (again) the log file: after logrotate moved it away, on SIGUSR1."""
        if not self.path or self.use_syslog:
            return
        new_fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o640)
        old_fd, self._fd = self._fd, new_fd
        if old_fd != 2:
            os.close(old_fd)

    def write(self, source: str, message: str) -> None:
        if self.use_syslog:
            syslog.syslog(syslog.LOG_ERR, f"({source}) {message}")
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        line = f"{stamp}: ({source}) {message}\n".encode("utf-8", "surrogateescape")
        try:
            os.write(self._fd, line)
        except OSError:
            if self._fd != 2:
                os.write(2, line)

    def fileno(self) -> int:
        return self._fd


_default = ErrorLog()


def set_default(log: ErrorLog) -> None:
    global _default
    _default = log


def error(source: str, message: str) -> None:
    """Write one line to the process's error log."""
    _default.write(source, message)

