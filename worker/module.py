"""The contract between the worker core and its modules.

A module is one file in `worker/modules/` named like lighttpd's (`mod_access.py`). It
declares `DIRECTIVES` (the config keys it owns) and a `Module` subclass that overrides
the hooks it needs.  Hooks run in the order of `server.modules`; the core knows no
module by name.  A hook returns None to let the request go on, or a `HandlerResult`
(a status, or a finished response) to end that phase.
"""

from __future__ import annotations

from typing import Any, ClassVar

from shared.config.directives import Directive

# What a request hook returns: None (or 0) lets the request go on; an HTTP status ends
# the phase and answers the request with it.  A handler that produced content has put
# it (headers, body) in `request.response` first; for an error status without a body
# the core adds lighttpd's error page.  Hooks are called as `hook(request)` with a
# `worker.request.Request`; handle_response_start / handle_request_done return None.
HandlerResult = int | None

# The phases of request handling, in order (lighttpd's plugin hooks).
HOOKS = (
    "handle_uri_raw",          # raw URI as received, before decoding
    "handle_uri_clean",        # decoded, normalised path: rewrite, redirect, access
    "handle_docroot",          # choose the document root (virtual hosts)
    "handle_physical",         # URL path mapped to a file system path: alias
    "handle_subrequest_start", # pick a handler: dirlisting, staticfile, fastcgi ...
    "handle_response_start",   # add or change response headers
    "handle_request_done",     # after the response: logging, stats
)


class Module:
    """Base of every module. `config` is the worker's CompiledConfig."""

    name: ClassVar[str] = ""
    directives: ClassVar[tuple[Directive, ...]] = ()
    # The answer cache (worker/answercache.py) replays a kept static-file answer without
    # running the hooks.  A module allows that by setting `replay_safe`: what its hooks
    # do to a request that ends in such an answer depends only on the request's
    # settings, method, Host and target, on files, and on the request headers it names
    # in `reads_headers` (a request with one of those is never replayed).  A module
    # that answers from other state (a clock, a backend, a random draw) leaves it off,
    # and the cache stays off while it is loaded.
    replay_safe: ClassVar[bool] = False
    reads_headers: ClassVar[frozenset[str]] = frozenset()
    # A module that reads request bodies (a gateway, an upload handler) says so: while
    # none is loaded, a request with a body is answered as soon as its headers are in
    # and the body is dropped, never stored (worker/connection.py).
    reads_request_body: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        self.config = config

    def handle_trigger(self, now: float) -> None:
        """Called about once a second from the event loop (caches, timeouts)."""

    @classmethod
    def hooks(cls) -> tuple[str, ...]:
        """The hooks this module overrides: the core calls only these."""
        return tuple(h for h in HOOKS if getattr(cls, h, None) is not None)
