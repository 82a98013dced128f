"""mod_authn_file: the user-file backends of mod_auth, `plain`, `htpasswd`, `htdigest`.

- plain: `user:password` lines; answers Basic and Digest (the digest is computed from
  the password);
- htpasswd: `user:hash` lines in every hash Apache's htpasswd writes: bcrypt (`$2y$`,
  `$2a$`, `$2b$`), `$apr1$`, `{SHA}`, SHA-crypt (`$5$`, `$6$`), MD5-crypt (`$1$`) and
  DES crypt; answers Basic only (a hash gives no Digest), as in lighttpd;
- htdigest: `user:realm:H(user:realm:password)[:H(user:realm)]` lines (MD5, SHA-256 or
  SHA-512-256, told by the length of the digest; the fourth field for RFC 7616
  `userhash`).

As in lighttpd, blank lines, lines starting with `#` and lines over 1024 bytes are
skipped, and the first line for a user decides.  lighttpd reads the file on every
request; here it is kept parsed and read again when its size, mtime or inode change,
looked at no more than once a second.  bcrypt and SHA-crypt, made to be slow, are
checked in a thread (worker/authn.py OffLoop), so a costly hash never stalls the
worker's other connections.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Final

import bcrypt
from passlib.hash import apr_md5_crypt, des_crypt, md5_crypt, sha256_crypt, sha512_crypt

from shared import log
from shared.config.directives import Directive, Type

from .. import authn
from ..module import Module as BaseModule
from ..request import Request

if TYPE_CHECKING:
    from ..services import Services

DIRECTIVES: Final = (
    Directive("auth.backend.plain.userfile", Type.STRING, ""),
    Directive("auth.backend.plain.groupfile", Type.STRING, "",
              doc="accepted; lighttpd reads no group file either"),
    Directive("auth.backend.htpasswd.userfile", Type.STRING, ""),
    Directive("auth.backend.htdigest.userfile", Type.STRING, ""),
)
authn.declare("plain", "htpasswd", "htdigest")

MAX_FILE: Final = 64 * 1024 * 1024     # lighttpd's limit on a user file
MAX_LINE: Final = 1024                 # longer lines are skipped, as lighttpd does
RECHECK_SECONDS: Final = 1.0           # a user file is stat()ed at most this often
BCRYPT_MAX: Final = 72                 # bcrypt reads no further (Apache's htpasswd neither)
_MISSING: Final = (-1, -1, -1)         # the signature of a user file that cannot be opened
_DES_CHARS: Final = frozenset("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _algorithms_by_size() -> dict[int, tuple[str, ...]]:
    """Digest size in bytes -> the algorithms giving it (SHA-256 and SHA-512-256 share
    32: an htdigest line does not say which)."""
    sizes: dict[int, tuple[str, ...]] = {}
    for name in authn.DIGEST_ALGORITHMS:
        size = authn.digest_hash(name).digest_size
        sizes[size] = sizes.get(size, ()) + (name,)
    return sizes


_ALGORITHMS_OF_SIZE: Final = _algorithms_by_size()


def digest_ha1(algorithm: str, user: str, realm: str, password: bytes) -> bytes:
    """H(user:realm:password), RFC 7616's H(A1)."""
    text = f"{user}:{realm}:".encode("utf-8", "surrogateescape") + password
    return authn.digest_hash(algorithm, text).digest()


