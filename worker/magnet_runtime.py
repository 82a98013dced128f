"""The Lua side of mod_magnet: one Lua state per script file, as lighttpd keeps them.

A state is made by lupa (Lua 5.4, the version Debian's lighttpd links) with the
standard libraries lighttpd opens, a memory cap, and the `lighty` table of
worker/magnet_prelude.lua over a `Bridge` to the running request.  A script runs
under an instruction budget: a count hook (also set in every coroutine the script
makes) fails the run once the budget is spent, and from then on fails every
instruction, so a `pcall` loop cannot hold the worker.  Unlike lighttpd's, the
`debug` functions that reach the hook or another function's upvalues and locals
(sethook, gethook, getregistry, setupvalue, upvaluejoin, setlocal, setuservalue) and
`os.exit` are withheld: a script cannot lift its budget nor end the worker.  What the
budget does not reach is a single C call running long (a pathological
`string.find`); the memory cap bounds what one can allocate.

Lua strings are bytes on this side: request fields go in as UTF-8 (paths, with the
file system's surrogate escapes) or Latin-1 (header values), and come back the same.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Final

import lupa.lua54 as lua

from shared import log
from shared.metrics import STATISTICS, Snapshot, package_version
from shared.stats import StatsSegment

from . import magnet_clib
from .body import RequestBody
from .static import serve_file
from .urlnorm import split_at
from .urlsubst import rule_target
from shared.hotpath import REPO_DIR

if TYPE_CHECKING:
    from .request import Request

# beside the sources: compiled, this module's __file__ is in the build directory
PRELUDE: Final = (REPO_DIR / "worker" / "magnet_prelude.lua").read_bytes()
MAX_MEMORY: Final = 64 * 1024 * 1024      # bytes one script's Lua state may hold
INSTRUCTION_BUDGET: Final = 20_000_000    # Lua VM instructions one run may take (~0.2-1 s)
HOOK_EVERY: Final = 1000                  # instructions between two budget checks
LOG_SOURCE: Final = "mod_magnet.c"
COLLECTING: Final = "magnet.collecting"  # request.plugin_ctx: a script waits for the body
COLLECTED: Final = "magnet.collected"    # ... and the phases ran again once it was in
SET_TARGET: Final = "magnet.target"      # request.plugin_ctx: a script set request.uri
_STARTED: Final = time.time()          # uptime without a stats segment (a lone worker)
_FRAMING_FIELDS: Final = frozenset({"content-length", "transfer-encoding", "connection"})
_FIXED_REQUEST_FIELDS: Final = _FRAMING_FIELDS | {"set-cookie"}


def _deny_attributes(_obj: Any, name: Any, _is_setting: bool) -> Any:
    """Scripts never reach into the Python objects behind the bridge."""
    raise AttributeError(name)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return "" if value is None else str(value)


def _latin(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return "" if value is None else str(value)


def _out(value: str | None) -> bytes | None:
    return None if value is None else value.encode("utf-8", "surrogateescape")


def _integer(value: Any) -> int | None:
    """A Lua value as luaL_checkinteger takes it (an integral float or a numeric
    string too), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, bytes):
        try:
            return int(value.strip(), 0)
        except ValueError:
            return None
    return None


def _or_nil(value: str) -> bytes | None:
    return _out(value) if value else None


