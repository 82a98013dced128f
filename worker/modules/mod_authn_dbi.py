"""mod_authn_dbi: the `dbi` backend of mod_auth, users in an SQL database.

`auth.backend.dbi = ( "sql" => "SELECT passwd FROM users WHERE user='?' AND realm='?'",
"dbtype" => "sqlite3" | "pgsql" | "mysql", "dbname" => ..., "host", "port", "username",
"password", "encoding", "timeout", "sqlite3_dbdir" )`, as lighttpd 1.4.69 reads it: the
query's first `?` is the user name, the second the realm, the third the Digest algorithm
(`MD5`, `SHA-256`, or `NONE` for Basic), each escaped by the database's rules; the first
column of the first row is the stored password, which is, for Basic:

- a crypt hash (`$...`: SHA-crypt `$5$` `$6$`, bcrypt `$2y$`, MD5-crypt `$1$`; checked as
  mod_authn_file checks them),
- 32 hex digits: MD5 of `user:realm:password`, 64: SHA-256 of it (Digest's H(A1)),

and for Digest the H(A1) of the algorithm asked, in hex.  `ERROR` is never a password.
A database that is down, slow or refuses the query fails the login (401, the error
logged), as in lighttpd.  Queries run in a thread of the worker (OffLoop), never in its
event loop; the database types are those of worker/sql_database.py.  Unlike lighttpd,
the server starts even when the database cannot be reached yet.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any, Callable

from shared import log
from shared.config.directives import Directive, Type

from .. import authn
from ..module import Module as BaseModule
from ..request import Request
from ..sql_database import Database, DatabaseError, Settings, sql_options
from .mod_authn_file import htpasswd_check

if TYPE_CHECKING:
    from ..services import Services

_HASH_OF_HEX_LENGTH = {32: "md5", 64: "sha256"}


DIRECTIVES = (
    Directive("auth.backend.dbi", Type.ARRAY_KVANY, None,
              convert=lambda value: sql_options(value, "auth.backend.dbi"),
              doc='( "sql" => "...", "dbtype" => "sqlite3|pgsql|mysql", "dbname" => ... )'),
)
authn.declare("dbi")


def password_matches(stored: str, user: str, realm: str, password: bytes) -> bool:
    """lighttpd's mod_authn_dbi comparison of a stored password with a Basic one."""
    if len(stored) >= 3 and stored.startswith("$"):
        check, _slow = htpasswd_check(stored)
        return check(stored, password)
    algorithm = _HASH_OF_HEX_LENGTH.get(len(stored))
    if algorithm is None:
        return False
    try:
        expected = bytes.fromhex(stored)
    except ValueError:
        return False
    text = f"{user}:{realm}:".encode("utf-8", "surrogateescape") + password
    return hmac.compare_digest(expected, hashlib.new(algorithm, text).digest())


class DbiBackend:
    """Answers mod_auth's Basic and Digest questions from the database (in a thread)."""

    def __init__(self, offloop: authn.OffLoop | None) -> None:
        self.offloop = offloop
        self.databases: dict[Settings, Database] = {}

    def answers_digest(self) -> bool:
        return True

    def check_password(self, request: Request, realm: str, user: str,
                       password: bytes) -> "bool | authn.Pending":
        stored = self._ask(request, [user, realm, "NONE"])
        if stored is None:
            return False

        def check() -> bool:
            found = stored()
            return found is not None and password_matches(found, user, realm, password)
        return self.offloop.run(request, check) if self.offloop else check()

    def digest_ha1(self, request: Request,
                   query: authn.DigestQuery) -> "tuple[str, bytes] | None | authn.Pending":
        stored = self._ask(request, [query.user, query.realm, query.algorithm])
        if stored is None:
            return None
        size = authn.digest_hash(query.algorithm).digest_size

        def lookup() -> tuple[str, bytes] | None:
            found = stored()
            if found is None or len(found) != size * 2:
                return None
            try:
                return query.user, bytes.fromhex(found)
            except ValueError:
                return None
        return self.offloop.run(request, lookup) if self.offloop else lookup()

    def _ask(self, request: Request,
             values: list[str]) -> Callable[[], str | None] | None:
        """A blocking step giving the stored password (None: unknown user or the
        database failed, logged), or None when no database is configured here."""
        configured = request.settings.values["auth.backend.dbi"]
        if configured is None:
            log.error("mod_authn_dbi", f"auth.backend.dbi not configured for "
                      f"{request.uri_path}")
            return None
        sql, settings = configured
        database = self.databases.get(settings)
        if database is None:
            database = self.databases[settings] = Database(settings)

        def stored() -> str | None:
            try:
                found = database.first_value(sql, values)
            except DatabaseError as err:
                log.error("mod_authn_dbi", f"{err} (user {values[0]!r})")
                return None
            return None if found == "ERROR" else found
        return stored


class Module(BaseModule):
    name = "authn_dbi"
    directives = DIRECTIVES

    def __init__(self, config: Any, services: "Services | None" = None) -> None:
        super().__init__(config, services)
        offloop = authn.OffLoop(services) if services is not None else None
        authn.register("dbi", DbiBackend(offloop))
