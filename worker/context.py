"""What the master hands a forked worker: its slot, sockets and config."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from master.configload import LoadedConfig
    from shared.stats import StatsSegment


@dataclass
class WorkerContext:
    slot: int
    generation: int
    # bound and listening sockets, each with the spec that $SERVER["socket"] compares
    listeners: list[tuple[socket.socket, str]]
    config: "LoadedConfig"
    idle_exit: float | None = None          # -i: exit 0 after this long without requests
    on_ready: Callable[[], None] | None = None
    stats: "StatsSegment | None" = None     # the master's shared counters, if any
    stats_slot: int = 0
    master_pid: int = 0                     # the master that forked it (0: none)
