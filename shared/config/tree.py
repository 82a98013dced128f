"""The parsed config: a global block and a tree of conditional blocks.

Each block keeps its keys in a `KeyStore` that reproduces lighttpd's own array
behaviour, including the order quirk of `+=` (the merged key moves to the end and the
last key takes its old place), so that `-p` prints keys in the order lighttpd does.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from .errors import Position
from .values import Value

# $HTTP["..."] fields: the request attribute each one reads.  Header-backed fields name
# the header; a missing header compares as "".
HTTP_FIELDS = {
    "host": "host", "url": "url", "querystring": "querystring",
    "remoteip": "remoteip", "remote-ip": "remoteip", "scheme": "scheme",
    "request-method": "request-method",
    "referer": "header:referer", "cookie": "header:cookie",
    "useragent": "header:user-agent", "user-agent": "header:user-agent",
    "language": "header:accept-language",
}
# Fields that cannot change within one connection: evaluated once per connection.
CONNECTION_FIELDS = frozenset({"remoteip", "socket"})


@dataclass(slots=True)
class Entry:
    value: Value
    position: Position


class KeyStore:
    """Ordered keys of one block, with lighttpd's array semantics."""

    __slots__ = ("_order", "_entries")

    def __init__(self) -> None:
        self._order: list[str] = []
        self._entries: dict[str, Entry] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def insert(self, key: str, entry: Entry) -> None:
        self._order.append(key)
        self._entries[key] = entry

    def replace(self, key: str, entry: Entry) -> None:
        """`:=`: replace in place, or add at the end."""
        if key not in self._entries:
            self._order.append(key)
        self._entries[key] = entry

    def extract(self, key: str) -> Entry:
        """Remove `key`; the last key moves into its slot, as lighttpd's arrays do."""
        slot = self._order.index(key)
        last = self._order.pop()
        if slot < len(self._order):
            self._order[slot] = last
        return self._entries.pop(key)

    def items(self) -> list[tuple[str, Entry]]:
        return [(key, self._entries[key]) for key in self._order]

    def __len__(self) -> int:
        return len(self._order)


@dataclass(eq=False)
class Condition:
    """One `$FIELD["name"] op "pattern"` test, compiled once at parse time."""

    comp_key: str          # as printed: HTTP["host"], REQUEST_HEADER["X-Foo"], SERVER["socket"]
    field: str             # what it reads: "host", "url", "header:x-foo", "socket", ...
    op: str
    pattern: str
    position: Position
    regex: re.Pattern[str] | None = None
    anchored: bool = False   # the regex matches at the value's start alone: match, not search
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None

    @property
    def per_connection(self) -> bool:
        return self.field in CONNECTION_FIELDS

    def text(self) -> str:
        return f'${self.comp_key} {self.op} "{self.pattern}"'

    def identity(self) -> tuple[str, str, str]:
        return (self.comp_key, self.op, self.pattern)


@dataclass(eq=False)
class Block:
    """A scope of settings: the global block (index 0) or a conditional block.

    `condition` is None for the global block and for a plain `else`.  `previous` links an
    else-branch to the branch before it; a block matches only if its parent matches, no
    earlier branch of its chain matched, and its own condition (if any) holds.
    """

    index: int
    condition: Condition | None
    parent: Block | None
    previous: Block | None = None
    following: Block | None = None
    keys: KeyStore = field(default_factory=KeyStore)
    children: list[Block] = field(default_factory=list)  # every child, else-branches too

    def description(self) -> str:
        """`global / $HTTP["host"] == "a"`: how lighttpd names a block in messages."""
        parts: list[str] = []
        block: Block | None = self
        while block is not None:
            if block.parent is None:
                parts.append("global")
            else:
                parts.append(block.condition.text() if block.condition else "else")
            block = block.parent
        return " / ".join(reversed(parts))


@dataclass(eq=False)
class ConfigTree:
    """The whole parsed config: `root` is the global block; `blocks` all blocks by index."""

    root: Block
    blocks: list[Block]
    files: list[str]
    warnings: list[str] = field(default_factory=list)   # what lighttpd warns about

    def global_value(self, key: str) -> Value | None:
        entry = self.root.keys.get(key)
        return None if entry is None else entry.value
