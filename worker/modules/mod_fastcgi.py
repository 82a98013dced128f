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
length was announced and is all there.  A client that goes away closes the
connection, which aborts the request in the backend (lighttpd does the same).

Beyond lighttpd: `fastcgi.keep-conn = "enable"` sends FCGI_KEEP_CONN and keeps the
connection after END_REQUEST for the next request to the same backend (up to the
host's "keepalive" idle connections per worker), like nginx's fastcgi_keep_conn.  Off
by default, as in nginx: a backend process serves one connection at a time (php-cgi,
a php-fpm child), so a connection one worker keeps idle is a process the others
cannot reach; enable it when the backend has more processes than the workers keep.
"""

from __future__ import annotations

from shared.config.directives import Directive, Type
from shared.gateway_hosts import parse_balance, parse_servers
from shared.log import escape_bs

from .. import fastcgi
from ..fastcgi import ProtocolError
from ..gw_cgi import CgiExchange, CgiGatewayModule
from ..module import HandlerResult

REQUEST_ID = 1                   # one request per connection at a time, as lighttpd
END_STDIN = fastcgi.record(fastcgi.STDIN, REQUEST_ID)
# BEGIN_REQUEST by (authorizer, keep_conn)
BEGIN = {(authorizer, keep): fastcgi.begin_request(
    REQUEST_ID, fastcgi.AUTHORIZER if authorizer else fastcgi.RESPONDER, keep)
    for authorizer in (False, True) for keep in (False, True)}

DIRECTIVES = (
    Directive("fastcgi.server", Type.ARRAY_KVANY, (), convert=parse_servers),
    Directive("fastcgi.balance", Type.STRING, "fair", convert=parse_balance),
    Directive("fastcgi.debug", Type.INT, 0),
    Directive("fastcgi.map-extensions", Type.ARRAY_KVSTRING, ()),
    Directive("fastcgi.keep-conn", Type.BOOL, False,
              doc="send FCGI_KEEP_CONN and keep connections to the backends"),
)


class FastCgiExchange(CgiExchange):
    """One request to a FastCGI backend."""

    __slots__ = ("records",)

    def prepare(self) -> HandlerResult:
        env = self.environment()
        if env is None:
            return self.error(411, "")
        keep_conn = self.request.settings.values["fastcgi.keep-conn"] and \
            self.backend.spec.keepalive > 0
        self.keep_alive = keep_conn
        self.records = fastcgi.RecordReader()
        head = BEGIN[self.authorizer, keep_conn] + fastcgi.params(REQUEST_ID, env)
        if self.authorizer:
            self.outgoing = memoryview(head + END_STDIN)
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
        for kind, request_id, content in records:
            if request_id != REQUEST_ID:
                continue                  # a management record (GET_VALUES_RESULT)
            if kind == fastcgi.STDOUT:
                result = self.output(content)
                if result is not None:
                    return result
            elif kind == fastcgi.STDERR:
                self._log_stderr(content)
            elif kind == fastcgi.END_REQUEST:
                return self.output_ended(not self.records.pending)
        return None

    def closed(self, err: OSError | None) -> HandlerResult:
        answer = self.answer
        if err is None and answer is not None and answer.complete:
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
    exchange_class = FastCgiExchange
