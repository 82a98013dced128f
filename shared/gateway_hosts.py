"""The host arrays of the gateway modules (`proxy.server`, `fastcgi.server`,
`scgi.server`, `wstunnel.server`, `sockproxy.server`, `ajp13.server`), as lighttpd
1.4.69's gw_backend.c reads them:

    ( "/prefix/" => ( "label" => ( "host" => "10.0.0.2", "port" => 8080 ), ( ... ) ),
      ".php"     => ( ( "socket" => "/run/php.sock", "bin-path" => "/usr/bin/php-cgi" ) ) )

parsed once, when the config loads (in the master: host names are resolved once and
never per request), into `Extension`s of immutable `HostSpec`s.  Both sides read them:
the master spawns the `bin-path` hosts (master/spawner.py), the workers connect to
them (worker/backend.py).  A wrong key or value is a DirectiveValueError, which the
config loader reports with the directive's file and line.

A host with a `bin-path` is served by `max-procs` processes; process N listens on
`socket-N` (a unix socket) or on `port + N` (TCP), as lighttpd numbers them:
`HostSpec.procs` lists those addresses, for the master to bind and the workers to
balance over.
"""

from __future__ import annotations

import signal
import socket
from dataclasses import dataclass, field
from functools import cached_property

from .config.directives import DirectiveValueError, to_bool
from .config.values import Array

DJB_INIT = 5381
MAX_LABEL = 128
DEFAULT_KEEPALIVE = 64       # idle connections a worker keeps per backend
UNIX_PATH_MAX = 108 - 2      # sun_path, as lighttpd checks it
MAX_PROCS = 256              # a sanity bound on spawned processes per host
BALANCES = {"fair": "fair", "least-connection": "fair", "round-robin": "round-robin",
            "hash": "hash", "sticky": "sticky"}
MODES = frozenset({"responder", "authorizer"})

# per-host keys: name -> (lowest, highest) for integers
_INT_KEYS = {"port": (0, 65535), "connect-timeout": (0, 2**31 - 1),
             "read-timeout": (0, 2**31 - 1), "write-timeout": (0, 2**31 - 1),
             "disable-time": (0, 65535), "keepalive": (0, 65535),
             "listen-backlog": (1, 65535), "kill-signal": (1, signal.NSIG - 1),
             "min-procs": (0, MAX_PROCS), "max-procs": (1, MAX_PROCS),
             "max-load-per-proc": (1, 65535), "idle-timeout": (0, 2**31 - 1)}
_STRING_KEYS = frozenset({"host", "socket", "bin-path", "mode", "docroot",
                          "strip-request-uri"})
_BOOL_KEYS = frozenset({"upgrade", "check-local", "fix-root-scriptname",
                        "broken-scriptfilename", "x-sendfile", "allow-x-send-file",
                        "tcp-fin-propagate"})
_LIST_KEYS = frozenset({"bin-copy-environment", "x-sendfile-docroot"})
_MAP_KEYS = frozenset({"bin-environment"})


@dataclass(frozen=True)
class Proc:
    """One address a host is served at: the host itself, or one of its spawned
    processes."""

    number: int                # 0 for a host that is not spawned
    family: int
    address: tuple | str       # what connect() and bind() take
    name: str                  # "tcp:10.0.0.2:8080" or "unix:/run/app.sock-0", for logs