# ------------------------------------------------------------------- user files
@dataclass
class UserFile:
    """One user file, parsed into `entries`: user -> the fields after the name on the
    user's lines (password or hash; realm, digest and the optional userhash for
    htdigest, whose users may have a line per realm and algorithm)."""

    path: str
    kind: str
    signature: tuple[int, int, int] | None = None
    checked: float = float("-inf")
    entries: dict[str, list[list[str]]] = field(default_factory=dict)

    def current(self, now: float) -> dict[str, list[list[str]]]:
        """user -> the fields after the user name on each line of that user (htpasswd
        and plain keep the first only), as the file was at most RECHECK_SECONDS ago."""
        if now - self.checked >= RECHECK_SECONDS:
            self.checked = now
            self._reload_if_changed()
        return self.entries

    def _reload_if_changed(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as err:
            if self.signature != _MISSING:       # said once, until it is back
                log.error("mod_authn_file", f"opening {self.path} failed: {err.strerror}")
            self.signature, self.entries = _MISSING, {}
            return
        signature = (st.st_size, st.st_mtime_ns, st.st_ino)
        if signature != self.signature:
            self.signature = signature
            self.entries = self._parse(_read(self.path))

    def _parse(self, data: bytes) -> dict[str, list[list[str]]]:
        entries: dict[str, list[list[str]]] = {}
        bad = 0
        digest_lines = self.kind == "htdigest"
        wanted, splits = (3, 3) if digest_lines else (2, 1)
        for raw in data.split(b"\n"):
            if not raw or raw[:1] in b"#\r" or len(raw) > MAX_LINE:
                continue
            line = raw.decode("utf-8", "surrogateescape").removesuffix("\r")
            fields = line.split(":", splits)
            if len(fields) < wanted:
                bad += 1
                continue
            lines = entries.setdefault(fields[0], [])
            if digest_lines or not lines:
                lines.append(fields[1:])
        if bad:
            log.error("mod_authn_file", f"parse error in {self.path}: {bad} line(s) not "
                      + ("'username:realm:digest[:userhash]'" if digest_lines
                         else "'username:password'"))
        return entries


def _read(path: str) -> bytes:
    """The file, up to MAX_FILE bytes (a local file, read once per change)."""
    try:
        with open(path, "rb") as file:
            return file.read(MAX_FILE)
    except OSError as err:
        log.error("mod_authn_file", f"reading {path} failed: {err.strerror}")
        return b""


# ------------------------------------------------------------------- htpasswd hashes
def _sha1_matches(stored: str, password: bytes) -> bool:
    try:
        expected = base64.b64decode(stored[5:], validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(expected, hashlib.sha1(password).digest())


def _bcrypt_matches(stored: str, password: bytes) -> bool:
    try:
        return bcrypt.checkpw(password[:BCRYPT_MAX], stored.encode("ascii"))
    except ValueError:            # not a bcrypt hash after all: no password matches
        return False


def _passlib_matches(scheme: Any) -> Callable[[str, bytes], bool]:
    def matches(stored: str, password: bytes) -> bool:
        try:
            return bool(scheme.verify(password, stored))
        except (ValueError, TypeError):   # malformed hash, or NUL in a DES password
            return False
    return matches


# prefix -> (check, slow): a slow check runs off the event loop
_SCHEMES: Final[tuple[tuple[str, Callable[[str, bytes], bool], bool], ...]] = (
    ("{SHA}", _sha1_matches, False),
    ("$apr1$", _passlib_matches(apr_md5_crypt), False),
    ("$2y$", _bcrypt_matches, True),
    ("$2b$", _bcrypt_matches, True),
    ("$2a$", _bcrypt_matches, True),
    ("$5$", _passlib_matches(sha256_crypt), True),
    ("$6$", _passlib_matches(sha512_crypt), True),
    ("$1$", _passlib_matches(md5_crypt), False),
)
_des_matches: Final = _passlib_matches(des_crypt)


def htpasswd_check(stored: str) -> tuple[Callable[[str, bytes], bool], bool]:
    """The check for a stored htpasswd hash and whether it is slow; a hash of no known
    kind matches no password (lighttpd: crypt() fails)."""
    for prefix, check, slow in _SCHEMES:
        if stored.startswith(prefix):
            return check, slow
    if len(stored) == 13 and _DES_CHARS.issuperset(stored):
        return _des_matches, False
    return _never, False


def _never(_stored: str, _password: bytes) -> bool:
    return False


# -------------------------------------------------------------------- the backends
class _FileBackend:
    """Common to the three: the user file the request's settings name."""

    key = ""
    kind = ""

    def __init__(self, files: dict[str, UserFile], offloop: authn.OffLoop | None) -> None:
        self.files = files
        self.offloop = offloop

    def user_file(self, request: Request) -> UserFile | None:
        path = request.settings.values[self.key]
        if not path:
            return None
        user_file = self.files.get(path)
        if user_file is None or user_file.kind != self.kind:
            user_file = self.files[path] = UserFile(path, self.kind)
        return user_file

    def lines(self, request: Request, user: str) -> list[list[str]]:
        user_file = self.user_file(request)
        return user_file.current(time.monotonic()).get(user, []) if user_file else []

    def answers_digest(self) -> bool:
        return True


class PlainBackend(_FileBackend):
    key = "auth.backend.plain.userfile"
    kind = "plain"

    def check_password(self, request: Request, realm: str, user: str,
                       password: bytes) -> bool:
        lines = self.lines(request, user)
        return bool(lines) and hmac.compare_digest(
            lines[0][0].encode("utf-8", "surrogateescape"), password)

    def digest_ha1(self, request: Request, query: authn.DigestQuery) -> tuple[str, bytes] | None:
        lines = self.lines(request, query.user)
        if not lines:
            return None
        password = lines[0][0].encode("utf-8", "surrogateescape")
        return query.user, digest_ha1(query.algorithm, query.user, query.realm, password)


class HtpasswdBackend(_FileBackend):
    key = "auth.backend.htpasswd.userfile"
    kind = "htpasswd"

    def check_password(self, request: Request, realm: str, user: str,
                       password: bytes) -> bool | authn.Pending:
        lines = self.lines(request, user)
        if not lines:
            return False
        stored = lines[0][0]
        check, slow = htpasswd_check(stored)
        if slow and self.offloop is not None:
            return self.offloop.run(request, lambda: check(stored, password))
        return check(stored, password)

    def digest_ha1(self, request: Request, query: authn.DigestQuery) -> None:
        return None

    def answers_digest(self) -> bool:
        return False


class HtdigestBackend(_FileBackend):
    key = "auth.backend.htdigest.userfile"
    kind = "htdigest"

    def check_password(self, request: Request, realm: str, user: str,
                       password: bytes) -> bool:
        """The digest of the password against the user's line for this realm, in each
        algorithm of the line's digest length (lighttpd takes the rule's algorithm)."""
        for line_realm, stored, *_ in self.lines(request, user):
            expected = _unhex(stored) if line_realm == realm else None
            if expected is not None:
                return any(hmac.compare_digest(expected,
                                               digest_ha1(algorithm, user, realm, password))
                           for algorithm in _ALGORITHMS_OF_SIZE.get(len(expected), ()))
        return False

    def digest_ha1(self, request: Request, query: authn.DigestQuery) -> tuple[str, bytes] | None:
        size = authn.digest_hash(query.algorithm).digest_size * 2
        if query.userhash:
            return self._by_userhash(request, query, size)
        for line_realm, stored, *_ in self.lines(request, query.user):
            if line_realm == query.realm and len(stored) == size:
                digest = _unhex(stored)
                if digest is not None:
                    return query.user, digest
        return None

    def _by_userhash(self, request: Request, query: authn.DigestQuery,
                     size: int) -> tuple[str, bytes] | None:
        """The line whose fourth field is the client's H(user:realm)."""
        user_file = self.user_file(request)
        if user_file is None:
            return None
        wanted = query.user.lower()
        for user, lines in user_file.current(time.monotonic()).items():
            for fields in lines:
                if len(fields) == 3 and fields[0] == query.realm and \
                        len(fields[1]) == size and hmac.compare_digest(fields[2], wanted):
                    digest = _unhex(fields[1])
                    return (user, digest) if digest is not None else None
        return None


def _unhex(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


class Module(BaseModule):
    name = "authn_file"
    directives = DIRECTIVES

    def __init__(self, config: Any, services: "Services | None" = None) -> None:
        super().__init__(config, services)
        files: dict[str, UserFile] = {}
        offloop = authn.OffLoop(services) if services is not None else None
        for backend in (PlainBackend(files, offloop), HtpasswdBackend(files, offloop),
                        HtdigestBackend(files, offloop)):
            authn.register(backend.kind, backend)
