"""Taking an item off a list as a queue or a stack, without moving the list's storage
to the C library's allocator.

`list.pop()` of a list's only item shrinks its storage to 0 bytes, a size CPython's
small-object allocator does not serve: the storage moves to libc `malloc`, and every
append and pop after that is a libc `realloc` (about a thousand instructions a request
for a connection's lists of ready and answered requests, emptied after each request).
Clearing a list of one item frees its storage instead (a native call), and the next
append takes new storage from the small-object allocator.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def take(items: list[T], index: int) -> T:
    """`items.pop(index)`, leaving an emptied list without storage."""
    if len(items) == 1:
        item = items[0]
        items.clear()
        return item
    return items.pop(index)
