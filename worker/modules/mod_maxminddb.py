"""mod_maxminddb: the client's GeoIP2 data (country, city ...) for the backends.

As lighttpd 1.4.69 does it:
- `maxminddb.db` names a MaxMind DB file (its name must end in ".mmdb"); it is opened
  when the config is loaded (again on reload), and a file that is missing or not a
  MaxMind DB refuses the config, as lighttpd refuses to start;
- an empty `maxminddb.db` or `maxminddb.env` in a condition block changes nothing
  there (the enclosing value stays); `maxminddb.activate = "disable"` turns it off;
- `maxminddb.env` maps environment names to paths into the record found for the
  client's address: `"GEOIP_CITY_NAME" => "city/names/en"`, one map key (or array
  index) per step.  A path is not empty and neither begins nor ends with "/";
- with `maxminddb.activate`, a database and an env set for the request, the values
  found become the request's environment (CGI, FastCGI, SCGI, SSI see them): strings
  and bytes as they are, booleans "1"/"0", floating point numbers with five decimals,
  integers in decimal; one beyond 64 bits (a uint128) in upper-case hex with "0x" as
  lighttpd writes a uint128 (a uint128 value that fits in 64 bits comes out decimal:
  the reader does not tell the integer types apart).  A path that leads nowhere, or to a map or an array, sets nothing;
- the address looked up is the request's own: the real client mod_extforward found
  behind a trusted proxy.  It is looked up as it is: an IPv4-mapped IPv6 address finds
  the IPv4 record in a database that maps ::ffff:0:0/96 onto its IPv4 tree (MaxMind's
  own do), nothing in one that does not, as with lighttpd.

The variables are not seen by conditions (lighttpd has none on the environment).
lighttpd sets them only when a backend asks for the environment; here they are set
once the URL is clean (anew, with the settings of the new URL, when the phases run
again for a rewrite or an error handler), so the access log's %{GEOIP_...}e shows them for every request
this module serves (lighttpd shows "-" where no backend ran).  Static answers stay
replayable from the answer cache unless the access log writes one of the variables
(a replay would log the client the answer was kept for).

Lookups are cached per worker by address, database and env (a small table emptied
when full), so a busy client costs one dictionary look-up per request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import maxminddb
from maxminddb.errors import InvalidDatabaseError

from shared.config.directives import Directive, DirectiveValueError, Type
from shared.config.errors import ConfigError

from ..module import HandlerResult, Module as BaseModule
from ..request import Request

if TYPE_CHECKING:
    from shared.config.compiled import CompiledConfig
    from shared.config.directives import CheckResult
    from shared.config.tree import ConfigTree

SOURCE = "mod_maxminddb.c"
CACHE_SIZE = 4096      # addresses remembered per worker before the table starts over

EnvPaths = tuple[tuple[str, tuple[str, ...]], ...]     # (name, path steps) per variable
Found = tuple[tuple[str, str], ...]                    # (name, value) set for a client


def env_paths(pairs: tuple[tuple[str, str], ...]) -> EnvPaths:
    """maxminddb.env checked and split into path steps once, at config load."""
    for _, path in pairs:
        if not path.strip() or path.startswith("/") or path.endswith("/"):
            raise DirectiveValueError("maxminddb.env must be a list of non-empty strings "
                                      "and must not begin or end with '/'")
    return tuple((name, tuple(path.split("/"))) for name, path in pairs)


DIRECTIVES = (
    Directive("maxminddb.activate", Type.BOOL, False),
    Directive("maxminddb.db", Type.STRING, ""),
    Directive("maxminddb.env", Type.ARRAY_KVSTRING, (), convert=env_paths),
)


def open_database(path: str) -> maxminddb.Reader:
    """The database, or the reason it cannot be used, in lighttpd's words."""
    if not path.endswith(".mmdb"):
        raise ValueError(f"GeoIP database is of unsupported type {path})")
    try:
        return maxminddb.open_database(path, maxminddb.MODE_AUTO)
    except OSError as err:
        raise ValueError(f"failed to open GeoIP2 database ({path}): "
                         f"{err.strerror or err}") from None
    except (InvalidDatabaseError, ValueError) as err:
        raise ValueError(f"failed to open GeoIP2 database ({path}): {err}") from None


def open_databases(tree: "ConfigTree", checked: "CheckResult") -> dict[str, maxminddb.Reader]:
    """Every maxminddb.db the config names, opened once: path -> reader."""
    readers: dict[str, maxminddb.Reader] = {}
    for block in tree.blocks:
        path = checked.settings.get(block.index, {}).get("maxminddb.db")
        if not path or path in readers:
            continue
        try:
            readers[path] = open_database(path)
        except ValueError as err:
            raise ConfigError(str(err), block.keys.get("maxminddb.db").position) from None
    return readers


