"""mod_cgi: run CGI/1.1 scripts (RFC 3875) for files named in `cgi.assign`, as
lighttpd 1.4.69 does.

A script is a child of the worker in a session of its own (so a signal reaches
everything it started), working in its own directory, with the request's CGI
environment (worker/gateway.py).  Its stdin is the request body: a body complete in a
temp file is that file itself (`server.stream-request-body` 0, the default, for large
bodies); any other is written into a non-blocking pipe as the script takes it and as
the body arrives (with 1 or 2 the script starts when the request's head is in, and
no more of the body is taken while the pipe is full: with 2 the client then waits).
A chunked body still arriving has no CONTENT_LENGTH to give: 411, as lighttpd.
Its stdout and stderr are non-blocking pipes in the worker's loop: stdout is read
for the CGI head, then its body goes to the client as `server.stream-response-body`
says (by default kept whole and sent with its length, as lighttpd does; with 2,
streamed, and the pipe left unread while the client lags: the answer's backlog above
BACKLOG_HIGH); each stderr line goes to the error log.  The script's exit is seen
through its pidfd (Services.watch_child), never by blocking.

When its request is over (answered, redirected, or its client gone) a script still
running gets SIGTERM, as in lighttpd, and SIGKILL KILL_GRACE seconds later if it is
still there.  `cgi.limits` read-timeout / write-timeout end a script that sends
nothing / takes nothing for that long: 504 if no head went out yet (lighttpd's
answer), else ERROR: the connection closes on a truncated answer.

`cgi.upgrade`: an HTTP/1.1 request without a body asking to switch protocols (Upgrade
and Connection: upgrade) reaches the script with HTTP_UPGRADE and HTTP_CONNECTION, and
its stdin is a pipe left open until the script's head.  Any other comes without
HTTP_UPGRADE: lighttpd drops it with cgi.upgrade off or from HTTP/1.0 (its core even
refuses those with 400); it keeps it for a request with a body or without Connection:
upgrade, which the core here cannot switch, so they lose it too.  A head with Status: 101 and an Upgrade header switches:
it goes out at once with Connection: upgrade, then the script's stdout is relayed to the
client as it comes and the client's bytes (the request's body from now on, what it
sent right after its request first) to its stdin, each way with backpressure (stdout
left unread while the client lags; the client unread while the pipe is full).  The
client's end closes the script's stdin; the script's end of stdout ends the tunnel.
Any other head closes the stdin pipe (the request had no body); a 101 that switches
nothing is its head alone, as lighttpd answers it.  lighttpd's own tunnel ends at the
client's FIN (the script is signalled, its last output lost); here the half-close is
passed on, so that the script may still answer.

`cgi.limits` "tcp-fin-propagate": the signal sent to the script when its client ends
its side of a tunnel.  lighttpd also signals a script whose client half-closes after
sending an ordinary request; the core does not tell a module of that (it answers
what is complete, then closes), so there the limit does nothing.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from shared.config.directives import Directive, DirectiveValueError, Type
from shared.config.values import Array

from ..gateway import (XSENDFILE_CGI, AnswerBody, HeadReader, ResponseHead,
                       abandon_answer, asks_to_upgrade, cgi_environment,
                       local_redirect_target, redirect_locally, request_body_length,
                       sendfile_docroots, sendfile_header, switch_protocols,
                       unswitched_answer, x_sendfile)
from ..module import WAIT, HandlerResult, Module as BaseModule
from ..request import Request
from ..static import is_regular

if TYPE_CHECKING:
    from ..services import Services

READ_SIZE = 64 * 1024
READS_PER_WAKE = 4          # bounds what one wake adds to an answer (and the loop's turn)
KILL_GRACE = 3.0            # seconds between SIGTERM and SIGKILL
_STATE = "mod_cgi"          # request.plugin_ctx key of the script answering it
_AWAITING = "mod_cgi.awaiting"   # ... of the interpreter of one waiting for its body
_INHERITED = ("LD_PRELOAD", "LD_LIBRARY_PATH")   # passed on from the worker, as lighttpd
_CONTROL = {c: f"\\x{c:02X}" for c in (*range(0x20), 0x7F) if c != 0x09}


@dataclass(frozen=True)
class Limits:
    """cgi.limits: seconds without output / without taking input (0 = no limit), and
    the signal for a client's TCP FIN (0 = none)."""

    read_timeout: int = 0
    write_timeout: int = 0
    fin_signal: int = 0


