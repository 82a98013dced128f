"""mod_authn_pam: the `pam` backend of mod_auth (Basic only, as in lighttpd), through
libpam itself with ctypes (no Python package needed).

As lighttpd 1.4.69: `auth.backend.pam.opts = ( "service" => "http" )` names the PAM
service (`http` by default, a file in /etc/pam.d); a login is pam_start(service, user)
with a conversation that answers every prompt with the password, PAM_RHOST set to the
client's address, then pam_authenticate and pam_acct_mgmt, both with PAM_SILENT and
PAM_DISALLOW_NULL_AUTHTOK; any failure is a wrong password (401), logged with PAM's own
words.  PAM modules block (and pam_unix waits after a failure): each login runs in a
thread of the worker (OffLoop), never in its event loop.  A user name or password with a
NUL byte is refused (C strings would cut it short).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import TYPE_CHECKING, Any, Callable

from shared import log
from shared.config.directives import Directive, Type

from .. import authn
from ..authn_basic import LibraryLogin
from ..module import Module as BaseModule
from ..request import Request

if TYPE_CHECKING:
    from ..services import Services

DIRECTIVES = (
    Directive("auth.backend.pam.opts", Type.ARRAY_KVSTRING, (),
              convert=lambda value: dict(value).get("service", "http"),
              doc='( "service" => "http" ): the PAM service checking passwords'),
)
authn.declare("pam")

PAM_SUCCESS = 0
PAM_RHOST = 4
PAM_SILENT = 0x8000
PAM_DISALLOW_NULL_AUTHTOK = 0x0001
PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON = 1, 2
DEFAULT_SERVICE = "http"


class _Message(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class _Response(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


_CONVERSE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int,
                             ctypes.POINTER(ctypes.POINTER(_Message)),
                             ctypes.POINTER(ctypes.POINTER(_Response)), ctypes.c_void_p)


class _Conversation(ctypes.Structure):
    _fields_ = [("conv", _CONVERSE), ("appdata_ptr", ctypes.c_void_p)]


class Pam:
    """libpam and libc, loaded once; `login` is one blocking authentication."""

    def __init__(self) -> None:
        self.libpam = ctypes.CDLL(ctypes.util.find_library("pam") or "libpam.so.0")
        self.libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        self.libc.calloc.restype = ctypes.c_void_p
        self.libc.calloc.argtypes = (ctypes.c_size_t, ctypes.c_size_t)
        self.libc.strdup.restype = ctypes.c_void_p
        self.libc.strdup.argtypes = (ctypes.c_char_p,)
        pam = self.libpam
        pam.pam_start.argtypes = (ctypes.c_char_p, ctypes.c_char_p,
                                  ctypes.POINTER(_Conversation), ctypes.POINTER(ctypes.c_void_p))
        pam.pam_set_item.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)
        pam.pam_authenticate.argtypes = (ctypes.c_void_p, ctypes.c_int)
        pam.pam_acct_mgmt.argtypes = (ctypes.c_void_p, ctypes.c_int)
        pam.pam_end.argtypes = (ctypes.c_void_p, ctypes.c_int)
        pam.pam_strerror.argtypes = (ctypes.c_void_p, ctypes.c_int)
        pam.pam_strerror.restype = ctypes.c_char_p

    def login(self, service: bytes, user: bytes, password: bytes, rhost: bytes) -> bool:
        """Whether PAM's `service` takes `password` for `user` (and lets the account in)."""
        converse = _CONVERSE(self._answerer(password))
        conversation = _Conversation(converse, None)
        handle = ctypes.c_void_p()
        status = self.libpam.pam_start(service, user, ctypes.byref(conversation),
                                       ctypes.byref(handle))
        flags = PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK
        if status == PAM_SUCCESS:
            status = self.libpam.pam_set_item(handle, PAM_RHOST, rhost)
        if status == PAM_SUCCESS:
            status = self.libpam.pam_authenticate(handle, flags)
        if status == PAM_SUCCESS:
            status = self.libpam.pam_acct_mgmt(handle, flags)
        if status != PAM_SUCCESS:
            reason = self.libpam.pam_strerror(handle, status) or b"?"
            log.error("mod_authn_pam", f"pam: {reason.decode('utf-8', 'replace')}")
        if handle:
            self.libpam.pam_end(handle, status)
        return status == PAM_SUCCESS

    def _answerer(self, password: bytes) -> Any:
        """The conversation: the password for each prompt, nothing for other messages
        (the answers are malloc'ed: PAM frees them)."""
        libc = self.libc

        def answer(count: int, messages: Any, responses: Any, _data: Any) -> int:
            block = libc.calloc(max(count, 1), ctypes.sizeof(_Response))
            answers = ctypes.cast(block, ctypes.POINTER(_Response))
            for index in range(count):
                if messages[index].contents.msg_style in (PAM_PROMPT_ECHO_OFF,
                                                          PAM_PROMPT_ECHO_ON):
                    answers[index].resp = libc.strdup(password)
            responses[0] = answers
            return PAM_SUCCESS
        return answer


class PamBackend(LibraryLogin):
    """Answers mod_auth's Basic questions through PAM (in a thread)."""

    source = "mod_authn_pam"
    library_name = "pam: libpam"

    def load(self) -> Pam:
        return Pam()

    def login_step(self, request: Request, realm: str, user: bytes,
                   password: bytes) -> Callable[[], bool]:
        service = (request.settings.values["auth.backend.pam.opts"] or DEFAULT_SERVICE)
        pam, rhost = self.library, request.remote_ip.encode()

        def login() -> bool:
            return pam.login(service.encode(), user, password, rhost)
        return login


class Module(BaseModule):
    name = "authn_pam"
    directives = DIRECTIVES

    def __init__(self, config: Any, services: "Services | None" = None) -> None:
        super().__init__(config, services)
        offloop = authn.OffLoop(services) if services is not None else None
        authn.register("pam", PamBackend(offloop))
