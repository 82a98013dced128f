"""The config as a worker uses it: typed global settings plus conditional overlays.

Per request only the conditions that exist are evaluated, each at most once; those that
depend only on the connection (`remoteip`, `socket`) are evaluated once per connection.
The effective settings are the global ones updated by every matching block in file
order, and remembered by what decided them (the values of the fields the request's
conditions read, the results of the connection's): the next request with the same
Host, URL ... is one dict lookup.  With no conditional blocks, the global dict itself
is returned: zero cost.
Requests that match the same blocks, none of them with regex captures, share one
merged settings object, built once.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Final, Mapping, Protocol

from .captures import match_groups
from .directives import CheckResult, Directive, Scope
from .parseopts import ParseOptions
from .tree import Block, Condition, ConfigTree

NO_CAPTURES: Final[tuple[str, ...]] = ()
MAX_SHARED_SETTINGS: Final = 1024     # distinct sets of matching blocks kept per worker
MAX_BY_VALUES: Final = 4096           # distinct values deciding a request's settings, kept


class ConditionSubject(Protocol):
    """What a request offers to conditions: one string per field name."""

    def condition_value(self, field: str) -> str: ...


@dataclass(frozen=True, slots=True)
class CompiledBlock:
    index: int
    condition_id: int | None       # into CompiledConfig.conditions; None for plain else
    parent: int                    # block index; 0 is the global block
    previous: int | None           # earlier branch of an else-chain
    capture_block: int | None      # nearest block (self or ancestor) with a regex test
    settings: Mapping[str, Any]


class RequestSettings:
    """The effective settings of one request, and the regex captures behind them."""

    __slots__ = ("values", "_matches", "_origin")

    def __init__(self, values: dict[str, Any],
                 matches: dict[int, re.Match[str]] | None = None,
                 origin: dict[str, int] | None = None) -> None:
        self.values = values
        self._matches = matches
        self._origin = origin

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def captures(self, key: str) -> tuple[str, ...]:
        """`%0`..`%9` for a directive: groups of the regex condition around its setting."""
        if not self._origin or key not in self._origin or not self._matches:
            return NO_CAPTURES
        match = self._matches.get(self._origin[key])
        if match is None:
            return NO_CAPTURES
        return match_groups(match)


def _same_host(host: str, pattern: str) -> bool:
    """$HTTP["host"] == as lighttpd compares: the names, whether or not either side
    has a :port (a port is compared only where both have one: the same length)."""
    if not host or len(host) == len(pattern):
        return host == pattern
    if len(host) > len(pattern):
        return host[len(pattern)] == ":" and len(host) - len(pattern) <= 6 and \
            host.startswith(pattern)
    return pattern[len(host)] == ":" and pattern.startswith(host)


def _ip_in(network: ipaddress.IPv4Network | ipaddress.IPv6Network, text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.version == network.version and address in network


def evaluate(condition: Condition, value: str) -> tuple[bool, re.Match[str] | None]:
    """Test one condition against the field's value."""
    op = condition.op
    if condition.field == "socket":   # only == and != (the parser checks)
        same = _socket_key(value) == _socket_key(condition.pattern)
        return (same if op == "==" else not same), None
    if condition.field == "host":
        value = value.lower()           # lighttpd normalises the Host to lower case
        if op == "==" or op == "!=":
            same = _same_host(value, condition.pattern.lower())
            return (same if op == "==" else not same), None
    if op in ("=~", "!~"):
        regex = condition.regex
        assert regex is not None        # compiled with the condition (parser.py)
        match = regex.match(value) if condition.anchored else regex.search(value)
        return (match is not None, match) if op == "=~" else (match is None, None)
    if condition.network is not None:
        inside = _ip_in(condition.network, value)
        return (inside if op == "==" else not inside), None
    pattern = condition.pattern
    if op == "==":
        return value == pattern, None
    if op == "!=":
        return value != pattern, None
    if op == "=^":
        return value.startswith(pattern), None
    return value.endswith(pattern), None


def _socket_key(spec: str) -> str:
    """`:80`, `0.0.0.0:80` and `*:80` name the same socket."""
    if spec.startswith(":") or spec.startswith("*:"):
        return "0.0.0.0" + spec[spec.index(":"):]
    return spec