def _seconds(key: str, value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise DirectiveValueError(f'cgi.limits "{key}" must be a number of seconds')
    return value


def _fin_signal(value: object) -> int:
    """A signal number, or a name with or without SIG; lighttpd's default is TERM."""
    if isinstance(value, int):
        return value
    text = str(value).strip().upper()
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else "SIG" + text
    return int(getattr(signal.Signals, name, signal.SIGTERM))


def _limits(value: Array) -> Limits:
    read = write = fin = 0
    for key, item in value:
        name = (key or "").lower()
        if name == "read-timeout":
            read = _seconds(name, item)
        elif name == "write-timeout":
            write = _seconds(name, item)
        elif name == "tcp-fin-propagate":
            fin = _fin_signal(item)
        else:
            raise DirectiveValueError(f"unrecognized cgi.limits param: {key}")
    return Limits(read, write, fin)


def _docroots(paths: tuple[str, ...]) -> tuple[str, ...]:
    return sendfile_docroots(paths, "cgi.x-sendfile-docroot")


DIRECTIVES = (
    Directive("cgi.assign", Type.ARRAY_KVSTRING, (),
              doc='file suffix => interpreter ("" runs the file itself)'),
    Directive("cgi.execute-x-only", Type.BOOL, False),
    Directive("cgi.x-sendfile", Type.BOOL, False),
    Directive("cgi.x-sendfile-docroot", Type.ARRAY_VLIST, (), convert=_docroots),
    Directive("cgi.local-redir", Type.BOOL, False),
    Directive("cgi.upgrade", Type.BOOL, False),
    Directive("cgi.limits", Type.ARRAY_KVANY, Limits(), convert=_limits),
)


def _interpreter(assign: tuple[tuple[str, str], ...], path: str) -> str | None:
    """The interpreter of the first suffix `path` ends with (case matters)."""
    for suffix, interpreter in assign:
        if path.endswith(suffix):
            return interpreter
    return None


class _Watch:
    """What the loop calls for one of a script's fds (made when the fd is registered and
    held by the loop alone: kept on the script, its bound method would be a cycle)."""

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[int], None]) -> None:
        self.callback = callback

    def on_event(self, mask: int) -> None:
        self.callback(mask)


