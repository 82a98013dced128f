"""Bandwidth limits (connection.kbytes-per-second, server.kbytes-per-second) as lighttpd
1.4.69 applies them: a connection sends at most what is left of its own budget and of
its block's shared one (shared/config/ratelimit.py) in the current second; with
nothing left it stops polling for writes until the server's next tick, once a second.

The limits in force are those of the request whose answer was queued last (lighttpd's
`r->conf`), so a `$HTTP["url"]` block can slow its downloads alone.  A config that sets
neither limit anywhere pays one attribute test per send (`Wire.throttle` is None).
"""

from __future__ import annotations

import re
from typing import Any, Final

from shared.config.ratelimit import KIB, ByteBudget


class Throttle:
    """One connection's budgets: its own (connection.kbytes-per-second) and its
    block's shared one (server.kbytes-per-second), either or both."""

    __slots__ = ("own", "shared")

    def __init__(self, own: ByteBudget | None, shared: ByteBudget | None) -> None:
        self.own = own
        self.shared = shared

    def allowance(self, second: int) -> int:
        """What may be sent now (0 or less: nothing until the next second)."""
        own, shared = self.own, self.shared
        if own is None:
            return shared.left(second) if shared is not None else 0
        left = own.left(second)
        return left if shared is None else min(left, shared.left(second))

    def spent(self, count: int) -> None:
        if self.own is not None:
            self.own.used += count
        if self.shared is not None:
            self.shared.used += count


def throttle_for(values: dict[str, Any], current: Throttle | None) -> Throttle | None:
    """The limits a request's settings put on its connection (None: none), keeping
    what the connection sent this second when they stay the same."""
    rate: int = values["connection.kbytes-per-second"]
    shared: ByteBudget | None = values["server.kbytes-per-second"]
    if not rate and shared is None:
        return None
    own = current.own if current is not None else None
    if not rate:
        own = None
    elif own is None or own.rate != rate:
        renewed = ByteBudget(rate)
        if own is not None:              # what it sent this second still counts
            renewed.used, renewed.second = own.used, own.second
        own = renewed
    if current is not None and current.own is own and current.shared is shared:
        return current
    return Throttle(own, shared)


_LEADING_INTEGER: Final = re.compile(r"\s*([-+]?\d+)")


def slowed(current: Throttle | None, value: str) -> Throttle | None:
    """The limits after an answer's X-LIGHTTPD-KBytes-per-second field (a backend's or
    a module's, never sent): its connection's own rate lowered to that many KiB a
    second for this answer, never raised (lighttpd's http_response_omit_header reads
    the value as strtol does)."""
    found = _LEADING_INTEGER.match(value)
    rate = int(found.group(1)) * KIB if found else 0
    own = current.own if current is not None else None
    if rate <= 0 or (own is not None and own.rate <= rate):
        return current
    lowered = ByteBudget(rate)
    if own is not None:                  # what it sent this second still counts
        lowered.used, lowered.second = own.used, own.second
    return Throttle(lowered, current.shared if current is not None else None)
