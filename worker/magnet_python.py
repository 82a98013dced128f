"""The Python side of mod_magnet: a `.py` file named in the magnet keys runs as Python.

The script defines `handle(r, c)`, called once per request in the phase whose key
names the file:

    def handle(r, c):
        r.resp_header["X-Seen"] = r.req_header.get("X-Value", "none")
        if r.req_attr["uri.path"] == "/old":
            r.req_attr["uri.path"] = "/new"
            return RESTART_REQUEST
        return None              # or a status: 200 or more answers the request

`r` is `lighty.r` as a Python object over the same `Bridge` the Lua states use
(worker/magnet_runtime.py): `req_header`, `req_attr`, `req_env`, `req_item` and
`resp_header` are mappings (a missing key raises KeyError, `.get` gives None, `del`
removes), `resp_body` has `set(parts)` / `add(parts)` / `bytes_in` (parts: a str,
bytes, or a list of them and of `{"filename": ..., "offset": ..., "length": ...}`),
`req_body` has `len`.  `c` holds `lighty.c`'s helpers (worker/magnet_clib.py): they
take str or bytes and give str (UTF-8, with surrogate escapes, so binary results
such as `c.b64dec` encode back to the same bytes).  `RESTART_REQUEST` (99) and a
`print` that writes to the error log are in the script's globals.

Scripts are trusted code, like the server's own modules: no sandbox.  The file is
compiled and executed into a fresh namespace once per version (mtime, size, inode),
so module-level state lives as long as that version.  Loading and each call run
under a wall-clock budget of TIME_BUDGET: a SIGALRM interval timer raises
ScriptOverran (a BaseException, so `except Exception` does not swallow it) in the
script, again every OVERRUN_REPEAT until the call ends; the request is answered 500
and the traceback logged.  The timer costs two setitimer calls per call (about 1 us,
loadtests/magnet_microbench.py); a trace function checked on every line would slow
every line of every script instead.  A C call that holds the GIL and
never returns to the interpreter (a pathological regular expression) is not stopped.
"""

from __future__ import annotations

import signal
import traceback
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable

from shared import log

from . import magnet_clib
from .magnet_runtime import LOG_SOURCE, Bridge, ScriptFailed, _latin, _text

if TYPE_CHECKING:
    from .request import Request

HANDLER = "handle"
RESTART_REQUEST = 99
TIME_BUDGET = 1.0          # seconds one load or one call of handle() may take
OVERRUN_REPEAT = 0.05      # then the timer fires again this often until it ends
LANGUAGE = "py"


class ScriptOverran(BaseException):
    """The script ran past its time budget."""


def _key(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def _to_python(value: Any) -> Any:
    """What the shared functions return, with bytes as str (surrogate-escaped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        return {_to_python(key): _to_python(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_python(item) for item in value)
    return value


class BridgeMapping(MutableMapping):
    """One `lighty.r` table (req_header, req_attr, ...) as a Python mapping over the
    bridge's get / set / list functions; `decode` turns its values into str."""

    def __init__(self, get: Callable, put: Callable, listing: Callable | None,
                 decode: Callable[[Any], str]) -> None:
        self._get, self._put, self._list, self._decode = get, put, listing, decode

    def __getitem__(self, name: str | bytes) -> Any:
        value = self._get(_key(name))
        if isinstance(value, tuple):                  # (None, message): refused
            raise KeyError(_latin(value[1]))
        if callable(value):                           # req_item["start_time"]
            return value()
        if value is None:
            raise KeyError(name)
        return self._decode(value) if isinstance(value, bytes) else value

    def __setitem__(self, name: str | bytes, value: Any) -> None:
        refused = self._put(_key(name), value)
        if refused:
            raise KeyError(_latin(refused))

    def __delitem__(self, name: str | bytes) -> None:
        self[name] = None

    def _flat(self) -> list:
        return self._list() if self._list is not None else []

    def __iter__(self) -> Iterator[str]:
        return (self._decode(key) for key in self._flat()[::2])

    def __len__(self) -> int:
        return len(self._flat()) // 2


class ResponseBody:
    """`r.resp_body`: the answer's body, as lighttpd's `set` / `add` build it."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    @property
    def bytes_in(self) -> int:
        return self._bridge.resp_body_length()

    bytes_out = 0

    def set(self, parts: Any) -> None:
        self._bridge.body_clear()
        self.add(parts)

    def add(self, parts: Any) -> None:
        for part in [parts] if isinstance(parts, (str, bytes)) else parts:
            if isinstance(part, (str, bytes)):
                self._bridge.body_add(_key(part))
            elif isinstance(part, dict) and "filename" in part:
                refused = self._bridge.body_add_file(
                    _key(part["filename"]), int(part.get("offset", 0)),
                    int(part.get("length", -1)))
                if refused:
                    raise OSError(_latin(refused))
            else:
                raise TypeError(f"r.resp_body: unexpected part of type {type(part).__name__}")


class RequestBody:
    """`r.req_body`: its length; the body itself is not collected (as on the Lua side)."""

    def __init__(self, bridge: Bridge) -> None:
        self._bridge = bridge

    @property
    def len(self) -> int:
        return self._bridge.reqbody_len()

    def get(self) -> None:
        return None

    def collect(self) -> bool:
        return False


def request_api(bridge: Bridge) -> SimpleNamespace:
    """`lighty.r` for Python scripts."""
    return SimpleNamespace(
        req_header=BridgeMapping(bridge.header_get, bridge.header_set, bridge.header_list,
                                 _latin),
        req_attr=BridgeMapping(bridge.attr_get, bridge.attr_set, bridge.attr_list, _text),
        req_env=BridgeMapping(bridge.env_get, bridge.env_set, bridge.env_list, _text),
        req_item=BridgeMapping(bridge.item_get, bridge.item_set, None, _text),
        resp_header=BridgeMapping(bridge.resp_header_get, bridge.resp_header_set,
                                  bridge.resp_header_list, _latin),
        resp_body=ResponseBody(bridge),
        req_body=RequestBody(bridge),
    )


def _python_call(function: Callable) -> Callable:
    def call(*args: Any) -> Any:
        return _to_python(function(*(_key(arg) if isinstance(arg, str) else arg
                                     for arg in args)))
    return call


def helpers(bridge: Bridge) -> SimpleNamespace:
    """`lighty.c` for Python scripts: the same functions, str in and out."""
    functions = magnet_clib.functions(lambda value: value, lambda: bridge.r.settings.values)
    return SimpleNamespace(**{name.decode(): _python_call(function)
                              for name, function in functions.items()})


def _script_print(*parts: Any) -> None:
    log.error(LOG_SOURCE, "(py-print) " + " ".join(str(part) for part in parts))


class TimeBudget:
    """A wall-clock limit on a block of Python: SIGALRM raises ScriptOverran in it.

    The handler is installed on first use and left in place (setting it costs more
    than the timer itself); it raises only while a block is armed, so a late signal
    does nothing, and worker/urlsubst.py's own timer puts it back when done."""

    def __init__(self) -> None:
        self.armed = False
        self.installed = False

    def _overran(self, _signum: int, _frame: Any) -> None:
        if self.armed:
            raise ScriptOverran(f"script ran past its time budget of {TIME_BUDGET} s")

    def __enter__(self) -> None:
        if not self.installed:
            signal.signal(signal.SIGALRM, self._overran)
            self.installed = True
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, TIME_BUDGET, OVERRUN_REPEAT)

    def __exit__(self, *exc_info: Any) -> None:
        while True:            # the timer may fire once more while it is stopped
            try:
                self.armed = False
                signal.setitimer(signal.ITIMER_REAL, 0)
                break
            except ScriptOverran:
                continue