class Module(BaseModule):
    name = "cgi"
    directives = DIRECTIVES
    reads_request_body = True
    # A request this module leaves alone is decided by its settings and its file
    # alone; one it answers is never kept (its replay_key is dropped).
    replay_safe = True

    def __init__(self, config: Any, services: "Services | None" = None) -> None:
        super().__init__(config, services)
        self.running: set[_Script] = set()       # scripts answering a request now
        self.inherited = {name: os.environ[name] for name in _INHERITED
                          if name in os.environ}

    def handle_subrequest_start(self, request: Request) -> HandlerResult:
        values = request.settings.values
        assign = values["cgi.assign"]
        if not assign:
            return None
        interpreter = _interpreter(assign, request.physical_path)
        if interpreter is None:
            return None
        try:
            st = request.physical_stat()
        except OSError:
            return None
        if not is_regular(st) or (values["cgi.execute-x-only"] and not st.st_mode & 0o111):
            return None
        if request.waits_for_body():
            request.plugin_ctx[_AWAITING] = interpreter
            return WAIT
        return self._run(request, interpreter)

    def handle_subrequest(self, request: Request) -> HandlerResult:
        script = request.plugin_ctx.get(_STATE)
        if script is None:
            return self._run_awaited(request)
        result = script.resume()
        if result != WAIT and request.body is not None and not request.body.complete:
            request.keep_alive = False     # answered before all of its body came, as
        return result                      # lighttpd: the rest is dropped, not kept

    def handle_request_reset(self, request: Request) -> None:
        self.release(request)

    def handle_trigger(self, now: float) -> None:
        for script in list(self.running):
            script.check_timeouts(now)

    def _run_awaited(self, request: Request) -> HandlerResult:
        """The script of a request that waited for its whole body, once it is in."""
        if request.waits_for_body():
            return WAIT
        interpreter = request.plugin_ctx.pop(_AWAITING, None)
        return 500 if interpreter is None else self._run(request, interpreter)

    def release(self, request: Request) -> None:
        """The request no longer needs its script (answered, redirected, aborted)."""
        request.plugin_ctx.pop(_AWAITING, None)
        script = request.plugin_ctx.pop(_STATE, None)
        if script is not None:
            self.running.discard(script)
            script.end()

    def _run(self, request: Request, interpreter: str) -> HandlerResult:
        if request_body_length(request) < 0:
            request.keep_alive = False      # the rest of its body is never read
            return 411
        argv = [os.path.abspath(request.physical_path)]
        if interpreter:
            try:
                self.services.stat_cache.stat(interpreter)
            except OSError as err:
                self.services.log_error("mod_cgi.c", f"stat for cgi-handler {interpreter}: "
                                                     f"{err.strerror}")
                return 500
            argv.insert(0, os.path.abspath(interpreter))
        request.replay_key = None           # a script's answer is never kept
        upgrade = request.settings.values["cgi.upgrade"] and asks_to_upgrade(request)
        script = _Script(self, request, upgrade)
        try:
            script.start(argv, self._environment(request, upgrade))
        except (OSError, subprocess.SubprocessError) as err:
            self.services.log_error("mod_cgi.c", f"cannot run {argv[0]} for "
                                                 f"{request.physical_path}: {err}")
            script.end()
            return 500
        request.plugin_ctx[_STATE] = script
        self.running.add(script)
        return WAIT

    def _environment(self, request: Request, upgrade: bool) -> dict[str, str]:
        """The script's variables; HTTP_UPGRADE only when it may switch protocols."""
        env = cgi_environment(request)
        if not upgrade:
            env.pop("HTTP_UPGRADE", None)
        env.update(self.inherited)
        return env


