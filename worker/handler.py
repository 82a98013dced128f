"""Request handling: lighttpd's http_response_prepare, module-agnostic.

The phases run the hooks of the loaded modules in `server.modules` order; a hook that
returns a status ends the phase and the request.  Between the phases the core does what
lighttpd's core does: choose the document root, map the URL path to a file, find
PATH_INFO, redirect a directory without a trailing slash.  The core never names a
module; which hooks exist is decided once, when the pipeline is built.
"""

from __future__ import annotations

import errno
import traceback
from typing import Callable, Final, Iterable

from shared import log

from .answercache import CORE_READS, AnswerCache
from .http import ascii_lower, error_body, has_no_body, lower_name
from .module import COMEBACK, CONNECTION_HOOKS, ERROR, HOOKS, WAIT, Module
from .request import Request, Response
from .static import OPEN_FILES, error_document, is_directory, is_regular, status_of_errno
from .statcache import CACHE
from .throttle import throttle_for
from .urlnorm import clean_path

Hook = Callable[[Request], "int | None"]
# a hook, and the directive without which it does nothing ("": it always runs)
GatedHook = tuple[Hook, str]
_ERROR_DROPS: Final = frozenset({"content-type", "etag", "last-modified", "accept-ranges",
                                 "content-encoding", "vary"})
ALLOW: Final = "OPTIONS, GET, HEAD, POST"
# Methods HTTP defines that no loaded handler took: 405 with Allow (RFC 9110 §15.5.6)
# where lighttpd 1.4.69 sends 501.  TRACE is among them: it stays off.  A method we
# do not know at all is still 501 (§15.6.2).
KNOWN_METHODS: Final = frozenset({
    "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "PROPFIND", "PROPPATCH", "MKCOL",
    "COPY", "MOVE", "LOCK", "UNLOCK", "SEARCH", "REPORT", "MKCALENDAR", "ACL",
    "QUERY"})
_ENOENT: Final = errno.ENOENT
_NO_ERROR_HANDLER: Final = 416      # lighttpd decides it after its error handlers
_AFTER_ANSWER: Final = frozenset({"handle_request_done", "handle_request_reset"})
# the phases whose hooks a module may declare inactive without a directive (active_when)
_GATED: Final = tuple(name for name in HOOKS if name not in _AFTER_ANSWER)
MAX_LOOPS: Final = 100     # COMEBACKs per request before it is an endless loop (lighttpd's)


class AnswerCut(Exception):
    """A module failed (ERROR) after its answer's head went out: nothing but closing
    the connection can tell the client the answer is incomplete."""