BUDGET = TimeBudget()      # one per worker: SIGALRM has one handler


def _failure(err: BaseException, prefix: str) -> ScriptFailed:
    """ScriptFailed with the traceback of the script's own frames (none for a file
    that does not compile: its SyntaxError says where)."""
    tb = err.__traceback__
    frames = tb.tb_next if tb is not None else None
    if frames is None:
        lines = traceback.format_exception_only(type(err), err)
    else:
        lines = traceback.format_exception(type(err), err, frames)
    return ScriptFailed(prefix + "".join(lines).rstrip("\n"), LANGUAGE)


class PythonScript:
    """One `.py` file: compiled and executed once per version, `handle(r, c)` called
    for each request.  Its runs are never repeatable (mod_magnet): Python gives no
    cheap way to tell that a call kept no state and read nothing unkeyed."""

    repeatable = False

    def __init__(self, path: str) -> None:
        self.path = path
        self.version: tuple[int, int, int] | None = None
        self.bridge = Bridge()
        self.r = request_api(self.bridge)
        self.c = helpers(self.bridge)
        self._handle: Callable | None = None
        self.load_error = ""

    def load(self, version: tuple[int, int, int]) -> None:
        """(Re)load the file into a fresh namespace (OSError is the caller's)."""
        self.version = version
        self._handle = None
        self.load_error = f"loading script {self.path} failed"
        source = Path(self.path).read_bytes()
        namespace: dict[str, Any] = {"__name__": "magnet_script", "__file__": self.path,
                                     "RESTART_REQUEST": RESTART_REQUEST,
                                     "print": _script_print}
        try:
            code = compile(source, self.path, "exec")
            with BUDGET:
                exec(code, namespace)
        except (Exception, ScriptOverran, SystemExit) as err:
            failure = _failure(err, self.load_error + ":\n")
            self.load_error = str(failure)
            raise failure from None
        handle = namespace.get(HANDLER)
        if not callable(handle):
            self.load_error += f": it defines no {HANDLER}(r, c)"
            raise ScriptFailed(self.load_error, LANGUAGE)
        self._handle = handle

    def run(self, request: "Request") -> int:
        """Call `handle(r, c)` for `request`: its status (0 for none)."""
        handle = self._handle
        if handle is None:
            raise ScriptFailed(self.load_error, LANGUAGE)
        self.bridge.request = request
        try:
            with BUDGET:
                result = handle(self.r, self.c)
        except (Exception, ScriptOverran, SystemExit) as err:
            raise _failure(err, "") from None
        finally:
            self.bridge.request = None
        if result is None:
            return 0
        if isinstance(result, int):
            return result
        log.error(LOG_SOURCE, f"{self.path}: {HANDLER}() returned a {type(result).__name__},"
                              " not a status: ignored")
        return 0
