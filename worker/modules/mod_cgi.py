"""mod_cgi: run CGI/1.1 scripts (RFC 3875) for files named in `cgi.assign`, as
lighttpd 1.4.69 does.

A script is a child of the worker in a session of its own (so a signal reaches
everything it started), working in its own directory, with the request's CGI
environment (worker/gateway.py).  Its stdin is the request body: a body spilled to a
temp file is that file itself, a small one is written into a pipe as the script takes
it.  Its stdout and stderr are non-blocking pipes in the worker's loop: stdout is read
for the CGI head, then its body goes to the client as `server.stream-response-body`
says (by default kept whole and sent with its length, as lighttpd does; with 2,
streamed, and the pipe left unread while the client lags: the answer's backlog above
BACKLOG_HIGH); each stderr line goes to the error log.  The script's exit is seen
through its pidfd (Services.watch_child), never by blocking.

When its request is over (answered, redirected, or its client gone) a script still
running gets SIGTERM, as in lighttpd, and SIGKILL KILL_GRACE seconds later if it is
still there.  `cgi.limits` read-timeout / write-timeout end a script that sends
nothing / takes nothing for that long: 504 if no head went out yet (lighttpd's
answer), else the connection closes on a truncated answer.

Not done: `cgi.upgrade` (the worker cannot hand a connection's byte stream to a module:
Upgrade requests are passed as ordinary ones, without HTTP_UPGRADE) and the
`tcp-fin-propagate` limit (a module is not told when its client half-closes); both are
accepted and checked.
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
                       abandon_answer, cgi_environment, local_redirect_target,
                       redirect_locally, sendfile_header, x_sendfile)
from ..module import WAIT, HandlerResult, Module as BaseModule
from ..request import Request, simplify_path
from ..static import is_regular

if TYPE_CHECKING:
    from ..services import Services

READ_SIZE = 64 * 1024
READS_PER_WAKE = 4          # bounds what one wake adds to an answer (and the loop's turn)
KILL_GRACE = 3.0            # seconds between SIGTERM and SIGKILL
_STATE = "mod_cgi"          # request.plugin_ctx key of the script answering it
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
    """Absolute, simplified, each with a trailing slash (a prefix of whole names)."""
    roots = []
    for path in paths:
        if not path.startswith("/"):
            raise DirectiveValueError(f'cgi.x-sendfile-docroot paths must begin with '
                                      f'"/"; invalid: "{path}"')
        root = simplify_path(path)
        roots.append(root if root.endswith("/") else root + "/")
    return tuple(roots)


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
    """What the loop calls for one of a script's fds."""

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
        self.upgrade_noted = False

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
        return self._run(request, interpreter)

    def handle_subrequest(self, request: Request) -> HandlerResult:
        script = request.plugin_ctx.get(_STATE)
        return script.resume() if script is not None else 500

    def handle_request_reset(self, request: Request) -> None:
        self.release(request)

    def handle_trigger(self, now: float) -> None:
        for script in list(self.running):
            script.check_timeouts(now)

    def release(self, request: Request) -> None:
        """The request no longer needs its script (answered, redirected, aborted)."""
        script = request.plugin_ctx.pop(_STATE, None)
        if script is not None:
            self.running.discard(script)
            script.end()

    def _run(self, request: Request, interpreter: str) -> HandlerResult:
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
        script = _Script(self, request)
        try:
            script.start(argv, self._environment(request))
        except (OSError, subprocess.SubprocessError) as err:
            self.services.log_error("mod_cgi.c", f"cannot run {argv[0]} for "
                                                 f"{request.physical_path}: {err}")
            script.end()
            return 500
        request.plugin_ctx[_STATE] = script
        self.running.add(script)
        return WAIT

    def _environment(self, request: Request) -> dict[str, str]:
        env = cgi_environment(request)
        if env.pop("HTTP_UPGRADE", None) is not None and \
                request.settings.values["cgi.upgrade"] and not self.upgrade_noted:
            self.upgrade_noted = True
            self.services.log_error("mod_cgi.c", "cgi.upgrade: protocol upgrades are not "
                                                 "passed to CGI scripts; Upgrade requests "
                                                 "are answered as ordinary ones")
        env.update(self.inherited)
        return env


