"""A generation: the workers of one loaded config, and the listen addresses they hold.

As nginx's cycle owns its listening sockets, a generation holds its addresses in the
master's ListenerSet.  A reload builds the new generation's listeners before it
commits (the open sockets of the addresses that stay, new ones bound for the rest), so
a config that names an address that cannot be bound is refused with the running
generation untouched.  A generation lets its addresses go once it serves no longer and
its last worker has exited (drained, or a reload that aborted); an address closes when
no generation holds it, so one removed and added back during a drain is never closed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .configload import LoadedConfig
from .listeners import Address, ListenerSet, configured_addresses
from .privileges import Identity, resolve_identity


@dataclass
class Generation:
    number: int
    config: LoadedConfig
    identity: Identity
    addresses: list[Address]   # the listen addresses its workers serve


def open_generation(number: int, config: LoadedConfig, listeners: ListenerSet,
                    slots: int) -> Generation:
    """A generation for `config` holding its addresses with `slots` sockets each; a
    ConfigError (unknown user, an address that cannot be bound) leaves nothing bound."""
    identity = resolve_identity(config.settings)
    addresses = configured_addresses(config.settings, config.compiled.socket_specs())
    listeners.acquire(number, addresses, slots)
    return Generation(number, config, identity, addresses)


def release_exited(listeners: ListenerSet, in_use: set[int]) -> list[tuple[int, list[str]]]:
    """Let go the addresses of every generation not in `in_use` (serving, or with a
    worker left): each such generation with the specs that closed because of it."""
    return [(number, listeners.release(number))
            for number in sorted(listeners.holders() - in_use)]