def keep_enclosing_when_empty(compiled: "CompiledConfig") -> None:
    """An empty maxminddb.db or maxminddb.env in a condition block leaves the value
    of the enclosing config in force (lighttpd keeps only non-empty ones), rather than
    turning the module off there."""
    for block in compiled.blocks:
        for key in ("maxminddb.db", "maxminddb.env"):
            if key in block.settings and not block.settings[key]:
                del block.settings[key]


def value_at(record: Any, steps: tuple[str, ...]) -> Any:
    """The value a path leads to in a record (map keys, array indexes), or None."""
    for step in steps:
        if isinstance(record, dict):
            record = record.get(step)
        elif isinstance(record, list):
            try:
                record = record[int(step)]
            except (ValueError, IndexError):
                return None
        else:
            return None
    return record


def env_text(value: Any) -> str | None:
    """A record's value as lighttpd writes it into the environment; None for maps,
    arrays and what leads nowhere.  Text ends at a NUL byte, where a CGI script's
    environment ends it (and a process environment cannot hold one)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "surrogateescape")   # the raw bytes go out
    if isinstance(value, str):
        return value.partition("\0")[0]
    if isinstance(value, float):
        return f"{value:.5f}"
    if isinstance(value, int):
        return str(value) if value < 2**64 else f"0x{value:032X}"
    return None


def geoip_values(reader: maxminddb.Reader, address: str, paths: EnvPaths) -> Found:
    """The variables found for an address (none when it is in no network)."""
    try:
        record = reader.get(address)
    except ValueError:              # not an IP address (a unix socket's peer)
        return ()
    if record is None:
        return ()
    found = []
    for name, steps in paths:
        text = env_text(value_at(record, steps))
        if text is not None:
            found.append((name, text))
    return tuple(found)


def logs_env(values: dict[str, Any]) -> bool:
    """Whether the access log of these settings writes one of the variables: it is the
    only reader of a static answer's environment, which a replay takes from the
    request the answer was kept for."""
    log_format = getattr(values.get("accesslog.format"), "text", "")
    return any(f"{{{name}}}" in log_format for name, _ in values["maxminddb.env"])


class Module(BaseModule):
    name = "maxminddb"
    directives = DIRECTIVES

    @classmethod
    def prepare(cls, tree: "ConfigTree", checked: "CheckResult",
                compiled: "CompiledConfig") -> dict[str, maxminddb.Reader]:
        keep_enclosing_when_empty(compiled)
        return open_databases(tree, checked)

    def __init__(self, config: Any, services: Any = None) -> None:
        super().__init__(config, services)
        self.readers: dict[str, maxminddb.Reader] = config.prepared.get(self.name) or {}
        self.found: dict[tuple[str, str, EnvPaths], Found] = {}

    def _active(self, values: dict[str, Any]) -> maxminddb.Reader | None:
        """The database for a request's settings, when the module acts on it."""
        if not values["maxminddb.activate"] or not values["maxminddb.env"]:
            return None
        return self.readers.get(values["maxminddb.db"])

    def allows_replay(self, request: Request) -> bool:
        """A kept static answer replayed for another client would log the first one's
        variables: not kept where this module acts and the access log writes them."""
        values = request.settings.values
        return self._active(values) is None or not logs_env(values)

    def handle_uri_clean(self, request: Request) -> HandlerResult:
        self._forget_earlier(request)
        values = request.settings.values
        reader = self._active(values)
        if reader is None:
            return None
        key = (request.remote_ip, values["maxminddb.db"], values["maxminddb.env"])
        found = self.found.get(key)
        if found is None:
            if len(self.found) >= CACHE_SIZE:
                self.found.clear()
            found = self.found[key] = self._lookup(reader, request.remote_ip, values)
        for name, text in found:
            request.set_env(name, text)
        request.plugin_ctx[self.name] = found
        return None

    def _lookup(self, reader: maxminddb.Reader, address: str,
                values: dict[str, Any]) -> Found:
        """geoip_values, with a database damaged since it was opened logged (once per
        address: the empty result is cached) and setting nothing."""
        try:
            return geoip_values(reader, address, values["maxminddb.env"])
        except InvalidDatabaseError as err:
            if self.services is not None:
                self.services.log_error(SOURCE, f"GeoIP2 lookup of {address} in "
                                                f"{values['maxminddb.db']} failed: {err}")
            return ()

    def _forget_earlier(self, request: Request) -> None:
        """The phases run again for another URL (a rewrite once the file was looked
        for, an error handler): what was set for the first URL's settings goes, as
        lighttpd takes the settings of the URL the backend runs for."""
        earlier = request.plugin_ctx.pop(self.name, None)
        if earlier and request.env:
            for name, _ in earlier:
                request.env.pop(name, None)
