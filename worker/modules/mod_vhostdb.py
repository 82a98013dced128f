"""mod_vhostdb: the document root of a virtual host looked up in a database.

As lighttpd 1.4.69: `vhostdb.backend` names the backend ("dbi", "pgsql", "mysql",
"ldap": the modules mod_vhostdb_dbi, _pgsql, _mysql, _ldap, loaded beside this one, with
their own keys), asked with the request's authority (the Host, as sent, port included).
A document root found must be a directory (else 500, logged); none found leaves the
request with `server.document-root`; a backend that fails (down, slow, bad query) makes
the request a 500.  The host whose directory is used becomes the backends' SERVER_NAME.
`vhostdb.cache = ( "max-age" => "600" )` keeps the roots found (not the misses) for
max-age seconds (600 when not a number), per worker.

Lookups run in a thread of the worker (worker/authn.py's OffLoop) while the request
waits; then the phases run again and this module finds the answer.  Requests asking the
same host at once share one lookup.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared import log
from shared.config.directives import Directive, DirectiveValueError, Type
from shared.config.values import Array

from .. import authn, vhostdb_backends
from ..module import WAIT, HandlerResult, Module as BaseModule
from ..request import Request
from ..vhost import directory_errno, without_port

if TYPE_CHECKING:
    from ..services import Services

CACHE_SWEEP = 8.0             # seconds between sweeps of expired entries (lighttpd's)
DEFAULT_MAX_AGE = 600


@dataclass(frozen=True, eq=False)
class CachePolicy:
    """vhostdb.cache: how long a root found is kept (compared by identity: a cache
    per config block, as in lighttpd)."""

    max_age: int


def _known_backend(name: str) -> str:
    if name.strip() and not vhostdb_backends.BACKENDS.is_declared(name):
        raise DirectiveValueError(f"vhostdb.backend not supported: {name}")
    return name


def _cache_policy(value: Array) -> CachePolicy:
    max_age = DEFAULT_MAX_AGE
    for key, item in value:
        if key == "max-age":
            text = str(item).strip()
            max_age = int(text) if text.lstrip("-").isdigit() else DEFAULT_MAX_AGE
    return CachePolicy(max_age)


DIRECTIVES = (
    Directive("vhostdb.backend", Type.STRING, "", convert=_known_backend,
              doc="the database of virtual hosts: dbi, pgsql, mysql or ldap"),
    Directive("vhostdb.cache", Type.ARRAY, None, convert=_cache_policy,
              doc='keep the roots found for ( "max-age" => "600" ) seconds'),
)


class _Failed:
    """The lookup's answer when the backend failed (logged in the thread)."""


_FAILED = _Failed()


@dataclass
class _Asked:
    """A lookup in flight (or settled) for a held request."""

    authority: str
    pending: authn.Pending


class Module(BaseModule):
    name = "vhostdb"
    directives = DIRECTIVES

    def __init__(self, config: Any, services: "Services | None" = None) -> None:
        super().__init__(config, services)
        self.offloop = authn.OffLoop(services) if services is not None else None
        self.cache: dict[tuple[CachePolicy, str], tuple[float, str]] = {}
        self.asking: dict[tuple[str, str], authn.Pending] = {}     # (backend, authority)
        self.next_sweep = 0.0

    def allows_replay(self, request: Request) -> bool:
        """Hosts outside any vhostdb.backend are left alone; the others are decided by
        a database, which the answer cache does not see."""
        return not request.settings.values["vhostdb.backend"]

    # ---------------------------------------------------------------- hooks
    def handle_docroot(self, request: Request) -> HandlerResult:
        authority = request.host
        values = request.settings.values
        name = values["vhostdb.backend"]
        if not authority or not name:
            return None
        asked = request.plugin_ctx.pop("vhostdb", None)
        if asked is not None and asked.authority == authority and asked.pending.done:
            return self._found(request, authority, asked.pending.value)
        policy = values["vhostdb.cache"]
        kept = self.cache.get((policy, authority)) if policy is not None else None
        if kept is not None and time.monotonic() - kept[0] <= policy.max_age:
            return self._use(request, authority, kept[1])
        return self._ask(request, name, authority)

    def handle_subrequest(self, request: Request) -> HandlerResult:
        """The lookup answered: run the phases again, this module now finding the
        answer in the request."""
        return authn.comeback_when_settled(request, "vhostdb")

    def handle_trigger(self, now: float) -> None:
        if now < self.next_sweep:
            return
        self.next_sweep = now + CACHE_SWEEP
        self.cache = {key: entry for key, entry in self.cache.items()
                      if now - entry[0] <= key[0].max_age}
        self.asking = {key: pending for key, pending in self.asking.items()
                       if not pending.done}

    # ---------------------------------------------------------------- steps
    def _ask(self, request: Request, name: str, authority: str) -> HandlerResult:
        backend = vhostdb_backends.BACKENDS.get(name)
        if backend is None:
            return None
        pending = self.asking.get((name, authority))
        if pending is not None and not pending.done:
            pending.join(request)
        else:
            step = backend.lookup(request, authority)
            if step is None:
                return None
            if self.offloop is None:
                return self._found(request, authority, _run(step, authority))
            pending = self.offloop.run(request, lambda: _run(step, authority))
            self.asking[(name, authority)] = pending
        request.plugin_ctx["vhostdb"] = _Asked(authority, pending)
        return WAIT

    def _found(self, request: Request, authority: str, answer: Any) -> HandlerResult:
        """The backend's answer for the request: a 500 when it failed or names no
        directory; nothing when the host is unknown; else the root (kept)."""
        if answer is _FAILED:
            return 500
        if not answer:
            return None
        root = answer if answer.endswith("/") else answer + "/"
        missing = directory_errno(root) if "\0" not in root else errno.EINVAL
        if missing:
            shown = root.replace("\0", "\\x00")
            log.error("mod_vhostdb", f"{shown}: {os.strerror(missing)}"
                      if missing != errno.ENOTDIR else f"Not a directory: {shown}")
            return 500
        policy = request.settings.values["vhostdb.cache"]
        if policy is not None:
            self.cache[(policy, authority)] = (time.monotonic(), root)
        return self._use(request, authority, root)

    @staticmethod
    def _use(request: Request, authority: str, root: str) -> HandlerResult:
        request.docroot = root
        if not (request.env and "SERVER_NAME" in request.env):
            request.set_env("SERVER_NAME", without_port(authority))
        return None


def _run(step: vhostdb_backends.Lookup, authority: str) -> Any:
    """The step's root, or _FAILED (logged with the host) when the backend failed."""
    try:
        return step()
    except vhostdb_backends.LookupFailed as err:
        log.error("mod_vhostdb", f"{err} (host {authority})")
        return _FAILED