@dataclass(frozen=True, eq=False)
class HostSpec:
    """One backend as configured.  `eq=False`: each config block has its own hosts, as
    in lighttpd, and state is looked up by identity (a cheap hash).  Defaults are
    lighttpd's."""

    label: str                 # its key in the array ("" when unkeyed)
    name: str                  # "tcp:10.0.0.2:8080" or "unix:/run/app.sock", for logs
    family: int
    address: tuple | str       # what connect() takes
    host: str                  # the resolved address or the socket path
    port: int
    connect_timeout: int = 8   # seconds
    read_timeout: int = 0      # 0: no limit
    write_timeout: int = 0
    disable_time: int = 1      # seconds a backend that refused stays out of the rotation
    keepalive: int = DEFAULT_KEEPALIVE
    upgrade: bool = False
    listen_backlog: int = 1024
    bin_path: str = ""         # spawned by the master when set
    bin_environment: tuple[tuple[str, str], ...] = ()
    bin_copy_environment: tuple[str, ...] = ()
    bin_shell: bool = False    # bin-path run as `/bin/sh -c "exec <bin-path>"` (SCGI's way)
    kill_signal: int = int(signal.SIGTERM)
    min_procs: int = 4
    max_procs: int = 4
    max_load_per_proc: int = 1
    idle_timeout: int = 60
    check_local: bool = True
    mode: str = "responder"
    docroot: str = ""
    strip_request_uri: str = ""
    fix_root_scriptname: bool = False
    broken_scriptfilename: bool = False
    x_sendfile: bool = False
    allow_x_send_file: bool = False
    x_sendfile_docroot: tuple[str, ...] = ()
    tcp_fin_propagate: bool = False
    procs: tuple[Proc, ...] = field(default=())

    @cached_property
    def hash(self) -> int:
        """lighttpd's gw_hash of the host, for hash and sticky balancing."""
        return djbhash(self.host) ^ self.port

    @property
    def spawned(self) -> bool:
        return bool(self.bin_path)

    @property
    def sends_files(self) -> bool:
        """X-Sendfile honoured ("x-sendfile", or its older name "allow-x-send-file")."""
        return self.x_sendfile or self.allow_x_send_file


@dataclass(frozen=True, eq=False)
class Extension:
    """A URL prefix ("/app/") or file extension (".php") and its backends."""

    key: str
    hosts: tuple[HostSpec, ...]


def djbhash(text: str, value: int = DJB_INIT) -> int:
    """djb2a over the text's bytes, as lighttpd's algo_md.h (so a hash-balanced URL goes
    to the same backend behind either server)."""
    for byte in text.encode("utf-8", "surrogateescape"):
        value = (((value << 5) + value) ^ byte) & 0xFFFFFFFF
    return value


def spawned_hosts(extensions: tuple[Extension, ...]) -> list[HostSpec]:
    """The hosts of a `*.server` value that the master has to start."""
    return [spec for extension in extensions for spec in extension.hosts if spec.spawned]


# ----------------------------------------------------------------- config parsing
def parse_servers(value: Array, bin_shell: bool = False) -> tuple[Extension, ...]:
    """A `*.server` array (the directive's convert) as Extensions; DirectiveValueError
    says what is wrong.  `bin_shell`: the module runs a bin-path through the shell, as
    lighttpd's mod_scgi does (the others split it at spaces and execute it)."""
    extensions = []
    for key, hosts in value:
        if key is None or not isinstance(hosts, Array):
            raise DirectiveValueError(
                'expected ( "ext" => ( "backend-label" => ( "key" => "value" ) ) )')
        specs = tuple(_host_spec(label or "", entry, key, bin_shell) for label, entry in hosts)
        extensions.append(Extension(key, specs))
    return tuple(extensions)


def parse_responder_servers(value: Array) -> tuple[Extension, ...]:
    """A `*.server` array of a module whose backends can only answer (mod_proxy,
    mod_wstunnel): an authorizer host is refused, as lighttpd refuses it."""
    extensions = parse_servers(value)
    if any(spec.mode == "authorizer" for ext in extensions for spec in ext.hosts):
        raise DirectiveValueError('must not define any hosts with attribute "mode" = '
                                  '"authorizer"')
    return extensions


def _host_spec(label: str, entry: object, ext: str, bin_shell: bool) -> HostSpec:
    where = f'in "{ext}"' + (f' => "{label}"' if label else "")
    if not isinstance(entry, Array) or (len(entry) and not entry.has_keys()) \
            or len(label) > MAX_LABEL:
        raise DirectiveValueError(
            f'{where}: expected ( "backend-label" => ( "key" => "value" ) )')
    fields = {key: _host_value(key, item, where) for key, item in entry}
    host, path = fields.pop("host", ""), fields.pop("socket", "")
    port = fields.pop("port", 0)
    if path and (host or port):
        raise DirectiveValueError(f"{where}: either host/port or socket have to be set")
    if host.startswith("/"):
        host, path = "", host
    options = {key.replace("-", "_"): item for key, item in fields.items()}
    options["bin_shell"] = bin_shell
    _check_options(options, where)
    if path:
        spec = _unix_host(label, path, port, options, where)
    elif not host:
        raise DirectiveValueError(f"{where}: host or socket has to be set")
    else:
        spec = _tcp_host(label, host, port or 80, options, where)
    return _with_procs(spec, where)


