"""Clock jumps: the wall clock set forward or back (an NTP step, a suspended VM woken).

Timeouts run on the monotonic clock, but what was computed from the wall clock before
a jump (Date and Last-Modified caches, expiry times, log timestamps) is off after it.
As lighttpd does, the master compares how far the wall clock moved with how far the
monotonic clock moved, once a second: a difference of more than five minutes is
logged, and one beyond `server.feature-flags` "server.clock-jump-restart" (30 minutes
by default, 0 never) asks for a graceful restart of the workers.
"""

from __future__ import annotations

import time
from typing import Callable

from shared import log
from shared.config.feature_flags import flag_int

LOGGED_AFTER = 300         # seconds of difference that are a jump (lighttpd's 5 minutes)
DEFAULT_RESTART_AFTER = 1800


class ClockWatch:
    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.wall = wall
        self.monotonic = monotonic
        self.last_wall = wall()
        self.last_monotonic = monotonic()

    def jumped(self, settings: dict) -> bool:
        """Whether the clock jumped since the last look further than the config's
        server.clock-jump-restart allows, so that the workers are to be restarted; a
        smaller jump is only logged."""
        wall, monotonic = self.wall(), self.monotonic()
        jump = int((wall - self.last_wall) - (monotonic - self.last_monotonic))
        self.last_wall, self.last_monotonic = wall, monotonic
        if abs(jump) <= LOGGED_AFTER:
            return False
        log.error("server.c", f"warning: clock jumped {jump} secs")
        restart_after = flag_int(settings, "server.clock-jump-restart", DEFAULT_RESTART_AFTER)
        if restart_after > 0 and abs(jump) > restart_after:
            log.error("server.c", "attempting graceful restart of the workers")
            return True
        return False