class Bridge:
    """What the `lighty.r` tables read and change: the request being run.

    `repeatable` turns False when a run reads what the answer cache's key does not
    hold (a request header but Host, the connection's addresses, the environment, the
    request's counters) or logs: such a run's answer is never replayed."""

    def __init__(self) -> None:
        self.request: "Request | None" = None
        self.table: Any = list        # the Lua state's table_from, once it is made
        self.repeatable = True

    @property
    def unkeyed(self) -> "Request":
        """The request, for a read of what the answer cache's key does not hold."""
        self.repeatable = False
        return self.r

    @property
    def r(self) -> "Request":
        request = self.request
        assert request is not None, "a script ran outside a request"
        return request

    # ------------------------------------------------------------ lighty.r.req_header
    def header_get(self, name: bytes) -> bytes | None:
        key = _latin(name).lower()
        value = (self.r if key == "host" else self.unkeyed).headers.get(key)
        return None if value is None else value.encode("latin-1", "replace")

    def header_set(self, name: bytes, value: Any) -> None:
        """Set a request field (an empty value removes it), as lighttpd lets scripts:
        Host only to another name (lower-cased), and Content-Length, Connection,
        Transfer-Encoding and Set-Cookie not at all."""
        key = _latin(name).lower()
        if key in _FIXED_REQUEST_FIELDS:
            return
        text = _latin(value)
        if key == "host":
            if text:
                self.r.headers[key] = text.lower()
        elif text:
            self.r.headers[key] = text
        else:
            self.r.headers.pop(key, None)

    def header_list(self) -> Any:
        """The request's fields, each under the name as the client first wrote it."""
        return self.table([item.encode("latin-1", "replace")
                           for field in self.unkeyed.fields_as_written() for item in field])

    # -------------------------------------------------------------- lighty.r.req_attr
    def attr_get(self, key: bytes) -> bytes | None:
        getter = _ATTR_GET.get(key)
        if getter is None:
            return None
        return getter(self.unkeyed if key in _CONNECTION_ATTRS else self.r)

    def attr_set(self, key: bytes, value: Any) -> bytes | None:
        setter = _ATTR_SET.get(key)
        if setter is None:
            if key in _ATTR_GET:
                return None          # read-only: lighttpd ignores the change
            return b"couldn't store '" + key + b"' in r.req_attr[]"
        return setter(self.r, _text(value))

    def attr_list(self) -> Any:
        request = self.unkeyed
        return self.table([item for key, getter in _ATTR_GET.items()
                           for item in (key, getter(request))])

    # --------------------------------------------------------------- lighty.r.req_env
    def env_get(self, name: bytes) -> bytes | None:
        env = self.unkeyed.env
        return None if env is None else _out(env.get(_text(name)))

    def env_set(self, name: bytes, value: Any) -> None:
        if value is None:
            if self.r.env:
                self.r.env.pop(_text(name), None)
            return
        self.r.set_env(_text(name), _text(value))

    def env_list(self) -> Any:
        env = self.unkeyed.env or {}
        return self.table([_out(item) for pair in env.items() for item in pair])

    # -------------------------------------------------------------- lighty.r.req_item
    def item_get(self, key: bytes) -> Any:
        request = self.unkeyed
        name = _text(key)
        if name == "start_time":
            return self._start_time()
        getter = _ITEMS.get(name)
        if getter is None:
            return None, b"r.req_item['" + key + b"'] invalid"
        return getter(request)

    def item_set(self, key: bytes, value: Any) -> bytes | None:
        """keep_alive may be set (0 ends the connection after the answer; other values
        change nothing), nothing else."""
        if key == b"keep_alive":
            if _integer(value) == 0:
                self.unkeyed.keep_alive = False
            return None
        return b"r.req_item['" + key + b"'] invalid or read-only"

    def _start_time(self) -> Any:
        start = self.unkeyed.start
        seconds = int(start)
        nanoseconds = int((start - seconds) * 1e9)
        return lambda: (seconds, nanoseconds)

    # --------------------------------------------------------------- lighty.server
    def plugin_stat_get(self, key: bytes) -> int:
        """A counter of the status page's statistics (0, and shown from now on, for
        one never set: lighttpd makes it as it is read)."""
        return STATISTICS.get(_text(key))

    def plugin_stat_set(self, key: bytes, value: Any) -> bytes | None:
        number = _integer(value)
        if number is None:
            return b"bad argument #3 (number has no integer representation)"
        STATISTICS.set(_text(key), number)
        return None

    def plugin_stat_list(self) -> Any:
        return self.table([item for key, value in STATISTICS.items()
                           for item in (key.encode(), value)])

    def server_stat_get(self, key: bytes) -> Any:
        """lighty.server.stats: uptime, version (the product's, as lighttpd gives its
        own whatever server.tag says), clients_open (this worker's connections, as
        each lighttpd process counts its own)."""
        if key == b"uptime":
            segment = StatsSegment.current
            return Snapshot(segment).uptime if segment is not None else \
                int(time.time() - _STARTED)
        if key == b"version":
            return f"pylighttpd/{package_version()}".encode()
        if key == b"clients_open":
            return len(self.r.connection.server.connections)
        return None, b"server.stats['" + key + b"'] invalid"

    # ----------------------------------------------------------- lighty.r.resp_header
    def resp_header_get(self, name: bytes) -> bytes | None:
        value = self.r.response.get_header(_latin(name))
        return None if value is None else value.encode("latin-1", "replace")

    def resp_header_set(self, name: Any, value: Any) -> None:
        """Set (or with an empty value remove) a response header; the framing fields
        are the server's: a script's Content-Length, Transfer-Encoding or Connection
        is ignored, as lighttpd ignores it."""
        key = _latin(name)
        if key.lower() in _FRAMING_FIELDS:
            return
        response = self.r.response
        text = _latin(value)
        if text:
            response.set_header(key, text)
        else:
            response.remove_header(key)

    def resp_header_list(self) -> Any:
        return self.table([item.encode("latin-1", "replace")
                           for pair in self.r.response.headers for item in pair])

    # ------------------------------------------------------------- lighty.r.resp_body
    def body_clear(self) -> None:
        self.r.response.reset_body()

    def body_add(self, data: bytes) -> None:
        self.r.response.write(data)

    def send_file(self, name: bytes) -> int:
        """A stat object's "http-response-send-file": the file becomes the answer, as
        the static file handler makes it (conditional requests, ranges; 403 for what
        is not a regular file); its status, or 0 when the path is gone."""
        request = self.r
        path = os.fsdecode(name)
        request.response.reset_body()
        try:
            status = serve_file(request, path, os.stat(path))
        except OSError:
            return 0
        request.response.status = status
        return status

    def body_add_file(self, name: bytes, offset: int, length: int) -> bytes | None:
        path = os.fsdecode(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as err:
            return f"r.resp_body: {path}: {err.strerror}".encode()
        size = os.fstat(fd).st_size
        offset = max(0, min(int(offset), size))
        length = size - offset if length < 0 else min(int(length), size - offset)
        self.r.response.send_file_range(fd, offset, length)
        return None

    def resp_body_length(self) -> int:
        return self.r.response.length

    def resp_body_len(self) -> int | None:
        """The body's length once it is complete (at response start), else nil."""
        response = self.r.response
        return response.length if _body_complete(response) else None

    def resp_body_get(self) -> bytes | None:
        """The whole body once it is complete (its file ranges read), else nil."""
        response = self.r.response
        if not _body_complete(response):
            return None
        parts: list[bytes] = []
        for part in response.body:
            parts.append(os.pread(part[0], part[2], part[1]) if isinstance(part, tuple)
                         else part)
        return b"".join(parts)

    def reqbody_len(self) -> int:
        request = self.unkeyed
        body = request.body
        if request.content_length < 0 and body is not None and body.complete:
            return body.size
        return max(request.content_length, 0)

    def reqbody_bytes_in(self) -> int:
        body = self.unkeyed.body
        return 0 if body is None else body.size

    def _collected(self) -> bool:
        """Whether the request has no body, or ran again once its body was in (as in
        lighttpd, a body is never collected on a script's first run, even one that
        came whole with the head)."""
        request = self.r
        return request.body is None or COLLECTED in request.plugin_ctx

    def reqbody_collect(self) -> bool | None:
        """True once the whole body is in.  Before, False: the request waits for it
        (all of it, kept on disk past the memory limit whatever
        server.stream-request-body says) and its phases run again then, scripts and
        all; nil when another module handles the request already."""
        if self._collected():
            return True
        request = self.r
        body = request.body
        assert body is not None
        if request.handler is not None:
            log.error(LOG_SOURCE, "unable to collect request body (handler already set)")
            return None
        body.spill = True
        request.plugin_ctx[COLLECTING] = True
        return False

    def reqbody_get(self) -> bytes | None:
        """The whole body once collected ("" for none), else nil."""
        body = self.r.body
        if body is None:
            return b""
        return body.read() if self._collected() else None

    def reqbody_complete(self) -> bool:
        return self._collected()

    def reqbody_add(self, data: bytes, replace: bool) -> None:
        """A script's new body (set) or more of it (add), once the client's is in:
        what backends are given from now on, with its length."""
        request = self.r
        body = request.body
        if body is None or replace:
            if body is not None:
                body.close()
            body = request.body = RequestBody(tuple(request.values["server.upload-dirs"]))
            body.complete = True
        body.append(data)
        request.content_length = body.size
        if "content-length" in request.headers:
            request.headers["content-length"] = str(body.size)

    # ----------------------------------------------------------------------- logging
    def print(self, message: bytes) -> None:
        self.repeatable = False
        log.error(LOG_SOURCE, "(lua-print) " + _latin(message))

    def print_error(self, message: bytes) -> None:
        self.repeatable = False
        log.error(LOG_SOURCE, _latin(message))

    def functions(self) -> dict[bytes, Any]:
        names = ("header_get", "header_set", "header_list", "attr_get", "attr_set",
                 "attr_list", "env_get", "env_set", "env_list", "item_get", "item_set",
                 "resp_header_get", "resp_header_set", "resp_header_list", "body_clear",
                 "body_add", "body_add_file", "resp_body_length", "resp_body_len",
                 "resp_body_get", "reqbody_len", "reqbody_bytes_in", "reqbody_collect",
                 "reqbody_get", "reqbody_complete", "reqbody_add", "print",
                 "print_error", "plugin_stat_get", "plugin_stat_set", "plugin_stat_list",
                 "server_stat_get", "send_file")
        return {name.encode(): getattr(self, name) for name in names}


def _body_complete(response: Any) -> bool:
    """Whether the answer's body is all there: its status is set and it is not being
    streamed (lighttpd's resp_body_finished)."""
    return response.status != 0 and not response.streaming


def _target(request: "Request") -> str:
    """lighttpd's r->target: the target as normalised, or as a script set it."""
    return request.target if SET_TARGET in request.plugin_ctx else rule_target(request)


def _target_path(request: "Request") -> str:
    target = _target(request)
    mark = split_at(target, request.url_flags)
    return target if mark < 0 else target[:mark]


def _server_port(request: "Request") -> str:
    spec = request.socket_spec or ""
    return spec.rpartition(":")[2] if ":" in spec else ""


# what a request's bytes do not hold: the answer cache keys no answer on them
_CONNECTION_ATTRS: Final = frozenset({b"request.remote-ip", b"request.remote-addr",
                                      b"request.remote-port", b"request.server-addr",
                                      b"request.server-port"})
_ATTR_GET: Final[dict[bytes, Any]] = {
    b"physical.path": lambda r: _or_nil(r.physical_path),
    b"physical.rel-path": lambda r: _or_nil(r.physical_rel),
    b"physical.doc-root": lambda r: _or_nil(r.docroot),
    b"physical.basedir": lambda r: _or_nil(r.physical_basedir),
    b"uri.path": lambda r: _out(r.uri_path),
    b"uri.path-raw": lambda r: _out(_target_path(r)),
    b"uri.scheme": lambda r: _out(r.scheme),
    b"uri.authority": lambda r: _out(r.host),
    b"uri.query": lambda r: _out(r.uri_query) if r.uri_query or "?" in r.target else None,
    b"request.method": lambda r: _out(r.method),
    b"request.uri": lambda r: _out(_target(r)),
    b"request.orig-uri": lambda r: _out(r.target_orig),
    b"request.path-info": lambda r: _or_nil(r.pathinfo),
    b"request.remote-ip": lambda r: _out(r.remote_ip),
    b"request.remote-addr": lambda r: _out(r.remote_ip),
    b"request.remote-port": lambda r: _out(str(r.remote_port)),
    b"request.server-addr": lambda r: _out(r.local_address),
    b"request.server-port": lambda r: _out(_server_port(r)),
    b"request.protocol": lambda r: _out(f"HTTP/{r.version}"),
    b"request.server-name": lambda r: _out(r.host),
    # lighttpd handles a request with a body in its read-post state, answered or not
    b"request.stage": lambda r: b"handle-req" if r.body is None else b"readpost",
}


def _set_physical_path(request: "Request", value: str) -> None:
    request.physical_path = value
    request.forget_stat()


def _set_uri_path(request: "Request", value: str) -> None:
    request.uri_path = value
    request.configure()


def _set_path_raw(request: "Request", value: str) -> None:
    _, mark, query = _target(request).partition("?")
    _set_target(request, value + mark + query)


def _set_query(request: "Request", value: str) -> None:
    request.uri_query = value
    request.configure()


def _set_scheme(request: "Request", value: str) -> None:
    request.scheme = value.lower()
    request.configure()


def _set_authority(request: "Request", value: str) -> None:
    request.host = value.lower()
    request.configure()


def _set_remote(request: "Request", value: str) -> bytes | None:
    """A numeric address (or a unix socket's path), else an error as lighttpd's."""
    if not value.startswith("/"):
        try:                  # as sock_addr_from_str_numeric reads it ("200" is 0.0.0.200)
            socket.getaddrinfo(value, None, flags=socket.AI_NUMERICHOST)
        except (socket.gaierror, UnicodeError, ValueError):
            return f"r.req_attr['remote-addr'] invalid addr: {value}".encode()
    request.remote_ip = value
    request.configure()
    return None


def _set_target(request: "Request", value: str) -> None:
    """request.uri as the script sets it, read back as it is (not normalised again)."""
    request.target = value
    request.plugin_ctx[SET_TARGET] = True


_ATTR_SET: Final[dict[bytes, Any]] = {
    b"physical.path": _set_physical_path,
    b"physical.rel-path": lambda r, v: setattr(r, "physical_rel", v),
    b"physical.doc-root": lambda r, v: setattr(r, "docroot", v),
    b"physical.basedir": lambda r, v: setattr(r, "physical_basedir", v),
    b"uri.path": _set_uri_path,
    b"uri.path-raw": _set_path_raw,
    b"uri.query": _set_query,
    b"uri.scheme": _set_scheme,
    b"uri.authority": _set_authority,
    b"request.uri": _set_target,
    b"request.orig-uri": lambda r, v: setattr(r, "target_orig", v),
    b"request.path-info": lambda r, v: setattr(r, "pathinfo", v),
    b"request.remote-ip": _set_remote,
    b"request.remote-addr": _set_remote,
}

_ITEMS: Final[dict[str, Any]] = {
    "bytes_in": lambda r: r.header_bytes + max(r.content_length, 0),
    "bytes_out": lambda r: 0,
    "req_count": lambda r: getattr(r.connection, "requests_done", 1),
    "keep_alive": lambda r: 1 if r.keep_alive else 0,
    "http_status": lambda r: r.response.status,
    "req_header_len": lambda r: r.header_bytes,
    "resp_header_len": lambda r: 0,
    "stream_id": lambda r: r.plugin_ctx.get("_h2", 0),
}


class ScriptFailed(Exception):
    """A script did not load or raised an error: the message is its language's (with
    its traceback)."""

    def __init__(self, message: str, language: str = "lua") -> None:
        super().__init__(message)
        self.language = language


class Script:
    """One script file in its own Lua state, compiled once per version of the file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.version: tuple[int, int, int] | None = None
        self.bridge = Bridge()
        self._runner: Any = None
        self.load_error = ""
        self.repeatable = False       # whether the last run's answer may be replayed

    def load(self, version: tuple[int, int, int]) -> None:
        """(Re)load the file: a new Lua state, as lighttpd closes the old one."""
        self.version = version
        self._runner = None
        self.load_error = f"loading script {self.path} failed"
        source = Path(self.path).read_bytes()
        runtime = lua.LuaRuntime(encoding=None, register_eval=False,
                                 register_builtins=False, unpack_returned_tuples=True,
                                 max_memory=MAX_MEMORY, attribute_filter=_deny_attributes)
        bridge = self.bridge
        bridge.table = runtime.table_from
        clib = magnet_clib.functions(runtime.table_from,
                                     lambda: bridge.r.settings.values)
        compile_script = runtime.globals().load(PRELUDE, b"=magnet_prelude")(
            runtime.table_from(bridge.functions()), runtime.table_from(clib),
            INSTRUCTION_BUDGET, HOOK_EVERY)
        runner, message = compile_script(source, self.path.encode("utf-8", "surrogateescape"))
        if runner is None:
            self.load_error += ": " + _latin(message)
            raise ScriptFailed(self.load_error)
        self._runner = runner

    def run(self, request: "Request") -> int:
        """Run the script for `request`: its status (0 for none)."""
        runner = self._runner
        if runner is None:
            raise ScriptFailed(self.load_error)
        bridge = self.bridge
        bridge.request = request
        bridge.repeatable = True
        self.repeatable = False
        try:
            outcome = runner()
            if type(outcome) is tuple:    # then the response header writes, in pairs
                writes = outcome
                outcome = writes[0]
                for index in range(1, len(writes) - 1, 2):
                    bridge.resp_header_set(writes[index], writes[index + 1])
        except lua.LuaError as err:          # the memory cap hit outside the pcall
            raise ScriptFailed(str(err) or "not enough memory") from None
        finally:
            bridge.request = None
        if type(outcome) is not int:
            raise ScriptFailed(_latin(outcome))
        code: int = outcome              # 2 * status + repeatable, as native ints
        self.repeatable = code & 1 == 1 and bridge.repeatable
        return code >> 1


class ScriptCache:
    """The scripts by path, each reloaded when its file's mtime, size or inode change
    (checked through the worker's stat cache, so at most once a second)."""

    def __init__(self, stat: Any, make_script: Callable[[str], Any] = Script) -> None:
        self.stat = stat
        self.make_script = make_script
        self.scripts: dict[str, Any] = {}
        # the stat each script's version was last compared with: the stat cache hands
        # out one object per path within its second, so the same one needs no compare
        self.compared: dict[str, os.stat_result] = {}

    def get(self, path: str) -> Any:
        """The script of `path`, loaded anew if its file changed (a Script or any
        object with its `version`, `load(version)` and `run(request)`)."""
        script = self.scripts.get(path)
        if script is None:
            script = self.scripts[path] = self.make_script(path)
        try:
            st = self.stat(path)
        except OSError as err:
            script.version = None
            raise ScriptFailed(f"loading script {path} failed: {err.strerror}") from None
        if self.compared.get(path) is st and script.version is not None:
            return script
        self.compared[path] = st
        version = (st.st_mtime_ns, st.st_size, st.st_ino)
        if version != script.version:
            try:
                script.load(version)
            except OSError as err:
                script.version = None
                raise ScriptFailed(f"loading script {path} failed: {err.strerror}") from None
        return script


def log_failure(err: ScriptFailed) -> None:
    """lighttpd's log of a failed script: each line of the message and traceback."""
    prefix = err.language + ": "
    log.lines(LOG_SOURCE, [prefix + line for line in str(err).splitlines() or [""]])
