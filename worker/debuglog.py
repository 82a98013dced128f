"""The `debug.log-*` lines, as lighttpd 1.4.69 writes them to the error log.

Only called when a flag is on: the connection checks one boolean per request
(`Server.debug`, true when any debug flag is set anywhere in the config), so a server
without debug flags formats nothing.  Sources name lighttpd's own file and line, so
that the lines can be compared with lighttpd's (and grepped the same way).
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from shared import log
from shared.config.compiled import evaluate

if TYPE_CHECKING:
    from shared.config.tree import Block, ConfigTree

    from .connection import Connection
    from .request import Request

FLAGS = ("debug.log-request-header", "debug.log-response-header",
         "debug.log-request-handling", "debug.log-file-not-found",
         "debug.log-timeouts", "debug.log-request-header-on-error",
         "debug.log-condition-handling", "debug.log-state-handling")

# our BadRequest reasons -> lighttpd's words
_REASONS = {
    "HTTP/1.1 without Host": "HTTP/1.1 but Host missing",
    "bad Host": "Invalid Hostname",
    "Host and absolute URI disagree": "Invalid Hostname",
    "control character in the URL": "invalid character in URI",
    "%00 in the URL": "invalid character in URI",
}


def any_flag(compiled: object, flags: tuple[str, ...] = FLAGS) -> bool:
    """True when one of `flags` is on in the global block or a conditional one."""
    blocks = [getattr(compiled, "globals", {})]
    blocks += [block.settings for block in getattr(compiled, "blocks", ())]
    return any(settings.get(flag) for settings in blocks for flag in flags)


def request_head_lines(request: "Request") -> list[str]:
    """The request line and headers as received (names as the client wrote them)."""
    lines = [f"{request.method} {request.target} HTTP/{request.version}"]
    lines.extend(f"{name}: {value}" for name, value in request.header_list)
    lines.append("")
    return lines


def request_header(request: "Request", fd: int) -> None:
    log.lines("connections.c.770", (f"fd:{fd} rqst: {line}"
                                    for line in request_head_lines(request)))


def request_header_on_error(request: "Request", status: int, reason: str) -> None:
    reason = _REASONS.get(reason, reason) if reason else "invalid request"
    log.error("request.c.317", f"{reason} -> {status}")
    if request.target:
        log.lines("request.c.1344", (f"rqst: {log.escape_c(line)}"
                                     for line in request_head_lines(request)))


def response_header(head: bytes, fd: int) -> None:
    text = head.decode("latin-1")
    lines = text.split("\r\n")[:-1]     # the head ends with an empty line
    log.lines("response.c.179", (f"fd:{fd} resp: {line}" for line in lines))


def request_handling(request: "Request", status: int) -> None:
    """The three blocks of http_response_prepare, rebuilt from the finished request."""
    if not request.target:
        return
    pathinfo = request.pathinfo
    clean = request.uri_path     # as cleaned, before PATH_INFO was split off
    if pathinfo and not clean.endswith(pathinfo):
        clean += pathinfo
    lines = [
        ("response.c.420", "-- parsed Request-URI"),
        ("response.c.422", f"Request-URI     : {request.target}"),
        ("response.c.424", f"URI-scheme      : {request.scheme}"),
        ("response.c.426", f"URI-authority   : {request.host}"),
        ("response.c.428", f"URI-path (clean): {clean}"),
        ("response.c.430", f"URI-query       : {request.uri_query}"),
    ]
    if request.physical_path:
        lines += [
            ("response.c.509", "-- logical -> physical"),
            ("response.c.511", f"Doc-Root     : {request.docroot}"),
            ("response.c.513", f"Basedir      : {request.physical_basedir}"),
            ("response.c.515", f"Rel-Path     : {request.physical_rel}{pathinfo}"),
            ("response.c.517", f"Path         : {request.physical_path}{pathinfo}"),
        ]
        if status == 404:
            lines += _not_found_lines(request)
        elif status < 300 or status == 304:
            uri = request.uri_path
            if pathinfo and uri.endswith(pathinfo):
                uri = uri[: len(uri) - len(pathinfo)]
            lines += [
                ("response.c.536", "-- handling subrequest"),
                ("response.c.538", f"Path         : {request.physical_path}"),
                ("response.c.540", f"URI          : {uri}"),
                ("response.c.542", f"Pathinfo     : {pathinfo}"),
            ]
    for source, text in lines:
        log.error(source, text)


def _not_found_lines(request: "Request") -> list[tuple[str, str]]:
    return [("response.c.203", f"-- : {os.strerror(errno.ENOENT)}"),
            ("response.c.206", f"Path         : {request.physical_path}"),
            ("response.c.208", f"URI          : {request.uri_path}")]


def file_not_found(request: "Request", status: int, handling: bool) -> None:
    """debug.log-file-not-found; with log-request-handling the 404 lines are already
    written."""
    if status == 404 and request.physical_path and not handling:
        for source, text in _not_found_lines(request):
            log.error(source, text)
    elif status == 403 and request.physical_path.endswith("/"):
        log.error("http-header-glue.c.356",
                  f"not a regular file: {request.uri_path} -> {request.physical_path}")


def timeout(what: str, fd: int) -> None:
    """debug.log-request-handling: an idle connection closed (connections.c)."""
    line = "1456" if what == "keep-alive" else "1445"
    log.error(f"connections.c.{line}", f"connection closed - {what} timeout: {fd}")


def write_timeout(remote_ip: str, target: str, sent: int, idle: int) -> None:
    """debug.log-timeouts: a client that stopped reading our answer."""
    log.error("connections.c.1484",
              f"NOTE: a request from {remote_ip} for {target} timed out after writing "
              f"{sent} bytes. We waited {idle} seconds. If this is a problem, increase "
              "server.max-write-idle")


def read_timeout(fd: int) -> None:
    """debug.log-timeouts: a request body that stopped coming."""
    log.error("connections.c.1438", f"request aborted - read timeout: {fd}")


# ------------------------------------------------------------ condition handling
def condition_handling(tree: "ConfigTree", request: "Request") -> None:
    """debug.log-condition-handling: each conditional block checked for the request,
    in file order, with lighttpd's lines (configfile-glue.c): the parent and the
    earlier branch it depends on, the value compared and the result."""
    results: dict[int, str] = {}
    for block in tree.blocks[1:]:
        log.error("configfile-glue.c.596", "=== start of condition block ===")
        results[block.index] = _checked(block, request, results)
        _result(block, results, "uncached")


def _result(block: "Block", results: dict[int, str], how: str) -> None:
    log.error("configfile-glue.c.384", f"{block.index} ({how}) result: "
                                       f"{results[block.index]} (cond: {block.description()})")


def _checked(block: "Block", request: "Request", results: dict[int, str]) -> str:
    """true, false, or skipped (its parent did not hold, or an earlier branch did)."""
    parent = block.parent
    if parent is not None and parent.parent is not None:
        log.error("configfile-glue.c.418", f"go parent {parent.description()}")
        _result(parent, results, "cached")
        if results[parent.index] != "true":
            return "skipped"
    previous = block.previous
    if previous is not None:
        log.error("configfile-glue.c.441", f"go prev {previous.description()}")
        _result(previous, results, "cached")
        if results[previous.index] != "false":
            return "skipped"
    condition = block.condition
    if condition is None:                  # a plain else
        return "true"
    value = request.condition_value(condition.field)
    log.error("configfile-glue.c.527", f"{condition.text()} compare to {value}")
    return "true" if evaluate(condition, value)[0] else "false"


# ---------------------------------------------------------------- state handling
# our connection states (worker/connection.py ConnState) in lighttpd's words
_STATE_WORDS = ("req-start", "read", "handle-req", "write", "handle-req", "close", "close")


class StateLog:
    """debug.log-state-handling: the loop's handler for a connection in its place,
    writing the connection's state around each event as lighttpd writes its state
    machine's (`fd:N id:0 state:S`, then ` at loop exit`).  Only a server with the
    flag on puts one in the loop: nothing is checked per event otherwise.  The
    shutdown and the close (which may come between events, once a held answer has
    gone out) are written where they happen: `shutdown`, `closed`."""

    __slots__ = ("connection",)

    def __init__(self, connection: "Connection") -> None:
        self.connection = connection

    def on_event(self, events: int) -> None:
        connection = self.connection
        fd, before = connection.fd, _STATE_WORDS[connection.state]
        _state(fd, before, "")
        connection.on_event(events)
        if connection.closed:
            return
        after = _STATE_WORDS[connection.state]
        if after != before and after != "close":      # `shutdown` wrote that one
            _state(fd, after, "")
        _state(fd, after, " at loop exit")


def _state(fd: int, word: str, tag: str) -> None:
    log.error("connections.c.956", f"fd:{fd} id:0 state:{word}{tag}")


def shutdown(fd: int) -> None:
    """debug.log-state-handling: the connection half-closed after its last answer."""
    log.error("connections.c.170", f"shutdown for fd {fd}")
    _state(fd, "close", "")


def closed(connection: "Connection") -> None:
    """debug.log-state-handling: a connection_close hook of the server."""
    log.error("connections.c.106", f"connection closed for fd {connection.fd}")