class Pipeline:
    """The modules' hooks, resolved once per worker into plain lists of callables."""

    def __init__(self, modules: Iterable[Module], replay: bool = True,
                 condition_fields: tuple[str, ...] = ()) -> None:
        """`replay`: whether kept answers may be replayed at all (the Server turns it
        off for debug logging and with the stat cache disabled); `condition_fields`:
        what the config's conditions read (answercache.condition_fields)."""
        self.modules = list(modules)
        # a request hook takes a Request, a connection hook (CONNECTION_HOOKS) a Connection
        phases: dict[str, list[Callable]] = {name: [] for name in HOOKS + CONNECTION_HOOKS
                                             if name not in _GATED}
        gated: dict[str, list[GatedHook]] = {name: [] for name in _GATED}
        for module in self.modules:
            for name in type(module).hooks():
                hook = getattr(module, name)
                if name in gated:
                    gated[name].append((hook, module.active_when.get(name, "")))
                else:
                    phases[name].append(hook)
        self.answers = self._answer_cache(replay, condition_fields)
        # the raw and clean URL phases run one after the other: one list
        self.url = gated["handle_uri_raw"] + gated["handle_uri_clean"]
        self.docroot = gated["handle_docroot"]
        self.physical = gated["handle_physical"]
        self.subrequest_start = gated["handle_subrequest_start"]
        self.response_start = gated["handle_response_start"]
        self.request_done = phases["handle_request_done"]
        self.request_reset = phases["handle_request_reset"]
        self.connection_accept = phases["handle_connection_accept"]
        self.connection_close = phases["handle_connection_close"]
        self.reads_bodies = any(module.reads_request_body for module in self.modules)
        base = Module.handle_trigger
        self.triggers = [CACHE.tick, OPEN_FILES.tick, self.answers.tick]
        self.triggers += [m.handle_trigger for m in self.modules
                          if type(m).handle_trigger is not base]

    def _answer_cache(self, replay: bool, condition_fields: tuple[str, ...]) -> AnswerCache:
        """The cache, with what the answering modules add to its key and its vetoes
        (worker/module.py); off when `replay` is."""
        if not replay:
            return AnswerCache(None)
        reads = set(CORE_READS)
        keyed: list[str] = []
        judges = []
        base = Module.allows_replay
        for module in self.modules:
            if all(h in _AFTER_ANSWER for h in type(module).hooks()):
                continue
            overrides = type(module).allows_replay is not base
            if not module.replay_safe and not overrides:
                return AnswerCache(None)        # it never allows: no key is worth making
            reads |= module.reads_headers
            keyed += [name for name in module.keyed_headers if name not in keyed]
            if overrides:
                judges.append(module.allows_replay)
        return AnswerCache(frozenset(reads), condition_fields, tuple(keyed), judges)

    # ------------------------------------------------------------------ run
    def handle(self, request: Request) -> bool:
        """Run the phases; True when the request is answered (the final status is in
        request.response.status), False when a module holds it (WAIT)."""
        status = request.response.status      # set already: an error found while parsing
        if not status:
            try:
                status = self._phases(request)
            except Exception:  # noqa: BLE001 - a module's fault is this request's 500
                status = _internal_error(request)
        return self._settle(request, status)

    def resume(self, request: Request) -> bool:
        """The holding module was woken: its next result, settled as handle's."""
        try:
            status = request.handler.handle_subrequest(request)
            if status == COMEBACK:
                status = self._phases(request)
        except Exception:  # noqa: BLE001 - as in handle
            status = _internal_error(request)
        return self._settle(request, status)

    def start_stream(self, request: Request) -> None:
        """A held request streams its answer: the head goes out now, so the
        response-start hooks run now."""
        _run_all(self.response_start, request)
        _end_head(request)

    def done(self, request: Request) -> None:
        for hook in self.request_done:
            hook(request)

    def reset(self, request: Request) -> None:
        """The request is over, answered or aborted: modules free what they hold."""
        for hook in self.request_reset:
            hook(request)

    def trigger(self, now: float) -> None:
        for hook in self.triggers:
            hook(now)

    def _settle(self, request: Request, status: int) -> bool:
        """After a result: WAIT holds; an error may go to the error handler (whose
        URL may be held in turn); a final status gets its error page and the
        response-start hooks."""
        response = request.response
        while status != WAIT:
            if status == ERROR:
                if response.started:
                    raise AnswerCut(request.target)
                _discard_answer(response)
                status = 500
            if response.started:
                response.status = status
                return True                  # the head went out already
            if not request.error_origin:
                if status < 400 or response.body or response.passthrough or \
                        status == _NO_ERROR_HANDLER or \
                        not self._to_error_handler(request, status):
                    break
                status = self._phases(request)
            else:
                status = _error_handled(request, status)
                break
        else:
            return False
        self._finish(request, status)
        return True

    def fail(self, request: Request, status: int) -> None:
        """Answer a request whose handler failed with a plain error (no error handler:
        that could fail or hold in turn)."""
        _discard_answer(request.response)
        self._finish(request, status)

    def _finish(self, request: Request, status: int) -> None:
        """The final status: lighttpd's error page where no body was written, and the
        response-start hooks."""
        response = request.response
        response.status = status
        if status >= 400 or (status >= 300 and status != 304 and not response.body):
            if error_response(request, status) and status == 404 and response.missing:
                response.replayable = True     # kept while the file stays absent
        _run_all(self.response_start, request)
        _end_head(request)

    def _to_error_handler(self, request: Request, status: int) -> bool:
        """server.error-handler, else server.error-handler-404 (for 404 and 403), as
        lighttpd chooses: answer an error with a local URL, as an internal redirect.
        The first runs as a GET (a HEAD stays one) and keeps the error's status; the
        older -404 keeps the request's method and body, and its page's own status
        stands unless it fails too.  False when none is set."""
        values = request.values
        target = values["server.error-handler"]
        keeps_status = bool(target)
        if not target and status in (403, 404):
            target = values["server.error-handler-404"]
        if not target:
            return False
        intercepted = request.handler is not None
        request.error_origin = (status, keeps_status, intercepted)
        if intercepted:                      # a backend's error (server.error-intercept):
            self.reset(request)              # the module lets its backend go first
            request.handler = None
        response = request.response
        # the challenge of a 401 stays with whatever page answers it (as lighttpd)
        response.headers = [h for h in response.headers if h[0].lower() == "www-authenticate"]
        response.reset_body()
        if keeps_status:
            _as_error_page_get(request)
            for name in ("range", "if-range"):    # the error page is sent whole
                request.headers.pop(name, None)
        request.internal_redirect(target)
        return True

    def _phases(self, request: Request) -> int:
        """Run the phases until a module answers or holds the request; a COMEBACK runs
        them again for the new URL, at most MAX_LOOPS times (then 500)."""
        while True:
            status = self._prepare(request)
            if status != COMEBACK:
                return status
            request.loops += 1
            if request.loops > MAX_LOOPS:
                log.error("response.c", f"ENDLESS LOOP IN rewrite-rule DETECTED ... aborting "
                          f"request, perhaps you want to use url.rewrite-once instead of "
                          f"url.rewrite-repeat ({request.target})")
                return 500
            request.response.reset_body()
            request.response.headers = []

    def _prepare(self, request: Request) -> int:
        """lighttpd's http_response_prepare: the phases in order, each list of hooks
        run only when some module has one (most configs leave several empty)."""
        if self.url:
            status = _run(self.url, request)
            if status:
                return status
        if request.handler is not None:     # claimed by URL: no file to look for
            return request.handler.handle_subrequest(request)
        if request.method == "CONNECT":     # no module took the tunnel: no file either
            request.response.add_header("Allow", ALLOW)
            return 405
        if request.uri_path == "*":
            return _options(request)
        request.docroot = request.values["server.document-root"]
        if self.docroot:
            status = _run(self.docroot, request)
            if status:
                return status
        set_physical(request, request.docroot, request.uri_path)
        status = (self.physical and _run(self.physical, request)) or \
            physical_path_check(request) or _run(self.subrequest_start, request)
        if status:
            return status
        method = request.method
        if method == "OPTIONS":
            return _options(request)
        if method in KNOWN_METHODS:
            request.response.add_header("Allow", ALLOW)
            return 405
        return 403 if method in ("GET", "HEAD", "POST") else 501


