"""mod_extforward: the client's address as a trusted proxy in front reports it, as
lighttpd 1.4.69 takes it.

    server.modules += ( "mod_extforward" )
    extforward.forwarder = ( "10.0.0.232" => "trust", "192.0.2.0/24" => "trust" )
    extforward.headers   = ( "X-Forwarded-For" )     # or "Forwarded", "X-Real-IP" ...
    extforward.params    = ( "host" => 1, "remote_user" => 1 )   # from Forwarded
    $SERVER["socket"] == ":8443" { extforward.hap-PROXY = "enable" }

A request from a trusted forwarder (`"all" => "trust"` trusts any connecting peer)
that carries one of `extforward.headers` (the first present, in config order; by
default X-Forwarded-For, then Forwarded-For) gets the address it names as its own
remote address: `$HTTP["remoteip"]` conditions, the access log's %h, REMOTE_ADDR
for backends and the X-Forwarded-For mod_proxy sends all see it.  In a chain, the
client is the rightmost address that is not a trusted forwarder (the explicit
entries only: "all" speaks of the connecting peer, never of addresses in a header).
X-Forwarded-Proto, or proto= of RFC 7239's Forwarded, changes the scheme (http or
https); Forwarded's host= and remote_user= are taken with `extforward.params`.

With `extforward.hap-PROXY`, a trusted peer starts each connection with a PROXY
protocol header (v1 or v2, worker/proxyproto.py), read before anything else, TLS
included: the connection's address, port and (from v2's SSL facts) scheme become the
client's for all its requests, and the SSL facts reach backends' environment
(`extforward.hap-PROXY-ssl-client-verify` makes a verified client certificate's CN
the REMOTE_USER).  mod_extforward must come after mod_openssl in server.modules
then, as in lighttpd: its transport reads the header under TLS's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from shared import log
from shared.config.directives import Directive, DirectiveValueError, Scope, Type, to_bool

from ..errors import BadRequest
from ..host import normalize_host
from ..module import HandlerResult, Module as BaseModule
from ..proxyproto import ProxyHeader, ProxyHeaderTransport
from ..request import Request

if TYPE_CHECKING:
    from shared.config.compiled import CompiledConfig
    from shared.config.directives import CheckResult
    from shared.config.tree import ConfigTree

    from ..connection import Connection

SOURCE = "mod_extforward.c"
DEFAULT_HEADERS = ("X-Forwarded-For", "Forwarded-For")
_PARAMS = ("host", "remote_user")
_TLS_MODULES = ("mod_openssl", "mod_mbedtls", "mod_wolfssl", "mod_nss", "mod_gnutls")
_NetworkType = ipaddress.IPv4Network | ipaddress.IPv6Network
# the most key=value pairs and separators a Forwarded header may hold (lighttpd's)
MAX_FORWARDED_SLOTS = 252
_TOKEN = frozenset("0123456789abcdefABCDEF:")      # what starts an address in a list


@dataclass(frozen=True, slots=True)
class Forwarders:
    """extforward.forwarder, parsed: `everyone` is 1 for "all" => "trust", -1 for
    "all" => anything else (no peer trusted), 0 without "all"."""

    everyone: int
    addresses: dict[str, bool]
    networks: tuple[_NetworkType, ...]

    def trusts(self, address: str) -> bool:
        """An address (as a string, compared as written) is a trusted forwarder."""
        known = self.addresses.get(address)
        if known is not None:
            return known
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        # an IPv4 address and its IPv4-mapped IPv6 form are one host, as lighttpd
        # compares them (sock_addr_is_addr_eq_bits)
        other = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else \
            ipaddress.IPv6Address(f"::ffff:{ip}")
        return any(ip in network or other is not None and other in network
                   for network in self.networks)

    def trusts_peer(self, address: str) -> bool:
        """The connecting peer is trusted ("all" decides alone when present)."""
        if self.everyone:
            return self.everyone == 1
        return self.trusts(address)


def _network(key: str) -> _NetworkType:
    address, _, bits = key.partition("/")
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if not bits.isdigit() or int(bits) <= 0:
        raise DirectiveValueError(f"extforward.forwarder: invalid netmask: {key}")
    try:
        return ipaddress.ip_network(f"{address}/{bits}", strict=False)
    except ValueError:
        raise DirectiveValueError(f"extforward.forwarder: invalid address: {key}") from None


def parse_forwarders(pairs: tuple[tuple[str, str], ...]) -> Forwarders:
    """lighttpd's reading: "trust" (any case) trusts, anything else does not (a value
    other than "untrusted" is logged); an untrusted CIDR is ignored with a log line."""
    everyone = 0
    addresses: dict[str, bool] = {}
    networks: list[_NetworkType] = []
    for key, value in pairs:
        trusted = value.lower() == "trust"
        if not trusted and value.lower() != "untrusted":
            log.error(SOURCE, f'ERROR: expect "trust", not "{key}" => "{value}"; '
                              f"treating as untrusted")
        if key == "all":
            everyone = 1 if trusted else -1
        elif "/" in key and not key.startswith("/"):
            if trusted:
                networks.append(_network(key))
            else:
                log.error(SOURCE, f'ERROR: untrusted CIDR masks are ignored '
                                  f'("{key}" => "{value}")')
        else:
            addresses[key] = trusted
    return Forwarders(everyone, addresses, tuple(networks))


def parse_params(params: Any) -> frozenset[str]:
    """extforward.params: which of host / remote_user are enabled (for= and proto=
    always are)."""
    unknown = [key for key, _ in params if key not in _PARAMS]
    if unknown:
        raise DirectiveValueError("extforward.params keys must be one of: host, "
                                  f"remote_user, but not: {unknown[0]}")
    return frozenset(key for key, value in params if to_bool(value))


DIRECTIVES = (
    Directive("extforward.forwarder", Type.ARRAY_KVSTRING, None, convert=parse_forwarders,
              doc='trusted proxies: "IP" / "CIDR" / "all" => "trust"'),
    Directive("extforward.headers", Type.ARRAY_VLIST, None,
              doc="headers naming the client (X-Forwarded-For, Forwarded, X-Real-IP ...)"),
    Directive("extforward.params", Type.ARRAY_KVANY, frozenset(), convert=parse_params,
              doc="Forwarded parameters taken besides for/proto: host, remote_user"),
    Directive("extforward.hap-PROXY", Type.BOOL, False, Scope.CONNECTION,
              doc="HAProxy PROXY protocol header first on each connection"),
    Directive("extforward.hap-PROXY-ssl-client-verify", Type.BOOL, False,
              doc="REMOTE_USER from the client certificate the proxy verified"),
)


# ------------------------------------------------------------ X-Forwarded-For
def address_list(value: str) -> list[str]:
    """The addresses of an X-Forwarded-For style list, as lighttpd cuts them: runs of
    hex digits, ':' and '.' that start with a hex digit or ':'."""
    tokens = []
    start = -1
    for index, char in enumerate(value):
        if start >= 0:
            if char not in _TOKEN and char != ".":
                tokens.append(value[start:index])
                start = -1
        elif char in _TOKEN:
            start = index
    if start >= 0:
        tokens.append(value[start:])
    return tokens


def client_of_list(value: str, forwarders: Forwarders) -> str | None:
    """The rightmost address of the list that is not a trusted forwarder."""
    for address in reversed(address_list(value)):
        if not forwarders.trusts(address):
            return address
    return None


# ------------------------------------------------------------ Forwarded (RFC 7239)
class ForwardedError(Exception):
    """A Forwarded header that must not be believed in part: 400."""


def _quoted_end(text: str, index: int) -> int:
    """The index of the quote closing the quoted-string opened at `index`, or of the
    end of `text` when it is never closed."""
    index += 1
    while index < len(text) and text[index] != '"':
        if text[index] == "\\":
            index += 1
        index += 1
    return min(index, len(text))


def _scan(text: str, index: int, stops: str) -> int:
    """The index of the next character of `stops` outside quoted-strings (or the end);
    ForwardedError for a quoted-string left open."""
    while index < len(text) and text[index] not in stops:
        if text[index] == '"':
            index = _quoted_end(text, index)
            if index >= len(text):
                raise ForwardedError("invalid quoted-string in Forwarded header")
        index += 1
    return index


def forwarded_elements(text: str) -> list[list[tuple[str, str]]]:
    """Forwarded's elements (one per proxy), each its key=value pairs as written (a
    pair without '=' or with an empty key is skipped, as lighttpd skips it)."""
    elements: list[list[tuple[str, str]]] = [[]]
    slots = 0
    index = 0
    while index < len(text):
        char = text[index]
        if char in " \t;":
            index += 1
            continue
        if char == ",":
            elements.append([])
            slots += 1
            index += 1
            continue
        key_start = index
        index = _scan(text, index, "=;,")
        if index >= len(text) or text[index] != "=":
            continue
        key = text[key_start:index]
        value_start = index + 1
        index = _scan(text, value_start, ";,")
        if key:
            elements[-1].append((key, text[value_start:index]))
            slots += 4
        if slots > MAX_FORWARDED_SLOTS:
            raise ForwardedError("Too many params in Forwarded header")
    return elements


def _unquoted(value: str) -> str:
    """A value without trailing blanks and without its double quotes (escapes kept)."""
    value = value.rstrip(" \t")
    if len(value) > 1 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    return value


def _node(value: str) -> str:
    """A for= node as an address: brackets and port taken off (lighttpd's reading)."""
    trimmed = value.rstrip(" \t")
    if not (len(trimmed) > 1 and trimmed[0] == '"' and trimmed[-1] == '"'):
        return trimmed
    inner = trimmed[1:-1]
    if inner.startswith("["):
        end = inner.rfind("]")
        if end <= 1:
            raise ForwardedError("Invalid IPv6 addr in Forwarded header")
        return inner[1:end]
    if inner[:1] in ("_", "/", "u"):
        return inner
    return inner.partition(":")[0]


def _last(pairs: list[tuple[str, str]], name: str) -> str | None:
    found = None
    for key, value in pairs:
        if key.lower() == name:
            found = value
    return found


def _unescaped(value: str, what: str) -> str:
    """Backslash escapes of a quoted-string taken off; a trailing lone one is 400."""
    out = []
    index = 0
    while index < len(value):
        if value[index] == "\\":
            index += 1
            if index == len(value):
                raise ForwardedError(f"invalid {what}= value in Forwarded header")
        out.append(value[index])
        index += 1
    return "".join(out)


def _param(value: str, what: str) -> str:
    """host= or remote_user=: without blanks and quotes, escapes taken off."""
    trimmed = value.rstrip(" \t")
    if len(trimmed) > 1 and trimmed[0] == '"' and trimmed[-1] == '"':
        return _unescaped(trimmed[1:-1], what)
    return trimmed


@dataclass(slots=True)
class Forwarded:
    """What a Forwarded header tells, from the element of the client's address."""

    address: str
    proto: str | None
    host: str | None
    remote_user: str | None


def read_forwarded(text: str, forwarders: Forwarders) -> Forwarded | None:
    """The client as lighttpd reads Forwarded: walking the elements from the last,
    the for= of each, up to the first that is not a trusted forwarder; the client is
    the last plain address met (an obfuscated `_x`, a path or "unknown" is passed
    over).  None when no element names one."""
    elements = forwarded_elements(text)
    chosen = -1
    for position in range(len(elements) - 1, -1, -1):
        value = _last(elements[position], "for")
        if value is None:
            continue
        node = _node(value)
        if not node:
            continue
        if node[0] not in "_/" and node != "unknown":
            chosen = position
        if not forwarders.trusts(node):
            break
    if chosen < 0:
        return None
    element = elements[chosen]
    later = [pair for pairs in elements[chosen + 1:] for pair in pairs]
    host = _last(element, "host")
    if host is None:
        host = next((value for key, value in later if key.lower() == "host"), None)
    remote_user = _last(element + later, "remote_user")
    proto = _last(element, "proto")
    return Forwarded(_node(_last(element, "for") or ""),
                     _unquoted(proto) if proto is not None else None, host, remote_user)


# ------------------------------------------------------------ the request's view
class _ForwardedSubject:
    """The request as conditions see it once its address changed: `remoteip` is its
    own (the connection's address stays the proxy's)."""

    __slots__ = ("request",)

    def __init__(self, request: Request) -> None:
        self.request = request

    def condition_value(self, field: str) -> str:
        if field == "remoteip":
            return self.request.remote_ip
        return self.request.condition_value(field)


def _valid_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class Module(BaseModule):
    name = "extforward"
    directives = DIRECTIVES
    replay_safe = True        # a request it changes carries one of reads_headers

    def __init__(self, config: Any, services: Any = None) -> None:
        super().__init__(config, services)
        self.default_headers = _default_headers(config)
        self.reads_headers = frozenset(name.lower() for name in _all_headers(config))
        self.proxied: dict["Connection", ProxyHeader] = {}

    @classmethod
    def prepare(cls, tree: "ConfigTree", checked: "CheckResult",
                compiled: "CompiledConfig") -> None:
        """lighttpd's warning: with hap-PROXY, a TLS module must come first."""
        if not any(values.get("extforward.hap-PROXY") for values in checked.settings.values()):
            return
        modules = list(checked.settings.get(0, {}).get("server.modules", ()))
        if "mod_extforward" not in modules:
            return
        for name in modules[modules.index("mod_extforward"):]:
            if name in _TLS_MODULES:
                checked.warnings.append(
                    f"mod_extforward must be loaded after {name} in server.modules "
                    f'when extforward.hap-PROXY = "enable"')
                return

    # ---------------------------------------------------------------- PROXY
    def handle_connection_accept(self, connection: "Connection") -> None:
        values = self.config.settings_for(connection).values
        forwarders = values["extforward.forwarder"]
        if not values["extforward.hap-PROXY"] or forwarders is None:
            return
        if not forwarders.trusts_peer(connection.remote_ip):
            if values["debug.log-request-handling"]:
                log.error(SOURCE, f"remote address {connection.remote_ip} is NOT a "
                                  f"trusted proxy, skipping")
            return
        connection.transport = ProxyHeaderTransport(connection.transport,
                                                    self._header_handler(connection))

    def _header_handler(self, connection: "Connection") -> Callable[[ProxyHeader], None]:
        def received(header: ProxyHeader) -> None:
            if header.source is not None:
                connection.remote_ip = header.source[0]
                if connection.condition_cache is not None:
                    connection.condition_cache.clear()
            if header.ssl:
                connection.scheme = "https"
            if header.env or header.ssl_client_verified:
                self.proxied[connection] = header
        return received

    def handle_connection_close(self, connection: "Connection") -> None:
        self.proxied.pop(connection, None)

    def _proxy_environment(self, request: Request, values: dict) -> None:
        """What the PROXY header told of the client's TLS, for backends (over what
        mod_openssl put there, as in lighttpd)."""
        header = self.proxied.get(request.connection)
        env = header.env if header is not None else {}
        for name, value in env.items():
            request.set_env(name, value)
        if not values["extforward.hap-PROXY-ssl-client-verify"]:
            return
        common_name = env.get("SSL_CLIENT_S_DN_CN")
        if common_name is not None and header is not None and header.ssl_client_verified:
            request.set_env("SSL_CLIENT_VERIFY", "SUCCESS")
            request.set_env("REMOTE_USER", common_name)
            request.set_env("AUTH_TYPE", "SSL_CLIENT_VERIFY")
        else:
            request.set_env("SSL_CLIENT_VERIFY", "NONE")

    # ---------------------------------------------------------------- headers
    def handle_uri_raw(self, request: Request) -> HandlerResult:
        values = request.settings.values
        forwarders = values["extforward.forwarder"]
        if forwarders is None:
            return None
        if self.name in request.plugin_ctx:   # the phases run again (COMEBACK): the
            self._reconfigure(request)         # headers are not read twice
            return None
        self._proxy_environment(request, values)
        headers = values["extforward.headers"]
        name, value = _first_header(request, self.default_headers if headers is None
                                    else headers)
        if value is None or not forwarders.trusts_peer(request.connection.remote_ip):
            if values["debug.log-request-handling"]:
                log.error(SOURCE, f"no forward header found or remote address "
                                  f"{request.connection.remote_ip} is NOT a trusted "
                                  f"proxy, skipping")
            return None
        try:
            changed = take_forwarded(request, value, forwarders, values["extforward.params"]) \
                if name.lower() == "forwarded" else \
                take_forwarded_for(request, value, forwarders)
        except ForwardedError as err:
            log.error(SOURCE, str(err))
            return 400
        if changed:
            request.plugin_ctx[self.name] = True
            self._reconfigure(request)
        return None

    def _reconfigure(self, request: Request) -> None:
        """The settings again, for the address, scheme and host the request has now
        (lighttpd resets its condition cache for them); the core's own evaluation
        (Request.configure, after a rewrite too) reads the connection's address."""
        request.settings = self.config.settings_for(_ForwardedSubject(request))

def _set_address(request: Request, address: str) -> bool:
    """The request's own remote address; False (no change) unless it is one."""
    if not _valid_address(address):
        return False
    if request.settings.values["debug.log-request-handling"]:
        log.error(SOURCE, f"using address: {address}")
    request.remote_ip = address
    return True


def _set_scheme(request: Request, proto: str) -> None:
    """X-Forwarded-Proto / proto=: http or https, anything else ignored."""
    lower = proto.lower()
    if lower in ("http", "https"):
        request.scheme = lower


def _first_header(request: Request, names: tuple[str, ...]) -> tuple[str, str | None]:
    for name in names:
        value = request.headers.get(name.lower())
        if value is not None:
            return name, value
    return "", None


def _default_headers(config: "CompiledConfig") -> tuple[str, ...]:
    """Headers read where no block sets extforward.headers: lighttpd's two, unless
    the global config turns PROXY on (then none) or names its own."""
    headers = config.globals["extforward.headers"]
    if headers:
        return tuple(headers)
    return () if config.globals["extforward.hap-PROXY"] else DEFAULT_HEADERS


def _all_headers(config: "CompiledConfig") -> set[str]:
    """Every header some part of the config may read (the answer cache never
    replays a request with one)."""
    names = set(_default_headers(config)) | {"X-Forwarded-Proto"}
    for block in config.blocks:
        names.update(block.settings.get("extforward.headers") or ())
    return names


def take_forwarded_for(request: Request, value: str, forwarders: Forwarders) -> bool:
    """X-Forwarded-For and its likes (X-Real-IP ...), with X-Forwarded-Proto."""
    address = client_of_list(value, forwarders)
    if address is None or not _set_address(request, address):
        return False
    proto = request.headers.get("x-forwarded-proto")
    if proto is not None:
        _set_scheme(request, proto)
    return True


def _take_host(request: Request, host: str) -> None:
    """Forwarded's host= as the request's Host; an empty one names none (the Host
    stays), one that is no host is a ForwardedError (400)."""
    if not host:
        return
    try:
        request.host = normalize_host(host, request.scheme)
    except BadRequest:
        raise ForwardedError("invalid host= value in Forwarded header") from None
    request.headers["host"] = host


def take_forwarded(request: Request, value: str, forwarders: Forwarders,
                   params: frozenset[str]) -> bool:
    """RFC 7239 Forwarded: for=, proto=, and with extforward.params host= and
    remote_user=."""
    found = read_forwarded(value, forwarders)
    if found is None or not _set_address(request, found.address):
        return False
    if found.proto is not None:
        _set_scheme(request, found.proto)
    if "host" in params and found.host is not None:
        _take_host(request, _param(found.host, "host").lower())
    if "remote_user" in params and found.remote_user is not None:
        request.set_env("REMOTE_USER", _param(found.remote_user, "remote_user"))
    return True
