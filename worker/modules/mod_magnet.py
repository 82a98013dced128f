"""mod_magnet: Lua scripts run for each request, as lighttpd 1.4.69 runs them.

- `magnet.attract-raw-url-to` runs its scripts when the URL is clean (lighttpd's
  uri_clean hook, despite the name), `magnet.attract-physical-path-to` once the
  physical path is known, `magnet.attract-response-start-to` when the answer's head
  is about to go (headers and status may still change there);
- the scripts of one key run in order while each returns nothing (or a status below
  100); a 1xx status (103 Early Hints) is sent at once as an interim answer with the
  headers set so far and the request goes on; a status of 200 or more answers the
  request with what the script put in
  `lighty.r.resp_header` / `resp_body` (or the older `lighty.header` /
  `lighty.content`), and `lighty.RESTART_REQUEST` (99) runs the phases again for
  `uri.path` as the script left it (at most 10 times, then 500);
- a script that fails to load, raises an error or spends its instruction budget is
  answered 500 (before response start) and logged with Lua's traceback;
- each script has its own Lua state, kept while its file is unchanged (mtime, size,
  inode) and made anew when it changes (worker/magnet_runtime.py);
- `lighty.server.plugin_stats` (and its older name `lighty.status`) are the counters
  `status.statistics-url` shows, each worker's own as each lighttpd process has its
  own; `lighty.server.stats` gives `uptime`, `version` and `clients_open`.
  `lighty.server.irequests` (a walk over the other requests of the process) is not
  provided;
- `lighty.r.req_body.collect()` makes the request wait for its whole body (whatever
  server.stream-request-body says), then runs the phases again, scripts and all, where
  `get` gives the body; `set` / `add` give the backends a new one.

Beyond lighttpd, a file ending in `.py` named in the same keys runs as Python: it
defines `handle(r, c)`, given `lighty.r` and `lighty.c` as Python objects over the same
implementation, and returns None, a status or RESTART_REQUEST, under a time budget
(worker/magnet_python.py).

`magnet.cache-size` is not a key of lighttpd 1.4.69 and is not one here either.

The answer cache (worker/answercache.py) may replay a static file's answer that
scripts had a part in only when every script run for it was repeatable: a Lua script
that read nothing but what the cache keys answers on (the URL, Host, method, the
settings, files) and kept no state between runs, so that it would do the same again
(worker/magnet_prelude.lua tells).  Python scripts are never repeatable.
"""

from __future__ import annotations

from typing import Any, Final

from shared import log
from shared.config.directives import Directive, Type

from ..magnet_python import PythonScript
from ..magnet_runtime import (COLLECTED, COLLECTING, Script, ScriptCache, ScriptFailed,
                              log_failure)
from ..module import COMEBACK, ERROR, WAIT, HandlerResult, Module as BaseModule
from ..request import Request
from ..statcache import CACHE

RAW_URL: Final = "magnet.attract-raw-url-to"
PHYSICAL_PATH: Final = "magnet.attract-physical-path-to"
RESPONSE_START: Final = "magnet.attract-response-start-to"
DIRECTIVES: Final = tuple(Directive(key, Type.ARRAY_VLIST, ())
                          for key in (RAW_URL, PHYSICAL_PATH, RESPONSE_START))
RESTART_REQUEST: Final = 99
MAX_RESTARTS: Final = 10
RESTARTS: Final = "magnet.restarts"     # request.plugin_ctx: how often the scripts restarted it
UNREPEATABLE: Final = "magnet.unrepeatable"   # request.plugin_ctx: a run that may not be replayed


class Module(BaseModule):
    name = "magnet"
    directives = DIRECTIVES
    reads_request_body = True         # lighty.r.req_body
    active_when = {"handle_uri_clean": RAW_URL, "handle_physical": PHYSICAL_PATH,
                   "handle_response_start": RESPONSE_START}

    def __init__(self, config: Any, services: Any = None) -> None:
        super().__init__(config, services)
        stat_cache = services.stat_cache if services is not None else CACHE
        self.cache = ScriptCache(stat_cache.stat, script_for)

    def allows_replay(self, request: Request) -> bool:
        """Answers are kept only where every script run was repeatable: a script may
        answer from anything (a clock, a header, state of its own)."""
        return UNREPEATABLE not in request.plugin_ctx

    def handle_uri_clean(self, request: Request) -> HandlerResult:
        return self._attract(request, RAW_URL)

    def handle_physical(self, request: Request) -> HandlerResult:
        return self._attract(request, PHYSICAL_PATH)

    def handle_response_start(self, request: Request) -> None:
        """The head is about to go: scripts may change its headers, and its status
        unless a streamed head went out already; a failure is only logged."""
        for path in request.settings.values[RESPONSE_START]:
            try:
                status = self._run(path, request)
            except ScriptFailed as err:
                log_failure(err)
                return
            if status >= 200 and not request.response.started:
                request.response.status = status
            if status >= 200 or status == RESTART_REQUEST:
                return

    def _attract(self, request: Request, key: str) -> HandlerResult:
        for path in request.settings.values[key]:
            try:
                status = self._run(path, request)
            except ScriptFailed as err:
                log_failure(err)
                request.response.reset_body()
                return 500
            if status >= 200:
                return status
            if status >= 100:
                _send_interim(request, status)
            elif status == RESTART_REQUEST:
                return _restart(request, path)
        return self.handle_subrequest(request) if COLLECTING in request.plugin_ctx \
            else None

    def handle_subrequest(self, request: Request) -> HandlerResult:
        """A script asked for the whole request body (req_body.collect): the request
        waits for it, then its phases run again, from the URL on, as lighttpd restarts
        them (at once for a body that came whole with the head)."""
        body = request.body
        if body is not None and not body.complete:
            return WAIT
        context = request.plugin_ctx
        context.pop(COLLECTING, None)
        context[COLLECTED] = True
        request.handler = None
        request.physical_path = ""
        return COMEBACK

    def _run(self, path: str, request: Request) -> int:
        """Run the script of `path` for `request`, noting a run that may not be
        replayed (a failure is logged each time: never replayed either)."""
        try:
            script = self.cache.get(path)
            status = script.run(request)
        except ScriptFailed:
            request.plugin_ctx[UNREPEATABLE] = True
            raise
        if not script.repeatable:
            request.plugin_ctx[UNREPEATABLE] = True
        return status


def script_for(path: str) -> Script | PythonScript:
    """A `.py` file runs as Python, any other as Lua (as lighttpd runs them all)."""
    return PythonScript(path) if path.endswith(".py") else Script(path)


def _send_interim(request: Request, status: int) -> None:
    """A 1xx status (103 Early Hints...) goes out at once with the headers set so far,
    which then leave the final answer's head; the request goes on."""
    response = request.response
    request.send_interim(status, response.headers)
    response.headers = []


def _restart(request: Request, path: str) -> HandlerResult:
    """Run the phases again for the URL path as the script left it (lighttpd 1.4.69
    does not parse `request.uri` again: a script rewrites through `uri.path`)."""
    restarts = request.plugin_ctx.get(RESTARTS, 0) + 1
    request.plugin_ctx[RESTARTS] = restarts
    if restarts >= MAX_RESTARTS:
        log.error("mod_magnet.c", f"too many request restarts (infinite loop?) for {path}")
        return ERROR
    return COMEBACK