def _discard_answer(response: Response) -> None:
    """Drop what a failed handler had put in the answer (an error page replaces it)."""
    response.streaming = False
    response.discard()


def _as_error_page_get(request: Request) -> None:
    """server.error-handler's page is asked for as a GET (a HEAD stays one), without
    the request's body once it is whole (one still arriving stays, its reader with
    it), as lighttpd does; the answer to a request of another method offers no ranges
    (lighttpd restores its method before it decides them)."""
    if request.method != "HEAD":
        if request.method != "GET":
            request.response.ranged = True
        request.method = "GET"
    body = request.body
    if body is not None and body.complete:
        request.body = None
        request.content_length = 0


def _error_handled(request: Request, handled: int) -> int:
    """The status of an error answered by an error handler, as lighttpd 1.4.69 gives
    it: a handler that fails too leaves the plain error page of the original status;
    a backend's page (CGI, FastCGI ...) of the core's error keeps its own status,
    unless server.error-intercept takes its errors; else the 404 handler's own status
    stands (a soft 404, usually 200) and the general handler's page keeps the original
    error status."""
    assert request.error_origin is not None     # set by the handler this answers for
    status, keeps_status, intercepted = request.error_origin
    response = request.response
    response.replayable = False    # chosen by a file's absence, which no cache sees
    response.missing = ""          # ... and by the handler's files: never kept
    if handled >= 400:
        response.headers = []
        response.reset_body()
        return status
    if request.handler is not None and not intercepted and \
            not request.values["server.error-intercept"]:
        return handled                 # a backend's page of a core error
    if keeps_status and handled == 200:
        response.remove_header("Accept-Ranges")   # lighttpd offers ranges on 200s only
        return status
    return handled


def _internal_error(request: Request) -> int:
    """A hook raised: logged with its traceback, answered 500 on a connection that then
    closes (what the module left half done is not trusted further)."""
    log.error("handler.c", f"internal error handling {request.method} {request.uri_path} "
              f"from {request.remote_ip}:\n{traceback.format_exc().rstrip()}")
    request.handler = None
    request.keep_alive = False
    return 500


def _run(hooks: list[GatedHook], request: Request) -> int:
    """The hooks of a phase in order, until one gives a status (WAIT: it holds the
    request); those whose directive the request's settings leave empty are skipped."""
    for hook, key in hooks:
        if key and not request.values[key]:
            continue
        status = hook(request)
        if status:
            if status == WAIT:
                request.handler = hook.__self__   # type: ignore[attr-defined]
            return status
    return 0


def _run_all(hooks: list[GatedHook], request: Request) -> None:
    """Every hook of a phase whose results do not count (response start)."""
    for hook, key in hooks:
        if not key or request.values[key]:
            hook(request)


def _options(request: Request) -> int:
    request.response.add_header("Allow", ALLOW)
    return 200