class CompiledConfig:
    """Built once in the master from a checked tree; inherited by every forked worker."""

    def __init__(self, tree: ConfigTree, checked: CheckResult,
                 directives: Mapping[str, Directive]) -> None:
        self.directives = directives
        # keys interned: the worker's compiled code looks settings up by literals, which
        # mypyc interns, and an interned key is found by identity, not by comparing text
        self.globals: dict[str, Any] = {sys.intern(name): d.default
                                        for name, d in directives.items()}
        self.globals.update(checked.settings.get(0, {}))
        # server.http-parseopts, read by every request: native attributes
        options: ParseOptions = self.globals["server.http-parseopts"]
        self.url_flags: int = options.url
        self.method_get_body: bool = options.method_get_body
        # whether any block sets server.protocol-http11 off, or limits bandwidth
        # (worker/throttle.py): only then does a request look the value up
        every = [self.globals, *checked.settings.values()]
        self.http11_limited: bool = any(
            values.get("server.protocol-http11") is False for values in every)
        self.rate_limited: bool = any(
            values.get("server.kbytes-per-second") or values.get("connection.kbytes-per-second")
            for values in every)
        # debug.log-condition-handling set somewhere: the request looks at its value and
        # the trace walks the blocks as written (worker/debuglog.py)
        self.traces_conditions: bool = any(
            values.get("debug.log-condition-handling") for values in every)
        self.tree = tree
        self.conditions: list[Condition] = []
        self.blocks: list[CompiledBlock] = []
        self._global_settings = RequestSettings(self.globals)
        self._shared: dict[tuple[int, ...], RequestSettings] = {}
        ids: dict[tuple[str, str, str], int] = {}
        for block in tree.blocks[1:]:
            condition_id = None
            if block.condition is not None:
                identity = block.condition.identity()
                if identity not in ids:
                    ids[identity] = len(self.conditions)
                    self.conditions.append(block.condition)
                condition_id = ids[identity]
            self.blocks.append(CompiledBlock(
                index=block.index, condition_id=condition_id,
                parent=block.parent.index if block.parent else 0,
                previous=block.previous.index if block.previous else None,
                capture_block=_capture_block(block),
                settings=_conditional_settings(block, checked, directives)))
        self._block_count = len(tree.blocks)
        # whether any condition depends on the connection alone (remoteip, socket):
        # only then does a connection keep a cache of their results
        self.connection_conditions = any(c.per_connection for c in self.conditions)
        # what modules built at config time (Module.prepare), by module name
        self.prepared: dict[str, Any] = {}
        # what decides a request's settings (settings_for): the fields its own
        # conditions read, and the connection's conditions
        self._request_fields = tuple(sorted({c.field for c in self.conditions
                                             if not c.per_connection}))
        self._connection_conditions = tuple(i for i, c in enumerate(self.conditions)
                                            if c.per_connection)
        # a config whose conditions read one field of the request and none of the
        # connection (the common site of `$HTTP["host"]` or `$HTTP["url"]` blocks) keys
        # its settings by that field's value alone: no list, tuple nor tuple hash made
        # for each request
        self._one_field = self._request_fields[0] \
            if len(self._request_fields) == 1 and not self._connection_conditions else None
        self._by_values: dict[object, RequestSettings] = {}

    def socket_specs(self) -> list[str]:
        """Every `$SERVER["socket"] == "..."` address: each is a listener."""
        return [c.pattern for c in self.conditions if c.field == "socket" and c.op == "=="]

    def socket_values(self, spec: str) -> dict[str, Any]:
        """A listener's settings: the global ones and those of its top-level
        `$SERVER["socket"] == spec` blocks (where the socket-scope keys are read)."""
        values = dict(self.globals)
        for block in self.blocks:
            if block.parent == 0 and block.condition_id is not None:
                condition = self.conditions[block.condition_id]
                if condition.field == "socket" and condition.op == "==" and \
                        condition.pattern == spec:
                    values.update(block.settings)
        return values

    def settings_for(self, subject: ConditionSubject,
                     connection_cache: dict[int, tuple[bool, Any]] | None = None
                     ) -> RequestSettings:
        """Effective settings for one request, remembered by what decides them: the
        values of the fields the request's conditions read and the results of the
        connection's conditions (most requests to a site carry the same few: a Host,
        a socket), so that the blocks are walked once per distinct set of them."""
        if not self.blocks:
            return self._global_settings
        one_field = self._one_field
        if one_field is not None:
            value = subject.condition_value(one_field)
            settings = self._by_values.get(value)
            if settings is None:
                settings = self._remember(value, {one_field: value}, {}, None)
            return settings
        results: dict[int, tuple[bool, re.Match[str] | None]] = {}
        values = [subject.condition_value(field) for field in self._request_fields]
        key = tuple(values)
        for condition_id in self._connection_conditions:
            key += _result_key(*self._test(condition_id, subject.condition_value, results,
                                           connection_cache))
        settings = self._by_values.get(key)
        if settings is None:
            settings = self._remember(key, dict(zip(self._request_fields, values)), results,
                                      connection_cache)
        return settings

    def _remember(self, key: object, asked: dict[str, str],
                  results: dict[int, tuple[bool, re.Match[str] | None]],
                  connection_cache: dict[int, tuple[bool, Any]] | None) -> RequestSettings:
        """The settings of a request whose fields read `asked`, walked and kept under
        `key` (captures too follow from these values alone)."""
        settings = self._walk(asked.__getitem__, results, connection_cache)
        if len(self._by_values) >= MAX_BY_VALUES:
            self._by_values.clear()
        self._by_values[key] = settings
        return settings

    def _walk(self, value_of: Callable[[str], str],
              results: dict[int, tuple[bool, re.Match[str] | None]],
              connection_cache: dict[int, tuple[bool, Any]] | None) -> RequestSettings:
        """The blocks in file order: the settings of those whose conditions hold
        (each condition evaluated at most once), merged."""
        matched = [False] * self._block_count
        taken = [False] * self._block_count
        matched[0] = True
        matches: dict[int, re.Match[str]] = {}
        contributing: list[CompiledBlock] = []
        with_captures = False
        for block in self.blocks:
            if not matched[block.parent]:
                continue
            if block.previous is not None and taken[block.previous]:
                taken[block.index] = True
                continue
            ok, match = True, None
            if block.condition_id is not None:
                ok, match = self._test(block.condition_id, value_of, results,
                                       connection_cache)
            matched[block.index] = taken[block.index] = ok
            if not ok:
                continue
            if match is not None:
                matches[block.index] = match
            if block.settings:
                contributing.append(block)
                with_captures = with_captures or block.capture_block is not None
        if not contributing:
            return self._global_settings
        if with_captures:
            return self._merge(contributing, matches)
        key = tuple(block.index for block in contributing)
        settings = self._shared.get(key)
        if settings is None:
            if len(self._shared) >= MAX_SHARED_SETTINGS:
                self._shared.clear()
            settings = self._shared[key] = self._merge(contributing, None)
        return settings

    def _merge(self, contributing: list[CompiledBlock],
               matches: dict[int, re.Match[str]] | None) -> RequestSettings:
        """The global settings updated by each matching block, in file order; with
        `matches`, each directive remembers the regex condition its %n come from."""
        values = dict(self.globals)
        origin: dict[str, int] = {}
        for block in contributing:
            values.update(block.settings)
            if matches is None:
                continue
            for key in block.settings:  # a later plain block drops old captures
                if block.capture_block is None:
                    origin.pop(key, None)
                else:
                    origin[key] = block.capture_block
        if matches is None:
            return RequestSettings(values)
        return RequestSettings(values, matches, origin)

    def _test(self, condition_id: int, value_of: Callable[[str], str],
              results: dict[int, tuple[bool, Any]],
              connection_cache: dict[int, tuple[bool, Any]] | None) -> tuple[bool, Any]:
        if condition_id in results:
            return results[condition_id]
        condition = self.conditions[condition_id]
        cache = connection_cache if condition.per_connection and connection_cache is not None \
            else results
        if condition_id not in cache:
            cache[condition_id] = evaluate(condition, value_of(condition.field))
        results[condition_id] = cache[condition_id]
        return results[condition_id]


def _result_key(ok: bool, match: re.Match[str] | None) -> tuple[Any, ...]:
    """A condition's result as a key: whether it holds, and what its regex captured."""
    return (ok,) if match is None else (ok, match.group(0), match.groups())


def _capture_block(block: Block) -> int | None:
    node: Block | None = block
    while node is not None and node.parent is not None:
        if node.condition is not None and node.condition.op == "=~":
            return node.index
        node = node.parent
    return None


def _conditional_settings(block: Block, checked: CheckResult,
                          directives: Mapping[str, Directive]) -> dict[str, Any]:
    """A block's typed settings, without those that cannot vary per request."""
    in_socket = block.condition is not None and block.condition.field == "socket"
    return {key: value for key, value in checked.settings.get(block.index, {}).items()
            if directives[key].scope is Scope.CONNECTION
            or (directives[key].scope is Scope.SOCKET and in_socket)}
