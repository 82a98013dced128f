"""A generation: the workers of one loaded config, and the listen addresses they hold.

As nginx's cycle owns its listening sockets, a generation holds its addresses in the
master's ListenerSet.  A reload builds the new generation's listeners before it
commits (the open sockets of the addresses that stay, new ones bound for the rest), so
a config that names an address that cannot be bound is refused with the running
generation untouched.  A generation lets its addresses go once it serves no longer and
its last worker has exited (drained, or a reload that aborted); an address closes when
no generation holds it, so one removed and added back during a drain is never closed.

The `bin-path` backends of its config (master/spawner.py) are held the same way: the
spawner starts those a new generation needs before its workers start, keeps those an
older generation already runs with the same launch, and stops a backend once no
generation holds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared import log
from shared.config import ConfigError

from .configload import LoadedConfig, breakage_logs
from .listeners import Address, ListenerSet, configured_addresses
from .privileges import Identity, resolve_identity
from .spawner import Launch, Spawner, plan


@dataclass
class Generation:
    number: int
    config: LoadedConfig
    identity: Identity
    addresses: list[Address]   # the listen addresses its workers serve
    backends: list[Launch]     # the bin-path processes its workers connect to


def open_generation(number: int, config: LoadedConfig, listeners: ListenerSet,
                    slots: int) -> Generation:
    """A generation for `config` holding its addresses with `slots` sockets each; a
    ConfigError (unknown user, a backend program that is not executable, an address
    that cannot be bound) leaves nothing bound.  Its backends are not started yet
    (`start_backends`)."""
    identity = resolve_identity(config.settings)
    backends = plan(config, identity)
    addresses = configured_addresses(config.compiled)
    _open_breakage_logs(number, config)
    try:
        listeners.acquire(number, addresses, slots)
    except ConfigError:
        log.BREAKAGE.release(number)
        raise
    return Generation(number, config, identity, addresses, backends)


def _open_breakage_logs(number: int, config: LoadedConfig) -> None:
    """Every server.breakagelog of the config open and held for generation `number`
    (lighttpd opens them at start-up, before dropping privileges, and refuses to
    start without one); ConfigError with the place of the one that failed, none
    left held."""
    for target, where in breakage_logs(config):
        try:
            log.BREAKAGE.hold(number, target)
        except OSError as err:
            log.BREAKAGE.release(number)
            raise ConfigError(f"opening errorlog '{target}' failed: {err.strerror}",
                              where) from None


def start_backends(generation: Generation, listeners: ListenerSet, spawner: Spawner) -> None:
    """Let the generation hold its backends, starting those not running; on a
    SpawnError it lets its addresses go too, as if it had never been opened."""
    try:
        spawner.acquire(generation.number, generation.backends)
    except ConfigError:
        listeners.release(generation.number)
        raise


def release_exited(listeners: ListenerSet, spawner: Spawner,
                   in_use: set[int]) -> list[tuple[int, list[str]]]:
    """Let go the addresses and backends of every generation not in `in_use` (serving,
    or with a worker left): each such generation with the specs that closed because of
    it."""
    released = []
    for number in sorted(listeners.holders() - in_use):
        spawner.release(number)
        log.BREAKAGE.release(number)
        released.append((number, listeners.release(number)))
    return released