class _Script:
    """One running script and the request it answers."""

    __slots__ = ("module", "services", "request", "path", "limits", "local_redir",
                 "xsendfile", "docroots", "reader", "body", "process", "pid", "out_fd",
                 "err_fd", "stdin", "polling", "read_ts", "timed_out",
                 "exited", "signal_sent", "kill_timer", "errors", "upgrade", "tunnel")

    def __init__(self, module: Module, request: Request, upgrade: bool) -> None:
        values = request.settings.values
        self.module = module
        self.services = module.services
        self.request = request
        self.path = request.physical_path
        self.limits: Limits = values["cgi.limits"]
        self.local_redir = values["cgi.local-redir"]
        self.xsendfile = values["cgi.x-sendfile"]
        self.docroots = values["cgi.x-sendfile-docroot"]
        self.reader = HeadReader(interim=request.send_interim)
        self.body: AnswerBody | None = None
        self.process: subprocess.Popen | None = None
        self.pid = 0
        self.out_fd = self.err_fd = -1
        self.stdin: _Stdin | None = None    # while the body is written into a pipe
        self.polling = False                # stdout is in the epoll set
        self.read_ts = self.services.loop.now
        self.timed_out = False
        self.exited = False
        self.signal_sent = 0
        self.kill_timer = None
        self.errors = bytearray()           # an incomplete stderr line
        self.upgrade = upgrade              # its head may switch protocols
        self.tunnel = False                 # it did: bytes both ways

    # ------------------------------------------------------------------ start
    def start(self, argv: list[str], env: dict[str, str]) -> None:
        """Start the script with its pipes; raises OSError if it cannot run."""
        ours: list[int] = []             # our ends of its pipes, closed if it fails
        theirs: list[int] = []           # its ends, closed here once it has them
        try:
            stdin = self._stdin(ours, theirs)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            ours.append(out_r)
            theirs.append(out_w)
            err_r, err_w = self._stderr(ours, theirs)
            self.process = subprocess.Popen(
                argv, stdin=stdin, stdout=out_w, stderr=err_w, env=env,
                cwd=os.path.dirname(argv[-1]), close_fds=True, start_new_session=True)
        except BaseException:
            for fd in ours:
                os.close(fd)
            self.stdin = None
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        self.pid = self.process.pid
        self._watch(out_r, err_r)

    def _stdin(self, ours: list[int], theirs: list[int]) -> int:
        """The script's stdin.  No body: /dev/null; a complete body in a temp file,
        none of it handed out yet: that file; any other: a pipe the body is written
        into as it comes (`self.stdin`), as is a request that may switch protocols
        (the tunnel's bytes come later)."""
        body = self.request.body
        if not self.upgrade:
            if body is None or (body.complete and body.size == 0):
                return subprocess.DEVNULL
            if body.complete and body.file is not None and body.consumed == 0:
                return body.open().fileno()
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        ours.append(write_end)
        theirs.append(read_end)
        os.set_blocking(write_end, False)
        self.stdin = _Stdin(self, write_end)
        return read_end

    def _stderr(self, ours: list[int], theirs: list[int]) -> tuple[int, int]:
        """Our end and the script's of its stderr: the request's server.breakagelog,
        written by the script itself as lighttpd hands it over (our end -1), else a
        pipe whose lines go to the error log."""
        breakage = self.services.breakage_log(self.request, "mod_cgi.c")
        if breakage is not None:
            return -1, breakage
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        ours.append(err_r)
        theirs.append(err_w)
        return err_r, err_w

    def _watch(self, out_fd: int, err_fd: int) -> None:
        self.out_fd, self.err_fd = out_fd, err_fd
        os.set_blocking(out_fd, False)
        self._poll(True)
        if err_fd >= 0:
            os.set_blocking(err_fd, False)
            self.services.loop.register(err_fd, select.EPOLLIN, _Watch(self._on_errors))
        self.services.watch_child(self.pid, self._on_exit)
        self._feed()

    def _feed(self) -> None:
        """Write what the stdin pipe takes of the body; forget the pipe once done (in a
        tunnel: the client ended its side, which tcp-fin-propagate passes on)."""
        if self.stdin is not None and self.stdin.pump():
            self.stdin = None
            if self.tunnel and self.limits.fin_signal and not self.exited:
                self._signal(self.limits.fin_signal)

    # ----------------------------------------------------------------- stderr
    def _on_errors(self, _mask: int) -> None:
        try:
            data = os.read(self.err_fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._log_errors(data)
        else:
            self._close_errors()

    def _log_errors(self, data: bytes) -> None:
        """Each complete line to the error log; a very long one in pieces."""
        self.errors += data
        *lines, rest = self.errors.split(b"\n")
        if len(rest) > READ_SIZE:
            lines.append(rest)
            rest = bytearray()
        self.errors = rest
        for line in lines:
            text = line.rstrip(b"\r").decode("utf-8", "backslashreplace").translate(_CONTROL)
            self.services.log_error("mod_cgi.c", f"{self.path}: {text}")

    def _close_errors(self) -> None:
        """Log what the script still wrote, then close its stderr pipe."""
        if self.err_fd < 0:
            return
        for _ in range(READS_PER_WAKE):
            try:
                data = os.read(self.err_fd, READ_SIZE)
            except OSError:
                break
            if not data:
                break
            self._log_errors(data)
        if self.errors:
            self._log_errors(b"\n")
        self.services.loop.unregister(self.err_fd)
        os.close(self.err_fd)
        self.err_fd = -1

    # ----------------------------------------------------------------- stdout
    def _on_output(self, _mask: int) -> None:
        self.request.wake()

    def resume(self) -> HandlerResult:
        """The request's next result, after output, more of the body, room in the
        stdin pipe, a drained client or a timeout."""
        if self.timed_out:
            return abandon_answer(self.request, 504)
        self._feed()
        for _ in range(READS_PER_WAKE):
            if self.body is not None and self.body.must_pause():
                self._poll(False)
                self.request.response.wants_drain = True
                return WAIT
            self._poll(True)
            try:
                data = os.read(self.out_fd, READ_SIZE)
            except BlockingIOError:
                return WAIT
            except OSError as err:
                self.services.log_error("mod_cgi.c", f"read from {self.path}: {err.strerror}")
                data = b""
            if not data:
                return self._output_ended()
            self.read_ts = self.services.loop.now
            status = self._take(data)
            if status:
                return status
        return WAIT

    def _poll(self, on: bool) -> None:
        """Watch stdout, or stop while the client has not taken what we have: out of
        the epoll set then, which reports a hang-up even to an fd that asks nothing."""
        if on == self.polling:
            return
        loop = self.services.loop
        if on:
            loop.register(self.out_fd, select.EPOLLIN, _Watch(self._on_output))
        else:
            loop.unregister(self.out_fd)
        self.polling = on
        self.read_ts = loop.now

    def _take(self, data: bytes) -> int:
        """Take output; a final result, or 0 while the answer goes on."""
        body = self.body
        if body is None:
            head = self.reader.feed(data)
            return self._answer(head) if head is not None else 0
        body.take(data)
        return body.status if body.complete else 0

    def _answer(self, head: ResponseHead) -> int:
        """The head is in: a local redirect, X-Sendfile, an error, or the answer."""
        request = self.request
        if head.error:
            self.services.log_error("http-header-glue.c", f"{head.reason} ({self.path})")
            return head.error
        if head.status == 101:
            return self._switch(head)
        self._no_upgrade()
        if self.local_redir:
            target = local_redirect_target(request, head)
            if target is not None:
                self.module.release(request)
                return redirect_locally(request, target, head.status)
        header = sendfile_header(head, XSENDFILE_CGI) if self.xsendfile else None
        if header is not None:
            return x_sendfile(request, head, header, self.docroots)
        self.body = body = AnswerBody(request, head)
        body.take(head.rest)
        return body.status if body.complete else 0

    def _switch(self, head: ResponseHead) -> int:
        """Status 101: a tunnel if the request may upgrade and the head names the
        protocol (lighttpd's condition), else the head alone is the answer."""
        if not (self.upgrade and head.get("upgrade")):
            self._no_upgrade()
            return unswitched_answer(self.request, head)
        self.upgrade = False
        self.tunnel = True
        self.body = body = switch_protocols(self.request, head)
        body.take(head.rest)
        return 0

    def _no_upgrade(self) -> None:
        """The answer is no tunnel: the stdin pipe kept open for one ends (the request
        that might have switched had no body)."""
        if self.upgrade:
            self.upgrade = False
            self.stdin.close()
            self.stdin = None

    def _output_ended(self) -> int:
        """EOF on stdout: the answer is complete (or the script sent none: 500)."""
        self._close_output()
        if self.body is None:
            head = self.reader.at_eof()
            if head is None:
                self.services.log_error("mod_cgi.c", f"{self.path} sent no answer")
                return 500
            status = self._answer(head)
            if status:
                return status
        return self.body.finish("CGI " + self.path)

    def _close_output(self) -> None:
        if self.out_fd >= 0:
            self._poll(False)
            os.close(self.out_fd)
            self.out_fd = -1

    # --------------------------------------------------------- time and ending
    def check_timeouts(self, now: float) -> None:
        limits = self.limits
        if limits.read_timeout and self.polling and now - self.read_ts > limits.read_timeout:
            self._time_out("read")
        elif limits.write_timeout and self.stdin is not None and self.stdin.watching \
                and now - self.stdin.write_ts > limits.write_timeout:
            self._time_out("write")

    def _time_out(self, what: str) -> None:
        self.services.log_error("mod_cgi.c", f"{what} timeout on CGI: {self.path} "
                                             f"(pid: {self.pid})")
        self.module.running.discard(self)
        self.timed_out = True
        self._terminate()
        self.request.wake()

    def end(self) -> None:
        """The request is over: stop the script if it still runs, close its pipes."""
        self._terminate()
        self._close_output()
        self._close_errors()
        if self.stdin is not None:
            self.stdin.close()
            self.stdin = None

    def _terminate(self) -> None:
        """SIGTERM to the script's session, SIGKILL after KILL_GRACE.  Once the script
        is reaped its session is signalled only while its stdout is open (something
        it started still holds it): an empty session's id could be a new process's."""
        if not self.pid or self.kill_timer is not None or (self.exited and self.out_fd < 0):
            return                     # never started, already signalled, or gone
        self._signal(signal.SIGTERM)
        self.kill_timer = self.services.call_later(KILL_GRACE, self._kill)

    def _kill(self) -> None:
        if not self.exited:
            self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        self.signal_sent = signum
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _on_exit(self, code: int) -> None:
        """The script was reaped (Services.watch_child): `code` is its exit status, or
        minus the signal that ended it."""
        self.exited = True
        if self.process is not None:
            self.process.returncode = code   # reaped here: Popen must not wait for it
        if self.kill_timer is not None:
            self.kill_timer.cancel()
        if code < 0 and -code != self.signal_sent:
            self.services.log_error("mod_cgi.c", f"CGI pid {self.pid} died with signal "
                                                 f"{-code}")


class _Stdin:
    """The write end of a script's stdin pipe, fed the request body as the script
    takes it and as the body arrives (`read_chunk`: all of it at once in
    `server.stream-request-body` 0, piece by piece in 1 and 2).  At most one chunk
    waits here; while the pipe is full no more is taken from the body (with 2 the
    core then stops reading the client) and the pipe is watched for room, which wakes
    the request: its module feeds on in handle_subrequest, after which the core
    looks again at what it reads.  Closed after the last byte (the script reads EOF).
    A script that closed its stdin early gets no more: the rest is taken and dropped,
    as lighttpd does, so that the client is never held up."""

    __slots__ = ("script", "fd", "pending", "watching", "write_ts")

    def __init__(self, script: _Script, fd: int) -> None:
        self.script = script
        self.fd = fd
        self.pending = memoryview(b"")      # taken from the body, not written yet
        self.watching = False               # the pipe is watched for room
        self.write_ts = script.services.loop.now

    def pump(self) -> bool:
        """Write what the pipe takes; True once the whole body went (or was dropped)
        and the pipe is closed."""
        body = self.script.request.body
        if body is None:
            return False                    # a tunnel not open yet: nothing to write
        while True:
            if not self.pending:
                chunk = body.read_chunk(READ_SIZE)
                if not chunk:
                    break
                if self.fd < 0:
                    continue                # no pipe any more: dropped
                self.pending = memoryview(chunk)
            try:
                written = os.write(self.fd, self.pending)
            except BlockingIOError:
                self._watch(True)
                return False
            except OSError as err:
                self.script.services.log_error(
                    "mod_cgi.c", f"failed to send post data to cgi {self.script.path}: "
                                 f"{err.strerror}")
                self.close()
                continue
            self.pending = self.pending[written:]
            self.write_ts = self.script.services.loop.now
        self._watch(False)
        if body.complete:
            self.close()
            return True
        return False

    def _watch(self, on: bool) -> None:
        if on == self.watching:
            return
        loop = self.script.services.loop
        if on:
            loop.register(self.fd, select.EPOLLOUT, _Watch(self._on_room))
            self.write_ts = loop.now
        else:
            loop.unregister(self.fd)
        self.watching = on

    def _on_room(self, _mask: int) -> None:
        """The script took some: feed on from the request's turn, not from here (the
        core must see the body taken, to read more of it from the client)."""
        self._watch(False)
        self.script.request.wake()

    def close(self) -> None:
        if self.fd >= 0:
            self._watch(False)
            os.close(self.fd)
            self.fd = -1
        self.pending = memoryview(b"")
