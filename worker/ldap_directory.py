"""An LDAP directory as lighttpd's LDAP modules use it (mod_authn_ldap, mod_vhostdb_ldap),
with the `ldap3` library.

Everything here blocks (connect, bind, search): it runs in a worker's OffLoop thread
(worker/authn.py), never in the event loop.  A `Directory` keeps one connection for
searches, bound with the configured bind DN (or anonymously) and reopened once when
the server dropped it, as lighttpd keeps its LDAP handle; a user's own bind gets a
connection of its own, closed at once.  Connect, bind and search wait at most
`timeout` seconds each (lighttpd: `timeout` in microseconds, 2 s by default).

User input reaches a filter only through `filter_escape` (RFC 4515: NUL, `(`, `)`,
`*`, `\\` and every byte above 0x7f as `\\xx`) and a DN only through `dn_escape`
(RFC 4514), as lighttpd escapes them: a user name cannot change a filter's structure.
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
import threading
from dataclasses import dataclass, field

import ldap3
from ldap3.core.exceptions import LDAPException

SCHEMES = ("ldap://", "ldaps://", "ldapi://", "cldap://")
DEFAULT_TIMEOUT_US = 2_000_000          # lighttpd's 2 s
_FILTER_SPECIAL = frozenset(b"\0()*\\")
_DN_SPECIAL = frozenset(b'"+,;\\<>=#')


class DirectoryError(Exception):
    """The directory could not be asked (down, slow, refused our bind): logged by the
    caller with what it was asking."""


def ldap_uris(hostname: str) -> tuple[str, ...]:
    """lighttpd's reading of a hostname setting: names separated by spaces or commas,
    each given `ldap://` unless it names its scheme."""
    uris = []
    for name in re.split(r"[ \t\r\n,]+", hostname):
        if name:
            known = name.lower().startswith(SCHEMES)
            uris.append(name if known else "ldap://" + name)
    return tuple(uris)


def timeout_seconds(text: str) -> float:
    """A timeout in microseconds as lighttpd reads it (strtol: leading digits)."""
    digits = re.match(r"\s*[-+]?\d+", text)
    micro = int(digits.group()) if digits else 0
    return micro / 1_000_000 if micro > 0 else DEFAULT_TIMEOUT_US / 1_000_000


def filter_escape(raw: bytes) -> str:
    """An assertion value for a search filter (RFC 4515 section 3), as lighttpd writes it."""
    return "".join(f"\\{byte:02x}" if byte in _FILTER_SPECIAL or byte > 0x7F else chr(byte)
                   for byte in raw)


def dn_escape(raw: bytes) -> str:
    """An attribute value for a DN (RFC 4514 section 2.4), as lighttpd writes it: a
    backslash before the special characters (and `=`, `#` for Active Directory), NUL
    and bytes above 0x7f as `\\xx`, a leading and a trailing space escaped."""
    out = []
    for byte in raw:
        if byte in _DN_SPECIAL:
            out.append("\\" + chr(byte))
        elif byte == 0 or byte > 0x7F:
            out.append(f"\\{byte:02x}")
        else:
            out.append(chr(byte))
    if raw.startswith(b" "):
        out[0] = "\\ "
    if len(raw) > 1 and raw.endswith(b" "):
        out[-1] = "\\ "
    return "".join(out)


def fill(template: str, escaped: str) -> str:
    """The template with each `?` replaced by the (escaped) value."""
    return template.replace("?", escaped)


@dataclass(frozen=True)
class Settings:
    """Where and how to reach a directory (one per config block that names a host)."""

    uris: tuple[str, ...]
    bind_dn: str | None = None
    bind_pw: str | None = None
    ca_file: str | None = None
    starttls: bool = False
    timeout: float = DEFAULT_TIMEOUT_US / 1_000_000


@dataclass(eq=False)
class Directory:
    """One directory's search connection, shared by the threads that ask it."""

    settings: Settings
    lock: threading.Lock = field(default_factory=threading.Lock)
    connection: ldap3.Connection | None = None

    def search(self, base: str, search_filter: str,
               attributes: tuple[str, ...] = ()) -> list[tuple[str, dict[str, list[bytes]]]]:
        """(dn, the asked attributes' raw values) of the entries under `base` matching
        the filter; the connection is reopened once if the server dropped it."""
        with self.lock:
            try:
                connection = self._search_once(base, search_filter, attributes)
            except LDAPException:           # dropped by the server: once more, anew
                self._drop()
                try:
                    connection = self._search_once(base, search_filter, attributes)
                except LDAPException as err:
                    self._drop()
                    raise DirectoryError(f"ldap: {err}; filter: {search_filter}") from None
            result = connection.result or {}
            if result.get("result", 0) not in (0, 32):    # 32: no such object
                raise DirectoryError(f"ldap: {result.get('description')}; "
                                     f"filter: {search_filter}")
            return [(entry["dn"], dict(entry.get("raw_attributes", {})))
                    for entry in connection.response or ()
                    if entry.get("type") == "searchResEntry"]

    def _search_once(self, base: str, search_filter: str,
                     attributes: tuple[str, ...]) -> ldap3.Connection:
        connection = self._search_connection()
        connection.search(base, search_filter, ldap3.SUBTREE,
                          attributes=list(attributes) or ldap3.NO_ATTRIBUTES)
        return connection

    def bind_as(self, dn: str, password: bytes) -> bool:
        """Whether `dn` binds with `password` (a connection of its own, closed at once);
        DirectoryError when the server cannot be reached.  An empty password is an
        unauthenticated bind, which directories refuse (RFC 4513 5.1.2)."""
        if not password:
            return False
        connection = self._open(dn, password)
        try:
            return bool(connection.bind())
        except LDAPException as err:
            raise DirectoryError(f"ldap: bind as {dn!r}: {err}") from None
        finally:
            connection.unbind()

    def _search_connection(self) -> ldap3.Connection:
        if self.connection is None or self.connection.closed:
            settings = self.settings
            connection = self._open(settings.bind_dn, settings.bind_pw)
            if not connection.bind():
                description = (connection.result or {}).get("description")
                connection.unbind()
                raise DirectoryError(f"ldap: bind as {settings.bind_dn or 'anonymous'}: "
                                     f"{description}")
            self.connection = connection
        return self.connection

    def _drop(self) -> None:
        if self.connection is not None:
            try:
                self.connection.unbind()
            except LDAPException:
                pass            # already gone: nothing to tell the server
        self.connection = None

    def _open(self, user: str | None, password: str | bytes | None) -> ldap3.Connection:
        """A connected (not yet bound) connection for `user` (anonymous without one),
        TLS started when asked."""
        settings = self.settings
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=settings.ca_file) \
            if settings.starttls or any(u.startswith("ldaps://") for u in settings.uris) \
            else None
        servers = [ldap3.Server(uri, connect_timeout=settings.timeout, tls=tls,
                                get_info=ldap3.NONE)        # no schema: names as given
                   for uri in settings.uris]
        pool = ldap3.ServerPool(servers, ldap3.FIRST, active=1, exhaust=True) \
            if len(servers) > 1 else servers[0]
        connection = ldap3.Connection(
            pool, user=user or None, password=password if user else None,
            authentication=ldap3.SIMPLE if user else ldap3.ANONYMOUS,
            raise_exceptions=False, auto_referrals=False)
        try:
            connection.open()
            _bound_reads(connection, settings.timeout)
            started = not settings.starttls or connection.start_tls()
        except LDAPException as err:
            connection.unbind()
            raise DirectoryError(f"ldap: {settings.uris[0]}: {err}") from None
        if not started:
            connection.unbind()
            raise DirectoryError(f"ldap: {settings.uris[0]}: StartTLS: {connection.result}")
        return connection


def _bound_reads(connection: ldap3.Connection, timeout: float) -> None:
    """Each read on the connection waits at most `timeout` (ldap3's own receive timeout
    takes whole seconds only)."""
    seconds = int(timeout)
    connection.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                                 struct.pack("ll", seconds, int((timeout - seconds) * 1e6)))
