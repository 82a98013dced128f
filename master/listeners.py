"""Listening sockets: addresses from the config, one SO_REUSEPORT socket per worker slot.

The master owns every listening socket for its whole life; workers inherit them
through fork and only ever close their own copies.  Unix sockets cannot be shared with
SO_REUSEPORT, so a unix address has one socket that every slot shares.
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass, field

from shared.config import ConfigError


@dataclass(frozen=True)
class Address:
    """One listen address: `spec` is how the config names it ($SERVER["socket"])."""

    spec: str
    family: int
    target: tuple | str   # (host, port) or a unix socket path


@dataclass
class SlotSockets:
    """The sockets of one worker slot: (socket, spec) pairs."""

    sockets: list[tuple[socket.socket, str]] = field(default_factory=list)


def parse_address(spec: str, default_port: int) -> Address:
    """`host:port`, `:port`, `[v6]:port`, `/unix/path` -> Address; ConfigError if bad."""
    if spec.startswith("/"):
        return Address(spec, socket.AF_UNIX, spec)
    host, port_text = spec, ""
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0:
            raise ConfigError(f'bad socket address "{spec}": missing "]"')
        host, rest = spec[1:end], spec[end + 1:]
        if rest and not rest.startswith(":"):
            raise ConfigError(f'bad socket address "{spec}"')
        port_text = rest[1:]
    elif spec.count(":") == 1:
        host, port_text = spec.split(":")
    if port_text and not port_text.isdigit():
        raise ConfigError(f'bad port in socket address "{spec}"')
    port = int(port_text) if port_text else default_port
    if not 0 < port < 65536:
        raise ConfigError(f'port out of range in socket address "{spec}"')
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return Address(spec, family, (host or ("::" if family == socket.AF_INET6 else "0.0.0.0"),
                                  port))


def configured_addresses(settings: dict, socket_specs: list[str]) -> list[Address]:
    """The main server.bind / server.port address plus every $SERVER["socket"] one."""
    port = settings["server.port"]
    bind = settings["server.bind"]
    if bind.startswith("/"):
        main = Address(bind, socket.AF_UNIX, bind)
    else:
        host = bind or "0.0.0.0"
        main = parse_address(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", port)
    addresses = {main.target: main}
    for spec in socket_specs:
        address = parse_address(spec, port)
        addresses.setdefault(address.target, address)
    return list(addresses.values())


def open_socket(address: Address, backlog: int, reuse_port: bool) -> socket.socket:
    """Bind and listen; an OSError is turned into a one-line ConfigError."""
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        if address.family == socket.AF_UNIX:
            _remove_stale_unix_socket(address.target)  # type: ignore[arg-type]
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address.target)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {address.spec}: {err.strerror}") from None
    return sock


def _remove_stale_unix_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def open_slot(addresses: list[Address], backlog: int,
              shared_unix: dict[str, socket.socket]) -> SlotSockets:
    """Sockets for one worker slot; unix sockets are opened once and shared."""
    slot = SlotSockets()
    try:
        for address in addresses:
            if address.family == socket.AF_UNIX:
                if address.spec not in shared_unix:
                    shared_unix[address.spec] = open_socket(address, backlog, False)
                slot.sockets.append((shared_unix[address.spec], address.spec))
            else:
                slot.sockets.append((open_socket(address, backlog, True), address.spec))
    except ConfigError:
        close_slot(slot, shared_unix)
        raise
    return slot


def close_slot(slot: SlotSockets, shared_unix: dict[str, socket.socket]) -> None:
    shared = {id(s) for s in shared_unix.values()}
    for sock, _ in slot.sockets:
        if id(sock) not in shared:
            sock.close()
    slot.sockets.clear()


def tcp_migrate_req_enabled() -> bool | None:
    """net.ipv4.tcp_migrate_req: queued connections move off a closed SO_REUSEPORT socket."""
    try:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as file:
            return file.read().strip() == "1"
    except OSError:
        return None
