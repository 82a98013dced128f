"""Directive declarations and the check of a parsed config against them.

Every module declares the directives it owns (name, type, default, where it may
appear); core declares the `server.*` family.  Checking converts each raw value to its
typed form once, in the master, so a worker never re-validates per request.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .errors import ConfigError, Position
from .feature_flags import FALSE_WORDS, TRUE_WORDS
from .tree import Block, ConfigTree
from .values import Array, Value, type_name


class Type(enum.Enum):
    """Value types, named after lighttpd's T_CONFIG_* so its docs map one to one."""

    STRING = "a string"
    SHORT = "an integer from 0 to 65535"
    INT = "a non-negative integer"
    BOOL = 'a boolean ("enable" or "disable")'
    ARRAY = "an array"
    ARRAY_VLIST = 'an array of strings like ("a", "b")'
    ARRAY_KVSTRING = 'an array of string pairs like ("key" => "value")'
    ARRAY_KVANY = 'a keyed array like ("key" => value)'
    ANY = "any value"


class Scope(enum.Enum):
    SERVER = "global only"              # e.g. server.max-worker: one per process
    SOCKET = "global or $SERVER[\"socket\"]"
    CONNECTION = "anywhere"


class DirectiveValueError(Exception):
    """Raised by a directive's converter: the message says what is wrong with the value."""


@dataclass(frozen=True)
class Directive:
    """One config key: its type, its default, where it may appear, and how its checked
    value is turned into what the worker uses (e.g. regexes compiled once)."""

    name: str
    type: Type
    default: Any = None
    scope: Scope = Scope.CONNECTION
    convert: Callable[[Any], Any] | None = None
    doc: str = ""
    # a value that works but not as the config may expect gets a warning: advice(typed
    # value) says what, or None
    advice: Callable[[Any], str | None] | None = None


@dataclass
class CheckResult:
    warnings: list[str] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)
    settings: dict[int, dict[str, Any]] = field(default_factory=dict)  # block index -> typed


def is_variable(key: str) -> bool:
    return key.startswith(("var.", "env."))


def to_bool(value: Value) -> bool:
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.lower() in TRUE_WORDS:
        return True
    if isinstance(value, str) and value.lower() in FALSE_WORDS:
        return False
    raise DirectiveValueError(f'expected {Type.BOOL.value}, got {_shown(value)}')


def _shown(value: Value) -> str:
    return f'"{value}"' if isinstance(value, str) else type_name(value)


def _to_int(value: Value, low: int, high: int, wanted: Type) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or not low <= value <= high:
        raise DirectiveValueError(f"expected {wanted.value}, got {_shown(value)}")
    return value


def _to_vlist(value: Value) -> tuple[str, ...]:
    """A list of strings without keys; a lone string or a keyed array is refused, as
    lighttpd refuses them ("should have been a list of string values")."""
    if not isinstance(value, Array) or not all(
            key is None and isinstance(v, str) for key, v in value):
        raise DirectiveValueError(f"expected {Type.ARRAY_VLIST.value}")
    return tuple(value.values())


def _to_kvstring(value: Value) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Array) or not all(
        key is not None and isinstance(v, str) for key, v in value
    ):
        raise DirectiveValueError(f"expected {Type.ARRAY_KVSTRING.value}")
    return tuple((key, v) for key, v in value)  # type: ignore[misc]


def _to_array(value: Value, keyed: bool) -> Array:
    if not isinstance(value, Array) or (keyed and len(value) and not value.has_keys()):
        raise DirectiveValueError(f"expected {(Type.ARRAY_KVANY if keyed else Type.ARRAY).value}")
    return value


_CONVERTERS: dict[Type, Callable[[Value], Any]] = {
    Type.STRING: lambda v: v if isinstance(v, str) else _fail(Type.STRING, v),
    Type.SHORT: lambda v: _to_int(v, 0, 65535, Type.SHORT),
    Type.INT: lambda v: _to_int(v, 0, 2**31 - 1, Type.INT),
    Type.BOOL: to_bool,
    Type.ARRAY: lambda v: _to_array(v, keyed=False),
    Type.ARRAY_VLIST: _to_vlist,
    Type.ARRAY_KVSTRING: _to_kvstring,
    Type.ARRAY_KVANY: lambda v: _to_array(v, keyed=True),
    Type.ANY: lambda v: v,
}


def _fail(wanted: Type, value: Value) -> Any:
    raise DirectiveValueError(f"expected {wanted.value}, got {_shown(value)}")


def convert_value(directive: Directive, value: Value) -> Any:
    """The typed value of `directive`, or DirectiveValueError."""
    typed = _CONVERTERS[directive.type](value)
    return directive.convert(typed) if directive.convert else typed


def _in_socket_block(block: Block) -> bool:
    node: Block | None = block
    while node is not None and node.parent is not None:
        if node.condition is None or node.condition.field != "socket":
            return False
        node = node.parent
    return True


def check_config(tree: ConfigTree, directives: dict[str, Directive]) -> CheckResult:
    """Check every key of every block; collect all problems rather than stop at the first."""
    result = CheckResult()
    warned: set[str] = set()
    for block in tree.blocks:
        typed: dict[str, Any] = {}
        for key, entry in block.keys.items():
            if is_variable(key):
                continue
            directive = directives.get(key)
            if directive is None:
                if key not in warned:
                    warned.add(key)
                    result.warnings.append(
                        f"{entry.position}: WARNING: unknown config-key: {key} (ignored)")
                continue
            if block.parent is not None:
                _check_scope(directive, block, entry.position, result)
            try:
                typed[key] = convert_value(directive, entry.value)
            except DirectiveValueError as err:
                result.errors.append(ConfigError(f"{key}: {err}", entry.position))
                continue
            said = directive.advice(typed[key]) if directive.advice else None
            if said:
                result.warnings.append(f"{entry.position}: WARNING: {said}")
        result.settings[block.index] = typed
    return result


def _check_scope(directive: Directive, block: Block, position: Position,
                 result: CheckResult) -> None:
    if directive.scope is Scope.SERVER or (
        directive.scope is Scope.SOCKET and not _in_socket_block(block)
    ):
        result.warnings.append(
            f"{position}: WARNING: {directive.name} is {directive.scope.value}; its value "
            f"in {block.description()} is ignored")


def directive_table(groups: Iterable[Iterable[Directive]]) -> dict[str, Directive]:
    """Merge declarations; two owners of one name is a programming error."""
    table: dict[str, Directive] = {}
    for group in groups:
        for directive in group:
            if directive.name in table:
                raise RuntimeError(f"directive {directive.name} declared twice")
            table[directive.name] = directive
    return table
