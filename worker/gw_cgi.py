"""What the CGI-style gateways (mod_fastcgi, mod_scgi: FastCGI, SCGI and uwsgi) share,
as lighttpd 1.4.69's gw_backend.c does it for them.

Which requests they take: the first `NAME.server` key the request matches, a URL
prefix ("/app/", matched on the URL path) or an extension (".php", matched on the
file's path; `NAME.map-extensions` maps other extensions onto one that is there).
A backend is chosen as `NAME.balance` says (503 when all are down).  If the chosen
host has `check-local` (the default), the request waits until the core has found its
file (404 when there is none), so the extension is matched on the file and
SCRIPT_NAME / PATH_INFO are the core's split; with `check-local` disabled it is
claimed by URL and a prefix splits the path as lighttpd does: "/app" of /app/x/y is
SCRIPT_NAME /app, PATH_INFO /x/y; "/app/" gives /app/x and /y; with
`fix-root-scriptname`, "/" gives an empty SCRIPT_NAME and the whole path as PATH_INFO.

Hosts with `"mode" => "authorizer"` are asked first: their 200 lets the request go on
(the phases run again and the responders, or any other handler, answer it) with each
`Variable-NAME` header of the answer in the environment of the backends that answer
it later; any other answer of theirs is the client's.  The backend's answer is read as
a CGI head (worker/gateway.py: Status:, Location:, an NPH status line), then its body
streams; `x-sendfile` lets it name a file to send instead (X-Sendfile2, X-Sendfile,
X-LIGHTTPD-send-file), confined to `x-sendfile-docroot`; without it those headers are
dropped.  A request claimed by URL still gets the file its URL path would be below
the document root as SCRIPT_FILENAME, as lighttpd gives it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from mypy_extensions import mypyc_attr

from shared.config.directives import DirectiveValueError
from shared.gateway_hosts import Extension

from .backend import Backend
from .gateway import (XSENDFILE_FASTCGI, AnswerBody, HeadReader, PairEncoder, ResponseHead,
                      env_variable, request_body_length, sendfile_docroots,
                      sendfile_header, x_sendfile)
from .gw_exchange import Exchange, GatewayModule
from .module import COMEBACK, HandlerResult
from .request import Request

if TYPE_CHECKING:
    from shared.gateway_hosts import HostSpec

    from .services import Services

VARIABLE: Final = "variable-"


@mypyc_attr(allow_interpreted_subclasses=True)   # the CGI-like protocols' exchanges
class CgiExchange(Exchange):
    """An exchange whose backend gets the CGI environment and answers as a CGI does.
    The protocol feeds the answer's bytes to `output` and says when it is over
    (`output_ended`)."""

    __slots__ = ("authorizer", "reader", "answer", "decided")

    def __init__(self, module: "CgiGatewayModule", request: Request, extension: Extension,
                 backend: Backend, authorizer: bool) -> None:
        super().__init__(module, request, extension, backend)
        self.authorizer = authorizer
        self.reader = HeadReader(cgi=False, interim=request.send_interim)
        self.answer: AnswerBody | None = None
        # the answer was decided by its head (X-Sendfile, an authorizer's 200: COMEBACK);
        # what else the backend sends is dropped
        self.decided: int | None = None

    def environment(self, encoder: PairEncoder) -> bytes | None:
        """The backend's variables as the protocol's `encoder` encodes them; None for a
        body still arriving without a length (it has no CONTENT_LENGTH to give: the
        caller answers 411, as mod_cgi)."""
        request = self.request
        if not self.authorizer and request_body_length(request) < 0:
            request.keep_alive = False       # the rest of its body is never read
            return None
        return encoder.environment(request, self.backend.spec, self.authorizer)

    def output(self, data: bytes) -> HandlerResult:
        """Bytes of the backend's CGI answer; a result when the exchange failed."""
        if self.answer is not None:
            self.answer.take(data)
            return None
        if self.decided is not None:
            return None
        head = self.reader.feed(data)
        return None if head is None else self._head(head)

    def _head(self, head: ResponseHead) -> HandlerResult:
        if head.error:
            return self.error(head.error, head.reason)
        if self.authorizer and head.status in (0, 200):
            self._approve(head)
            return None
        spec = self.backend.spec
        header = sendfile_header(head, XSENDFILE_FASTCGI) if head.sendfile else None
        if header is not None:
            if spec.sends_files and not self.authorizer:
                self.decided = self._send_file(head, header, spec)
                return None
            for name in XSENDFILE_FASTCGI:    # not allowed: never passed on, as lighttpd
                head.remove(name)
        self.answer = AnswerBody(self.request, head)
        self.answer.take(head.rest)
        return None

    def _send_file(self, head: ResponseHead, header: tuple[str, str],
                   spec: "HostSpec") -> int:
        try:
            roots = sendfile_docroots(spec.x_sendfile_docroot, "x-sendfile-docroot")
        except DirectiveValueError as err:
            self.module.log(f"{spec.name}: {err}")
            return 500
        return x_sendfile(self.request, head, header, roots)

    def _approve(self, head: ResponseHead) -> None:
        """An authorizer's 200: its Variable-NAME headers become NAME for the backends
        that answer the request later."""
        request = self.request
        for name, value in head.headers:
            if len(name) > len(VARIABLE) and name[:len(VARIABLE)].lower() == VARIABLE:
                request.set_env(env_variable(name[len(VARIABLE):]), value)
        self.decided = COMEBACK

    def output_ended(self, reusable: bool) -> HandlerResult:
        """The backend's answer is over: its result."""
        decided = self.decided
        if decided == COMEBACK:
            return self._authorized(reusable)
        if decided is not None:
            return self.finish(decided, reusable)
        if self.answer is None:
            return self.error(502, "response incomplete (no header)" if self.received
                              else "response not received")
        return self.finish(self.answer.finish(self.backend.proc.name), reusable)

    def _authorized(self, reusable: bool) -> HandlerResult:
        """The authorizer approved: the phases run again, its host's answer dropped."""
        self.finish(None, reusable)
        module = self.module
        assert isinstance(module, CgiGatewayModule)
        request = self.request
        request.plugin_ctx[module.authorized_key] = True
        module.release(request)
        request.handler = None
        request.response.discard()
        request.response.status = 0
        return COMEBACK


