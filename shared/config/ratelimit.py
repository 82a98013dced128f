"""The bandwidth limits of lighttpd 1.4.69: connection.kbytes-per-second (each
connection's own) and server.kbytes-per-second (one budget for all connections whose
settings come from the block that sets it; each worker process has its own, as each
lighttpd process has).  The budgets start afresh every second; worker/throttle.py
spends them."""

from __future__ import annotations

from typing import Final

KIB: Final = 1024


class ByteBudget:
    """What may be sent in one second: by one connection (its own), or by the
    connections of one config block together (server.kbytes-per-second's)."""

    __slots__ = ("rate", "used", "second")

    def __init__(self, rate: int) -> None:
        self.rate = rate          # bytes a second
        self.used = 0             # sent in `second`
        self.second = -1

    def left(self, second: int) -> int:
        if second != self.second:
            self.second, self.used = second, 0
        return self.rate - self.used


def shared_budget(kbytes: int) -> ByteBudget | None:
    """server.kbytes-per-second's value: a budget of its own for the block (0: none)."""
    return ByteBudget(kbytes * KIB) if kbytes else None


def connection_rate(kbytes: int) -> int:
    """connection.kbytes-per-second's value in bytes a second (0: no limit)."""
    return kbytes * KIB
