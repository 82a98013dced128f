"""`-p`: print a parsed config the way `lighttpd -p` does, so the two can be compared.

The output reads back as config (the parser takes the `config { ... }` wrapper as the
global block) and gives the same tree, except where lighttpd's format cannot say it:
a condition pattern holding a `"` and a string ending in a backslash are printed as
lighttpd prints them, which no parser can read back.
"""

from __future__ import annotations

from .tree import Block, ConfigTree
from .values import Array, Value

INDENT = "    "
ONE_LINE_MAX_ELEMENTS = 5


def format_config(tree: ConfigTree) -> str:
    """The whole config as `config { ... }`, ending with a newline."""
    out: list[str] = []
    _block(tree.root, 0, out)
    out.append("\n")
    return "".join(out)


def _string(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'


def _value(value: Value, depth: int, out: list[str]) -> None:
    if isinstance(value, Array):
        _array(value, depth, out)
    elif isinstance(value, str):
        out.append(_string(value))
    else:
        out.append(str(value))


def _width(key: str) -> int:
    """lighttpd aligns by bytes: a UTF-8 key is as wide as its encoding."""
    return len(key.encode("utf-8", "surrogateescape"))


def _fits_one_line(array: Array) -> bool:
    return len(array) <= ONE_LINE_MAX_ELEMENTS and all(
        key is None and not isinstance(value, Array) for key, value in array
    )


def _array(array: Array, depth: int, out: list[str]) -> None:
    if _fits_one_line(array):
        out.append("(")
        for position, (_, value) in enumerate(array):
            if position:
                out.append(", ")
            _value(value, depth + 1, out)
        out.append(")")
        return
    width = max((_width(key) for key, _ in array if key is not None), default=0)
    out.append("(\n")
    for key, value in array:
        out.append(INDENT * (depth + 1))
        if key is not None:
            out.append(_string(key) + " " * (width - _width(key)) + " => ")
        _value(value, depth + 1, out)
        out.append(",\n")
    out.append(INDENT * depth + ")")


def _block(block: Block, depth: int, out: list[str]) -> None:
    if block.parent is None:
        out.append("config {\n")
    else:
        out.append((block.condition.text() + " {\n") if block.condition else "{\n")
        out.append(f"{INDENT * (depth + 1)}# block {block.index}\n")
    inner = depth + 1
    items = block.keys.items()
    width = max((len(key) for key, _ in items), default=0)
    for key, entry in items:
        out.append(INDENT * inner + key + " " * (width - len(key)) + " = ")
        _value(entry.value, inner, out)
        out.append("\n")
    out.append("\n")
    for child in block.children:
        if child.previous is None:
            out.append("\n" + INDENT * inner)
            _block(child, inner, out)
            out.append("\n")
    out.append(INDENT * depth + "}")
    if block.parent is not None:
        out.append(" # end of " + (block.condition.text() if block.condition else "else"))
    if block.following is not None:
        out.append("\n" + INDENT * depth + "else ")
        _block(block.following, depth, out)