@mypyc_attr(allow_interpreted_subclasses=True)   # mod_fastcgi, mod_scgi, mod_ajp13
class CgiGatewayModule(GatewayModule):
    """A module whose backends answer as CGIs do (see the module docstring)."""

    def __init__(self, config: Any, services: "Services") -> None:
        super().__init__(config, services)
        self.server_key = self.name + ".server"
        self.map_key = self.name + ".map-extensions"
        self.authorized_key = self.name + ".authorized"     # in plugin_ctx: approved
        # id(extensions) -> their split by mode: by identity, the config's tuple lives
        # as long as the config (a tuple is hashed anew, whole, at every look-up by value)
        self.by_mode: dict[int, ByMode] = {}
        # the last one used: most configs have one NAME.server for every request, found
        # again by identity alone (its id, an int made and hashed, costs more)
        self.last_split = ByMode(())

    def handle_uri_clean(self, request: Request) -> HandlerResult:
        if self.ctx_key in request.plugin_ctx:   # the phases run again (an error handler's URL)
            self.release(request)
            request.handler = None
        if request.handler is not None:
            return None
        return self._claim(request, by_url=True)

    def handle_subrequest_start(self, request: Request) -> HandlerResult:
        return self._claim(request, by_url=False)

    def _claim(self, request: Request, by_url: bool) -> HandlerResult:
        """lighttpd's gw_check_extension: by URL (check-local disabled) or by file."""
        values = request.settings.values
        extensions = values[self.server_key]
        if not extensions:
            return None
        found = self._find(request, extensions, by_url)
        if found is None:
            return None
        extension, authorizer = found
        backend = self.choose(request, extension)
        if backend is None:
            return 503
        spec = backend.spec
        if by_url and spec.check_local:
            return None                       # matched again once its file is found
        if by_url:
            if not authorizer:
                split_path_info(request, extension.key, spec.fix_root_scriptname)
            url_physical_path(request)
        if values[self.debug_key]:
            self.log(f"gw - found a host {spec.host} {spec.port}")
        request.replay_key = None             # a backend's answer is never kept
        exchange = self.new_exchange(request, extension, backend, authorizer)
        request.plugin_ctx[self.ctx_key] = exchange
        request.handler = self
        return None if by_url else exchange.step()

    def new_exchange(self, request: Request, extension: Extension, backend: Backend,
                     authorizer: bool) -> CgiExchange:
        """The protocol's exchange for a request this module claimed (made by a method,
        not a class attribute, so that compiled it is a native call)."""
        raise NotImplementedError

    def _find(self, request: Request, extensions: tuple[Extension, ...],
              by_url: bool) -> tuple[Extension, bool] | None:
        """The extension the request matches: an authorizer's first (unless one
        approved it already), then a responder's."""
        split = self.last_split
        if split.extensions is not extensions:
            found = self.by_mode.get(id(extensions))
            if found is None or found.extensions is not extensions:
                found = self.by_mode[id(extensions)] = ByMode(extensions)
            split = self.last_split = found
        mapping = request.settings.values[self.map_key]
        path = request.uri_path if by_url else request.physical_path
        if split.authorizers and not request.plugin_ctx.get(self.authorized_key, False):
            extension = _matching(split.authorizers, split.authorizer_keys, mapping,
                                  request.uri_path, path)
            if extension is not None:
                return extension, True
        extension = _matching(split.responders, split.responder_keys, mapping,
                              request.uri_path, path)
        return None if extension is None else (extension, False)


