"""The three value kinds of the config language (string, integer, array) and `+`.

Arrays keep insertion order and may mix keyed (`"k" => v`) and plain elements, as
lighttpd's do.  Strings and integers are plain Python `str` and `int`.
"""

from __future__ import annotations

from typing import Iterator, Union

Value = Union[str, int, "Array"]

INT_MIN, INT_MAX = -(2**31), 2**31 - 1


class ValueError_(Exception):
    """A value operation that the language does not allow (the parser adds the place)."""


class Array:
    """An ordered array of elements, each with an optional string key."""

    __slots__ = ("_items", "_index")

    def __init__(self, items: list[tuple[str | None, Value]] | None = None) -> None:
        self._items: list[tuple[str | None, Value]] = []
        self._index: dict[str, int] = {}     # by key in lower case: lighttpd's are caseless
        for key, value in items or ():
            self.append(key, value)

    def append(self, key: str | None, value: Value) -> None:
        """Add an element; a key that is already present, in any case, is an error, as
        in lighttpd (".txt" and ".TXT" are one key there)."""
        if key is not None:
            folded = key.lower()
            if folded in self._index:
                raise ValueError_(f'duplicate array key "{key}"')
            self._index[folded] = len(self._items)
        self._items.append((key, value))

    def items(self) -> list[tuple[str | None, Value]]:
        return self._items

    def values(self) -> list[Value]:
        return [value for _, value in self._items]

    def get(self, key: str, default: Value | None = None) -> Value | None:
        """The value of `key`, found in any case (as lighttpd finds it)."""
        position = self._index.get(key.lower())
        return default if position is None else self._items[position][1]

    def has_keys(self) -> bool:
        return bool(self._index)

    def copy(self) -> "Array":
        return Array([(k, v.copy() if isinstance(v, Array) else v) for k, v in self._items])

    def __iter__(self) -> Iterator[tuple[str | None, Value]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Array) and self._items == other._items

    def __repr__(self) -> str:
        return f"Array({self._items!r})"


def type_name(value: Value) -> str:
    """The word used for a value's kind in error messages."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, str):
        return "string"
    return "array"


def checked_int(number: int) -> int:
    """lighttpd stores integers as 32-bit; refuse what it would silently wrap."""
    if not INT_MIN <= number <= INT_MAX:
        raise ValueError_(f"integer {number} is out of range ({INT_MIN}..{INT_MAX})")
    return number


def plus(left: Value, right: Value, repeated: list[str] | None = None) -> Value:
    """`left + right` as lighttpd evaluates it.

    int + int adds; string + string and string/int mixes concatenate; array + array
    merges: a key already there with the same value is skipped (lighttpd warns
    "Duplicate array-key": its name goes to `repeated`), with another value it is an
    error; anything else is a type mismatch.
    """
    if isinstance(left, Array) or isinstance(right, Array):
        if isinstance(left, Array) and isinstance(right, Array):
            merged = left.copy()
            for key, value in right:
                if key is not None and repeated is not None and merged.get(key) == value:
                    repeated.append(key)
                    continue
                merged.append(key, value)
            return merged
        raise ValueError_(
            f"cannot combine {type_name(left)} and {type_name(right)} with '+'"
        )
    if isinstance(left, int) and isinstance(right, int):
        return checked_int(left + right)
    return f"{left}{right}"