def set_physical(request: Request, basedir: str, rel_path: str) -> None:
    """Map a URL path below `basedir` (docroot or an alias target) to the file system."""
    if basedir.endswith("/") and rel_path.startswith("/"):
        rel_path = rel_path[1:]
    if request.values["server.force-lowercase-filenames"]:
        rel_path = ascii_lower(rel_path)   # the docroot keeps its case, as in lighttpd
    request.physical_basedir = basedir
    request.physical_rel = rel_path
    request.physical_path = basedir + rel_path
    request.pathinfo = ""
    request.forget_stat()


def physical_path_check(request: Request) -> int:
    """Stat the file: 301 for a directory without a slash, PATH_INFO for a path that
    runs past a regular file, 403 / 404 for what cannot be served, and 403 for a path
    through a symlink when server.follow-symlink is off."""
    st = request.physical_lookup()
    if isinstance(st, int):
        status = status_of_errno(st)
        if status == 404:
            status = _find_pathinfo(request)
            if status == 404 and st == _ENOENT:
                request.response.missing = request.physical_path
        if status:
            return status
    if not request.values["server.follow-symlink"] and \
            CACHE.contains_symlink(request.physical_path):
        return 403
    if not isinstance(st, int) and is_directory(st):
        if not request.uri_path.endswith("/"):
            return redirect_to_slash(request)
    return 0


def _find_pathinfo(request: Request) -> int:
    """Walk up from the end: the longest prefix that is a regular file is the file,
    the rest is PATH_INFO (lighttpd serves /index.html/foo as /index.html).  The
    document root or alias target itself may be that file (alias.url = ("/dl" =>
    "/srv/file") serves /dl/anything as it)."""
    path = request.physical_path
    basedir = request.physical_basedir
    base_len = len(basedir.rstrip("/"))
    # a document root is a directory: only another base (an alias target) is asked
    last = base_len if basedir is request.docroot else 0
    end = len(path)
    while True:
        end = path.rfind("/", base_len, end)
        if end <= last:
            return 404
        st = CACHE.lookup(path[:end])
        if isinstance(st, int):
            continue
        if is_regular(st):
            rest = path[end:]
            request.pathinfo = rest
            if request.uri_path.endswith(rest):    # lighttpd shortens uri.path too, so
                request.uri_path = request.uri_path[: len(request.uri_path) - len(rest)]
            request.physical_path = path[:end]     # later checks see /a.inc of /a.inc/x
            request.physical_rel = request.physical_rel[: len(request.physical_rel)
                                                        - len(rest)]
            request.remember_stat(path[:end], st)
            return 0
        return 404


def redirect_to_slash(request: Request) -> int:
    """301 to the same URL with a slash: the relative links of the index work."""
    location = _quote_path(request.uri_path) + "/"
    if request.uri_query:
        location += "?" + request.uri_query
    request.response.set_header("Location", location)
    return 301


_SAFE: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                         b"-._~/!$&'()*+,;=:@")


def _quote_path(path: str) -> str:
    data = path.encode("utf-8", "surrogateescape")
    if all(byte in _SAFE for byte in data):
        return path
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in data)


def _bodiless(request: Request, status: int) -> bool:
    """No body goes out, whichever module wrote one: HEAD, 204, 304 (a backend's body
    after them would be read by the client as its next answer)."""
    return request.method == "HEAD" or has_no_body(status)


def _end_head(request: Request) -> None:
    """The head is final once the response-start hooks ran (one may change the status,
    mod_magnet's): whether a body follows it, and the connection's bandwidth."""
    request.response.head_only = _bodiless(request, request.response.status)
    _limit_bandwidth(request)


def _limit_bandwidth(request: Request) -> None:
    """The answer's connection takes the bandwidth limits of its settings (a config
    that sets none anywhere skips the look-up, and drops the limit an earlier
    answer's X-LIGHTTPD-KBytes-per-second set)."""
    config = request.config
    wire = request.wire
    if config is not None and config.rate_limited:
        wire.throttle = throttle_for(request.values, wire.throttle)
    elif wire.throttle is not None:
        wire.throttle = None


def error_response(request: Request, status: int) -> bool:
    """Fill in lighttpd's HTML error page unless the handler wrote a body; True when
    the page is the core's own (no file behind it)."""
    response = request.response
    if response.body or response.passthrough or has_no_body(status) or status < 200:
        return False
    if status < 400 or status >= 600:     # lighttpd writes pages for 4xx and 5xx only
        response.length = 0
        return False
    response.headers = [h for h in response.headers if lower_name(h[0]) not in _ERROR_DROPS]
    page = response.page_file = error_document(request, status)
    if page:                                # server.errorfile-prefix
        return False
    response.headers.insert(0, ("Content-Type", "text/html"))
    response.write(error_body(status))
    return True


__all__ = ["Pipeline", "AnswerCut", "set_physical", "redirect_to_slash",
           "physical_path_check", "error_response", "ALLOW"]