class _Script:
    """One running script and the request it answers."""

    __slots__ = ("module", "services", "request", "path", "limits", "local_redir",
                 "xsendfile", "docroots", "reader", "body", "process", "pid", "out_fd",
                 "err_fd", "in_fd", "input", "polling", "output_watch", "writing",
                 "read_ts", "write_ts", "timed_out", "exited", "signal_sent", "kill_timer",
                 "errors")

    def __init__(self, module: Module, request: Request) -> None:
        values = request.settings.values
        self.module = module
        self.services = module.services
        self.request = request
        self.path = request.physical_path
        self.limits: Limits = values["cgi.limits"]
        self.local_redir = values["cgi.local-redir"]
        self.xsendfile = values["cgi.x-sendfile"]
        self.docroots = values["cgi.x-sendfile-docroot"]
        self.reader = HeadReader()
        self.body: AnswerBody | None = None
        self.process: subprocess.Popen | None = None
        self.pid = 0
        self.out_fd = self.err_fd = self.in_fd = -1
        self.input = memoryview(b"")        # body bytes still to write to stdin
        self.polling = False                # stdout is in the epoll set
        self.output_watch = _Watch(self._on_output)
        self.writing = False                # stdin is watched for room
        self.read_ts = self.write_ts = self.services.loop.now
        self.timed_out = False
        self.exited = False
        self.signal_sent = 0
        self.kill_timer = None
        self.errors = bytearray()           # an incomplete stderr line

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
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            ours.append(err_r)
            theirs.append(err_w)
            self.process = subprocess.Popen(
                argv, stdin=stdin, stdout=out_w, stderr=err_w, env=env,
                cwd=os.path.dirname(argv[-1]), close_fds=True, start_new_session=True)
        except BaseException:
            for fd in ours:
                os.close(fd)
            self.in_fd = -1
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        self.pid = self.process.pid
        self._watch(out_r, err_r)

    def _stdin(self, ours: list[int], theirs: list[int]) -> int:
        """The script's stdin.  No body: /dev/null; a body in a temp file: that file;
        a body in memory: a pipe we write it into (`self.in_fd`)."""
        body = self.request.body
        if body is None or body.size == 0:
            return subprocess.DEVNULL
        if body.file is not None:
            return body.open().fileno()
        self.input = memoryview(body.read())
        read_end, self.in_fd = os.pipe2(os.O_CLOEXEC)
        ours.append(self.in_fd)
        theirs.append(read_end)
        os.set_blocking(self.in_fd, False)
        return read_end

    def _watch(self, out_fd: int, err_fd: int) -> None:
        self.out_fd, self.err_fd = out_fd, err_fd
        os.set_blocking(out_fd, False)
        os.set_blocking(err_fd, False)
        self._poll(True)
        self.services.loop.register(err_fd, select.EPOLLIN, _Watch(self._on_errors))
        self.services.watch_child(self.pid, self._on_exit)
        if self.in_fd >= 0:
            self._feed()

    # ------------------------------------------------------------------ stdin
    def _feed(self, _mask: int = 0) -> None:
        """Write as much of the body as the pipe takes; close it after the last byte
        (the script then reads EOF)."""
        while self.input:
            try:
                written = os.write(self.in_fd, self.input)
            except BlockingIOError:
                self._wait_for_room()
                return
            except OSError as err:
                self.services.log_error("mod_cgi.c", f"failed to send post data to cgi "
                                                     f"{self.path}: {err.strerror}")
                break
            self.input = self.input[written:]
            self.write_ts = self.services.loop.now
        self._close_stdin()

    def _wait_for_room(self) -> None:
        if not self.writing:
            self.services.loop.register(self.in_fd, select.EPOLLOUT, _Watch(self._feed))
            self.writing = True
            self.write_ts = self.services.loop.now

    def _close_stdin(self) -> None:
        if self.in_fd >= 0:
            if self.writing:
                self.services.loop.unregister(self.in_fd)
                self.writing = False
            os.close(self.in_fd)
            self.in_fd = -1
        self.input = memoryview(b"")

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
        """The request's next result, after output, a drained client or a timeout."""
        if self.timed_out:
            return abandon_answer(self.request, 504, f"timeout on CGI {self.path}")
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
            loop.register(self.out_fd, select.EPOLLIN, self.output_watch)
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
        elif limits.write_timeout and self.writing and \
                now - self.write_ts > limits.write_timeout:
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
        self._close_stdin()

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
        """The script's pidfd fired.  A pidfd may be readable an instant before its
        process can be reaped; Services.watch_child then reaps nothing and reports 0,
        so the reaping is checked here and the watch renewed until it is done."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = -1, 0            # reaped by the watch: `code` is its exit
        if pid == 0:
            self.services.watch_child(self.pid, self._on_exit)
            return
        if pid > 0:
            code = os.waitstatus_to_exitcode(status)
        self.exited = True
        if self.process is not None:
            self.process.returncode = code   # reaped here: Popen must not wait for it
        if self.kill_timer is not None:
            self.kill_timer.cancel()
        if code < 0 and -code != self.signal_sent:
            self.services.log_error("mod_cgi.c", f"CGI pid {self.pid} died with signal "
                                                 f"{-code}")
