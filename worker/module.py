"""The contract between the worker core and its modules.

A module is one file in `worker/modules/` named like lighttpd's (`mod_access.py`). It
declares `DIRECTIVES` (the config keys it owns) and a `Module` subclass that overrides
the hooks it needs.  Hooks run in the order of `server.modules`; the core knows no
module by name.  A hook returns a `HandlerResult`, as lighttpd's handler_t:

- None (or 0): go on, the next module or phase has its turn;
- an HTTP status: finished; the request is answered with what the module put in
  `request.response` (the core adds lighttpd's error page to an error without a body);
- WAIT: the request is held (a backend is working on it).  The module registers its
  fd or a timer through `self.services`; when that fires it calls `request.wake()`,
  and the core calls the module's `handle_subrequest(request)`, which returns a result
  again.  A held request at the head of a connection holds the pipelined ones behind;
- COMEBACK: the module changed the URL (`request.internal_redirect`); the phases run
  again from the start for the new URL (lighttpd's HANDLER_COMEBACK);
- ERROR: the module failed (its backend broke) and logged why: 500 if nothing of the
  answer went out yet, else the connection closes on the cut answer (HANDLER_ERROR).

A module that answers by URL alone (a proxy, a gateway for a URL prefix) claims the
request in handle_uri_clean by setting `request.handler = self` and going on: the core
then skips the document root and file phases and calls its handle_subrequest, as
lighttpd does for a handler_module set early.

A held request may stream its answer: the module sets the status and headers, calls
`request.response.stream()`, writes body parts with `response.write` whenever it has
them and returns WAIT; the core sends what was written (chunked when no length is
known).  Before reading more from its backend it looks at `request.backlog()`; above
`BACKLOG_HIGH` it stops and sets `response.wants_drain`: the core calls
handle_subrequest again once the client has taken most of it.  The final status
ends the stream.

A module that reads request bodies says so (`reads_request_body`).  A request comes to
the phases as soon as its head is in; the core calls handle_subrequest again each time
more of its body came.  The module reads `request.body` whole once complete, or piece
by piece with `body.read_chunk()` as it arrives (`server.stream-request-body` 1 or 2);
while `request.waits_for_body()` (mode 0) it holds the request (WAIT) before starting
any work, as lighttpd's handlers wait; see worker/body.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Final

from shared.config.directives import Directive

if TYPE_CHECKING:
    from shared.config.compiled import CompiledConfig
    from shared.config.directives import CheckResult
    from shared.config.tree import ConfigTree

    from .request import Request
    from .services import Services

# What a request hook returns (see above).  Hooks are called as `hook(request)` with a
# `worker.request.Request`; handle_response_start / handle_request_done /
# handle_request_reset return None.
HandlerResult = int | None
WAIT: Final = -1          # held: handle_subrequest is called after request.wake()
COMEBACK: Final = -2      # run the phases again for the URL the module set
ERROR: Final = -3         # failed: 500, or the connection cut if the answer had started
BACKLOG_HIGH: Final = 256 * 1024   # bytes queued for the client above which a producer pauses

# The phases of request handling, in order (lighttpd's plugin hooks).
HOOKS = (
    "handle_uri_raw",          # raw URI as received, before decoding
    "handle_uri_clean",        # decoded, normalised path: rewrite, redirect, access
    "handle_docroot",          # choose the document root (virtual hosts)
    "handle_physical",         # URL path mapped to a file system path: alias
    "handle_subrequest_start", # pick a handler: dirlisting, staticfile, fastcgi ...
    "handle_response_start",   # add or change response headers
    "handle_request_done",     # after the response: logging, stats
    "handle_request_reset",    # the request is over (answered or aborted): free its state
)

# Hooks about connections rather than requests (TLS, PROXY protocol, evasive ...).
CONNECTION_HOOKS = (
    "handle_connection_accept",   # hook(connection): a new connection, before it reads
    "handle_connection_close",    # hook(connection): the connection is closing
)


class Module:
    """Base of every module. `config` is the worker's CompiledConfig."""

    name: ClassVar[str] = ""
    directives: ClassVar[tuple[Directive, ...]] = ()
    # The answer cache (worker/answercache.py) replays a kept static-file answer without
    # running the hooks.  Every answering module has a say in what is kept:
    # - `replay_safe`: what its hooks do to a request that ends in such an answer
    #   depends only on the request's settings, method, Host and target, on files,
    #   and on the headers it names below.  A module that answers from other state (a
    #   clock, a backend, a random draw) leaves it off;
    # - `allows_replay(request)`: asked after each answer that could be kept; a module
    #   that is not replay-safe everywhere says here that this request is one it leaves
    #   alone (a path it does not protect, a host it does not serve), from the same
    #   inputs only, so that one such module does not switch the cache off for all;
    # - `reads_headers`: a request with one of these is never replayed (the module
    #   decides by something the key does not hold; an instance may set its own, from
    #   its config: mod_extforward's headers);
    # - `keyed_headers`: these headers' values join the key (an answer that varies
    #   with them, e.g. Accept-Encoding, is kept once per value).
    replay_safe: ClassVar[bool] = False
    reads_headers: frozenset[str] = frozenset()
    keyed_headers: ClassVar[tuple[str, ...]] = ()
    # A module that reads request bodies (a gateway, an upload handler) says so: while
    # none is loaded, a request with a body is answered as soon as its headers are in
    # and the body is dropped, never stored (worker/connection.py).
    reads_request_body: ClassVar[bool] = False
    # Modules lighttpd loads along with this one when one of its keys names them
    # (auth.backend = "htpasswd" -> mod_authn_file), with a warning, as long as
    # server.compat-module-load is on: key -> value -> module.
    companions: ClassVar[dict[str, dict[str, str]]] = {}
    # keys the module reads under a newer name (compress.filetype -> deflate.mimetypes):
    # old -> new; the config check moves each to its new name, with lighttpd's
    # DEPRECATED warning
    renamed_keys: ClassVar[dict[str, str]] = {}
    # hook -> the directive without which it does nothing (an empty list, "disable"):
    # the core skips the call for a request whose settings leave that value empty, as
    # a module loaded for a few URLs costs the others nothing then
    active_when: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Any, services: "Services | None" = None) -> None:
        self.config = config
        self.services = services

    @classmethod
    def prepare(cls, tree: "ConfigTree", checked: "CheckResult",
                compiled: "CompiledConfig") -> Any:
        """Config time, in the master: build what the workers must share and inherit
        through fork (TLS contexts: the same session-ticket keys in every worker), or
        refuse the config with a ConfigError.  The workers find the result in
        `self.config.prepared[name]`."""
        return None

    def allows_replay(self, request: "Request") -> bool:
        """Whether answers kept for requests like this one may be replayed without this
        module's hooks (see `replay_safe`); decided from what the key holds only."""
        return self.replay_safe

    def handle_subrequest(self, request: "Request") -> HandlerResult:
        """A request this module held (WAIT) was woken: return its next result."""
        raise NotImplementedError(f"{type(self).__name__} held a request it cannot resume")

    def handle_trigger(self, now: float) -> None:
        """Called about once a second from the event loop (caches, timeouts)."""

    @classmethod
    def hooks(cls) -> tuple[str, ...]:
        """The hooks this module overrides: the core calls only these."""
        return tuple(h for h in HOOKS + CONNECTION_HOOKS if getattr(cls, h, None) is not None)
