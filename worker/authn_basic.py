"""What the backends that check passwords but know no Digest H(A1) share (LDAP, PAM:
a directory or a PAM stack takes a password, never gives one out)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .authn import DigestQuery
    from .request import Request


class BasicOnly:
    """A Digest rule over such a backend is a 500, as in lighttpd (mod_auth asks
    answers_digest before anything else)."""

    def answers_digest(self) -> bool:
        return False

    def digest_ha1(self, request: "Request", query: "DigestQuery") -> None:
        return None
