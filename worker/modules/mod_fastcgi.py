"""mod_fastcgi: FastCGI backends as lighttpd 1.4.69's mod_fastcgi: `fastcgi.server`,
`fastcgi.balance`, `fastcgi.debug`, `fastcgi.map-extensions`.

Which requests go to which backend, authorizers, SCRIPT_NAME and PATH_INFO,
X-Sendfile: worker/gw_cgi.py; connecting, sending, timeouts and errors:
worker/gw_exchange.py; the records: worker/fastcgi.py.  A request is BEGIN_REQUEST in
the responder or authorizer role, the CGI environment as PARAMS, the body as STDIN
records (as it arrives, never more of it in memory than one read; an authorizer gets
none: the body stays for the responder), and an empty STDIN.  STDOUT is the CGI
answer, streamed to the client; each line of STDERR goes to the error log;
END_REQUEST ends the answer.  A backend that closes before END_REQUEST fails the
request (502, or the connection cut once the answer went out), unless the answer's
length was announced and is all there or its STDOUT ended.  A client that goes away closes the
connection, which aborts the request in the backend (lighttpd does the same).

Beyond lighttpd: `fastcgi.keep-conn` (on by default) sends FCGI_KEEP_CONN and keeps
the connection after END_REQUEST for the next request to the same backend, like
nginx's fastcgi_keep_conn, within what the backend can spare.  A backend process
serves one connection at a time (php-cgi, a php-fpm child): a kept connection pins
one, busy or idle, and others (another worker, another server) would starve if the
kept ones took them all.  So the first request to an address asks its capacity with
FCGI_GET_VALUES (FCGI_MAX_CONNS) ahead of its BEGIN_REQUEST, on its own connection,
waiting for nothing; the answer comes before the request's STDOUT.  Each worker then
keeps at most (FCGI_MAX_CONNS - 1) // server.max-worker connections to that address
(and the host's "keepalive" idle ones), so one process at least is never held by a
kept connection; other requests get a connection of their own, closed after.  Until
the answer, and for a backend that does not tell (php-fpm answers nothing), nothing
is kept.  A kept connection idle for IDLE_SECONDS is closed: an idle worker leaves
the backend's processes free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from shared.config.directives import Directive, Type
from shared.gateway_hosts import Extension, parse_balance, parse_servers
from shared.log import escape_bs

from .. import fastcgi
from ..fastcgi import ProtocolError
from ..backend import Backend
from ..gw_cgi import CgiExchange, CgiGatewayModule
from ..module import HandlerResult
from ..request import Request

if TYPE_CHECKING:
    from ..services import Services

REQUEST_ID: Final = 1                   # one request per connection at a time, as lighttpd
END_PARAMS: Final = fastcgi.record(fastcgi.PARAMS, REQUEST_ID)
END_STDIN: Final = fastcgi.record(fastcgi.STDIN, REQUEST_ID)
# BEGIN_REQUEST by (authorizer, keep_conn)
BEGIN: Final = {(authorizer, keep): fastcgi.begin_request(
    REQUEST_ID, fastcgi.AUTHORIZER if authorizer else fastcgi.RESPONDER, keep)
    for authorizer in (False, True) for keep in (False, True)}
CAPACITY: Final = b"FCGI_MAX_CONNS"
ASK_CAPACITY: Final = fastcgi.get_values([CAPACITY.decode()])
IDLE_SECONDS: Final = 2.0               # a kept connection unused this long is closed

DIRECTIVES: Final = (
    Directive("fastcgi.server", Type.ARRAY_KVANY, (), convert=parse_servers),
    Directive("fastcgi.balance", Type.STRING, "fair", convert=parse_balance),
    Directive("fastcgi.debug", Type.INT, 0),
    Directive("fastcgi.map-extensions", Type.ARRAY_KVSTRING, ()),
    Directive("fastcgi.keep-conn", Type.BOOL, True,
              doc="send FCGI_KEEP_CONN and keep connections to the backends, as many as "
                  "their FCGI_MAX_CONNS spares"),
)


class FastCgiExchange(CgiExchange):
    """One request to a FastCGI backend."""

    __slots__ = ("records", "asking", "fastcgi_module", "stdout_ended")

    def __init__(self, module: "Module", request: Request, extension: Extension,
                 backend: Backend, authorizer: bool) -> None:
        super().__init__(module, request, extension, backend, authorizer)
        self.fastcgi_module = module           # `module`, with its FastCGI members
        self.asking: Backend | None = None    # the backend asked its capacity
        self.stdout_ended = False              # its empty STDOUT record came

    def prepare(self) -> HandlerResult:
        block = self.environment(fastcgi.PAIRS)
        if block is None:
            return self.error(411, "")
        if self.asking is not None:
            self.forget_question()
        backend = self.backend
        keep_conn = ask = False
        if backend.spec.keepalive > 0 and self.request.settings.values["fastcgi.keep-conn"]:
            keep_conn = self.fastcgi_module.backends.may_keep(backend)
            ask = self.fastcgi_module.first_to_ask(backend)
        self.asking = backend if ask else None
        self.keep_alive = keep_conn
        self.records = fastcgi.RecordReader()
        head = b"".join((ASK_CAPACITY if ask else b"", BEGIN[self.authorizer, keep_conn],
                         fastcgi.stream(fastcgi.PARAMS, REQUEST_ID, block), END_PARAMS))
        if self.authorizer:
            self.outgoing = head + END_STDIN
        else:
            self.send_body(head, whole_raw=False)
        return None

    def frame(self, data: bytes) -> bytes:
        return fastcgi.stream(fastcgi.STDIN, REQUEST_ID, data)

    def frame_end(self) -> bytes:
        return END_STDIN

    def take(self, data: bytes) -> HandlerResult:
        try:
            records = self.records.feed(data)
        except ProtocolError as err:
            return self.error(502, f"invalid FastCGI response ({err})")
        for record in records:
            kind = record.type
            if record.request_id != REQUEST_ID:
                if kind == fastcgi.GET_VALUES_RESULT and self.asking is not None:
                    self._learn_capacity(record.content)
                continue                  # another management record, another id
            if kind == fastcgi.STDOUT:
                if not record.content:
                    self.stdout_ended = True
                result = self.output(record.content)
                if result is not None:
                    return result
            elif kind == fastcgi.STDERR:
                self._log_stderr(record.content)
            elif kind == fastcgi.END_REQUEST:
                if self.asking is not None:       # asked, and nothing said: keep none
                    self._learn_capacity(b"")
                return self.output_ended(not self.records.pending)
        return None

    def forget_question(self) -> None:
        """A capacity question that got no answer (the request failed, or goes to
        another backend): the next request to that backend asks again."""
        asking = self.asking
        if asking is not None:
            self.fastcgi_module.asked.discard(asking)
            self.asking = None

    def _learn_capacity(self, content: bytes) -> None:
        backend, self.asking = self.asking, None
        assert backend is not None
        capacity = self.fastcgi_module.learn_capacity(backend, content)
        if self.debug_level:
            self.module.log(f"fastcgi - {backend.name}: FCGI_MAX_CONNS "
                            f"{capacity or 'unknown'}, keeping up to "
                            f"{backend.keep_limit} connections")

    def release(self) -> None:
        if self.asking is not None:
            self.forget_question()
        super().release()

    def closed(self, err: OSError | None) -> HandlerResult:
        """A close before END_REQUEST ends the answer when nothing of it is missing:
        its announced length is all there, or its STDOUT ended (as lighttpd, which
        takes any close after the head for the end)."""
        answer = self.answer
        if err is None and (self.stdout_ended or (answer is not None and answer.complete)):
            return self.output_ended(False)
        return None

    def _log_stderr(self, content: bytes) -> None:
        for line in content.decode("utf-8", "surrogateescape").splitlines():
            if line:
                self.module.log(f"FastCGI-stderr:{escape_bs(line)}")


class Module(CgiGatewayModule):
    name = "fastcgi"
    source = "mod_fastcgi.c"
    directives = DIRECTIVES
    idle_seconds = IDLE_SECONDS
    initial_keep_limit = 0                   # nothing kept before the capacity is known

    def new_exchange(self, request: Request, extension: Extension, backend: Backend,
                     authorizer: bool) -> CgiExchange:
        return FastCgiExchange(self, request, extension, backend, authorizer)

    def __init__(self, config: Any, services: "Services") -> None:
        super().__init__(config, services)
        self.asked: set[Backend] = set()     # capacity asked (answered or under way)
        self.workers = max(1, services.config.settings["server.max-worker"])

    def first_to_ask(self, backend: Backend) -> bool:
        """Whether a request to `backend` is the one to ask its capacity."""
        if backend in self.asked:
            return False
        self.asked.add(backend)
        return True

    def learn_capacity(self, backend: Backend, content: bytes) -> int:
        """FCGI_GET_VALUES_RESULT: keep this worker's share of FCGI_MAX_CONNS less one
        process left for the others, none when the backend does not say (0 returned)."""
        try:
            values = dict(fastcgi.decode_pairs(content))
            capacity = int(values.get(CAPACITY, b"0"))
        except (ProtocolError, ValueError):
            capacity = 0
        backend.keep_limit = max(0, capacity - 1) // self.workers
        return capacity
