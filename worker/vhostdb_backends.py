"""The backends of mod_vhostdb, found by the name `vhostdb.backend` gives (`BACKENDS`, a
worker/backend_registry.py Registry): mod_vhostdb_dbi, _pgsql, _mysql and _ldap, as
lighttpd names them, declare and register theirs; mod_vhostdb never names one.  A
backend's `lookup(request, authority)` gives the blocking step that finds the host's
document root (run in a thread: it may ask a server over the network), or None when
the request's settings configure no database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

from .backend_registry import Registry

if TYPE_CHECKING:
    from .request import Request


class LookupFailed(Exception):
    """The database could not be asked (down, slow, bad query): the request is a 500."""


# The step a backend gives: the document root of the host ("" when it has none), or
# LookupFailed.
Lookup = Callable[[], str]


class Backend(Protocol):
    def lookup(self, request: "Request", authority: str) -> Lookup | None: ...


BACKENDS: Registry[Backend] = Registry()
