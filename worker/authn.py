"""Authentication backends, as mod_auth finds them: by the name `auth.backend` gives.

lighttpd's mod_auth asks a backend two questions: is this user's password right (Basic),
and what is H(user:realm:password) for this user (Digest, which never sees the
password).  A backend module (mod_authn_file, and later LDAP, SQL, PAM) declares the
names it answers to when it is imported, so the config check knows them
(`auth.backend not supported: ...` otherwise), and registers the object that answers
when the worker builds it; the core never names either.

A backend may answer at once or later: it returns a `Pending` when the answer needs a
slow step (a bcrypt hash, a directory server), settles it from the event loop, and the
requests held for it are woken.  `OffLoop` runs such a blocking step in a thread and
settles its Pending back in the loop, so a costly hash never stalls the other
connections of the worker.
"""

from __future__ import annotations

import collections
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from shared import log

from .module import COMEBACK, WAIT

if TYPE_CHECKING:
    from .request import Request
    from .services import Services

# RFC 7616 algorithm names -> hashlib's, in lighttpd's order of preference (SHA-512-256
# where the OpenSSL under hashlib has it, as lighttpd has it with OpenSSL)
DIGEST_ALGORITHMS = {name: hashed for name, hashed in (
    ("SHA-512-256", "sha512_256"), ("SHA-256", "sha256"), ("MD5", "md5"))
    if hashed in hashlib.algorithms_available}
_DECLARED: set[str] = set()
_REGISTERED: dict[str, "Backend"] = {}
_EPOLLIN = 1
OFF_LOOP_THREADS = 2     # hashes checked at once per worker; more wait their turn


class Pending:
    """An answer a backend gives later: `settle(value)` (from the event loop) records it
    and wakes the requests held for it (the one that asked, and those that `join` it
    because they ask the same)."""

    __slots__ = ("requests", "value", "done")

    def __init__(self, request: "Request") -> None:
        self.requests = [request]
        self.value: Any = None
        self.done = False

    def join(self, request: "Request") -> None:
        self.requests.append(request)

    def settle(self, value: Any) -> None:
        self.value, self.done = value, True
        for request in self.requests:
            if not request.aborted:
                request.wake()


def comeback_when_settled(request: "Request", key: str) -> int:
    """handle_subrequest of a module whose request waits for the Pending kept (as
    `.pending`) in request.plugin_ctx[key]: once it is settled the phases run again and
    the module finds the answer (as lighttpd re-enters its hooks); until then, WAIT."""
    asked = request.plugin_ctx.get(key)
    if asked is None or not asked.pending.done:
        return WAIT
    request.handler = None
    return COMEBACK


@dataclass(frozen=True)
class DigestQuery:
    """What Digest asks a backend: the H(user:realm:password) of `user` (or of the user
    whose H(user:realm) is `user`, when `userhash`), with `algorithm`'s hash."""

    user: str
    realm: str
    algorithm: str          # a key of DIGEST_ALGORITHMS
    userhash: bool


def digest_hash(algorithm: str, data: bytes = b"") -> Any:
    """A hashlib object of a Digest algorithm (a key of DIGEST_ALGORITHMS)."""
    return hashlib.new(DIGEST_ALGORITHMS[algorithm], data)


class Backend(Protocol):
    """Basic: True (the password is right), False, or a Pending of either.  Digest:
    (user name, H(A1) bytes) when known, None, or a Pending of either; a backend that
    cannot tell H(A1) (htpasswd: hashes only) says so by answers_digest, and a Digest
    rule over it is a 500, as in lighttpd."""

    def check_password(self, request: "Request", realm: str, user: str,
                       password: bytes) -> "bool | Pending": ...

    def digest_ha1(self, request: "Request",
                   query: DigestQuery) -> "tuple[str, bytes] | None | Pending": ...

    def answers_digest(self) -> bool: ...


def declare(*names: str) -> None:
    """Backend names a module answers to (at import, before the config is checked)."""
    _DECLARED.update(names)


def is_declared(name: str) -> bool:
    return name in _DECLARED


def register(name: str, backend: Backend) -> None:
    """The object that answers for `name` in this worker."""
    _REGISTERED[name] = backend


def backend(name: str) -> Backend | None:
    return _REGISTERED.get(name)


class OffLoop:
    """Blocking steps run in threads, their results settled in the event loop: a thread
    puts (Pending, result) in a queue and pokes an eventfd that the loop watches.
    Started at first use, so a worker that never needs it has no thread."""

    def __init__(self, services: "Services") -> None:
        self.services = services
        self.pool: ThreadPoolExecutor | None = None
        self.fd = -1
        self.finished: collections.deque[tuple[Pending, Any]] = collections.deque()

    def run(self, request: "Request", step: Callable[[], Any]) -> Pending:
        """Run `step()` in a thread; the Pending settles to its result (or False when
        it raised, logged once with the request's target)."""
        if self.pool is None:
            self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.services.loop.register(self.fd, _EPOLLIN, self)
            self.pool = ThreadPoolExecutor(OFF_LOOP_THREADS, "authn")
        pending = Pending(request)
        self.pool.submit(self._in_thread, pending, step)
        return pending

    def _in_thread(self, pending: Pending, step: Callable[[], Any]) -> None:
        try:
            result = step()
        except Exception as err:  # noqa: BLE001 - reported in the loop, request denied
            result = err
        self.finished.append((pending, result))
        os.eventfd_write(self.fd, 1)

    def on_event(self, _mask: int) -> None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            return
        while self.finished:
            pending, result = self.finished.popleft()
            if isinstance(result, Exception):
                log.error("mod_auth", f"password check failed for "
                          f"{pending.requests[0].target}: {result!r}")
                result = False
            pending.settle(result)