def _unix_host(label: str, path: str, port: int, options: dict, where: str) -> HostSpec:
    longest = path + (f"-{MAX_PROCS}" if options.get("bin_path") else "")
    if len(longest.encode()) + 1 > UNIX_PATH_MAX:
        raise DirectiveValueError(f"{where}: unixsocket is too long")
    return HostSpec(label, f"unix:{path}", socket.AF_UNIX, path, path, port, **options)


def _tcp_host(label: str, host: str, port: int, options: dict, where: str) -> HostSpec:
    family, address = _resolve(host, port, where)
    return HostSpec(label, f"tcp:{address[0]}:{port}", family, address, address[0], port,
                    **options)


def _check_options(options: dict, where: str) -> None:
    mode = options.get("mode", "responder")
    if mode not in MODES:
        raise DirectiveValueError(f'{where}: "mode" has to be "responder" or '
                                  f'"authorizer", not "{mode}"')
    procs = options.get("max_procs", 4)
    if options.get("min_procs", 0) > procs:
        options["min_procs"] = procs


def _with_procs(spec: HostSpec, where: str) -> HostSpec:
    """The spec with its addresses: one per spawned process, or the host itself."""
    if not spec.spawned:
        procs = (Proc(0, spec.family, spec.address, spec.name),)
    elif spec.family == socket.AF_UNIX:
        procs = tuple(Proc(n, spec.family, f"{spec.host}-{n}", f"{spec.name}-{n}")
                      for n in range(spec.max_procs))
    else:
        if spec.port + spec.max_procs - 1 > 65535:
            raise DirectiveValueError(f"{where}: port + max-procs is beyond 65535")
        procs = tuple(Proc(n, spec.family, (spec.host, spec.port + n) + spec.address[2:],
                           f"tcp:{spec.host}:{spec.port + n}")
                      for n in range(spec.max_procs))
    object.__setattr__(spec, "procs", procs)
    return spec


def _host_value(key: str | None, item: object, where: str) -> object:
    if key in _STRING_KEYS:
        if isinstance(item, str):
            return item
    elif key in _INT_KEYS:
        if isinstance(item, str) and item.strip().isdigit():
            item = int(item)
        low, high = _INT_KEYS[key]
        if isinstance(item, int) and low <= item <= high:
            return item
    elif key in _BOOL_KEYS:
        return to_bool(item)    # type: ignore[arg-type]
    elif key in _LIST_KEYS:
        if isinstance(item, Array) and not item.has_keys() and \
                all(isinstance(v, str) for v in item.values()):
            return tuple(item.values())
    elif key in _MAP_KEYS:
        if isinstance(item, Array) and all(k is not None and isinstance(v, str)
                                           for k, v in item):
            return tuple((k, v) for k, v in item)
    else:
        hint = " (a dash, not an underscore)" if key and "_" in key else ""
        raise DirectiveValueError(f'{where}: unknown key "{key}"{hint}')
    raise DirectiveValueError(f'{where}: unexpected value for "{key}"')


def _resolve(host: str, port: int, where: str) -> tuple[int, tuple]:
    """The first address of `host` (resolved now, at config load, never per request)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise DirectiveValueError(f'{where}: cannot resolve "{host}": {err}') from None
    family, _type, _proto, _name, address = infos[0]
    return family, address


def parse_balance(value: str) -> str:
    """A `*.balance` value, as its canonical name."""
    canonical = BALANCES.get(value or "fair")
    if canonical is None:
        raise DirectiveValueError("has to be one of: least-connection, round-robin, hash, "
                                  f'sticky, but not: "{value}"')
    return canonical
