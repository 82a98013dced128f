"""Bandwidth limits (connection.kbytes-per-second, server.kbytes-per-second) as lighttpd
1.4.69 applies them: a connection sends at most what is left of its own budget and of
its block's shared one (shared/config/ratelimit.py) in the current second; with
nothing left it stops polling for writes until the server's next tick, once a second.

The limits in force are those of the request whose answer was queued last (lighttpd's
`r->conf`), so a `$HTTP["url"]` block can slow its downloads alone.  A config that sets
neither limit anywhere pays one attribute test per send (`Wire.throttle` is None).
"""

from __future__ import annotations

from typing import Any

from shared.config.ratelimit import SharedBudget


class Throttle:
    """One connection's limits and what it sent in the current second."""

    __slots__ = ("rate", "shared", "used", "second")

    def __init__(self, rate: int, shared: SharedBudget | None) -> None:
        self.rate = rate                  # bytes a second; 0: no limit of its own
        self.shared = shared              # its block's budget, if one is set
        self.used = 0
        self.second = -1

    def allowance(self, second: int) -> int:
        """What may be sent now (0 or less: nothing until the next second)."""
        left = -1
        if self.rate:
            if second != self.second:
                self.second, self.used = second, 0
            left = self.rate - self.used
        shared = self.shared
        if shared is not None:
            pool = shared.left(second)
            left = pool if left < 0 else min(left, pool)
        return left

    def spent(self, count: int) -> None:
        self.used += count
        if self.shared is not None:
            self.shared.used += count


def throttle_for(values: dict[str, Any], current: Throttle | None) -> Throttle | None:
    """The limits a request's settings put on its connection (None: none), keeping
    what the connection sent this second when they stay the same."""
    rate: int = values["connection.kbytes-per-second"]
    shared: SharedBudget | None = values["server.kbytes-per-second"]
    if not rate and shared is None:
        return None
    if current is not None and current.rate == rate and current.shared is shared:
        return current
    throttle = Throttle(rate, shared)
    if current is not None:
        throttle.used, throttle.second = current.used, current.second
    return throttle
