"""What the backends that check passwords but know no Digest H(A1) share (LDAP, PAM,
SASL: a directory, a PAM stack or libsasl2 takes a password, never gives one out)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from shared import log

if TYPE_CHECKING:
    from .authn import DigestQuery, OffLoop, Pending
    from .request import Request


class BasicOnly:
    """A Digest rule over such a backend is a 500, as in lighttpd (mod_auth asks
    answers_digest before anything else)."""

    def answers_digest(self) -> bool:
        return False

    def digest_ha1(self, request: "Request", query: "DigestQuery") -> None:
        return None


class LibraryLogin(BasicOnly):
    """A backend whose login is one blocking call into a C library through ctypes
    (libpam, libsasl2): the library is loaded at the first login (a worker that never
    checks a password never loads it; one that cannot load it refuses every login,
    said in the error log), each login runs in a thread of the worker (OffLoop), and a
    user name or password with a NUL byte is refused (C strings would cut it short)."""

    source = ""          # the error log's name for the module
    library_name = ""    # as the error log names the library

    def __init__(self, offloop: "OffLoop | None") -> None:
        self.offloop = offloop
        self.library: Any = None

    def load(self) -> Any:
        """The library's wrapper; raises OSError when it cannot be loaded."""
        raise NotImplementedError

    def login_step(self, request: "Request", realm: str, user: bytes,
                   password: bytes) -> Callable[[], bool]:
        """The blocking login, made from what it needs of the request."""
        raise NotImplementedError

    def check_password(self, request: "Request", realm: str, user: str,
                       password: bytes) -> "bool | Pending":
        name = user.encode("utf-8", "surrogateescape")
        if b"\0" in name or b"\0" in password:
            return False
        if self.library is None:
            try:
                self.library = self.load()
            except OSError as err:
                log.error(self.source, f"loading {self.library_name} failed: {err}")
                return False
        step = self.login_step(request, realm, name, password)
        return self.offloop.run(request, step) if self.offloop else step()