class ByMode:
    """A NAME.server value's extensions with their authorizer hosts, and with their
    responders, each with their keys (a prefix or a suffix), read natively where an
    Extension's are attribute look-ups on a Python object."""

    __slots__ = ("extensions", "authorizers", "authorizer_keys", "responders",
                 "responder_keys")

    def __init__(self, extensions: tuple[Extension, ...]) -> None:
        self.extensions = extensions
        self.authorizers = _with_mode(extensions, "authorizer")
        self.authorizer_keys = tuple(extension.key for extension in self.authorizers)
        self.responders = _with_mode(extensions, "responder")
        self.responder_keys = tuple(extension.key for extension in self.responders)


def _with_mode(extensions: tuple[Extension, ...], mode: str) -> tuple[Extension, ...]:
    kept = []
    for extension in extensions:
        hosts = tuple(host for host in extension.hosts if host.mode == mode)
        if len(hosts) == len(extension.hosts):
            kept.append(extension)
        elif hosts:
            kept.append(Extension(extension.key, hosts))
    return tuple(kept)


def _mapped(extensions: tuple[Extension, ...], mapping: tuple[tuple[str, str], ...],
            path: str) -> Extension | None:
    """NAME.map-extensions: the extension another suffix of `path` is mapped to."""
    for suffix, target in mapping:
        if path.endswith(suffix):
            return next((e for e in extensions if e.key == target), None)
    return None


def _matching(extensions: tuple[Extension, ...], keys: tuple[str, ...],
              mapping: tuple[tuple[str, str], ...], uri_path: str, path: str
              ) -> Extension | None:
    """The extension `mapping` maps a suffix of `path` to, else the first prefix of
    the URL path or extension of `path` (`keys`: the extensions' keys)."""
    if mapping:
        mapped = _mapped(extensions, mapping, path)
        if mapped is not None:
            return mapped
    for index in range(len(keys)):
        key = keys[index]
        if uri_path.startswith(key) if key.startswith("/") else path.endswith(key):
            return extensions[index]
    return None


def url_physical_path(request: Request) -> None:
    """The file a request claimed by URL would be (SCRIPT_FILENAME, DOCUMENT_ROOT):
    lighttpd maps the URL path, as the prefix left it, below the document root even
    for a handler that looks for no file."""
    docroot: str = request.values["server.document-root"]
    request.docroot = request.physical_basedir = docroot
    request.physical_path = docroot.rstrip("/") + "/" + request.uri_path.lstrip("/")


def split_path_info(request: Request, key: str, fix_root: bool) -> None:
    """SCRIPT_NAME (the URL path) and PATH_INFO of a request claimed by a prefix."""
    path = request.uri_path
    if fix_root and key == "/":
        request.pathinfo, request.uri_path = path, ""
        return
    if not key.startswith("/") or len(path) <= len(key):
        return
    slash = path.find("/", len(key))
    if slash >= 0:
        request.pathinfo, request.uri_path = path[slash:], path[:slash]
