"""mod_authn_sasl: the `sasl` backend of mod_auth (Basic only, as in lighttpd), through
Cyrus libsasl2 itself with ctypes (no Python package needed).

As lighttpd 1.4.69: `auth.backend.sasl.opts` takes `service` ("http" by default),
`fqdn` (the host's name by default), `pwcheck_method` (`saslauthd`, the default,
`auxprop`, or `sasldb`, which is auxprop with the sasldb plugin) and `sasldb_path`; a
login is sasl_server_new(service, fqdn, the auth.require realm) and sasl_checkpass on
it.  Any other pwcheck_method refuses the config with lighttpd's words.  libsasl2's
errors and warnings go to the error log.  A lookup may block (saslauthd is a socket
away): each login runs in a thread of the worker (OffLoop), one at a time, since the
options libsasl2 asks for through its callback are the login's own.  A user name or
password with a NUL byte is refused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from shared import log
from shared.config.directives import Directive, DirectiveValueError, Type

from .. import authn
from ..authn_basic import LibraryLogin
from ..module import Module as BaseModule
from ..request import Request

if TYPE_CHECKING:
    from ..services import Services

SASL_OK = 0
SASL_FAIL = -1
SASL_CB_LIST_END, SASL_CB_GETOPT, SASL_CB_LOG = 0, 1, 2
SASL_LOG_ERR, SASL_LOG_FAIL, SASL_LOG_WARN = 1, 2, 3
PWCHECK_METHODS = ("saslauthd", "auxprop", "sasldb")


@dataclass(frozen=True)
class SaslOptions:
    """auth.backend.sasl.opts, as the options libsasl2 asks for (bytes: C strings)."""

    service: bytes = b"http"
    fqdn: bytes = b""
    pwcheck_method: bytes = b"saslauthd"
    sasldb_path: bytes = b""

    def option(self, name: bytes) -> bytes | None:
        """What libsasl2's getopt callback answers for `name`, or None (not set)."""
        if name == b"pwcheck_method":
            return self.pwcheck_method
        if name == b"sasldb_path":
            return self.sasldb_path or None
        if name == b"auxprop_plugin":
            return b"sasldb"
        return None


def parse_options(pairs: tuple[tuple[str, str], ...]) -> SaslOptions:
    """The opts as lighttpd reads them: sasldb is auxprop with the sasldb plugin."""
    opts = dict(pairs)
    method = opts.get("pwcheck_method", "saslauthd")
    if method not in PWCHECK_METHODS:
        raise DirectiveValueError("sasl pwcheck_method must be one of saslauthd, "
                                  f"sasldb, or auxprop, not: {method}")
    return SaslOptions(service=opts.get("service", "http").encode(),
                       fqdn=opts.get("fqdn", "").encode() or os.uname().nodename.encode(),
                       pwcheck_method=b"auxprop" if method == "sasldb" else method.encode(),
                       sasldb_path=opts.get("sasldb_path", "").encode())


DIRECTIVES = (
    Directive("auth.backend.sasl.opts", Type.ARRAY_KVSTRING, parse_options(()),
              convert=parse_options,
              doc='( "pwcheck_method" => "sasldb", "sasldb_path" => "..." ): how libsasl2 '
                  "checks passwords"),
)
authn.declare("sasl")

_GETOPT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_uint))
_LOG = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)


class _Callback(ctypes.Structure):
    _fields_ = [("id", ctypes.c_ulong), ("proc", ctypes.c_void_p), ("context", ctypes.c_void_p)]


class Sasl:
    """libsasl2, loaded and initialised once per worker (after the fork, as lighttpd
    does it); `login` is one blocking password check, one at a time."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("sasl2") or "libsasl2.so.2")
        lib.sasl_server_init.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
        lib.sasl_server_new.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                        ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p,
                                        ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p))
        lib.sasl_checkpass.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint,
                                       ctypes.c_char_p, ctypes.c_uint)
        lib.sasl_dispose.argtypes = (ctypes.POINTER(ctypes.c_void_p),)
        self.lib = lib
        self.lock = threading.Lock()
        self.options = parse_options(())    # the login in progress's
        # kept referenced: libsasl2 calls them for as long as the process lives
        self._getopt = _GETOPT(self._answer_option)
        self._log = _LOG(self._log_message)
        self.callbacks = (_Callback * 3)(
            _Callback(SASL_CB_GETOPT, ctypes.cast(self._getopt, ctypes.c_void_p), None),
            _Callback(SASL_CB_LOG, ctypes.cast(self._log, ctypes.c_void_p), None),
            _Callback(SASL_CB_LIST_END, None, None))
        self.initialised = False

    def login(self, options: SaslOptions, realm: bytes, user: bytes, password: bytes) -> bool:
        """Whether libsasl2 takes `password` for `user` in `realm`."""
        with self.lock:
            self.options = options
            if not self.initialised:
                status = self.lib.sasl_server_init(self.callbacks, b"lighttpd")
                if status != SASL_OK:
                    log.error("mod_authn_sasl.c", f"sasl_server_init failed: {status}")
                    return False
                self.initialised = True
            connection = ctypes.c_void_p()
            status = self.lib.sasl_server_new(options.service, options.fqdn, realm, None,
                                              None, self.callbacks, 0,
                                              ctypes.byref(connection))
            if status == SASL_OK:
                status = self.lib.sasl_checkpass(connection, user, len(user), password,
                                                 len(password))
                self.lib.sasl_dispose(ctypes.byref(connection))
            return status == SASL_OK

    def _answer_option(self, _context: Any, _plugin: Any, name: bytes, result: Any,
                       length: Any) -> int:
        value = self.options.option(name)
        if value is None:
            return SASL_FAIL
        result[0] = value       # a bytes attribute of the options: alive while they are
        if length:
            length[0] = len(value)
        return SASL_OK

    @staticmethod
    def _log_message(_context: Any, level: int, message: bytes) -> int:
        if level in (SASL_LOG_ERR, SASL_LOG_FAIL, SASL_LOG_WARN):
            log.error("mod_authn_sasl.c", message.decode("utf-8", "replace"))
        return SASL_OK


class SaslBackend(LibraryLogin):
    """Answers mod_auth's Basic questions through libsasl2 (in a thread)."""

    source = "mod_authn_sasl.c"
    library_name = "libsasl2"

    def load(self) -> Sasl:
        return Sasl()

    def login_step(self, request: Request, realm: str, user: bytes,
                   password: bytes) -> Callable[[], bool]:
        options: SaslOptions = request.settings.values["auth.backend.sasl.opts"]
        sasl, realm_bytes = self.library, realm.encode("utf-8", "surrogateescape")

        def login() -> bool:
            return sasl.login(options, realm_bytes, user, password)
        return login


class Module(BaseModule):
    name = "authn_sasl"
    directives = DIRECTIVES

    def __init__(self, config: Any, services: "Services | None" = None) -> None:
        super().__init__(config, services)
        offloop = authn.OffLoop(services) if services is not None else None
        authn.register("sasl", SaslBackend(offloop))
